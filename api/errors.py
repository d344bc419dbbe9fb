"""Every error the API returns: one envelope, one handler, one table from exception to status.

    {"success": false, "error": "<what went wrong, in words a person can act on>", "details": ...}
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from flask_limiter import RateLimitExceeded
from werkzeug.exceptions import HTTPException

from jobs import metrics
from jobs.outages import OUTAGES
from jobs.store import JobNotFound, TransitionError
from pipeline import PipelineError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with its HTTP status; raise a subclass from a view."""

    status = 500

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class RequestTimeout(ApiError):
    status = 408


class Conflict(ApiError):
    status = 409


class Gone(ApiError):
    status = 410


class UnsupportedMediaType(ApiError):
    status = 415


class RangeNotSatisfiable(ApiError):
    status = 416


class Unprocessable(ApiError):
    status = 422


class ServiceUnavailable(ApiError):
    status = 503



UNAVAILABLE_MESSAGE = "The service cannot reach its job store or queue right now; please retry in a minute."
INTERNAL_MESSAGE = "Internal server error; please retry. If it keeps happening, tell the operator the time and the URL."


def error_response(status: int, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> Response:
    """The error envelope with ``status``; ``details`` is always there (null when there are none)."""
    response = jsonify({"success": False, "error": message, "details": details})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_error(exc: Exception) -> Response:
    """Map any exception a view lets escape to the envelope."""
    if isinstance(exc, ApiError):
        g.audit_error_code = _error_code(exc)
        return error_response(exc.status, exc.message, exc.details, exc.headers)
    if isinstance(exc, RateLimitExceeded):
        from api.limits import EXTENSION_KEY, GENERATIONS, breach_message
        message, retry_after = breach_message(exc, current_app.extensions.get(EXTENSION_KEY))
        metrics.RATE_LIMITED.labels(limit="generate" if exc.description == GENERATIONS else "default").inc()
        return error_response(429, message, headers={"Retry-After": str(retry_after)})
    if isinstance(exc, JobNotFound):
        return error_response(404, "Avatar not found",
                              f"No avatar has the id {exc.job_id!r}; it may have been deleted.")
    if isinstance(exc, TransitionError):
        return error_response(409, str(exc)[0].upper() + str(exc)[1:],
                              {"status": exc.actual.value if exc.actual else None})
    if isinstance(exc, PipelineError):
        return error_response(422, exc.message, {"code": exc.code, "view": exc.view})
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    if isinstance(exc, OUTAGES):  # infrastructure down: the client should retry, not fix its request
        log.warning("dependency unavailable on %s %s: %s", request.method, request.path, exc)
        return error_response(503, UNAVAILABLE_MESSAGE, headers={"Retry-After": "30"})
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, INTERNAL_MESSAGE)


def _error_code(exc: ApiError) -> str | None:
    """The audit log's error code: the job's code when there is one (``no_face``), else the kind."""
    if isinstance(exc.details, dict) and isinstance(exc.details.get("code"), str):
        return exc.details["code"]
    if isinstance(exc.details, list):
        return "validation_failed"
    return None


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    # Werkzeug's own headers for the status (Allow on 405, Content-Range on 416, ...), not its HTML type.
    headers = {name: value for name, value in exc.get_headers() if name.lower() != "content-type"}
    if status == 404:
        message = f"No such endpoint: {request.method} {request.path}. The API lives under /api/avatar."
    elif status == 405:
        allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or []))
        message = f"{request.method} is not allowed on {request.path}" + (f"; use {allowed}" if allowed else "")
        if allowed:
            headers["Allow"] = allowed
    elif status == 413:
        mb = current_app.config.get("AVATAR_MAX_IMAGE_MB", 10)
        message = f"Upload too large: send three JPEG, PNG or WebP images of at most {mb} MB each."
    else:
        message = exc.description or exc.name
    return error_response(status, message, headers=headers)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(Exception, handle_error)
