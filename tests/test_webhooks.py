"""Callback URL checks, signing, and delivery to the address that was checked (jobs/webhooks.py)."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jobs import webhooks
from jobs.webhooks import CallbackRefused, check_url, deliver, event_body, resolve, sign, verify_signature


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://10.1.2.3/hook", "http://192.168.0.1:8080/", "http://169.254.169.254/latest",
    "http://[::1]/hook", "http://[fe80::1]/", "http://0.0.0.0/", "http://localhost:9000/", "http://api.localhost/",
    "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/",
])
def test_private_and_special_literal_addresses_are_refused(url: str) -> None:
    with pytest.raises(CallbackRefused):
        check_url(url, allow_private=False)
    check_url(url, allow_private=True)  # the switch the tests and private deployments use


@pytest.mark.parametrize("url", ["ftp://example.com/", "example.com/hook", "http://", "http://a:b@example.com/",
                                 "http://example.com:99999/"])
def test_malformed_urls_are_refused_even_when_private_targets_are_allowed(url: str) -> None:
    with pytest.raises(CallbackRefused):
        check_url(url, allow_private=True)


def test_public_urls_pass_the_literal_check() -> None:
    check_url("https://hooks.example.com/avatar?x=1", allow_private=False)
    check_url("http://93.184.216.34/", allow_private=False)


def test_a_hostname_is_refused_if_any_address_it_resolves_to_is_private(monkeypatch) -> None:
    """DNS answers are faked here (a DNS server that answers with an internal address cannot be set up
    for real in a test): one public and one private record must be refused, not gambled on."""
    answers = {"mixed.example": ["93.184.216.34", "10.0.0.5"], "public.example": ["93.184.216.34"]}

    def fake_getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in answers[host]]

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(CallbackRefused, match="10.0.0.5"):
        resolve("http://mixed.example/hook", allow_private=False)
    target = resolve("https://public.example/hook?a=b", allow_private=False)
    assert (target.address, target.port, target.path) == ("93.184.216.34", 443, "/hook?a=b")


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f000001"])
def test_the_real_resolver_refuses_loopback_spelled_as_a_name(host: str) -> None:
    # Not IP literals to the URL check, yet the system resolver reads each as 127.0.0.1: the
    # classic way around an SSRF filter that only looks at the text.
    with pytest.raises(CallbackRefused, match="127.0.0.1"):
        resolve(f"http://{host}:8080/hook", allow_private=False)
    assert resolve(f"http://{host}:8080/hook", allow_private=True).address == "127.0.0.1"


def test_signatures_cover_the_exact_body() -> None:
    body = event_body("avatar.completed", "id-1", "completed", {"x": 1}, timestamp=1700000000)
    assert json.loads(body)["timestamp"] == 1700000000
    signature = sign(body, "s3cret")
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify_signature(body, signature, "s3cret")
    assert not verify_signature(body, signature, "other")
    assert not verify_signature(body.replace(b"1700000000", b"1700000001"), signature, "s3cret")
    assert not verify_signature(body, None, "s3cret")


class _Recorder(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Recorder.seen.append((self.headers["Host"], self.path, dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def local_receiver():
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_delivery_to_loopback_is_refused_unless_allowed(local_receiver: int) -> None:
    body = event_body("avatar.completed", "id-1", "completed", {})
    with pytest.raises(CallbackRefused):
        deliver(f"http://127.0.0.1:{local_receiver}/hook", body, "avatar.completed", "k",
                allow_private=False, timeout_s=2)
    assert _Recorder.seen == []
    outcome = deliver(f"http://127.0.0.1:{local_receiver}/hook", body, "avatar.completed", "k",
                      allow_private=True, timeout_s=2)
    assert outcome.ok and outcome.status == 204
    host, path, headers, received = _Recorder.seen[0]
    assert path == "/hook" and received == body
    assert verify_signature(received, headers["X-Avatar-Signature"], "k")
    assert headers["X-Avatar-Event"] == "avatar.completed"


def test_delivery_connects_to_the_checked_address_not_a_second_lookup(local_receiver: int, monkeypatch) -> None:
    """The name resolves (fake, once) to loopback; the connection must go there with the name in the
    Host header. A second lookup would fail: the name does not exist."""
    calls = []
    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host == "127.0.0.1":  # connecting to a numeric address: no DNS involved
            return real_getaddrinfo(host, port, *args, **kwargs)
        calls.append(host)
        if host != "hooks.invalid":
            raise socket.gaierror("unexpected lookup")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", fake_getaddrinfo)
    outcome = deliver(f"http://hooks.invalid:{local_receiver}/x", b"{}", "avatar.failed", "k",
                      allow_private=True, timeout_s=2)
    assert outcome.ok, outcome
    assert calls == ["hooks.invalid"]
    assert _Recorder.seen[0][0] == f"hooks.invalid:{local_receiver}"


def test_an_unreachable_receiver_is_a_failed_attempt_not_an_exception() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once we leave: nothing listens
    outcome = deliver(f"http://127.0.0.1:{port}/", b"{}", "avatar.completed", "k", allow_private=True, timeout_s=1)
    assert not outcome.ok and outcome.status is None and "Connection" in outcome.error
