"""Retry-After parsing and the polling back-off."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from client.backoff import Backoff, parse_retry_after

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize("header, seconds", [
    ("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("1.5", 1.5), ("-3", 0.0),
    (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
    ("Fri, 02 Jan 2026 03:05:05 GMT", 60.0),
    ("Friday, 02-Jan-26 03:04:15 GMT", 10.0),   # RFC 850, still allowed by RFC 9110
    (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),  # already past
    (None, None), ("", None), ("soon", None), ("nan", None), ("Fri, 99 Foo 2026", None),
])
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_backoff_grows_to_its_cap_with_bounded_jitter() -> None:
    backoff = Backoff(first_s=0.05, max_s=2.0, factor=1.6, jitter=0.25, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(20)]
    assert 0.0375 <= delays[0] <= 0.0625
    assert all(0 < d <= 2.0 * 1.25 for d in delays)
    assert all(1.5 <= d for d in delays[-5:])  # capped at ~2 s, jittered ±25 %
    assert len(set(delays[-5:])) == 5           # jittered, not in lockstep
