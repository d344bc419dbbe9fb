"""worker.deadline: the stage time limit the solo pool needs (Celery's exists only in prefork)."""
from __future__ import annotations

import signal
import threading
import time

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from worker.deadline import deadline


def test_a_stage_past_its_limit_is_interrupted() -> None:
    start = time.monotonic()
    with pytest.raises(SoftTimeLimitExceeded):
        with deadline(0.05):
            time.sleep(2)
    assert time.monotonic() - start < 1.0


def test_a_stage_within_its_limit_leaves_no_timer_behind() -> None:
    def mine(signum, frame) -> None:  # a handler someone else installed
        pass

    before = signal.signal(signal.SIGALRM, mine)
    try:
        with deadline(5):
            time.sleep(0.01)
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        assert signal.getsignal(signal.SIGALRM) is mine
    finally:
        signal.signal(signal.SIGALRM, before)


def test_off_the_main_thread_it_does_nothing() -> None:
    outcome: list[str] = []

    def stage() -> None:
        try:
            with deadline(0.01):
                time.sleep(0.1)
            outcome.append("ran to the end")
        except SoftTimeLimitExceeded:
            outcome.append("interrupted")

    thread = threading.Thread(target=stage)
    thread.start()
    thread.join()
    assert outcome == ["ran to the end"]
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
