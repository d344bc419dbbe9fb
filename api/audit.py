"""Every API request under /api/avatar (but health) leaves an audit record, whatever its outcome.

The record is assembled in ``after_request`` (which runs for successes, handled errors, validation
4xx and 429s alike) and handed to ``AuditWriter`` once the response has been sent, which writes it
from a thread of its own. Neither the client nor the next request on its kept-alive connection waits
for the store (written by the request's own thread, the insert held that connection ~3 ms). A failed
write is logged and never turns into an error for the client. Each response carries
``X-Request-Id``, the key of its record (support and tests look records up by it).

Health is left out: load balancers poll it every few seconds and it touches no one's data.

Anonymous refusals (4xx without a user: scans, floods, broken scripts) cannot fill the store:
each API process writes at most ``AUDIT_ANONYMOUS_FAILURES_PER_MINUTE`` of them a minute and counts
the rest into one ``sampled_out`` record per minute (how many, by status and by address), and they
expire after ``AUDIT_ANONYMOUS_RETENTION_DAYS`` rather than the full retention. Everything a user
or a success did is written whole.
"""
from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flask import Flask, Response, g, request

from jobs import logs
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
# Health is polled by load balancers; the API's description is the same for everyone.
UNAUDITED_ENDPOINTS = frozenset({"health.health", "openapi.openapi_document"})
# The error code recorded for a status when the handler did not name a more precise one.
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 410: "gone", 413: "payload_too_large",
                415: "unsupported_media_type", 422: "unprocessable", 429: "rate_limited",
                500: "internal_error", 503: "unavailable"}
MAX_USER_AGENT_CHARS = 512


def note_avatar(avatar_id: str) -> None:
    """Name the avatar this request created (routes with ``<avatar_id>`` need not)."""
    g.audit_avatar_id = avatar_id


def init_audit(app: Flask, audit_log: AuditLog, anonymous_failures_per_minute: int,
               anonymous_retention_days: int) -> None:
    """Register the hooks; call before other extensions' ``before_request`` so every request,
    even one they refuse, has its id and start time."""
    writer = AuditWriter(audit_log)
    sampler = AnonymousFailureSampler(anonymous_failures_per_minute, anonymous_retention_days)

    @app.before_request
    def start() -> None:
        g.request_id = uuid.uuid4().hex
        g.request_started = time.perf_counter()
        # Every line logged while serving the request names it (LOG_FORMAT=json).
        g.log_fields = logs.bind(requestId=g.request_id)

    @app.teardown_request
    def forget_log_fields(_exc: BaseException | None) -> None:
        token = g.pop("log_fields", None)
        if token is not None:
            logs.unbind(token)

    @app.after_request
    def audit(response: Response) -> Response:
        request_id = g.get("request_id") or uuid.uuid4().hex
        response.headers[REQUEST_ID_HEADER] = request_id
        if request.endpoint in UNAUDITED_ENDPOINTS or not request.path.startswith("/api/"):
            return response
        entries = sampler.admit(_entry(response, request_id))
        if entries:
            response.call_on_close(lambda: [writer.submit(entry) for entry in entries])
        return response


