"""Idempotency-Key and signed webhooks against the real stack (gunicorn, Redis, the store, a worker).

Webhooks go to a real HTTP server on loopback in this process; the stack allows private targets
(``WEBHOOK_ALLOW_PRIVATE=true``), which is what makes that possible. The refusal of private targets
is tested in ``tests/test_webhooks.py`` and, for literal addresses, at submission below via a
stack-independent check.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from service_stack import LocalStack, multipart

from jobs.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature


def make_token(stack: LocalStack) -> str:
    from flask_jwt_extended import create_access_token

    from api import create_app

    with create_app(stack.settings).app_context():
        return create_access_token(identity=f"idem-{uuid.uuid4()}")


def post(stack: LocalStack, files, headers=None, data=None) -> requests.Response:
    return requests.post(stack.url("/api/avatar/generate"), files=files, data=data, headers=headers or {},
                         timeout=70)


def jobs_of(stack: LocalStack, token: str) -> list[str]:
    response = requests.get(stack.url("/api/avatar?limit=100"), headers={"Authorization": f"Bearer {token}"},
                            timeout=5)
    assert response.status_code == 200, response.text
    return [item["avatarId"] for item in response.json()["data"]["avatars"]]


def wait_until_ended(stack: LocalStack, avatar_id: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while stack.store.get(avatar_id).status.value not in ("completed", "failed", "canceled"):
        assert time.monotonic() < deadline, f"{avatar_id} did not end in {timeout_s} s"
        time.sleep(0.05)


# -- Idempotency-Key -----------------------------------------------------------------------------

def test_a_repeated_key_returns_the_same_job(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    token = make_token(stack)
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
    first = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg), headers)
    assert first.status_code == 202, first.text
    again = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg), headers)
    assert again.status_code == 202, again.text
    assert again.json()["data"]["avatarId"] == first.json()["data"]["avatarId"]
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert jobs_of(stack, token) == [first.json()["data"]["avatarId"]]

    # Once done, a repeat under Prefer: wait gets the completed body of that same job.
    wait_until_ended(stack, first.json()["data"]["avatarId"])
    done = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg), {**headers, "Prefer": "wait=10"})
    assert done.status_code == 200, done.text
    assert done.json()["data"]["avatarId"] == first.json()["data"]["avatarId"]
    assert done.json()["data"]["status"] == "completed" and done.json()["data"]["glbInfo"]["size"] > 1000
    assert len(jobs_of(stack, token)) == 1


def test_the_same_key_with_another_body_is_422(stack: LocalStack, astronaut_jpeg: bytes,
                                               grace_hopper_jpeg: bytes) -> None:
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    assert post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg), headers).status_code == 202
    other = post(stack, multipart(grace_hopper_jpeg, astronaut_jpeg, astronaut_jpeg), headers)
    assert other.status_code == 422, other.text
    assert "already used for a different request" in other.json()["error"]


def test_keys_are_per_caller(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    """Two users who happen to pick the same key get a job each."""
    key = str(uuid.uuid4())
    ids = []
    for _ in range(2):
        token = make_token(stack)
        response = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg),
                        {"Authorization": f"Bearer {token}", "Idempotency-Key": key})
        assert response.status_code == 202, response.text
        ids.append(response.json()["data"]["avatarId"])
    assert ids[0] != ids[1]


def test_concurrent_identical_posts_create_one_job(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    token = make_token(stack)
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
    start = threading.Barrier(8)

    def submit(_: int) -> requests.Response:
        start.wait()
        return post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg), headers)

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(submit, range(8)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {202, 409}, [r.text for r in responses]
    ids = {r.json()["data"]["avatarId"] for r in responses if r.status_code == 202}
    assert len(ids) == 1
    assert jobs_of(stack, token) == list(ids)
    for conflict in (r for r in responses if r.status_code == 409):
        assert conflict.headers["Retry-After"] == "1"
        assert "still being processed" in conflict.json()["error"]


def test_a_refused_request_does_not_use_up_its_key(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    refused = post(stack, multipart(astronaut_jpeg, b"not a photo", astronaut_jpeg), headers)
    assert refused.status_code in (400, 415), refused.text
    fixed = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg), headers)
    assert fixed.status_code == 202, fixed.text


@pytest.mark.parametrize("key", ["x" * 256, "tab\there", "ключ", '""'])
def test_unusable_keys_are_400(stack: LocalStack, astronaut_jpeg: bytes, key: str) -> None:
    response = requests.post(stack.url("/api/avatar/generate"),
                             files=multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg),
                             headers={"Idempotency-Key": key.encode("utf-8")}, timeout=10)
    assert response.status_code == 400, response.text
    assert "Idempotency-Key" in response.json()["error"]


# -- webhooks ------------------------------------------------------------------------------------

class Receiver:
    """A loopback HTTP server that records each POST and answers with the next queued status."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.requests.append({"headers": dict(self.headers), "body": body, "answered": status,
                                          "at": time.monotonic()})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if 200 <= status < 300:
                    receiver.arrived.set()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/avatar?tenant=7"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver([500])  # the first attempt fails: the task must retry
    yield rx
    rx.close()


