"""The blueprint that serves the web page at ``/`` and its assets under ``/assets/``.

The page is one HTML document (``templates/index.html``), one stylesheet and one script bundle
(``static/build/app.js``), which ``make install`` builds with esbuild from ``web/src/`` and the
three.js npm package: nothing is fetched from elsewhere, at run time or in the browser. The page
then talks to the JSON API like any other client.

Every response of this blueprint carries a Content-Security-Policy that lets the page load and
connect to this origin only. ``blob:`` is allowed for images and fetches because the page makes
such URLs itself, from bytes it already holds: thumbnails of the chosen photos, and the texture
three.js's GLTFLoader unpacks from a GLB. No inline script or style is allowed, so the page has none.
"""
from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, Response, render_template

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


@bp.get("/")
def index() -> str:
    """The page, with the upload limits it checks before sending taken from the service's settings."""
    settings = services().settings
    return render_template("index.html", max_image_bytes=settings.max_image_bytes,
                           min_image_side=settings.min_image_side, max_image_side=settings.max_image_side)


@bp.after_request
def add_security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
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
