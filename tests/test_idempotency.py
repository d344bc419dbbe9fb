"""Idempotency-Key parsing and request fingerprints (api/idempotency.py); the Redis side is tested
against the real stack in tests/integration/test_idempotency_webhooks.py."""
from __future__ import annotations

import pytest

from api.errors import BadRequest
from api.idempotency import fingerprint, parse_key
from api.multipart import FormPart


def parts(**fields: bytes) -> dict[str, FormPart]:
    return {name: FormPart(name, f"{name}.jpg", data) for name, data in fields.items()}


def test_keys_bare_or_as_structured_field_strings() -> None:
    assert parse_key(None) is None
    assert parse_key("8e03978e-40d5-43e8-bc93-6894a57f9324") == "8e03978e-40d5-43e8-bc93-6894a57f9324"
    assert parse_key('"8e03978e-40d5"') == "8e03978e-40d5"
    assert parse_key("k" * 255) == "k" * 255


@pytest.mark.parametrize("header", ["", "  ", '""', "k" * 256, "a\tb", "caf\u00e9", "a\x7fb"])
def test_unusable_keys(header: str) -> None:
    with pytest.raises(BadRequest):
        parse_key(header)


def test_fingerprints_change_with_any_part_the_names_or_the_caller() -> None:
    base = fingerprint("anonymous", parts(front=b"a", left=b"b", right=b"c"))
    assert base == fingerprint("anonymous", parts(right=b"c", left=b"b", front=b"a"))  # order-free
    assert base != fingerprint("user:1", parts(front=b"a", left=b"b", right=b"c"))
    assert base != fingerprint("anonymous", parts(front=b"a", left=b"c", right=b"b"))  # swapped views
    assert base != fingerprint("anonymous", parts(front=b"a", left=b"b", right=b"c", callbackUrl=b"http://x"))
    # Length prefixes: moving bytes between neighbouring parts changes the hash.
    assert (fingerprint("anonymous", parts(front=b"ab", left=b""))
            != fingerprint("anonymous", parts(front=b"a", left=b"b")))
