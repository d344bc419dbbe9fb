"""The HTTP API: validates, records, enqueues, reads. ``create_app`` builds it from ``Settings``."""
from __future__ import annotations

import logging

from flask import Flask
from flask_cors import CORS

from api import avatars, health, metrics, openapi, status, timing
from api.audit import init_audit
from api.auth import configure_jwt
from api.errors import register_error_handlers
from api.limits import init_limits
from api.services import Services
from jobs.settings import Settings, check_exposure
from web import page as web_page

log = logging.getLogger(__name__)

# Multipart overhead on top of the three images (boundaries, headers, small text fields).
MULTIPART_SLACK_BYTES = 1024 * 1024


def create_app(settings: Settings | None = None) -> Flask:
    """The Flask app for ``settings`` (read from the environment when None).

    Refuses to start without ``UPLOAD_ENCRYPTION_KEY`` (``jobs.encryption.EncryptionKeyError``):
    photos are never stored in clear; and, on a ``HOST`` other machines can reach, with the
    development secrets (``jobs.settings.UnsafeExposure``).
    """
    settings = settings or Settings.from_env()
    check_exposure(settings)
    app = Flask(__name__, static_folder=None)
    app.config.update(
        # Werkzeug refuses anything bigger with 413 before parsing it.
        MAX_CONTENT_LENGTH=3 * settings.max_image_bytes + MULTIPART_SLACK_BYTES,
        AVATAR_MAX_IMAGE_MB=settings.max_image_bytes // (1024 * 1024),
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False
    configure_jwt(app, settings)

    svc = Services.build(settings)
    app.extensions["avatar"] = svc
    svc.files.ensure_dirs()
    try:
        svc.store.ensure_indexes()
    except Exception as exc:  # the store may come up after the API; health reports it meanwhile
        log.warning("could not create the job indexes yet: %s", exc)
    try:
        svc.audit.ensure_indexes()
    except Exception as exc:
        log.warning("could not create the audit indexes yet: %s", exc)

    for blueprint in (avatars.bp, status.bp, health.bp, metrics.bp, openapi.bp, web_page.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    # The measuring and audit hooks first: a request the limiter refuses is still timed, given an
    # id and recorded.
    metrics.init_app(app)
    init_audit(app, svc.audit, settings.audit_anonymous_failures_per_minute,
               settings.audit_anonymous_retention_days)
    limiter = init_limits(app, settings)
    # The page and its files are not API calls: reloading it must not use up a client's requests;
    # nor must a scrape of the metrics or a read of the API's description.
    for unlimited in (web_page.bp, metrics.bp, openapi.bp):
        limiter.exempt(unlimited)
    if settings.cors_origins:
        CORS(app, origins=settings.cors_origins, expose_headers=CORS_EXPOSED_HEADERS, max_age=600)
    timing.init_app(app)
    return app


# What a page on another origin may read from the API's responses besides the simple headers.
CORS_EXPOSED_HEADERS = ["Location", "Retry-After", "ETag", "Content-Disposition", "Content-Range",
                        "Preference-Applied", "Idempotent-Replayed", "RateLimit-Limit", "RateLimit-Remaining",
                        "RateLimit-Reset", "RateLimit-Policy", "Server-Timing"]
