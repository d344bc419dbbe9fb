"""Slow clients and long waits cannot starve the API: 50 connections sending headers or bodies a
byte at a time and 16 long polls leave /health answering in under a second and a normal upload
accepted; an upload that trickles past UPLOAD_TIMEOUT_S is cut off with a 408."""
from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from service_stack import multipart, start_api, start_redis_and_store

from jobs import localstack
from jobs.settings import Settings
from jobs.store import JobStore

UPLOAD_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    root = tmp_path_factory.mktemp("slow")
    processes: list = []
    try:
        settings = start_redis_and_store(root, processes, api_workers=2, upload_timeout_s=UPLOAD_TIMEOUT_S)
        yield settings, start_api(settings, root, processes)
    finally:
        for process in reversed(processes):
            localstack.stop(process)


class Trickler:
    """Connections that each send the start of a request, then a byte every ``every_s``."""

    def __init__(self, port: int, heads: list[bytes], every_s: float = 0.5):
        self.sockets = [socket.create_connection(("127.0.0.1", port)) for _ in heads]
        for sock, head in zip(self.sockets, heads):
            sock.sendall(head)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._trickle, args=(every_s,), daemon=True)
        self.thread.start()

    def _trickle(self, every_s: float) -> None:
        while not self.stop.wait(every_s):
            for sock in self.sockets:
                try:
                    sock.send(b"x")
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


def _slow_header(port: int) -> bytes:
    return f"GET /api/avatar/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode()


def _slow_body(port: int) -> bytes:
    return (f"POST /api/avatar/generate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: multipart/form-data; boundary=slow\r\nContent-Length: 3000000\r\n\r\n"
            "--slow\r\nContent-Disposition: form-data; name=\"front\"; filename=\"f.jpg\"\r\n\r\n").encode()


def test_fifty_slow_connections_and_sixteen_long_polls_leave_the_api_answering(
        api: tuple[Settings, str], astronaut_jpeg: bytes) -> None:
    settings, base_url = api
    port = settings.port
    slow = Trickler(port, [_slow_header(port)] * 25 + [_slow_body(port)] * 25)
    store = JobStore.from_settings(settings)
    waiting_ids = [str(uuid.uuid4()) for _ in range(16)]
    for avatar_id in waiting_ids:
        store.create(avatar_id, owner=None, uploads={})  # never queued: each poll waits its full 6 s
    answered: list[int] = []

    def long_poll(avatar_id: str) -> None:
        response = requests.get(f"{base_url}/api/avatar/jobs/{avatar_id}", headers={"Prefer": "wait=6"}, timeout=30)
        answered.append(response.status_code)

    polls = [threading.Thread(target=long_poll, args=(i,), daemon=True) for i in waiting_ids]
    try:
        for poll in polls:
            poll.start()
        time.sleep(1.0)  # every slow connection and poll is in the server by now
        for _ in range(3):
            started = time.monotonic()
            health = requests.get(f"{base_url}/api/avatar/health", timeout=5)
            assert health.status_code == 200 and time.monotonic() - started < 1.0
        posted = requests.post(f"{base_url}/api/avatar/generate", timeout=10,
                               files=multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg))
        assert posted.status_code == 202, posted.text
        for poll in polls:
            poll.join(15)
        assert answered == [200] * 16
    finally:
        slow.close()


def test_an_upload_slower_than_the_limit_is_cut_off_with_a_408(api: tuple[Settings, str]) -> None:
    settings, _base_url = api
    slow = Trickler(settings.port, [_slow_body(settings.port)], every_s=0.2)
    try:
        sock = slow.sockets[0]
        sock.settimeout(UPLOAD_TIMEOUT_S + 5)
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        waited = time.monotonic() - started
    finally:
        slow.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert UPLOAD_TIMEOUT_S - 0.5 <= waited < UPLOAD_TIMEOUT_S + 3
    assert b'"success":false' in answer and b"took longer than 3 s" in answer
