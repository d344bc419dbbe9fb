"""worker.deadline: the stage time limit the solo and threads pools need (Celery's exists only in prefork)."""
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


def _in_a_thread(stage) -> list:
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(stage()))
    thread.start()
    thread.join(10)
    return outcome


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_off_the_main_thread_a_stage_past_its_limit_is_interrupted_too() -> None:
    def stage() -> str:
        start = time.monotonic()
        try:
            with deadline(0.05):
                _spin(2)
            return "ran to the end"
        except SoftTimeLimitExceeded:
            return f"interrupted after {time.monotonic() - start:.2f} s"

    (outcome,) = _in_a_thread(stage)
    assert outcome.startswith("interrupted"), outcome
    assert float(outcome.split()[2]) < 1.0
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no signal timer in a thread


def test_a_limit_reached_as_the_block_ends_never_goes_off_after_it() -> None:
    """The timer can fire just as the block finishes: the exception must be raised inside the block
    or not at all, never later in whatever the thread runs next."""
    def stage() -> tuple[int, int]:
        interrupted = stray = 0
        for i in range(150):
            try:
                # 0 to 8 ms, or 30, against 5 ms (the timer thread waits up to the 5 ms GIL switch
                # interval): some blocks end before the limit, some after, some just as it fires.
                with deadline(0.005):
                    _spin(0.002 * (i % 5) if i % 6 else 0.03)
            except SoftTimeLimitExceeded:
                interrupted += 1
            try:
                _spin(0.002)
            except SoftTimeLimitExceeded:
                stray += 1
        return interrupted, stray

    ((interrupted, stray),) = _in_a_thread(stage)
    assert stray == 0
    assert interrupted > 0  # the race was really run


def test_a_stage_waiting_on_a_stuck_batched_model_run_is_interrupted() -> None:
    import numpy as np

    from worker.batching import LandmarkBatcher

    def stuck_model(crops):
        time.sleep(1.5)  # one C call the runner thread cannot leave
        return np.zeros((len(crops), 468, 3), np.float32), np.ones(len(crops), np.float32)

    batcher = LandmarkBatcher(stuck_model, max_jobs=4, window_s=0.0)

    def stage() -> float:
        start = time.monotonic()
        with pytest.raises(SoftTimeLimitExceeded):
            with deadline(0.1):
                batcher.predict_landmarks(np.zeros((3, 3, 224, 224), np.float32))
        return time.monotonic() - start

    (waited,) = _in_a_thread(stage)
    assert waited < 0.5
