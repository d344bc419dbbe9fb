"""The blueprint that serves the web page at ``/`` and its assets under ``/assets/``.

The page is one HTML document (``templates/index.html``), one stylesheet and one script bundle
(``static/build/app.js``), which ``make install`` builds with esbuild from ``web/src/`` and the
three.js npm package: nothing is fetched from elsewhere, at run time or in the browser. The page
then talks to the JSON API like any other client.

Every response of this blueprint carries a Content-Security-Policy that lets the page load and
connect to this origin only. ``blob:`` is allowed for images and fetches because the page makes
such URLs itself, from bytes it already holds: thumbnails of the chosen photos, and the texture
three.js's GLTFLoader unpacks from a GLB. No inline script or style is allowed, so the page has none.

``/docs`` is the API reference: Swagger UI from its npm package, bundled the same way, reading the
OpenAPI document the API serves (``api.openapi``).
"""
from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, Response, render_template, request

from api.services import services

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent
BUNDLE = WEB_DIR / "static" / "build" / "app.js"

bp = Blueprint("web", __name__, static_folder="static", static_url_path="/assets",
               template_folder="templates")

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob:",
    "connect-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
# The API reference page (Swagger UI) is held to the same policy, but for images: its stylesheet
# draws its icons as data: URLs. Its styles come from the bundled stylesheet and from the script
# through the CSSOM (element.style), which style-src does not restrict, so no 'unsafe-inline'.
DOCS_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace("img-src 'self' blob:", "img-src 'self' data:")


@bp.get("/")
def index() -> str:
    """The page, with the upload limits it checks before sending taken from the service's settings."""
    settings = services().settings
    return render_template("index.html", max_image_bytes=settings.max_image_bytes,
                           min_image_side=settings.min_image_side, max_image_side=settings.max_image_side)


@bp.get("/docs")
def docs() -> str:
    """The API reference: the service's OpenAPI document (``/api/openapi.json``) in Swagger UI."""
    return render_template("docs.html")


@bp.after_request
def add_security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = (
        DOCS_CONTENT_SECURITY_POLICY if request.endpoint == "web.docs" else CONTENT_SECURITY_POLICY)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    # Revalidated on every load (ETag, 304): a new release is never mixed with a cached old script.
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.record_once
def _warn_if_unbuilt(_state) -> None:
    if not BUNDLE.exists():
        log.warning("the web page's script %s is missing, so the page at / will not work: run "
                    "`make install` (it builds it from web/src with npm)", BUNDLE)
