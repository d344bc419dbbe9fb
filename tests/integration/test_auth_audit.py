"""Bearer tokens and ownership over the real stack, and the audit record every request leaves."""
from __future__ import annotations

import io
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import jwt
import pytest
import requests
from service_stack import LocalStack, multipart

from api import create_app
from api.auth import mint_token

OWNER_SCOPED = [("GET", "/api/avatar/jobs/{id}"), ("GET", "/api/avatar/info/{id}"),
                ("GET", "/api/avatar/download/{id}"), ("POST", "/api/avatar/jobs/{id}/cancel"),
                ("DELETE", "/api/avatar/{id}")]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def tokens(stack: LocalStack) -> dict[str, str]:
    return {user: mint_token(stack.settings, user, timedelta(hours=1)) for user in ("alice", "bob")}


@pytest.fixture(scope="module")
def alices_avatar(stack: LocalStack, tokens: dict[str, str], astronaut_jpeg: bytes) -> str:
    response = requests.post(stack.url("/api/avatar/generate"),
                             files=multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg),
                             headers={**bearer(tokens["alice"]), "Prefer": "wait=30"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["data"]["avatarId"]


@pytest.mark.parametrize("method,path", OWNER_SCOPED)
def test_another_users_avatar_is_403_on_every_owner_scoped_route(
        stack: LocalStack, tokens: dict[str, str], alices_avatar: str, method: str, path: str) -> None:
    url = stack.url(path.format(id=alices_avatar))
    for headers in (bearer(tokens["bob"]), {}):  # another user, and an anonymous caller
        response = requests.request(method, url, headers=headers, timeout=10)
        assert response.status_code == 403, response.text
        assert response.json() == {"success": False, "error": "This avatar belongs to another user: sign in "
                                                              "as its owner to use it.", "details": None}
    assert stack.store.get(alices_avatar).doc["owner"] == "alice"


def test_the_owner_reads_downloads_lists_and_deletes(stack: LocalStack, tokens: dict[str, str],
                                                      astronaut_jpeg: bytes) -> None:
    alice = bearer(tokens["alice"])
    made = requests.post(stack.url("/api/avatar/generate"), files=multipart(astronaut_jpeg, astronaut_jpeg,
                                                                            astronaut_jpeg),
                         headers={**alice, "Prefer": "wait=30"}, timeout=60).json()["data"]["avatarId"]
    assert requests.get(stack.url(f"/api/avatar/info/{made}"), headers=alice, timeout=5).status_code == 200
    assert requests.get(stack.url(f"/api/avatar/download/{made}"), headers=alice, timeout=5).status_code == 200
    page = requests.get(stack.url("/api/avatar?page=1&limit=1"), headers=alice, timeout=5).json()["data"]
    assert page["page"] == 1 and page["limit"] == 1 and page["total"] >= 1
    assert page["avatars"][0]["avatarId"] == made  # newest first
    bobs = requests.get(stack.url("/api/avatar"), headers=bearer(tokens["bob"]), timeout=5).json()["data"]
    assert made not in [item["avatarId"] for item in bobs["avatars"]]
    assert requests.delete(stack.url(f"/api/avatar/{made}"), headers=alice, timeout=5).status_code == 200
    assert not stack.files.has_result(made)


def test_bad_tokens_are_401_never_anonymous(stack: LocalStack, tokens: dict[str, str]) -> None:
    url = stack.url(f"/api/avatar/info/{uuid.uuid4()}")
    forged = mint_token(stack.settings.replace(jwt_secret_key="someone-elses-key-" * 3), "alice",
                        timedelta(hours=1))
    expired = jwt.encode({"sub": "alice", "type": "access", "fresh": False, "jti": "x",
                          "iat": int(time.time()) - 7200, "nbf": int(time.time()) - 7200,
                          "exp": int(time.time()) - 3600}, stack.settings.jwt_secret_key, algorithm="HS256")
    cases = {
        "Access token signature is invalid: it was not issued by this service.": bearer(forged),
        "Access token expired: get a new one and send it as 'Authorization: Bearer <token>'.": bearer(expired),
        "Unsupported Authorization header: send 'Authorization: Bearer <token>', or no Authorization "
        "header to use the API anonymously.": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
    }
    for message, headers in cases.items():
        response = requests.get(url, headers=headers, timeout=5)
        assert response.status_code == 401 and response.json()["error"] == message
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="avatar"'
    garbage = requests.get(url, headers=bearer("not.a.token"), timeout=5)
    assert garbage.status_code == 401 and garbage.json()["error"].startswith("Invalid access token")


def test_require_auth_makes_a_token_mandatory(stack: LocalStack, tokens: dict[str, str],
                                              astronaut_jpeg: bytes) -> None:
    client = create_app(stack.settings.replace(require_auth=True)).test_client()
    anonymous = client.get(f"/api/avatar/info/{uuid.uuid4()}")
    assert anonymous.status_code == 401
    assert anonymous.get_json()["error"].startswith("This service needs a signed-in user")
    files = {v: (io.BytesIO(astronaut_jpeg), "x.jpg") for v in ("front", "left", "right")}
    assert client.post("/api/avatar/generate", data=files, content_type="multipart/form-data").status_code == 401
    assert client.get(f"/api/avatar/info/{uuid.uuid4()}", headers=bearer(tokens["bob"])).status_code == 404
    assert client.get("/api/avatar/health").status_code == 200  # monitoring needs no token


def test_avatar_token_cli_mints_a_token_the_api_accepts(stack: LocalStack) -> None:
    env = {"JWT_SECRET_KEY": stack.settings.jwt_secret_key, "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "avatar_cli", "token", "--user", "carol", "--expires", "2h"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    token = run.stdout.strip()
    claims = jwt.decode(token, stack.settings.jwt_secret_key, algorithms=["HS256"])
    assert claims["sub"] == "carol" and 7190 <= claims["exp"] - claims["iat"] <= 7200
    listing = requests.get(stack.url("/api/avatar"), headers=bearer(token), timeout=5)
    assert listing.status_code == 200 and listing.json()["data"]["total"] == 0
    bad = subprocess.run([sys.executable, "-m", "avatar_cli", "token", "--user", "carol", "--expires", "soon"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "not a duration" in bad.stderr


def test_every_operation_is_audited_success_and_failure(stack: LocalStack, tokens: dict[str, str],
                                                        alices_avatar: str) -> None:
    agent = {"User-Agent": "audit-test/1.0"}
    ok = requests.get(stack.url(f"/api/avatar/info/{alices_avatar}"), headers={**bearer(tokens["alice"]), **agent},
                      timeout=5)
    denied = requests.get(stack.url(f"/api/avatar/download/{alices_avatar}"),
                          headers={**bearer(tokens["bob"]), **agent}, timeout=5)
    invalid = requests.post(stack.url("/api/avatar/generate"), files={"front": ("f.jpg", b"GIF89a", "image/gif")},
                            headers=agent, timeout=5)
    record = stack.audit_record(ok.headers["X-Request-Id"])
    assert {k: record[k] for k in ("operation", "avatarId", "userId", "ip", "userAgent", "success", "status",
                                   "errorCode")} == {
        "operation": "info", "avatarId": alices_avatar, "userId": "alice", "ip": "127.0.0.1",
        "userAgent": "audit-test/1.0", "success": True, "status": 200, "errorCode": None}
    assert record["time"] is not None and record["durationMs"] >= 0
    record = stack.audit_record(denied.headers["X-Request-Id"])
    assert (record["operation"], record["userId"], record["status"], record["success"], record["errorCode"]) == \
        ("download", "bob", 403, False, "forbidden")
    record = stack.audit_record(invalid.headers["X-Request-Id"])
    assert (record["operation"], record["status"], record["errorCode"], record["userId"]) == \
        ("generate", 400, "validation_failed", None)

    from jobs.audit import AuditLog
    log = AuditLog(stack.store.db, stack.settings.audit_retention_days)
    assert log.for_user("bob")[0]["requestId"] == denied.headers["X-Request-Id"]
    indexes = stack.store.db["audit"].index_information()
    assert indexes["time_ttl"]["expireAfterSeconds"] == stack.settings.audit_retention_days * 86400
    assert "userId_time" in indexes


def test_the_audit_writer_writes_every_record_it_is_given(stack: LocalStack) -> None:
    from api.audit import AuditWriter
    from jobs.audit import AuditLog
    from jobs.store import utcnow

    db = stack.store.db.client[f"audit_writer_{uuid.uuid4().hex[:8]}"]
    writer = AuditWriter(AuditLog(db, stack.settings.audit_retention_days))
    for i in range(300):
        writer.submit({"time": utcnow(), "requestId": f"request-{i}", "method": "GET", "path": "/api/x"})
    assert writer.flush(timeout_s=20)
    assert sorted(r["requestId"] for r in db["audit"].find({}, {"requestId": 1})) == \
        sorted(f"request-{i}" for i in range(300))


def test_an_unreachable_store_never_holds_up_the_request_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    import socket

    import pymongo

    from api.audit import AuditWriter
    from jobs.audit import AuditLog
    from jobs.store import utcnow

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    timeout_ms = 500
    client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=timeout_ms)
    writer = AuditWriter(AuditLog(client["avatar"], 1))
    started = time.monotonic()
    writer.submit({"time": utcnow(), "requestId": "lost-1", "method": "GET", "path": "/api/avatar/jobs/x"})
    # The request's thread hands the record over; only the writer's thread waits for the store.
    assert time.monotonic() - started < timeout_ms / 1000 / 2
    assert writer.flush(timeout_s=10)
    assert "could not write the audit record of request lost-1 (GET /api/avatar/jobs/x)" in caplog.text
    writer.submit({"time": utcnow(), "requestId": "lost-2", "method": "GET", "path": "/api/avatar/jobs/y"})
    assert writer.flush(timeout_s=10)  # the thread outlived the failure
    assert "lost-2" in caplog.text
    client.close()


def test_the_audit_writer_starts_afresh_in_a_forked_process(stack: LocalStack) -> None:
    """gunicorn forks its workers; a writer whose thread started before the fork must start a new
    one in the child (threads do not survive a fork), or the child's records would wait for ever."""
    import os

    import pymongo

    from api.audit import AuditWriter
    from jobs.audit import AuditLog
    from jobs.store import utcnow

    name = f"audit_fork_{uuid.uuid4().hex[:8]}"
    writer = AuditWriter(AuditLog(pymongo.MongoClient(stack.settings.mongodb_uri)[name], 1))
    writer.submit({"time": utcnow(), "requestId": "parent", "method": "GET", "path": "/api/x"})
    assert writer.flush(timeout_s=10)
    pid = os.fork()
    if pid == 0:  # the child: its own client, as a forked gunicorn worker would have
        code = 1
        try:
            writer.audit_log = AuditLog(pymongo.MongoClient(stack.settings.mongodb_uri)[name], 1)
            writer.submit({"time": utcnow(), "requestId": "child", "method": "GET", "path": "/api/x"})
            code = 0 if writer.flush(timeout_s=10) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ids = {r["requestId"] for r in stack.store.db.client[name]["audit"].find({}, {"requestId": 1})}
    assert ids == {"parent", "child"}
