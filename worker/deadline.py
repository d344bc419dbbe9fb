"""A stage's time limit that works in every pool that runs tasks on a process's main thread.

Celery enforces ``task_soft_time_limit`` only in the prefork pool (the parent signals the child).
A ``--pool solo`` worker, which the local stack runs (one process per worker: no parent, no pipe
between them), would otherwise let a stuck stage run for ever. ``deadline`` arms a real-time timer
on the main thread and raises Celery's own ``SoftTimeLimitExceeded`` there, so ``worker.tasks``
handles both the same way. In prefork both limits are armed with the same length; whichever fires
first wins. Off the main thread (the threads pool) signals cannot be delivered to the task, and it
does nothing.

Raising the exception in a pool thread instead (``PyThreadState_SetAsyncExc`` from a timer thread)
was tried and dropped: in CPython 3.11 a thread being started by the task thread still carries the
task thread's id until it runs, so the exception also lands there. In one run it killed a photo
decoder thread as it started, and the stage then waited for its decode for ever.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from celery.exceptions import SoftTimeLimitExceeded


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ``SoftTimeLimitExceeded`` inside the block once it has run ``seconds``."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise SoftTimeLimitExceeded(f"ran past {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
