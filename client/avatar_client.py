"""``AvatarClient``: the HTTP API from Python, with the waiting and retrying a caller should not write.

    client = AvatarClient("http://127.0.0.1:3000")
    sub = client.submit("front.jpg", "left.jpg", "right.jpg")
    client.wait(sub.avatar_id)                  # raises JobFailed("left: no face found") on failure
    client.download(sub.avatar_id, "me.glb")

Retries are bounded (``max_retries``) and only where repeating the request is safe:
- 429 and 502/503/504: after ``Retry-After`` (seconds or an HTTP-date), else a jittered back-off;
- connection errors and timeouts: for GETs, and for the POST because every submission carries an
  ``Idempotency-Key`` (a fresh UUID4 unless given), so a repeated POST names the same job.
Everything else the server refuses becomes a typed error carrying its envelope's message.
"""
from __future__ import annotations

import mimetypes
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import requests

from client.backoff import Backoff, parse_retry_after
from client.errors import (VIEWS, ApiError, ClientError, Interrupted, JobCanceled, JobFailed, ServiceUnavailable,
                           TransportError, WaitTimeout, api_error)

TERMINAL_STATUSES = frozenset({"completed", "failed", "canceled"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# 409 on a keyed POST: the same Idempotency-Key is still being turned into a job; asking again
# shortly returns that job (the IETF draft's "request in progress").
IN_PROGRESS = 409
GLB_MAGIC = b"glTF"

# A photo: a path to read, or the encoded bytes themselves.
Photo = Union[str, os.PathLike, bytes]


@dataclass(frozen=True)
class Submission:
    """The accepted POST: where to poll and download. ``data`` is the body's ``data`` as sent."""

    avatar_id: str
    status: str
    idempotency_key: str
    status_url: str
    download_url: str
    data: dict[str, Any] = field(repr=False)

    @property
    def completed(self) -> bool:
        """True when ``Prefer: wait`` returned the finished avatar (200) rather than 202."""
        return self.status == "completed"


@dataclass(frozen=True)
class JobState:
    """One read of GET /api/avatar/jobs/<id>."""

    avatar_id: str
    status: str
    stage: str | None
    progress: float
    timings: dict[str, float]
    error: dict[str, Any] | None
    data: dict[str, Any] = field(repr=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_body(cls, data: Mapping[str, Any]) -> "JobState":
        return cls(avatar_id=data["avatarId"], status=data["status"], stage=data.get("stage"),
                   progress=float(data.get("progress") or 0.0), timings=dict(data.get("timings") or {}),
                   error=data.get("error"), data=dict(data))


class AvatarClient:
    """A client for one avatar service.

    Parameters
    ----------
    base_url
        ``http://host:port`` (the API lives under ``/api/avatar``).
    token
        Optional JWT sent as ``Authorization: Bearer``; avatars made with it are that user's.
    timeout
        Seconds to connect and between bytes read, per request.
    max_retries
        How many times one request is repeated after 429/502/503/504 or a broken connection.
    max_retry_wait_s
        The longest ``Retry-After`` honoured by waiting; a longer one is raised at once
        (``RateLimited.retry_after_s`` says how long).
    stop_event
        When set, every wait inside the client ends with ``Interrupted`` (used for Ctrl-C).

    One ``requests.Session`` (keep-alive connection pool) per thread, so a client may be shared by
    the threads of a batch.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0, *,
                 max_retries: int = 5, max_retry_wait_s: float = 300.0,
                 stop_event: threading.Event | None = None, user_agent: str = "avatar-client/0.1"):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait_s = max_retry_wait_s
        self.stop_event = stop_event
        self.user_agent = user_agent
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._rng = random.Random()

    # -- the API ---------------------------------------------------------------------------------

    def submit(self, front: Photo, left: Photo, right: Photo, idempotency_key: str | None = None,
               wait_s: int | None = None) -> Submission:
        """POST /api/avatar/generate with the three photos.

        ``idempotency_key`` defaults to a new UUID4; pass the same key to repeat a submission
        without making a second avatar. ``wait_s`` sends ``Prefer: wait=N``: the server holds the
        request up to N s and returns the finished avatar if it is done by then.

        Raises ``InvalidRequest`` (photos refused, ``details`` per field), ``JobFailed`` (only with
        ``wait_s``: the job ran and failed), ``RateLimited``/``ServiceUnavailable`` once the retries
        are spent, ``TransportError``.
        """
        key = idempotency_key or str(uuid.uuid4())
        photos = {view: _read_photo(view, photo) for view, photo in zip(VIEWS, (front, left, right))}
        headers = {"Idempotency-Key": key}
        timeout = self.timeout
        if wait_s:
            headers["Prefer"] = f"wait={int(wait_s)}"
            timeout = self.timeout + wait_s
        response = self._request("POST", "/api/avatar/generate", headers=headers, timeout=timeout,
                                 files=lambda: {view: (name, data, _content_type(name))
                                                for view, (name, data) in photos.items()})
        data = _data(response)
        return Submission(avatar_id=data["avatarId"], status=data["status"], idempotency_key=key,
                          status_url=data.get("statusUrl", f"/api/avatar/jobs/{data['avatarId']}"),
                          download_url=data["downloadUrl"], data=data)

    def status(self, avatar_id: str) -> JobState:
        """Where the job is: status, stage, progress, per-stage timings, error."""
        return JobState.from_body(_data(self._request("GET", f"/api/avatar/jobs/{avatar_id}")))

    def wait(self, avatar_id: str, timeout: float = 300.0, *, first_poll_s: float = 0.05,
             max_poll_s: float = 2.0, raise_on_failure: bool = True) -> JobState:
        """Poll until the job ends: every ~50 ms at first, backing off to ~2 s, jittered.

        Returns the final state when completed (or always, with ``raise_on_failure=False``).
        Raises ``JobFailed`` (``code``, ``message`` such as "left: no face found"), ``JobCanceled``,
        or ``WaitTimeout`` after ``timeout`` s (the job itself goes on).
        """
        start = time.monotonic()
        backoff = Backoff(first_poll_s, max_poll_s, rng=self._rng)
        while True:
            state = self.status(avatar_id)
            if state.is_terminal:
                if raise_on_failure:
                    raise_for_outcome(state)
                return state
            waited = time.monotonic() - start
            if waited >= timeout:
                raise WaitTimeout(avatar_id, state.status, waited)
            self.pause(min(backoff.next_delay(), timeout - waited))

    def download(self, avatar_id: str, path: str | os.PathLike) -> Path:
        """Stream the GLB to ``path`` through a temporary file in the same folder, then rename it,
        so ``path`` is either absent or complete. Returns ``path``.

        Raises ``Conflict`` (409, not finished yet), ``JobFailed`` (422), ``Gone`` (410), ``NotFound``.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.max_retries + 1):
            response = self._request("GET", f"/api/avatar/download/{avatar_id}", stream=True)
            try:
                _stream_to(response, path)
                return path
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                if attempt == self.max_retries:
                    raise TransportError(f"download of {avatar_id} broke off: {exc}", exc) from exc
                self.pause(self._backoff_delay(attempt))
            finally:
                response.close()
        raise AssertionError("unreachable")

    def info(self, avatar_id: str) -> dict[str, Any]:
        """The contract's info body (method, status, downloadCount, metadata, facialFeatures, …)."""
        return _data(self._request("GET", f"/api/avatar/info/{avatar_id}"))

    def health(self) -> dict[str, Any]:
        """The health report. An unhealthy service (503) still returns its report: check ``status``."""
        try:
            return _data(self._request("GET", "/api/avatar/health", retry=False))
        except ServiceUnavailable as exc:
            if isinstance(exc.details, dict):  # the report of what is down
                return exc.details
            raise

    def cancel(self, avatar_id: str) -> JobState:
        """POST /jobs/<id>/cancel (``Conflict`` if it already ended)."""
        return JobState.from_body(_data(self._request("POST", f"/api/avatar/jobs/{avatar_id}/cancel")))

    def delete(self, avatar_id: str) -> None:
        """DELETE the avatar, its record and files."""
        _data(self._request("DELETE", f"/api/avatar/{avatar_id}"))

    def list_avatars(self, page: int = 1, limit: int = 20) -> dict[str, Any]:
        """The token's avatars, newest first: ``{avatars, page, limit, total}``."""
        return _data(self._request("GET", "/api/avatar", params={"page": page, "limit": limit}))

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._local = threading.local()

    def __enter__(self) -> "AvatarClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self.user_agent
            session.headers["Accept"] = "application/json"
            if self.token:
                session.headers["Authorization"] = f"Bearer {self.token}"
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _request(self, method: str, path: str, *, retry: bool = True, stream: bool = False,
                 headers: dict[str, str] | None = None, timeout: float | None = None,
                 files=None, params: dict[str, Any] | None = None) -> requests.Response:
        """One request with the bounded retries; a 2xx response, or the error it maps to.

        ``files`` is a callable so that each attempt gets fresh upload bodies. A POST is retried
        after a broken connection only because it carries an Idempotency-Key.
        """
        url = self.base_url + path
        safe_to_repeat = method in ("GET", "HEAD", "DELETE") or bool(headers and "Idempotency-Key" in headers)
        attempt = 0
        while True:
            self._check_stop()
            try:
                response = self._session().request(
                    method, url, headers=headers, timeout=timeout or self.timeout, stream=stream,
                    files=files() if files else None, params=params)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if not (retry and safe_to_repeat) or attempt >= self.max_retries:
                    raise TransportError(f"{method} {url} failed after {attempt + 1} attempt(s): "
                                         f"{_short(exc)}", exc) from exc
                self.pause(self._backoff_delay(attempt))
                attempt += 1
                continue
            if response.status_code < 400:
                return response
            in_progress = response.status_code == IN_PROGRESS and method == "POST" and safe_to_repeat
            if retry and (response.status_code in RETRY_STATUSES or in_progress) and attempt < self.max_retries:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if retry_after is None or retry_after <= self.max_retry_wait_s:
                    delay = self._backoff_delay(attempt) if retry_after is None else \
                        retry_after + self._rng.uniform(0, min(1.0, 0.1 * retry_after + 0.05))
                    response.close()
                    self.pause(delay)
                    attempt += 1
                    continue
            raise error_from_response(response)

    def _backoff_delay(self, attempt: int) -> float:
        """0.5 s, 1 s, 2 s, … up to 15 s, with full jitter on the upper half."""
        ceiling = min(15.0, 0.5 * 2 ** attempt)
        return self._rng.uniform(ceiling / 2, ceiling)

    def pause(self, seconds: float) -> None:
        """Sleep; end early with ``Interrupted`` when the stop event is set."""
        if self.stop_event is None:
            time.sleep(seconds)
        elif self.stop_event.wait(seconds):
            raise Interrupted("stopped while waiting")

    def _check_stop(self) -> None:
        if self.stop_event is not None and self.stop_event.is_set():
            raise Interrupted("stopped")


# -- responses -----------------------------------------------------------------------------------

def error_from_response(response: requests.Response) -> ClientError:
    """The typed error for a non-2xx response, with the envelope's message and details.

    A 422 whose details name an error code is a job that ran and failed: ``JobFailed``.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    finally:
        response.close()
    if isinstance(body, dict) and body.get("success") is False and body.get("error"):
        message, details = str(body["error"]), body.get("details")
    else:  # not our envelope: a proxy's page, say
        text = " ".join((response.text or "").split())[:200]
        message = f"HTTP {response.status_code} {response.reason}" + (f": {text}" if text else "")
        details = None
    if response.status_code == 422 and isinstance(details, dict) and details.get("code"):
        return JobFailed(details.get("avatarId"), str(details["code"]), details.get("message") or message,
                         details.get("view"))
    return api_error(response.status_code, message, details,
                     parse_retry_after(response.headers.get("Retry-After")))


def raise_for_outcome(state: JobState) -> None:
    """``JobFailed`` / ``JobCanceled`` for a job that ended without an avatar."""
    if state.status == "failed":
        error = state.error or {}
        raise JobFailed(state.avatar_id, str(error.get("code") or "failed"),
                        str(error.get("message") or "the avatar failed"), error.get("view"))
    if state.status == "canceled":
        raise JobCanceled(state.avatar_id)


def _data(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise ApiError(response.status_code, f"expected JSON from {response.url}, got "
                                             f"{response.headers.get('Content-Type')!r}") from None
    if not isinstance(body, dict) or "data" not in body:
        # health answers 503 with its report in ``details``
        if isinstance(body, dict) and isinstance(body.get("details"), dict):
            return body["details"]
        raise ApiError(response.status_code, f"unexpected response body from {response.url}")
    return body["data"]


def _stream_to(response: requests.Response, path: Path) -> None:
    expected = response.headers.get("Content-Length")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        size = 0
        first = b""
        with os.fdopen(fd, "wb") as out:
            for chunk in response.iter_content(chunk_size=256 * 1024):
                if not first:
                    first = chunk[:4]
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and int(expected) != size:
            raise requests.exceptions.ChunkedEncodingError(
                f"got {size} of {expected} bytes")
        if first != GLB_MAGIC:
            raise ClientError(f"the download is not a GLB file (starts with {first!r})")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_photo(view: str, photo: Photo) -> tuple[str, bytes]:
    """(file name, bytes) for one view: read once, so retries send the same bytes."""
    if isinstance(photo, (bytes, bytearray, memoryview)):
        return f"{view}.jpg", bytes(photo)
    path = Path(photo)
    return path.name, path.read_bytes()


def _content_type(filename: str) -> str:
    # The server decides by content; this is only a courtesy to proxies and logs.
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "…"
