"""A stage's time limit that works in every pool: prefork, solo and threads.

Celery enforces ``task_soft_time_limit`` only in the prefork pool (the parent signals the child).
A ``--pool solo`` worker, which the local stack runs (one process per worker: no parent, no pipe
between them), or a ``--pool threads`` gpu worker that batches inference, would otherwise let a
stuck stage run for ever. ``deadline`` raises Celery's own ``SoftTimeLimitExceeded`` inside the
stage, so ``worker.tasks`` handles every pool the same way:

- on the main thread (solo, prefork) a real-time timer's SIGALRM raises it; in prefork both limits
  are armed with the same length, and whichever fires first wins;
- on any other thread (the threads pool) a timer thread raises it in the stage's thread as an
  asynchronous exception (``PyThreadState_SetAsyncExc``).

Either way Python raises it between two bytecodes: a single C call that never returns (a hung
model run) is not interrupted, in any pool; the reconciler and the broker's visibility timeout are
what recover such a worker.
"""
from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from celery.exceptions import SoftTimeLimitExceeded


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ``SoftTimeLimitExceeded`` inside the block once it has run ``seconds``."""
    if seconds <= 0:
        yield
    elif threading.current_thread() is threading.main_thread():
        with _alarm(seconds):
            yield
    else:
        with _thread_timer(seconds):
            yield


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise SoftTimeLimitExceeded(f"ran past {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _thread_timer(seconds: float) -> Iterator[None]:
    target = threading.get_ident()
    lock = threading.Lock()
    state = {"inside": True, "fired": False}

    def expire() -> None:
        with lock:
            if state["inside"]:
                _set_async_exc(target, SoftTimeLimitExceeded)
                state["fired"] = True

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["inside"] = False
            if state["fired"]:
                # Fired as the block was ending: take back an exception not raised yet, so that it
                # cannot go off later in whatever this thread runs next.
                _set_async_exc(target, None)


def _set_async_exc(thread_id: int, exc_type: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc_type) if exc_type else None)