class AnonymousFailureSampler:
    """Lets through at most ``per_minute`` anonymous refusal records a minute (this process), and
    turns the rest into one summary record per minute; they expire after ``retention_days``."""

    TOP_ADDRESSES = 10

    def __init__(self, per_minute: int, retention_days: int, window_s: float = 60.0):
        self.per_minute = per_minute
        self.retention = timedelta(days=retention_days)
        self.window_s = window_s
        self._lock = threading.Lock()
        self._minute: int | None = None
        self._written = 0
        self._dropped_by_status: Counter[str] = Counter()
        self._dropped_by_ip: Counter[str] = Counter()

    def admit(self, entry: dict[str, Any]) -> list[dict[str, Any]]:
        """The records to write for ``entry``: itself or nothing, plus the summary of a minute that
        has ended with records left out."""
        if entry["userId"] is not None or not 400 <= entry["status"] < 500:
            return [entry]
        entry["expiresAt"] = entry["time"] + self.retention
        minute = int(time.time() // self.window_s)
        with self._lock:
            out = []
            if minute != self._minute:
                out.extend(self._summary(entry["time"]))
                self._minute, self._written = minute, 0
            if self._written < self.per_minute:
                self._written += 1
                out.append(entry)
            else:
                self._dropped_by_status[str(entry["status"])] += 1
                self._dropped_by_ip[str(entry["ip"])] += 1
            return out

    def _summary(self, now) -> list[dict[str, Any]]:
        if not self._dropped_by_status:
            return []
        record = {"time": now, "operation": "sampled_out", "method": None, "path": None, "success": False,
                  "status": None, "errorCode": "sampled_out", "userId": None, "requestId": uuid.uuid4().hex,
                  "dropped": sum(self._dropped_by_status.values()),
                  "droppedByStatus": dict(self._dropped_by_status),
                  "droppedByIp": dict(self._dropped_by_ip.most_common(self.TOP_ADDRESSES)),
                  "expiresAt": now + self.retention}
        self._dropped_by_status.clear()
        self._dropped_by_ip.clear()
        return [record]


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


class AuditWriter:
    """Writes audit records from one background thread per process, in the order they came.

    Whatever is waiting when the thread gets to it goes in one ``insert_many``, so under load a
    record costs the store less than alone. Records wait in memory only while the store is busy,
    ``MAX_PENDING`` at most: past that a request writes its own record (slower, nothing dropped).
    At exit the thread is given ``EXIT_FLUSH_S`` to write what is left. The thread starts with the
    first record, in the process that serves it (gunicorn forks its workers).
    """

    MAX_PENDING = 10_000
    MAX_BATCH = 256
    EXIT_FLUSH_S = 5.0

    def __init__(self, audit_log: AuditLog):
        self.audit_log = audit_log
        self._start_afresh()
        _writers.add(self)

    def _start_afresh(self) -> None:
        self._pending: queue.Queue[dict[str, Any]] = queue.Queue(self.MAX_PENDING)
        self._unwritten = 0  # submitted and not yet written (or failed), under _done
        self._done = threading.Condition()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, entry: Mapping[str, Any]) -> None:
        self._ensure_thread()
        with self._done:
            self._unwritten += 1
        try:
            self._pending.put_nowait(dict(entry))
        except queue.Full:
            self._written([dict(entry)])

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until every record submitted so far is written (or its write
        failed); True if none is left."""
        with self._done:
            return self._done.wait_for(lambda: self._unwritten == 0, timeout_s)

    def _written(self, entries: list[dict[str, Any]]) -> None:
        try:
            _write(self.audit_log, entries)
        finally:
            with self._done:
                self._unwritten -= len(entries)
                self._done.notify_all()

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._pending.get()]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            self._written(batch)


# This process's writers: each forked child starts them afresh (the parent's records and thread
# stay the parent's), and at exit each gets EXIT_FLUSH_S to write what is left.
_writers: "weakref.WeakSet[AuditWriter]" = weakref.WeakSet()


def _start_writers_afresh() -> None:
    for writer in list(_writers):
        writer._start_afresh()


@atexit.register
def _flush_writers() -> None:
    for writer in list(_writers):
        writer.flush(AuditWriter.EXIT_FLUSH_S)


os.register_at_fork(after_in_child=_start_writers_afresh)


def _write(audit_log: AuditLog, entries: list[dict[str, Any]]) -> None:
    try:
        audit_log.record(entries)
    except Exception as exc:  # never fail a request (it has been answered already) over its log line
        for entry in entries:
            log.warning("could not write the audit record of request %s (%s %s): %s",
                        entry["requestId"], entry["method"], entry["path"], exc)
