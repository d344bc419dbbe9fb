"""Every API request under /api/avatar (but health) leaves an audit record, whatever its outcome.

The record is assembled in ``after_request`` (which runs for successes, handled errors, validation
4xx and 429s alike) and written by ``response.call_on_close``: after the response has been sent, so
the client never waits for it (~1-2 ms per insert on the local store). A failed write is logged and
never turns into an error for the client. Each response carries ``X-Request-Id``, the key of its
record (support and tests look records up by it).

Health is left out: load balancers poll it every few seconds and it touches no one's data.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from flask import Flask, Response, g, request

from jobs.audit import AuditLog
from jobs.store import utcnow

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
# Endpoint → operation name in the log.
OPERATIONS = {
    "avatars.generate": "generate",
    "avatars.info": "info",
    "avatars.download": "download",
    "avatars.delete": "delete",
    "avatars.list_avatars": "list",
    "jobs.job_status": "status",
    "jobs.cancel": "cancel",
}
UNAUDITED_ENDPOINTS = frozenset({"health.health"})
# The error code recorded for a status when the handler did not name a more precise one.
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 410: "gone", 413: "payload_too_large",
                415: "unsupported_media_type", 422: "unprocessable", 429: "rate_limited",
                500: "internal_error", 503: "unavailable"}
MAX_USER_AGENT_CHARS = 512


def note_avatar(avatar_id: str) -> None:
    """Name the avatar this request created (routes with ``<avatar_id>`` need not)."""
    g.audit_avatar_id = avatar_id


def init_audit(app: Flask, audit_log: AuditLog) -> None:
    """Register the hooks; call before other extensions' ``before_request`` so every request,
    even one they refuse, has its id and start time."""

    @app.before_request
    def start() -> None:
        g.request_id = uuid.uuid4().hex
        g.request_started = time.perf_counter()

    @app.after_request
    def audit(response: Response) -> Response:
        request_id = g.get("request_id") or uuid.uuid4().hex
        response.headers[REQUEST_ID_HEADER] = request_id
        if request.endpoint in UNAUDITED_ENDPOINTS or not request.path.startswith("/api/"):
            return response
        entry = _entry(response, request_id)
        response.call_on_close(lambda: _write(audit_log, entry))
        return response


def _entry(response: Response, request_id: str) -> dict[str, Any]:
    status = response.status_code
    avatar_id = g.get("audit_avatar_id") or (request.view_args or {}).get("avatar_id")
    started = g.get("request_started")
    return {
        "time": utcnow(),
        "operation": OPERATIONS.get(request.endpoint or "", "unknown"),
        "method": request.method,
        "path": request.path[:1024],
        "avatarId": str(avatar_id) if avatar_id is not None else None,
        "userId": _user_id(),
        "ip": request.remote_addr,
        "userAgent": (request.headers.get("User-Agent") or "")[:MAX_USER_AGENT_CHARS] or None,
        "success": status < 400,
        "status": status,
        "errorCode": (g.get("audit_error_code") or STATUS_CODES.get(status, f"http_{status}"))
        if status >= 400 else None,
        "requestId": request_id,
        "durationMs": round((time.perf_counter() - started) * 1000, 3) if started else None,
    }


def _user_id() -> str | None:
    """The caller as the view resolved it; else (refused before the view ran: 429, 404 route) the
    identity of a valid token, if any. An invalid token records no user."""
    if "auth_user" in g:
        return g.auth_user
    if not request.headers.get("Authorization"):
        return None
    from flask_jwt_extended import get_jwt_identity, verify_jwt_in_request
    try:
        verify_jwt_in_request(optional=True)
        identity = get_jwt_identity()
    except Exception:
        return None
    return str(identity) if identity is not None else None


def _write(audit_log: AuditLog, entry: dict[str, Any]) -> None:
    try:
        audit_log.record(entry)
    except Exception as exc:  # never fail a request (it has been answered already) over its log line
        log.warning("could not write the audit record of request %s (%s %s): %s",
                    entry["requestId"], entry["method"], entry["path"], exc)
