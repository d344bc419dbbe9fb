"""Every error the API answers is the envelope ``{success: false, error, details}`` (``details``
present, null when there is nothing more), whatever produced it: our views, Werkzeug's routing and
body limits, the JWT layer, the rate limiter, or an unexpected exception."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
import requests
from service_stack import LocalStack, multipart

from api import create_app
from api.auth import mint_token

BAD_TOKEN = {"Authorization": "Bearer not-a-token"}


def assert_envelope(response: requests.Response | object, status: int) -> dict:
    assert response.status_code == status, response.text if hasattr(response, "text") else response
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json() if callable(getattr(response, "json", None)) else response.get_json()
    assert set(body) == {"success", "error", "details"}, body
    assert body["success"] is False and isinstance(body["error"], str) and len(body["error"]) > 10
    return body


def _queued_forever(stack: LocalStack) -> str:
    avatar_id = str(uuid.uuid4())
    stack.store.create(avatar_id, owner=None, uploads={})
    return avatar_id


CASES: dict[str, tuple[int, Callable[[LocalStack, bytes], requests.Response]]] = {
    "400 invalid photos": (400, lambda s, jpeg: requests.post(
        s.url("/api/avatar/generate"), files=multipart(jpeg, b"GIF89a" + bytes(100), jpeg), timeout=10)),
    "400 bad page": (400, lambda s, jpeg: requests.get(s.url("/api/avatar?page=x"), headers=_token(s), timeout=5)),
    "401 invalid token": (401, lambda s, jpeg: requests.get(s.url("/api/avatar"), headers=BAD_TOKEN, timeout=5)),
    "401 anonymous list": (401, lambda s, jpeg: requests.get(s.url("/api/avatar"), timeout=5)),
    "404 unknown route": (404, lambda s, jpeg: requests.get(s.url("/api/nothing-here"), timeout=5)),
    "404 unknown avatar": (404, lambda s, jpeg: requests.get(s.url(f"/api/avatar/info/{uuid.uuid4()}"), timeout=5)),
    "405 wrong method": (405, lambda s, jpeg: requests.put(s.url("/api/avatar/generate"), timeout=5)),
    "409 cancel twice": (409, lambda s, jpeg: _cancel_twice(s)),
    "413 body over the limit": (413, lambda s, jpeg: requests.post(
        s.url("/api/avatar/generate"), data=b"x" * (32 * 1024 * 1024),
        headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=30)),
    "415 not multipart": (415, lambda s, jpeg: requests.post(s.url("/api/avatar/generate"), json={"front": 1},
                                                           timeout=5)),
}


def _token(stack: LocalStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(stack.settings, 'envelope-tester', timedelta(hours=1))}"}


def _cancel_twice(stack: LocalStack) -> requests.Response:
    avatar_id = _queued_forever(stack)
    requests.post(stack.url(f"/api/avatar/jobs/{avatar_id}/cancel"), timeout=5)
    return requests.post(stack.url(f"/api/avatar/jobs/{avatar_id}/cancel"), timeout=5)


@pytest.mark.parametrize("name", list(CASES))
def test_each_error_status_is_the_envelope(stack: LocalStack, astronaut_jpeg: bytes, name: str) -> None:
    status, send = CASES[name]
    assert_envelope(send(stack, astronaut_jpeg), status)


def test_405_says_which_methods_to_use(stack: LocalStack) -> None:
    response = requests.put(stack.url("/api/avatar/generate"), timeout=5)
    body = assert_envelope(response, 405)
    assert response.headers["Allow"] == "OPTIONS, POST" and "use OPTIONS, POST" in body["error"]


@pytest.fixture(scope="module")
def app_with_a_broken_route(stack: LocalStack):
    """The API in this process, with one extra route that raises: a bug cannot be caused on purpose
    in the real routes, so this stands in for one (the handler under test is the real one)."""
    app = create_app(stack.settings.replace(rate_limit_default="2 per 15 minutes"))

    @app.get("/api/avatar/broken-for-the-test")
    def broken():
        raise RuntimeError("a bug")

    return app


def test_an_unexpected_exception_is_a_500_envelope(app_with_a_broken_route) -> None:
    client = app_with_a_broken_route.test_client()
    response = client.get("/api/avatar/broken-for-the-test", environ_base={"REMOTE_ADDR": "192.0.2.10"})
    body = assert_envelope(response, 500)
    assert "a bug" not in body["error"] and body["details"] is None


def test_a_rate_limited_request_is_a_429_envelope(app_with_a_broken_route) -> None:
    client = app_with_a_broken_route.test_client()
    address = {"REMOTE_ADDR": f"192.0.2.{uuid.uuid4().int % 200 + 20}"}
    for _ in range(2):
        client.get(f"/api/avatar/info/{uuid.uuid4()}", environ_base=address)
    response = client.get(f"/api/avatar/info/{uuid.uuid4()}", environ_base=address)
    assert_envelope(response, 429)
    assert int(response.headers["Retry-After"]) > 0
