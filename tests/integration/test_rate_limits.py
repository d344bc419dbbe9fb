"""The contract's rate limits (10 generations / 100 requests per 15 minutes per client IP), counted
in the stack's real Redis by an API built with the default limits (the shared stack raises them).

The app runs in this process (Flask's test client) so that each test can be its own client address;
it uses the stack's Redis, store and data directory, and its jobs go to the stack's real worker.
"""
from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from service_stack import LocalStack

from api import create_app
from jobs.settings import Settings

_addresses = (f"198.51.100.{i}" for i in itertools.count(1))
RETRY_MESSAGE = re.compile(r"^Too many requests: at most 10 avatar generations per 15 minutes from one client\. "
                           r"Try again in (\d+ min(?: \d+ s)?|\d+ s) \(Retry-After: (\d+)\)\.$")


def _app(stack: LocalStack, **changes):
    defaults = Settings()
    settings = stack.settings.replace(rate_limit_generate=defaults.rate_limit_generate,
                                      rate_limit_default=defaults.rate_limit_default, **changes)
    return create_app(settings)


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> Iterator[FlaskClient]:
    yield _app(stack).test_client()


@pytest.fixture(scope="module")
def proxied_client(stack: LocalStack) -> Iterator[FlaskClient]:
    yield _app(stack, trusted_proxies=1).test_client()


def _generate(client: FlaskClient, address: str, jpeg: bytes, headers: dict[str, str] | None = None):
    data = {view: (io.BytesIO(jpeg), f"{view}.jpg") for view in ("front", "left", "right")}
    return client.post("/api/avatar/generate", data=data, content_type="multipart/form-data",
                       environ_base={"REMOTE_ADDR": address}, headers=headers or {}, buffered=True)


def test_the_eleventh_generation_in_the_window_is_429_with_retry_after(
        stack: LocalStack, client: FlaskClient, astronaut_jpeg: bytes) -> None:
    address = next(_addresses)
    for i in range(10):
        response = _generate(client, address, astronaut_jpeg)
        assert response.status_code == 202, (i, response.get_json())
        # Each answer says how many generations are left, so a client can pace itself.
        assert response.headers["RateLimit-Limit"] == "10"
        assert response.headers["RateLimit-Remaining"] == str(9 - i)
        assert response.headers["RateLimit-Policy"] == "10;w=900"
        assert 0 < int(response.headers["RateLimit-Reset"]) <= 900
        assert "Retry-After" not in response.headers
    refused = _generate(client, address, astronaut_jpeg)
    assert refused.status_code == 429
    assert refused.headers["RateLimit-Remaining"] == "0"
    body = refused.get_json()
    assert body["success"] is False
    match = RETRY_MESSAGE.match(body["error"])
    assert match, body["error"]
    retry_after = int(refused.headers["Retry-After"])
    assert 0 < retry_after <= 15 * 60 and int(match.group(2)) == retry_after

    # Another client is not affected, and reads by the first are still allowed (100 per window).
    assert _generate(client, next(_addresses), astronaut_jpeg).status_code == 202
    assert client.get("/api/avatar/jobs/00000000-0000-4000-8000-000000000000",
                      environ_base={"REMOTE_ADDR": address}).status_code == 404

    # The refusal is in the audit log.
    record = stack.audit_record(refused.headers["X-Request-Id"])
    assert record["operation"] == "generate" and record["status"] == 429 and record["success"] is False
    assert record["errorCode"] == "rate_limited" and record["ip"] == address


def test_reads_report_the_request_limit_and_health_is_not_limited(client: FlaskClient) -> None:
    address = {"REMOTE_ADDR": next(_addresses)}
    first = client.get("/api/avatar/jobs/00000000-0000-4000-8000-000000000000", environ_base=address)
    assert first.headers["RateLimit-Limit"] == "100" and first.headers["RateLimit-Remaining"] == "99"
    assert first.headers["RateLimit-Policy"] == "100;w=900"
    assert "RateLimit-Limit" not in client.get("/api/avatar/health", environ_base=address).headers


def test_the_101st_request_in_the_window_is_429(client: FlaskClient) -> None:
    address = next(_addresses)
    url = "/api/avatar/info/00000000-0000-4000-8000-000000000000"
    for _ in range(100):
        assert client.get(url, environ_base={"REMOTE_ADDR": address}).status_code == 404
    refused = client.get(url, environ_base={"REMOTE_ADDR": address})
    assert refused.status_code == 429
    assert refused.get_json()["error"].startswith("Too many requests: at most 100 requests per 15 minutes")
    assert int(refused.headers["Retry-After"]) > 0
    # Health is never limited (monitors poll it).
    assert client.get("/api/avatar/health", environ_base={"REMOTE_ADDR": address}).status_code == 200


def test_a_spoofed_x_forwarded_for_does_not_escape_the_limit(client: FlaskClient, astronaut_jpeg: bytes) -> None:
    address = next(_addresses)
    statuses = [_generate(client, address, astronaut_jpeg, {"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                for i in range(11)]
    assert statuses == [202] * 10 + [429]


def test_behind_a_trusted_proxy_the_address_it_saw_is_the_client(
        proxied_client: FlaskClient, astronaut_jpeg: bytes) -> None:
    """TRUSTED_PROXIES=1: the proxy's own entry (the rightmost) names the client; what the client
    wrote to the left of it changes nothing."""
    proxy = next(_addresses)
    client_ip = next(_addresses)
    statuses = [_generate(proxied_client, proxy, astronaut_jpeg,
                          {"X-Forwarded-For": f"203.0.113.{i}, {client_ip}"}).status_code for i in range(11)]
    assert statuses == [202] * 10 + [429]
    # A different client behind the same proxy has its own window.
    other = next(_addresses)
    assert _generate(proxied_client, proxy, astronaut_jpeg, {"X-Forwarded-For": other}).status_code == 202
