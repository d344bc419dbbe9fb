"""The HTTP API: validates, records, enqueues, reads. ``create_app`` builds it from ``Settings``."""
from __future__ import annotations

import logging

from flask import Flask
from flask_jwt_extended import JWTManager

from api import avatars, health, status, timing
from api.errors import register_error_handlers
from api.services import Services
from jobs.settings import Settings

log = logging.getLogger(__name__)

# Multipart overhead on top of the three images (boundaries, headers, small text fields).
MULTIPART_SLACK_BYTES = 1024 * 1024


def create_app(settings: Settings | None = None) -> Flask:
    """The Flask app for ``settings`` (read from the environment when None)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder=None)
    app.config.update(
        # Werkzeug refuses anything bigger with 413 before parsing it.
        MAX_CONTENT_LENGTH=3 * settings.max_image_bytes + MULTIPART_SLACK_BYTES,
        AVATAR_MAX_IMAGE_MB=settings.max_image_bytes // (1024 * 1024),
        JWT_SECRET_KEY=settings.jwt_secret_key,
        JWT_TOKEN_LOCATION=["headers"],
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False
    JWTManager(app)

    svc = Services.build(settings)
    app.extensions["avatar"] = svc
    svc.files.ensure_dirs()
    try:
        svc.store.ensure_indexes()
    except Exception as exc:  # the store may come up after the API; health reports it meanwhile
        log.warning("could not create the job indexes yet: %s", exc)

    for blueprint in (avatars.bp, status.bp, health.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    timing.init_app(app)
    return app
