"""Signed completion webhooks: checking a callback URL, signing the event, one delivery attempt.

A job submitted with ``callbackUrl`` gets one POST when it ends (``avatar.completed`` or
``avatar.failed``)::

    POST <callbackUrl>
    Content-Type: application/json
    X-Avatar-Event: avatar.completed
    X-Avatar-Timestamp: 1732560000
    X-Avatar-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes, key WEBHOOK_SECRET>

    {"event": "avatar.completed", "avatarId": ..., "status": ..., "timestamp": 1732560000, "data": {...}}

The timestamp is inside the signed body too, so a receiver can refuse old replays by checking it
(the header is a convenience copy). Receivers verify with ``verify_signature``.

Server-side request forgery: a callback URL is chosen by the client, and the POST comes from a worker
inside our network. So the host is resolved, *every* address it resolves to must be public, and the
connection goes to the address that was checked (not a second lookup that a rebinding DNS server
could answer differently). Private, loopback, link-local, multicast and reserved addresses are
refused unless ``WEBHOOK_ALLOW_PRIVATE`` is set. Redirects are not followed.

Nothing here imports Celery: the worker's ``avatar.webhook`` task calls ``deliver`` and retries.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import socket
import threading
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Avatar-Signature"
TIMESTAMP_HEADER = "X-Avatar-Timestamp"
EVENT_HEADER = "X-Avatar-Event"
MAX_URL_LENGTH = 2048
USER_AGENT = "avatar-service-webhook/1"


class CallbackRefused(ValueError):
    """The callback URL is unusable or points somewhere we must not call; not worth retrying."""


@dataclass(frozen=True)
class Target:
    """A callback URL taken apart, with the address it will be sent to."""

    scheme: str
    host: str
    port: int
    path: str
    address: str


@dataclass(frozen=True)
class Delivery:
    """The outcome of one attempt: ``status`` is the HTTP status (None if no answer)."""

    ok: bool
    status: int | None
    error: str | None = None


def check_url(url: str, allow_private: bool) -> None:
    """Refuse (``CallbackRefused``) a URL that is malformed or names a forbidden address literally.

    The API calls this at submission: it needs no DNS lookup. Hostnames are checked at delivery.
    """
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(f"callbackUrl is longer than {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise CallbackRefused("callbackUrl must be an http:// or https:// URL")
    if not parts.hostname:
        raise CallbackRefused("callbackUrl has no host")
    if parts.username or parts.password:
        raise CallbackRefused("callbackUrl must not carry a user name or password")
    try:
        parts.port
    except ValueError:
        raise CallbackRefused("callbackUrl has an invalid port") from None
    if not allow_private:
        if parts.hostname.lower() == "localhost" or parts.hostname.lower().endswith(".localhost"):
            raise CallbackRefused("callbackUrl points at this machine (localhost)")
        try:
            literal = ipaddress.ip_address(parts.hostname)
        except ValueError:
            return
        if not is_public(literal):
            raise CallbackRefused(f"callbackUrl points at a private or reserved address ({literal})")


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a globally routable unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (address.is_private or address.is_loopback or address.is_link_local
                or address.is_multicast or address.is_reserved or address.is_unspecified
                or not address.is_global)


def resolve(url: str, allow_private: bool) -> Target:
    """Check ``url`` and pick the address to connect to: every address the host resolves to must
    be public (unless ``allow_private``), so a host with one public and one internal record is
    refused rather than gambled on."""
    check_url(url, allow_private)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LookupError(f"cannot resolve {parts.hostname}: {exc}") from exc
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise LookupError(f"{parts.hostname} has no addresses")
    if not allow_private:
        for address in addresses:
            if not is_public(ipaddress.ip_address(address.split("%")[0])):
                raise CallbackRefused(f"callbackUrl host {parts.hostname} resolves to a private or "
                                      f"reserved address ({address})")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port, path, addresses[0])


def sign(body: bytes, secret: str) -> str:
    """The ``X-Avatar-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return bool(header) and hmac.compare_digest(sign(body, secret), header)


def event_body(event: str, job_id: str, status: str, data: dict[str, Any],
               timestamp: int | None = None) -> bytes:
    """The JSON body of one event (compact, so the signed bytes are exactly what is sent)."""
    payload = {"event": event, "avatarId": job_id, "status": status,
               "timestamp": int(time.time()) if timestamp is None else timestamp, "data": data}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")


def deliver(url: str, body: bytes, event: str, secret: str, *, allow_private: bool,
            timeout_s: float) -> Delivery:
    """One POST of ``body`` to ``url``, over within ``timeout_s`` in all (connecting, sending and
    reading the answer: a receiver that answers a byte every few seconds never trips a per-read
    timeout, so the connection is shut once the whole attempt has taken ``timeout_s``); raises
    ``CallbackRefused`` for a forbidden target."""
    try:
        target = resolve(url, allow_private)
    except LookupError as exc:
        return Delivery(False, None, str(exc))
    timestamp = str(json.loads(body).get("timestamp", int(time.time())))
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, EVENT_HEADER: event,
               TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(body, secret)}
    connection = _connection(target, timeout_s)
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        if connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(timeout_s, cut)
    timer.daemon = True
    timer.start()
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(64 * 1024)
        if expired.is_set():
            raise TimeoutError
        ok = 200 <= response.status < 300
        return Delivery(ok, response.status, None if ok else f"HTTP {response.status} {response.reason}")
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            return Delivery(False, None, f"the receiver took longer than {timeout_s:g} s to answer")
        return Delivery(False, None, f"{type(exc).__name__}: {exc}")
    finally:
        timer.cancel()
        connection.close()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a checked address; the Host header still names the URL's host."""

    def __init__(self, target: Target, timeout_s: float):
        super().__init__(target.host, target.port, timeout=timeout_s)
        self.address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address; SNI and certificate verification use the URL's host."""

    def __init__(self, target: Target, timeout_s: float):
        super().__init__(target.host, target.port, timeout=timeout_s, context=ssl.create_default_context())
        self.address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _connection(target: Target, timeout_s: float) -> http.client.HTTPConnection:
    if target.scheme == "https":
        return _PinnedHTTPSConnection(target, timeout_s)
    return _PinnedHTTPConnection(target, timeout_s)
