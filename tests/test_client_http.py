"""``AvatarClient`` retry and error behaviour against a scripted HTTP server.

A fake, on purpose: rate limiting, a 503 from a proxy, a connection dropped after the request was
sent and a truncated download cannot be caused on demand on the real stack. What the client does
with a healthy real service is tested in tests/integration/test_batch_client.py.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from client import (AvatarClient, Interrupted, JobFailed, RateLimited, ServiceUnavailable, TransportError)

ACCEPTED = {"success": True, "data": {"avatarId": "a1", "status": "queued", "statusUrl": "/api/avatar/jobs/a1",
                                      "downloadUrl": "/api/avatar/download/a1"}}
Reply = Callable[[BaseHTTPRequestHandler], None]


def json_reply(status: int, body: object, headers: dict[str, str] | None = None) -> Reply:
    def send(handler: BaseHTTPRequestHandler) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
    return send


def raw_reply(status: int, data: bytes, content_type: str, length: int | None = None) -> Reply:
    def send(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data) if length is None else length))
        handler.end_headers()
        handler.wfile.write(data)
        handler.close_connection = True
    return send


def drop_connection(handler: BaseHTTPRequestHandler) -> None:
    """Read the request, then close the socket without answering (a crash or a proxy timeout)."""
    handler.close_connection = True
    handler.connection.shutdown(2)


class ScriptedServer:
    """Answers each request with the next scripted reply for its method and path; records the requests."""

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                server.requests.append({"method": self.command, "path": path, "headers": dict(self.headers),
                                        "body": body})
                replies = server.script.get((self.command, path)) or [json_reply(500, {"success": False,
                                                                                        "error": "unscripted"})]
                (replies.pop(0) if len(replies) > 1 else replies[0])(self)

            do_GET = do_POST = do_DELETE = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.script[(method, path)] = list(replies)

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if (r["method"], r["path"]) == (method, path))


@pytest.fixture()
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    scripted.thread.start()
    yield scripted
    scripted.httpd.shutdown()
    scripted.httpd.server_close()


PHOTOS = (b"front-bytes", b"left-bytes", b"right-bytes")


def test_429_is_waited_out_and_the_post_repeated_with_the_same_key(server: ScriptedServer) -> None:
    limited = json_reply(429, {"success": False, "error": "Too many requests"}, {"Retry-After": "0"})
    server.on("POST", "/api/avatar/generate", limited, limited, json_reply(202, ACCEPTED))
    submission = AvatarClient(server.url).submit(*PHOTOS)
    assert submission.avatar_id == "a1"
    posts = [r for r in server.requests if r["method"] == "POST"]
    assert len(posts) == 3
    assert {r["headers"]["Idempotency-Key"] for r in posts} == {submission.idempotency_key}
    assert all(b"left-bytes" in r["body"] for r in posts)  # each attempt carries the photos again


def test_a_keyed_post_still_in_progress_is_asked_again(server: ScriptedServer) -> None:
    busy = json_reply(409, {"success": False, "error": "A request with this Idempotency-Key is in progress"},
                      {"Retry-After": "0"})
    server.on("POST", "/api/avatar/generate", busy, json_reply(202, ACCEPTED))
    assert AvatarClient(server.url).submit(*PHOTOS, idempotency_key="k").avatar_id == "a1"
    assert server.count("POST", "/api/avatar/generate") == 2


def test_a_post_whose_connection_dropped_is_repeated_with_the_same_key(server: ScriptedServer) -> None:
    server.on("POST", "/api/avatar/generate", drop_connection, json_reply(202, ACCEPTED))
    submission = AvatarClient(server.url).submit(*PHOTOS, idempotency_key="my-key")
    assert submission.idempotency_key == "my-key"
    assert [r["headers"]["Idempotency-Key"] for r in server.requests] == ["my-key", "my-key"]


def test_503_is_retried_a_bounded_number_of_times_then_raised_with_the_message(server: ScriptedServer) -> None:
    server.on("GET", "/api/avatar/jobs/a1",
              json_reply(503, {"success": False, "error": "The service cannot reach its job store"}))
    start = time.monotonic()
    with pytest.raises(ServiceUnavailable) as refused:
        AvatarClient(server.url, max_retries=2).status("a1")
    assert refused.value.status == 503 and refused.value.message == "The service cannot reach its job store"
    assert server.count("GET", "/api/avatar/jobs/a1") == 3
    assert time.monotonic() - start < 3  # jittered back-off 0.25-0.5 s, then 0.5-1 s


def test_a_retry_after_beyond_the_limit_is_raised_at_once(server: ScriptedServer) -> None:
    server.on("POST", "/api/avatar/generate",
              json_reply(429, {"success": False, "error": "Rate limit: 10 generations per 15 minutes"},
                         {"Retry-After": "840"}))
    with pytest.raises(RateLimited) as limited:
        AvatarClient(server.url, max_retry_wait_s=60).submit(*PHOTOS)
    assert limited.value.retry_after_s == 840 and "10 generations" in limited.value.message
    assert server.count("POST", "/api/avatar/generate") == 1


def test_a_stop_event_ends_a_retry_wait(server: ScriptedServer) -> None:
    server.on("POST", "/api/avatar/generate",
              json_reply(429, {"success": False, "error": "slow down"}, {"Retry-After": "30"}))
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    start = time.monotonic()
    with pytest.raises(Interrupted):
        AvatarClient(server.url, stop_event=stop).submit(*PHOTOS)
    assert time.monotonic() - start < 2


def test_a_page_that_is_not_the_envelope_still_reads_well(server: ScriptedServer) -> None:
    server.on("GET", "/api/avatar/info/a1", raw_reply(502, b"<html><h1>502 Bad Gateway</h1></html>", "text/html"))
    with pytest.raises(ServiceUnavailable, match="HTTP 502 Bad Gateway: <html><h1>502 Bad Gateway"):
        AvatarClient(server.url, max_retries=0).info("a1")


def test_an_unreachable_server_is_a_transport_error() -> None:
    with pytest.raises(TransportError, match="failed after 1 attempt"):
        AvatarClient("http://127.0.0.1:9", max_retries=0, timeout=2).status("a1")


def test_a_failed_job_raises_job_failed_with_the_servers_message(server: ScriptedServer) -> None:
    failed = {"success": True, "data": {"avatarId": "a1", "status": "failed", "stage": "preprocessing",
                                        "progress": 0.2, "timings": {},
                                        "error": {"code": "no_face", "message": "left: no face found",
                                                  "view": "left"}}}
    running = {"success": True, "data": {**failed["data"], "status": "preprocessing", "error": None}}
    server.on("GET", "/api/avatar/jobs/a1", json_reply(200, running), json_reply(200, failed))
    with pytest.raises(JobFailed) as error:
        AvatarClient(server.url).wait("a1", timeout=5)
    assert (error.value.code, error.value.message, error.value.view) == ("no_face", "left: no face found", "left")


def test_a_truncated_download_leaves_no_file(server: ScriptedServer, tmp_path: Path) -> None:
    glb = b"glTF" + b"\0" * 1000
    server.on("GET", "/api/avatar/download/a1", raw_reply(200, glb[:500], "model/gltf-binary", length=len(glb)),
              raw_reply(200, glb, "model/gltf-binary"))
    target = tmp_path / "a.glb"
    AvatarClient(server.url).download("a1", target)
    assert target.read_bytes() == glb
    assert [p.name for p in tmp_path.iterdir()] == ["a.glb"]

    server.on("GET", "/api/avatar/download/a1", raw_reply(200, glb[:500], "model/gltf-binary", length=len(glb)))
    with pytest.raises(TransportError, match="broke off"):
        AvatarClient(server.url, max_retries=1).download("a1", tmp_path / "b.glb")
    assert [p.name for p in tmp_path.iterdir()] == ["a.glb"]
