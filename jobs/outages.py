"""The store or Redis not answering right now: what that looks like, and riding it out.

A restart of either takes a few seconds; the work around it is usually done or still valid, so an
outage is retried (workers) or answered with 503 + Retry-After (the API), never turned into a
failed job or a 500.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import kombu.exceptions
import pymongo.errors
import redis

# Failures that say "not reachable right now", not "this request or job is wrong".
OUTAGES = (pymongo.errors.ConnectionFailure, redis.ConnectionError, redis.TimeoutError,
           kombu.exceptions.OperationalError)

T = TypeVar("T")


def retrying(step: Callable[[], T], within_s: float, log: logging.Logger | logging.LoggerAdapter,
             what: str) -> T:
    """``step()``, tried again after 0.25, 0.5, 1, 2, 4, 4 … s while it fails with an outage, for up
    to ``within_s``; then the outage is raised."""
    deadline = time.monotonic() + within_s
    delay = 0.25
    while True:
        try:
            return step()
        except OUTAGES as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed (%s: %s); trying again in %g s", what, type(exc).__name__, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 4.0)
