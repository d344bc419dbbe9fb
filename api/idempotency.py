"""``Idempotency-Key`` on POST /api/avatar/generate (IETF draft-ietf-httpapi-idempotency-key-header).

A client that repeats a submission with the same key (after a timeout, a dropped connection, a
restart of its batch) must get the same job, not a second avatar. Per caller and key, one record in
Redis:

    avatar:idempotency:<sha256(caller, key)>  →  {"state": "processing" | "done",
                                                  "fingerprint": <sha256 of the request>,
                                                  "avatarId": <id, once done>}

- The first request claims the key with ``SET NX`` (atomic: of two identical POSTs racing, exactly
  one wins and creates the job) and a short TTL, creates and queues the job, then marks the record
  ``done`` with the job id for ``IDEMPOTENCY_TTL_S`` (24 h by default).
- A repeat with the same fingerprint gets the original job's response again (202 with the same
  avatarId and Location, or the completed body under ``Prefer: wait``), marked
  ``Idempotent-Replayed: true``.
- A repeat with a different body: 422 (the key was reused for another request).
- A repeat while the first is still being created: 409 with ``Retry-After`` (the draft's answer for
  a concurrent request); the window is the few milliseconds of validating, storing and queueing.
- If the first request fails before its job is queued (invalid photos, queue down) the claim is
  released, so a corrected or later retry with the same key is processed afresh.

The fingerprint is SHA-256 over the caller identity and every form part's name and bytes (the three
photos and any ``callbackUrl``). The caller is the token's user id, or ``anonymous``: a client's IP may
change between its retries (mobile networks, NAT pools), so it is not part of the identity. Redis
rather than MongoDB holds the keys because ``SET NX EX`` is one atomic round trip with its own
expiry; MongoDB's TTL monitor only sweeps every ~60 s. If Redis loses the records (restart without
persistence), a repeat within the window creates a second job — the one case where the guarantee
weakens, and the same outage also loses the queue.
"""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import redis

from api.errors import BadRequest, Conflict, Unprocessable
from api.multipart import FormPart

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
RECORD_KEY = "avatar:idempotency:{digest}"
# How long a claim may stay "processing": creating a job takes milliseconds, so this only matters
# when the API process died mid-request; its retries are then refused (409) for at most this long.
PROCESSING_TTL_S = 30
CONCURRENT_RETRY_AFTER_S = 1

# Delete the record only if it is still our claim (a Lua script runs atomically in Redis).
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Replay:
    """The key was used before for the same request: answer with this job."""

    avatar_id: str


@dataclass
class Claim:
    """This request owns the key: call ``complete`` once the job is queued, ``release`` if it failed."""

    redis: redis.Redis
    record_key: str
    fingerprint: str
    ttl_s: int
    claimed_value: str

    def complete(self, avatar_id: str) -> None:
        record = json.dumps({"state": "done", "fingerprint": self.fingerprint, "avatarId": avatar_id})
        try:
            self.redis.set(self.record_key, record, ex=self.ttl_s)
        except redis.RedisError as exc:  # the job exists and is queued; only the replay is lost
            log.warning("could not record idempotency key for job %s: %s", avatar_id, exc)

    def release(self) -> None:
        try:
            self.redis.eval(_RELEASE_SCRIPT, 1, self.record_key, self.claimed_value)
        except redis.RedisError as exc:  # the claim expires by itself after PROCESSING_TTL_S
            log.warning("could not release an idempotency claim: %s", exc)


def parse_key(header: str | None) -> str | None:
    """The key from the header, or None without one; ``BadRequest`` if it is not a usable key.

    The draft defines the value as a Structured Field string (``"..."``); the bare form most clients
    send is accepted too.
    """
    if header is None:
        return None
    key = header.strip()
    if len(key) >= 2 and key.startswith('"') and key.endswith('"'):
        key = key[1:-1]
    if not key:
        raise BadRequest(f"The {HEADER} header is empty: send a unique value per submission "
                         "(a UUID, for example), or leave the header out.")
    if len(key) > MAX_KEY_LENGTH:
        raise BadRequest(f"The {HEADER} header is {len(key)} characters long; at most "
                         f"{MAX_KEY_LENGTH} are allowed (a UUID is 36).")
    if not all(" " <= ch <= "~" for ch in key):
        raise BadRequest(f"The {HEADER} header may contain only printable ASCII characters "
                         "(a UUID, for example).")
    return key


def fingerprint(caller: str, parts: Mapping[str, FormPart]) -> str:
    """SHA-256 over the caller and each form part's name and bytes, in name order.

    Every piece is length-prefixed, so no two different requests can hash the same bytes.
    """
    digest = hashlib.sha256()

    def feed(data: bytes) -> None:
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)

    feed(caller.encode("utf-8"))
    for name in sorted(parts):
        feed(name.encode("utf-8"))
        feed(parts[name].data)
    return digest.hexdigest()


def claim(client: redis.Redis, key: str | None, owner: str | None, parts: Mapping[str, FormPart],
          ttl_s: int) -> Claim | Replay | None:
    """Claim ``key`` for this request, or say which job it already names.

    Returns None without a key, a ``Claim`` for a new key, a ``Replay`` for a repeat of a request that
    created its job. Raises ``Unprocessable`` (422) when the key came with a different request,
    ``Conflict`` (409) while the first request with the key is still being processed.
    """
    if key is None:
        return None
    caller = f"user:{owner}" if owner is not None else "anonymous"
    digest = hashlib.sha256(f"{caller}\0{key}".encode("utf-8")).hexdigest()
    record_key = RECORD_KEY.format(digest=digest)
    request_fingerprint = fingerprint(caller, parts)
    claimed_value = json.dumps({"state": "processing", "fingerprint": request_fingerprint,
                                "claim": uuid.uuid4().hex})
    if client.set(record_key, claimed_value, nx=True, ex=PROCESSING_TTL_S):
        return Claim(client, record_key, request_fingerprint, ttl_s, claimed_value)

    raw = client.get(record_key)
    if raw is None:  # expired between the two commands: treat like a concurrent first request
        raise _concurrent(key)
    record = json.loads(raw)
    if record.get("fingerprint") != request_fingerprint:
        raise Unprocessable(
            f"This {HEADER} was already used for a different request (other photos or fields). "
            "Use a new key for a new submission; repeat a key only to retry the very same request.",
            {"idempotencyKey": key})
    if record.get("state") == "done" and record.get("avatarId"):
        return Replay(record["avatarId"])
    raise _concurrent(key)


def _concurrent(key: str) -> Conflict:
    return Conflict(f"A request with this {HEADER} is still being processed; retry in a second to "
                    "get its result.", {"idempotencyKey": key},
                    {"Retry-After": str(CONCURRENT_RETRY_AFTER_S)})
