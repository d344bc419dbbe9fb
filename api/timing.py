"""Per-request step timings, returned in a ``Server-Timing`` header (W3C Server Timing).

A view wraps its steps in ``step("name")``; the header then reads, for example,
``Server-Timing: parse;dur=2.1, validate;dur=0.1, store;dur=1.3, record;dur=1.4, enqueue;dur=0.6``.
Browsers' developer tools and the benchmark read it; it names steps only, never data.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from flask import Flask, Response, g

HEADER = "Server-Timing"


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Time the block as ``name`` for this request's header."""
    start = time.perf_counter()
    try:
        yield
    finally:
        record(name, (time.perf_counter() - start) * 1000)


def record(name: str, ms: float) -> None:
    """Add a duration measured elsewhere (e.g. a notification's delivery time)."""
    steps = g.setdefault("server_timing", {})
    steps[name] = steps.get(name, 0.0) + ms


def add_header(response: Response) -> Response:
    steps = g.get("server_timing")
    if steps:
        response.headers[HEADER] = ", ".join(f"{name};dur={ms:.2f}" for name, ms in steps.items())
    return response


def init_app(app: Flask) -> None:
    app.after_request(add_header)
