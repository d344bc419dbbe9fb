"""What a default configuration exposes: the public health body, CORS, and the refusal to serve
other machines with development secrets. The API runs in this process on the stack's Redis and
store, so that each test can be a caller from another address."""
from __future__ import annotations

from datetime import timedelta

import pytest
from service_stack import LocalStack

from api import create_app
from api.auth import mint_token
from jobs.settings import UnsafeExposure

REMOTE = {"REMOTE_ADDR": "203.0.113.7"}
LOCAL = {"REMOTE_ADDR": "127.0.0.1"}


@pytest.fixture(scope="module")
def app(stack: LocalStack):
    return create_app(stack.settings)


def _bearer(stack: LocalStack, user: str, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(stack.settings, user, timedelta(hours=1), admin=admin)}"}


def test_a_remote_caller_sees_only_the_status(app) -> None:
    response = app.test_client().get("/api/avatar/health", environ_base=REMOTE)
    assert response.status_code == 200
    assert set(response.get_json()["data"]) == {"status", "timestamp"}
    assert response.get_json()["data"]["status"] in ("healthy", "degraded")


def test_a_user_token_does_not_open_the_detailed_report(stack: LocalStack, app) -> None:
    response = app.test_client().get("/api/avatar/health", environ_base=REMOTE, headers=_bearer(stack, "bob"))
    assert set(response.get_json()["data"]) == {"status", "timestamp"}


@pytest.mark.parametrize("caller", ["loopback", "admin token"])
def test_the_detailed_report_is_for_this_machine_or_an_admin(stack: LocalStack, app, caller: str) -> None:
    environ, headers = (LOCAL, {}) if caller == "loopback" else (REMOTE, _bearer(stack, "ops", admin=True))
    data = app.test_client().get("/api/avatar/health", environ_base=environ, headers=headers).get_json()["data"]
    assert {"model", "workers", "queues", "redis", "mongodb", "memory", "disk"} <= set(data)
    assert data["disk"]["backend"] == "volume" and data["disk"]["path"] == str(stack.files.storage.root)


def test_an_invalid_token_on_health_is_401(app) -> None:
    response = app.test_client().get("/api/avatar/health", environ_base=REMOTE,
                                     headers={"Authorization": "Bearer nonsense"})
    assert response.status_code == 401 and response.get_json()["success"] is False


def test_no_cross_origin_access_by_default(app) -> None:
    client = app.test_client()
    preflight = client.options("/api/avatar/generate", environ_base=REMOTE, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in preflight.headers
    read = client.get("/api/avatar/health", environ_base=REMOTE, headers={"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in read.headers


def test_allowed_origins_get_cors_headers_and_others_do_not(stack: LocalStack) -> None:
    client = create_app(stack.settings.replace(cors_allowed_origins="https://app.example")).test_client()
    preflight = client.options("/api/avatar/generate", environ_base=REMOTE, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Prefer, Idempotency-Key"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "prefer", "idempotency-key"} <= {h.strip() for h in allowed.split(",")}

    read = client.get("/api/avatar/health", environ_base=REMOTE, headers={"Origin": "https://app.example"})
    assert read.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Location" in read.headers["Access-Control-Expose-Headers"]

    other = client.get("/api/avatar/health", environ_base=REMOTE, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_the_app_refuses_a_public_host_with_development_secrets(stack: LocalStack) -> None:
    exposed = stack.settings.replace(host="0.0.0.0")  # the stack's upload key, the default JWT secret
    with pytest.raises(UnsafeExposure, match="JWT_SECRET_KEY"):
        create_app(exposed)
