"""Log lines for people (``LOG_FORMAT=text``, the default) or for log collectors (``LOG_FORMAT=json``).

In JSON each line is one object::

    {"time": "2025-01-31T12:00:00.123Z", "level": "INFO", "logger": "worker.tasks", "pid": 4242,
     "message": "[job 3f...] preprocess finished in 41 ms", "requestId": "9c0f...", "jobId": "3f...",
     "stage": "preprocess", "durationMs": 41.2}

``requestId`` is the ``X-Request-Id`` the API answered the submission with: the API puts it into the
job's queue messages, so every line a worker writes about the job carries it, across processes and
machines. Fields come from what the code binds for the work in hand (``bound(jobId=...)``, kept in
a context variable: per thread, per greenlet) and from a call's ``extra={...}``.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_fields: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("avatar_log_fields", default={})
# What every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def bind(**fields: Any) -> contextvars.Token:
    """Add ``fields`` (None values left out) to every line logged from here on in this thread or
    greenlet; undo with ``unbind(token)``."""
    return _fields.set({**_fields.get(), **{k: v for k, v in fields.items() if v is not None}})


def unbind(token: contextvars.Token) -> None:
    _fields.reset(token)


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """``bind`` for the duration of a block."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def current_fields() -> dict[str, Any]:
    """The fields bound now (the worker reads the request id it carries on from here)."""
    return dict(_fields.get())


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, pid, message, the bound fields, the
    record's ``extra`` fields, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        entry.update(_fields.get())
        entry.update({key: value for key, value in record.__dict__.items()
                      if key not in _RECORD_ATTRIBUTES and not key.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter(json_lines: bool) -> logging.Formatter:
    """The formatter for ``LOG_FORMAT`` (``Settings.log_json``)."""
    return JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT)


def configure(json_lines: bool, level: int = logging.INFO) -> None:
    """Format the root logger's lines as JSON or text (a handler on stderr if it has none)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(formatter(json_lines))
    root.setLevel(level)


def gunicorn_logconfig(json_lines: bool) -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its own lines (start, workers, errors) and the app's in
    JSON too, on stdout; empty (gunicorn's default) for text."""
    if not json_lines:
        return {}
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "jobs.logs.JsonFormatter"}},
        "handlers": {"console": handler, "error_console": handler},
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            # The app writes its own access lines, with the request id (api.metrics).
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }
