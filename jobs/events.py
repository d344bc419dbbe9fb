"""Small Redis conventions beside the broker: "job finished" notifications and worker heartbeats."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

FINISHED_CHANNEL = "avatar:job-finished:{job_id}"
HEARTBEAT_KEY = "avatar:worker:{name}"
HEARTBEAT_PATTERN = "avatar:worker:*"

# While waiting, re-read the record this often even without a notification, in case one was lost
# (Redis restarted, or the worker could not publish).
RECHECK_INTERVAL_S = 1.0


class JobEvents:
    """Publish and await "this job reached a terminal state" on a per-job channel."""

    def __init__(self, client: redis.Redis):
        self.redis = client

    def publish_finished(self, job_id: str, status: str) -> None:
        # The send time lets a waiter measure how long the notification took to wake it.
        payload = json.dumps({"status": status, "sentAt": time.time()})
        self.redis.publish(FINISHED_CHANNEL.format(job_id=job_id), payload)

    def subscribe(self, job_id: str) -> "FinishedWait":
        """Start listening for ``job_id`` finishing. Do it before queueing the job, so that even a
        job that ends at once cannot finish unseen; then ``wait()`` on it and ``close()`` it."""
        return FinishedWait(self.redis, job_id)



class FinishedWait:
    """A subscription to one job's "finished" channel."""

    def __init__(self, client: redis.Redis, job_id: str):
        self.pubsub = client.pubsub()
        self.pubsub.subscribe(FINISHED_CHANNEL.format(job_id=job_id))
        # Read the confirmation: once it is here the server delivers every later publish to us.
        self.pubsub.get_message(timeout=RECHECK_INTERVAL_S)
        # How long the last notification took from the publisher to this process, in ms.
        self.wake_ms: float | None = None

    def wait(self, is_finished: Callable[[], bool], timeout_s: float) -> bool:
        """Until ``is_finished()`` is true (checked on each notification, and every
        ``RECHECK_INTERVAL_S`` in case one was lost) or ``timeout_s`` passes; returns the last answer."""
        deadline = time.monotonic() + timeout_s
        last_check = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                return is_finished()
            message = self.pubsub.get_message(timeout=min(deadline - now, RECHECK_INTERVAL_S))
            if message is not None and message.get("type") == "message":
                self.wake_ms = _wake_ms(message.get("data"))
            elif time.monotonic() - last_check < RECHECK_INTERVAL_S:
                continue  # a subscription reply, or woken early: nothing new to check
            last_check = time.monotonic()
            if is_finished():
                return True

    def close(self) -> None:
        self.pubsub.close()


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
