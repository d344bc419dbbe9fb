"""Small Redis conventions beside the broker: "job finished" notifications and worker heartbeats."""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

FINISHED_CHANNEL = "avatar:job-finished:{job_id}"
# Not a job id (those are UUIDs): the channel that wakes a listener being stopped.
STOP_CHANNEL_ID = "-stop-"
HEARTBEAT_KEY = "avatar:worker:{name}"
HEARTBEAT_PATTERN = "avatar:worker:*"

# While waiting, re-read the record this often even without a notification, in case one was lost
# (Redis restarted, or the worker could not publish).
RECHECK_INTERVAL_S = 1.0
# The listener wakes this often with no message (to notice a dead connection), and waits this long
# before resubscribing after Redis went away.
LISTENER_IDLE_S = 5.0
LISTENER_RETRY_S = 0.5

log = logging.getLogger(__name__)


class JobEvents:
    """Publish and await "this job reached a terminal state" on a per-job channel."""

    def __init__(self, client: redis.Redis):
        self.redis = client
        self._listener: FinishedListener | None = None
        self._listener_lock = threading.Lock()

    def publish_finished(self, job_id: str, status: str) -> None:
        # The send time lets a waiter measure how long the notification took to wake it.
        payload = json.dumps({"status": status, "sentAt": time.time()})
        self.redis.publish(FINISHED_CHANNEL.format(job_id=job_id), payload)

    def subscribe(self, job_id: str) -> "FinishedWait":
        """Start listening for ``job_id`` finishing. Do it before queueing the job, so that even a
        job that ends at once cannot finish unseen; then ``wait()`` on it and ``close()`` it.

        Costs nothing on the network: this process's one listener hears every job's channel."""
        if self._listener is None:
            with self._listener_lock:
                if self._listener is None:
                    self._listener = FinishedListener(self.redis)
        return self._listener.watch(job_id)

    def close(self) -> None:
        """Stop this process's listener, if one was started (a process that serves requests keeps
        it for its whole life; tests that made their own stop theirs)."""
        if self._listener is not None:
            self._listener.stop()


class FinishedListener:
    """One pattern subscription per process to every job's "finished" channel, shared by all the
    requests of that process that wait for a job (``Prefer: wait``).

    A subscription per request cost a Redis connection, a subscribe and its confirmation on every
    waiting POST. Here a waiter only registers in a dict, and the listener thread hands each
    notification to the waiters of that job. Started lazily, so it runs in the process that serves
    requests (after gunicorn's fork), and it resubscribes by itself after Redis comes back; until
    then waiters fall back on re-reading the record every ``RECHECK_INTERVAL_S``.
    """

    def __init__(self, client: redis.Redis):
        self.redis = client
        self._waiters: dict[str, list[FinishedWait]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._listen_forever, name="job-finished-listener",
                                        daemon=True)
        self._thread.start()
        # Wait (briefly) for the first subscription, so the first waiter cannot miss its job's end.
        self._subscribed.wait(RECHECK_INTERVAL_S)

    def watch(self, job_id: str) -> "FinishedWait":
        waiter = FinishedWait(self, job_id)
        with self._lock:
            self._waiters.setdefault(job_id, []).append(waiter)
        return waiter

    def forget(self, waiter: "FinishedWait") -> None:
        with self._lock:
            waiters = self._waiters.get(waiter.job_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(waiter.job_id, None)

    def stop(self, timeout_s: float = 1.0) -> None:
        """End the listener thread and its subscription. A message on a channel no job has wakes
        it at once; if Redis is away it is not waiting on Redis, or it ends at its next idle wake-up."""
        self._stopped.set()
        try:
            self.redis.publish(FINISHED_CHANNEL.format(job_id=STOP_CHANNEL_ID), "")
        except redis.RedisError:
            pass
        self._thread.join(timeout_s)

    def _listen_forever(self) -> None:
        prefix = FINISHED_CHANNEL.format(job_id="")
        while not self._stopped.is_set():
            pubsub = self.redis.pubsub()
            try:
                pubsub.psubscribe(FINISHED_CHANNEL.format(job_id="*"))
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=LISTENER_IDLE_S)
                    if message is None:
                        continue
                    if message["type"] == "psubscribe":
                        self._subscribed.set()
                    elif message["type"] == "pmessage":
                        self._deliver(_text(message["channel"]).removeprefix(prefix), message["data"])
            except Exception as exc:  # Redis gone (or a bug): never let the thread die
                self._subscribed.clear()
                if self._stopped.is_set():
                    return
                log.warning("job-finished listener stopped (%s: %s); resubscribing", type(exc).__name__, exc)
                self._stopped.wait(LISTENER_RETRY_S)
            finally:
                pubsub.close()

    def _deliver(self, job_id: str, data: Any) -> None:
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        for waiter in waiters:
            waiter.notify(data)


class FinishedWait:
    """One request waiting for one job to end (registered with the process's ``FinishedListener``)."""

    def __init__(self, listener: FinishedListener, job_id: str):
        self.listener = listener
        self.job_id = job_id
        self._notified = threading.Event()
        # How long the last notification took from the publisher to this process, in ms.
        self.wake_ms: float | None = None

    def notify(self, data: Any) -> None:
        self.wake_ms = _wake_ms(data)
        self._notified.set()

    def wait(self, is_finished: Callable[[], bool], timeout_s: float) -> bool:
        """Until ``is_finished()`` is true (checked on each notification, and every
        ``RECHECK_INTERVAL_S`` in case one was lost) or ``timeout_s`` passes; returns the last answer."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return is_finished()
            self._notified.wait(min(remaining, RECHECK_INTERVAL_S))
            self._notified.clear()  # before reading: a notification after this wakes the next wait
            if is_finished():
                return True

    def close(self) -> None:
        self.listener.forget(self)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _wake_ms(data: Any) -> float | None:
    try:
        return round((time.time() - float(json.loads(data)["sentAt"])) * 1000, 3)
    except (TypeError, ValueError, KeyError):
        return None


class WorkerRegistry:
    """Each worker process keeps a short-lived key saying what it serves; health reads them all."""

    def __init__(self, client: redis.Redis, ttl_s: int):
        self.redis = client
        self.ttl_s = ttl_s

    def beat(self, name: str, info: dict[str, Any]) -> None:
        payload = dict(info, name=name, seenAt=time.time())
        self.redis.set(HEARTBEAT_KEY.format(name=name), json.dumps(payload), ex=self.ttl_s)

    def forget(self, name: str) -> None:
        self.redis.delete(HEARTBEAT_KEY.format(name=name))

    def alive(self) -> list[dict[str, Any]]:
        """Every worker process whose heartbeat has not expired."""
        keys = list(self.redis.scan_iter(match=HEARTBEAT_PATTERN, count=500))
        if not keys:
            return []
        return [json.loads(raw) for raw in self.redis.mget(keys) if raw]
