"""The OpenAPI document and the code agree: every route is documented and every documented path is a
route; every documented status of every operation is produced here by a real request, and each
answer (status, media type, body, required headers) matches the document, whose bodies are strict
(a field the code sends and the document lacks fails, and so does the reverse).

Statuses the document adds by rule are checked as rules: 401 on every operation that reads a token,
429 on exactly the operations the rate limiter counts, 503 on generate and health with Redis
unreachable (the other operations reach it through the same handler when the store is down: each
such request would first wait out the store's 5 s server selection), 500 through the one handler
(no real route fails on purpose), 408 only where an upload is read (its cut-off needs gunicorn's
socket: tests/integration/test_slow_clients.py).
"""
from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import requests
from jsonschema import Draft202012Validator
from service_stack import LocalStack, multipart

from api import create_app, idempotency
from api.auth import mint_token
from api.multipart import FormPart
from api.openapi import RATE_LIMIT_EXEMPT, READS_TOKEN, openapi_path, routes
from jobs import localstack
from jobs.store import JobNotFound

GENERATE = "/api/avatar/generate"
STATUS = "/api/avatar/jobs/{avatar_id}"
CANCEL = "/api/avatar/jobs/{avatar_id}/cancel"
INFO = "/api/avatar/info/{avatar_id}"
DOWNLOAD = "/api/avatar/download/{avatar_id}"
DELETE = "/api/avatar/{avatar_id}"
LIST = "/api/avatar"
HEALTH = "/api/avatar/health"
METRICS = "/metrics"
OPENAPI = "/api/openapi.json"
ELSEWHERE = {"REMOTE_ADDR": "192.0.2.77"}  # not loopback: health and metrics check the token
BAD_TOKEN = {"Authorization": "Bearer not-a-token"}
# Documented by rule and checked as a rule (module docstring), not produced per operation.
RULE_ONLY = {"500", "408"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    content_type: str
    body: bytes

    @classmethod
    def of(cls, response: Any) -> "Reply":
        data = response.content if isinstance(response, requests.Response) else response.get_data()
        headers = {name.lower(): value for name, value in response.headers.items()}
        return cls(response.status_code, headers, headers.get("content-type", ""), data)


@pytest.fixture(scope="module")
def document(stack: LocalStack) -> dict[str, Any]:
    return requests.get(stack.url(OPENAPI), timeout=5).json()


def conforms(document: dict[str, Any], path: str, method: str, reply: Reply) -> None:
    """The reply is one the document describes for the operation (status, media type, body, the
    headers it marks required)."""
    operation = document["paths"][path][method]
    described = operation["responses"].get(str(reply.status))
    assert described is not None, f"{method.upper()} {path} answered {reply.status}, which is not documented"
    for name, header in described.get("headers", {}).items():
        if header.get("required"):
            assert name.lower() in reply.headers, f"{method.upper()} {path} {reply.status}: no {name} header"
        if name.lower() in reply.headers and header["schema"].get("type") == "integer":
            int(reply.headers[name.lower()])
    content = described.get("content")
    if method == "head" or reply.status == 304:
        assert not reply.body
        return
    assert content, f"{method.upper()} {path} {reply.status} has a body the document does not describe"
    media = reply.content_type.split(";")[0].strip()
    schema = content.get(media, content.get("*/*", {})).get("schema")
    assert media in content or "*/*" in content, (path, reply.status, media, list(content))
    if media == "application/json":
        import json
        validator = Draft202012Validator({**schema, "components": document["components"]})
        errors = sorted(validator.iter_errors(json.loads(reply.body)), key=str)
        assert not errors, f"{method.upper()} {path} {reply.status}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])


def test_every_route_is_documented_and_every_documented_path_is_a_route(stack: LocalStack,
                                                                        document: dict[str, Any]) -> None:
    app = create_app(stack.settings)
    served = {(path, method) for _endpoint, method, path in routes(app)}
    documented = {(path, method) for path, methods in document["paths"].items() for method in methods}
    assert served == documented
    # The automatic answers left out are only Flask's own (HEAD beside GET, OPTIONS everywhere).
    for rule in app.url_map.iter_rules():
        for method in rule.methods:
            if (openapi_path(rule.rule), method.lower()) not in documented:
                assert method in ("HEAD", "OPTIONS"), (rule.rule, method)


class Exchanges:
    """What the requests below need: the stack, photos, tokens, and jobs in each state."""

    def __init__(self, stack: LocalStack, jpeg: bytes, coffee: bytes):
        self.stack, self.jpeg, self.coffee = stack, jpeg, coffee
        self.alice = {"Authorization": f"Bearer {mint_token(stack.settings, 'alice', timedelta(hours=1))}"}
        self.bob = {"Authorization": f"Bearer {mint_token(stack.settings, 'bob', timedelta(hours=1))}"}
        self.admin = {"Authorization": f"Bearer {mint_token(stack.settings, 'ops', timedelta(hours=1), admin=True)}"}
        self._completed: str | None = None
        self._failed: str | None = None
        self.generated: dict[int, requests.Response] = {}
        self.made: list[str] = []

    def url(self, path: str, avatar_id: str | None = None) -> str:
        return self.stack.url(path.replace("{avatar_id}", avatar_id or ""))

    def post_photos(self, photos: tuple[bytes, bytes, bytes], headers: dict[str, str] | None = None,
                    data: dict[str, str] | None = None) -> requests.Response:
        return requests.post(self.url(GENERATE), files=multipart(*photos), data=data, headers=headers, timeout=60)

    @property
    def completed(self) -> str:
        if self._completed is None:
            response = self.post_photos((self.jpeg,) * 3, {"Prefer": "wait=30"})
            self.generated[200] = response
            self._completed = response.json()["data"]["avatarId"]
        return self._completed

    @property
    def failed(self) -> str:
        if self._failed is None:
            response = self.post_photos((self.coffee, self.jpeg, self.jpeg), {"Prefer": "wait=30"})
            self.generated[422] = response
            self._failed = response.json()["details"]["avatarId"]
        return self._failed

    def queued_forever(self, owner: str | None = None) -> str:
        """A record no message will move: it stays queued."""
        avatar_id = str(uuid.uuid4())
        self.stack.store.create(avatar_id, owner=owner, uploads={})
        self.made.append(avatar_id)
        return avatar_id

    def forget(self) -> None:
        """Delete the records made here: a queued job with no message would stay in health's
        count of jobs that nothing holds."""
        for avatar_id in self.made:
            with contextlib.suppress(JobNotFound):  # the DELETE case removed its own
                self.stack.store.delete(avatar_id)

    def canceled(self) -> str:
        avatar_id = self.queued_forever()
        self.stack.store.cancel(avatar_id)
        return avatar_id

    def etag(self) -> str:
        return requests.head(self.url(DOWNLOAD, self.completed), timeout=10).headers["ETag"]

    def idempotent(self, key: str, prefer: str | None = None) -> requests.Response:
        headers = {idempotency.HEADER: key, **({"Prefer": prefer} if prefer else {})}
        return self.post_photos((self.jpeg,) * 3, headers)

    def still_processing(self) -> requests.Response:
        """The same request as one whose key is claimed and still being processed."""
        key = uuid.uuid4().hex
        parts = {view: FormPart(view, f"{view}.jpg", self.jpeg) for view in ("front", "left", "right")}
        idempotency.claim(self.stack.broker, key, None, parts, 60)
        return self.idempotent(key)

    def replay_of_deleted(self) -> requests.Response:
        key = uuid.uuid4().hex
        first = self.idempotent(key)
        requests.delete(self.url(DELETE, first.json()["data"]["avatarId"]), timeout=10)
        return self.idempotent(key)

    def replay_of_canceled_under_wait(self) -> requests.Response:
        key = uuid.uuid4().hex
        first = self.idempotent(key)
        requests.post(self.url(CANCEL, first.json()["data"]["avatarId"]), timeout=10)
        return self.idempotent(key, "wait=5")


Send = Callable[[Exchanges], Any]


def _download_cases(method: str) -> dict[tuple[str, str, int], Send]:
    send = getattr(requests, method)
    return {
        (DOWNLOAD, method, 200): lambda x: send(x.url(DOWNLOAD, x.completed), timeout=10),
        (DOWNLOAD, method, 206): lambda x: send(x.url(DOWNLOAD, x.completed), headers={"Range": "bytes=0-99"}, timeout=10),
        (DOWNLOAD, method, 304): lambda x: send(x.url(DOWNLOAD, x.completed), headers={"If-None-Match": x.etag()},
                                                timeout=10),
        (DOWNLOAD, method, 401): lambda x: send(x.url(DOWNLOAD, x.completed), headers=BAD_TOKEN, timeout=10),
        (DOWNLOAD, method, 403): lambda x: send(x.url(DOWNLOAD, x.queued_forever("alice")), headers=x.bob, timeout=10),
        (DOWNLOAD, method, 404): lambda x: send(x.url(DOWNLOAD, str(uuid.uuid4())), timeout=10),
        (DOWNLOAD, method, 409): lambda x: send(x.url(DOWNLOAD, x.queued_forever()), timeout=10),
        (DOWNLOAD, method, 410): lambda x: send(x.url(DOWNLOAD, x.canceled()), timeout=10),
        (DOWNLOAD, method, 416): lambda x: send(x.url(DOWNLOAD, x.completed), headers={"Range": "bytes=99999999-"},
                                                timeout=10),
        (DOWNLOAD, method, 422): lambda x: send(x.url(DOWNLOAD, x.failed), timeout=10),
    }


# (path, method, status) → a request that gets that answer from the running service.
CASES: dict[tuple[str, str, int], Send] = {
    (GENERATE, "post", 200): lambda x: (x.completed, x.generated[200])[1],
    (GENERATE, "post", 202): lambda x: x.post_photos((x.jpeg,) * 3, data={"textureSize": "512"}),
    (GENERATE, "post", 400): lambda x: x.post_photos((x.jpeg, b"GIF89a" + bytes(100), x.jpeg)),
    (GENERATE, "post", 401): lambda x: x.post_photos((x.jpeg,) * 3, BAD_TOKEN),
    (GENERATE, "post", 404): lambda x: x.replay_of_deleted(),
    (GENERATE, "post", 409): lambda x: x.still_processing(),
    (GENERATE, "post", 410): lambda x: x.replay_of_canceled_under_wait(),
    (GENERATE, "post", 413): lambda x: requests.post(x.url(GENERATE), data=b"x" * (32 * 1024 * 1024), timeout=30,
                                                     headers={"Content-Type": "multipart/form-data; boundary=b"}),
    (GENERATE, "post", 415): lambda x: requests.post(x.url(GENERATE), json={"front": 1}, timeout=10),
    (GENERATE, "post", 422): lambda x: (x.failed, x.generated[422])[1],
    (STATUS, "get", 200): lambda x: requests.get(x.url(STATUS, x.completed), timeout=10),
    (STATUS, "get", 401): lambda x: requests.get(x.url(STATUS, x.completed), headers=BAD_TOKEN, timeout=10),
    (STATUS, "get", 403): lambda x: requests.get(x.url(STATUS, x.queued_forever("alice")), headers=x.bob, timeout=10),
    (STATUS, "get", 404): lambda x: requests.get(x.url(STATUS, "not-an-id"), timeout=10),
    (CANCEL, "post", 200): lambda x: requests.post(x.url(CANCEL, x.queued_forever()), timeout=10),
    (CANCEL, "post", 401): lambda x: requests.post(x.url(CANCEL, x.completed), headers=BAD_TOKEN, timeout=10),
    (CANCEL, "post", 403): lambda x: requests.post(x.url(CANCEL, x.queued_forever("alice")), headers=x.bob, timeout=10),
    (CANCEL, "post", 404): lambda x: requests.post(x.url(CANCEL, str(uuid.uuid4())), timeout=10),
    (CANCEL, "post", 409): lambda x: requests.post(x.url(CANCEL, x.completed), timeout=10),
    (INFO, "get", 200): lambda x: requests.get(x.url(INFO, x.completed), timeout=10),
    (INFO, "get", 401): lambda x: requests.get(x.url(INFO, x.completed), headers=BAD_TOKEN, timeout=10),
    (INFO, "get", 403): lambda x: requests.get(x.url(INFO, x.queued_forever("alice")), headers=x.bob, timeout=10),
    (INFO, "get", 404): lambda x: requests.get(x.url(INFO, str(uuid.uuid4())), timeout=10),
    **_download_cases("get"),
    **_download_cases("head"),
    (DELETE, "delete", 200): lambda x: requests.delete(x.url(DELETE, x.queued_forever()), timeout=10),
    (DELETE, "delete", 401): lambda x: requests.delete(x.url(DELETE, x.queued_forever()), headers=BAD_TOKEN, timeout=10),
    (DELETE, "delete", 403): lambda x: requests.delete(x.url(DELETE, x.queued_forever("alice")), headers=x.bob,
                                                       timeout=10),
    (DELETE, "delete", 404): lambda x: requests.delete(x.url(DELETE, str(uuid.uuid4())), timeout=10),
    (LIST, "get", 200): lambda x: requests.get(x.url(LIST), headers=x.alice, timeout=10),
    (LIST, "get", 400): lambda x: requests.get(x.url(LIST) + "?page=0", headers=x.alice, timeout=10),
    (LIST, "get", 401): lambda x: requests.get(x.url(LIST), timeout=10),
    (HEALTH, "get", 200): lambda x: requests.get(x.url(HEALTH), timeout=10),
    (METRICS, "get", 200): lambda x: requests.get(x.url(METRICS), timeout=10),
    (OPENAPI, "get", 200): lambda x: requests.get(x.url(OPENAPI), timeout=10),
    ("/", "get", 200): lambda x: requests.get(x.url("/"), timeout=10),
    ("/docs", "get", 200): lambda x: requests.get(x.url("/docs"), timeout=10),
    ("/assets/{filename}", "get", 200): lambda x: requests.get(x.url("/assets/style.css"), timeout=10),
    ("/assets/{filename}", "get", 404): lambda x: requests.get(x.url("/assets/nothing.css"), timeout=10),
}


def in_process(settings, path: str, method: str, **kwargs: Any) -> Any:
    client = create_app(settings).test_client()
    return client.open(path, method=method.upper(), **kwargs)


# Answers an in-process API gives (the same code; here the client's address or the dependencies
# can be chosen).
IN_PROCESS: dict[tuple[str, str, int], Callable[[LocalStack, Exchanges], Any]] = {
    (HEALTH, "get", 401): lambda s, x: in_process(s.settings, HEALTH, "get", environ_base=ELSEWHERE, headers=BAD_TOKEN),
    (METRICS, "get", 401): lambda s, x: in_process(s.settings, METRICS, "get", environ_base=ELSEWHERE, headers=BAD_TOKEN),
    (METRICS, "get", 403): lambda s, x: in_process(s.settings, METRICS, "get", environ_base=ELSEWHERE),
    (GENERATE, "post", 503): lambda s, x: in_process(_without_redis(s), GENERATE, "post", data={
        view: (io.BytesIO(x.jpeg), f"{view}.jpg") for view in ("front", "left", "right")}),
    (HEALTH, "get", 503): lambda s, x: in_process(_without_redis(s), HEALTH, "get"),
}


def _without_redis(stack: LocalStack):
    return stack.settings.replace(redis_url=f"redis://127.0.0.1:{localstack.free_port()}/0")


def test_every_documented_status_is_answered_as_documented(stack: LocalStack, document: dict[str, Any],
                                                           astronaut_jpeg: bytes, coffee_jpeg: bytes) -> None:
    exchanges = Exchanges(stack, astronaut_jpeg, coffee_jpeg)
    produced = set()
    try:
        for (path, method, status), send in CASES.items():
            reply = Reply.of(send(exchanges))
            assert reply.status == status, (path, method, status, reply.body[:300])
            conforms(document, path, method, reply)
            produced.add((path, method, str(status)))
        for (path, method, status), send in IN_PROCESS.items():
            reply = Reply.of(send(stack, exchanges))
            assert reply.status == status, (path, method, status, reply.body[:300])
            conforms(document, path, method, reply)
            produced.add((path, method, str(status)))
    finally:
        exchanges.forget()

    documented = {(path, method, status) for path, methods in document["paths"].items()
                  for method, operation in methods.items() for status in operation["responses"]}
    by_rule = {(path, method, status) for path, method, status in documented
               if status in RULE_ONLY or status == "429" or (status == "503" and (path, method) not in
                                                              {(GENERATE, "post"), (HEALTH, "get")})}
    assert documented - by_rule - produced == set(), "documented, never produced"
    assert produced - documented == set(), "produced, not documented"


def test_the_rules_hold_429_on_limited_operations_401_where_a_token_is_read(stack: LocalStack,
                                                                             document: dict[str, Any]) -> None:
    """With a limit of one request, the second call of each operation is 429 exactly where the
    document says 429; a bad token is 401 exactly where it says 401 (from another machine)."""
    # Two different limits: equal ones would share one counter in flask-limiter (same key).
    app = create_app(stack.settings.replace(rate_limit_default="1 per 15 minutes",
                                            rate_limit_generate="5 per 15 minutes"))
    client = app.test_client()
    endpoint_of = {(path, method): endpoint for endpoint, method, path in routes(app)}
    for index, ((path, method), endpoint) in enumerate(sorted(endpoint_of.items()), start=1):
        operation = document["paths"][path][method]
        url = path.replace("{avatar_id}", str(uuid.uuid4())).replace("{filename}", "style.css")
        address = {"REMOTE_ADDR": f"198.51.100.{index}"}  # a client of its own per operation
        client.open(url, method=method.upper(), environ_base=address)
        second = client.open(url, method=method.upper(), environ_base=address)
        assert (second.status_code == 429) == ("429" in operation["responses"]), (path, method, second.status_code)
        assert ("429" in operation["responses"]) == (endpoint not in RATE_LIMIT_EXEMPT)
        if second.status_code == 429:
            conforms(document, path, method, Reply.of(second))
        elsewhere = {"REMOTE_ADDR": f"203.0.113.{index}"}  # not loopback, not limited yet
        bad = client.open(url, method=method.upper(), headers=BAD_TOKEN, environ_base=elsewhere)
        assert (bad.status_code == 401) == ("401" in operation["responses"]) == (endpoint in READS_TOKEN), \
            (path, method, bad.status_code)


def test_an_unexpected_error_is_the_documented_500(stack: LocalStack, document: dict[str, Any]) -> None:
    """No real route fails on purpose: one added to an in-process app raises, and its answer is the
    500 every operation documents."""
    app = create_app(stack.settings)

    @app.get("/api/avatar/info/broken/<avatar_id>")
    def broken(avatar_id: str):
        raise RuntimeError("a bug")

    reply = Reply.of(app.test_client().get(f"/api/avatar/info/broken/{uuid.uuid4()}"))
    assert reply.status == 500
    conforms(document, INFO, "get", reply)
