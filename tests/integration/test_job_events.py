"""'Job finished' notifications on the stack's real Redis: one listener per process, many waiters."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from jobs.events import JobEvents


def _pattern_subscriptions(stack, events: JobEvents) -> int:
    """Pattern subscriptions held by ``events``' connections (told apart from the API's and other
    tests' by the client name ``_named_events`` gives them)."""
    name = events.redis.connection_pool.connection_kwargs["client_name"]
    return sum(int(c.get("psub", 0)) for c in stack.broker.client_list() if c.get("name") == name)


def _named_events(stack) -> JobEvents:
    return JobEvents(redis.Redis.from_url(stack.settings.broker_url, client_name=f"events-test-{uuid.uuid4().hex}"))


@pytest.fixture
def events(stack) -> Iterator[JobEvents]:
    """A process's JobEvents; its listener is stopped afterwards, so it does not outlive the stack."""
    events = _named_events(stack)
    yield events
    events.close()


def test_each_waiter_wakes_for_its_own_job(stack, events: JobEvents) -> None:
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    ended: set[str] = set()
    waiting, bystander = events.subscribe(mine), events.subscribe(other)
    try:
        ended.add(mine)
        JobEvents(stack.broker).publish_finished(mine, "completed")  # as a worker would
        start = time.monotonic()
        assert waiting.wait(lambda: mine in ended, timeout_s=5)
        # Woken by the notification, not by the once-a-second re-read.
        assert time.monotonic() - start < 0.5
        assert waiting.wake_ms is not None and waiting.wake_ms >= 0
        assert not bystander.wait(lambda: other in ended, timeout_s=0.3)
        assert bystander.wake_ms is None
    finally:
        waiting.close()
        bystander.close()


def test_one_subscription_serves_every_waiter_of_a_process(stack, events: JobEvents) -> None:
    jobs = [str(uuid.uuid4()) for _ in range(20)]
    waits = [events.subscribe(job) for job in jobs]
    assert _pattern_subscriptions(stack, events) == 1
    woke: list[bool] = [False] * len(jobs)

    def wait(i: int) -> None:
        woke[i] = waits[i].wait(lambda: waits[i].wake_ms is not None, timeout_s=5)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for job in jobs:
        events.publish_finished(job, "completed")
    for thread in threads:
        thread.join()
    for waiter in waits:
        waiter.close()
    assert all(woke)


def test_the_listener_resubscribes_after_losing_its_connection(stack, events: JobEvents) -> None:
    job = str(uuid.uuid4())
    waiting = events.subscribe(job)
    try:
        killed = stack.broker.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1
        # Until it is back, notifications are lost (waiters re-read the record every second);
        # afterwards they arrive again.
        deadline = time.monotonic() + 5
        while waiting.wake_ms is None and time.monotonic() < deadline:
            events.publish_finished(job, "completed")
            waiting.wait(lambda: waiting.wake_ms is not None, timeout_s=0.2)
        assert waiting.wake_ms is not None
    finally:
        waiting.close()


def test_a_stopped_listener_unsubscribes_at_once(stack) -> None:
    events = _named_events(stack)
    events.subscribe(str(uuid.uuid4())).close()
    assert _pattern_subscriptions(stack, events) == 1
    start = time.monotonic()
    events.close()
    # Woken by its stop message, not after its 5 s idle wait.
    assert time.monotonic() - start < 1.0
    # Its connection is closed; Redis drops the subscription as it reads the close.
    deadline = time.monotonic() + 2.0
    while _pattern_subscriptions(stack, events) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _pattern_subscriptions(stack, events) == 0
