"""How long to wait before asking again: ``Retry-After`` parsing and jittered exponential back-off."""
from __future__ import annotations

import random
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110: delay-seconds or an HTTP-date).

    Returns None when the header is absent or unreadable, and 0 for a date already past.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value))
    try:
        seconds = float(value)  # not allowed by the RFC, but some servers send "1.5"
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is unreadable
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT by definition
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


class Backoff:
    """Delays that grow by ``factor`` from ``first_s`` up to ``max_s``, each jittered by ±``jitter``.

    Jitter keeps a fleet of clients that were refused together from coming back together.
    """

    def __init__(self, first_s: float = 0.05, max_s: float = 2.0, factor: float = 1.6,
                 jitter: float = 0.25, rng: random.Random | None = None):
        self.first_s = first_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._next = first_s

    def next_delay(self) -> float:
        base = self._next
        self._next = min(self.max_s, self._next * self.factor)
        return max(0.0, base * (1 + self._rng.uniform(-self.jitter, self.jitter)))
