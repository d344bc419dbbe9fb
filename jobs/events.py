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
        self.redis.publish(FINISHED_CHANNEL.format(job_id=job_id), status)

    def wait_until(self, job_id: str, is_finished: Callable[[], bool], timeout_s: float) -> bool:
        """Block until ``is_finished()`` is true or ``timeout_s`` passes; returns the last answer.

        Subscribes before the first check, so a notification sent between check and wait is not missed.
        """
        deadline = time.monotonic() + timeout_s
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(FINISHED_CHANNEL.format(job_id=job_id))
            while True:
                if is_finished():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                pubsub.get_message(timeout=min(remaining, RECHECK_INTERVAL_S))
        finally:
            pubsub.close()


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