def test_a_completed_job_posts_a_signed_webhook_with_retries(stack: LocalStack, astronaut_jpeg: bytes,
                                                             receiver: Receiver) -> None:
    response = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg),
                    data={"callbackUrl": receiver.url})
    assert response.status_code == 202, response.text
    avatar_id = response.json()["data"]["avatarId"]
    assert receiver.arrived.wait(30), f"no webhook delivered; got {receiver.requests}"

    assert [r["answered"] for r in receiver.requests] == [500, 200]
    delivered = receiver.requests[-1]
    assert verify_signature(delivered["body"], delivered["headers"][SIGNATURE_HEADER], stack.settings.webhook_secret)
    assert not verify_signature(delivered["body"] + b" ", delivered["headers"][SIGNATURE_HEADER],
                                stack.settings.webhook_secret)
    event = json.loads(delivered["body"])
    assert event["event"] == "avatar.completed" and event["avatarId"] == avatar_id
    assert event["status"] == "completed"
    assert event["data"]["downloadUrl"] == f"/api/avatar/download/{avatar_id}"
    assert str(event["timestamp"]) == delivered["headers"][TIMESTAMP_HEADER]
    assert abs(event["timestamp"] - time.time()) < 60
    # The retry came after the back-off, and the job records how delivery went.
    assert receiver.requests[1]["at"] - receiver.requests[0]["at"] >= stack.settings.webhook_backoff_s * 0.9
    deadline = time.monotonic() + 5
    while (stack.store.get(avatar_id).doc.get("webhook") or {}).get("state") != "delivered":
        assert time.monotonic() < deadline, stack.store.get(avatar_id).doc.get("webhook")
        time.sleep(0.05)
    assert stack.store.get(avatar_id).doc["webhook"]["attempts"] == 2


def test_a_failed_job_posts_a_failure_event(stack: LocalStack, astronaut_jpeg: bytes, coffee_jpeg: bytes) -> None:
    rx = Receiver([])
    try:
        response = post(stack, multipart(coffee_jpeg, astronaut_jpeg, astronaut_jpeg), data={"callbackUrl": rx.url})
        assert response.status_code == 202, response.text
        assert rx.arrived.wait(30)
        event = json.loads(rx.requests[0]["body"])
        assert event["event"] == "avatar.failed" and event["status"] == "failed"
        assert event["data"]["error"]["code"] == "no_face" and event["data"]["error"]["view"] == "front"
    finally:
        rx.close()


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "http:///no-host", "http://user:pw@example.com/",
                                 "https://example.com/" + "a" * 2100])
def test_unusable_callback_urls_are_400(stack: LocalStack, astronaut_jpeg: bytes, url: str) -> None:
    response = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg), data={"callbackUrl": url})
    assert response.status_code == 400, response.text
    assert "callbackUrl" in response.json()["error"]


def test_health_reports_queues_and_worker_processes(stack: LocalStack) -> None:
    data = requests.get(stack.url("/api/avatar/health"), timeout=5).json()["data"]
    for queue in ("cpu", "gpu"):
        entry = data["queues"][queue]
        assert entry["depth"] >= 0 and entry["processes"] == 2 and entry["hosts"]
        assert "oldestWaitingSeconds" in entry
    process = data["workers"]["processes"][0]
    assert process["pid"] > 0 and process["hostname"] and "CPUExecutionProvider" in process["providers"]


class TricklingReceiver:
    """A loopback server that answers each POST one byte every ``every_s`` seconds, for ever."""

    def __init__(self, every_s: float = 1.0):
        self.connections = 0
        self.stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.connections += 1
                try:
                    self.wfile.write(b"H")
                    while not receiver.stop.wait(every_s):
                        self.wfile.write(b"T")
                        self.wfile.flush()
                except OSError:
                    pass  # the sender gave up

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/slow"

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_receiver_that_answers_a_byte_at_a_time_delays_no_job(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    """Webhooks go to their own queue and workers, and each attempt ends after WEBHOOK_TIMEOUT_S in
    all: jobs whose webhooks trickle finish as fast as any, and the attempt is recorded as too slow."""
    slow = TricklingReceiver(every_s=1.0)
    files = multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg)
    try:
        with_hooks = [post(stack, files, data={"callbackUrl": slow.url}).json()["data"]["avatarId"]
                      for _ in range(6)]
        started = time.monotonic()
        plain = [post(stack, files, headers={"Prefer": "wait=30"}) for _ in range(4)]
        assert [r.status_code for r in plain] == [200] * 4
        # Four jobs one after another take a second or two on this machine; with webhooks on the
        # stage workers they would wait behind 6 receivers trickling for WEBHOOK_TIMEOUT_S each.
        assert time.monotonic() - started < stack.settings.webhook_timeout_s
        for avatar_id in with_hooks:
            wait_until_ended(stack, avatar_id)
        deadline = time.monotonic() + 3 * stack.settings.webhook_timeout_s
        hook = {}
        while hook.get("lastError") is None and time.monotonic() < deadline:
            hook = stack.store.get(with_hooks[0]).doc.get("webhook") or {}
            time.sleep(0.1)
        assert hook["state"] == "retrying"
        assert hook["lastError"] == f"the receiver took longer than {stack.settings.webhook_timeout_s:g} s to answer"
    finally:
        slow.close()
