"""Whether the service can take one more job now: room on disk, and a backlog the fleet can finish.

Checked before an upload is read, so a refusal costs the client one round trip, not its upload:

- **Disk.** Below ``MIN_FREE_DISK_MB`` free on the volume the photos and GLBs go to (``DATA_DIR``;
  with object storage there is none),
  or on the store's volume where the store reports it (MongoDB's ``dbStats`` ``fsUsedSize`` and
  ``fsTotalSize``; the local stand-in does not, its files are in ``var/`` beside ``DATA_DIR``), a new
  job is refused with 503 before the volume fills and takes the running jobs with it.
- **Backlog.** Each stage queue drains at (worker processes serving it) / (seconds a message takes
  there), from the workers' heartbeats (each reports its recent seconds per stage). When the queues
  hold more than the fleet can work through within ``JOB_TIMEOUT_S``, a new job would only wait to
  time out: 503 with ``Retry-After`` saying when the backlog will be short enough. ``MAX_QUEUE_DEPTH``
  (messages in the stage queues) replaces the estimate when set. A queue no worker serves yet is not
  judged: an autoscaler may be starting workers because of that very backlog.

Both answers are cached for ``CACHE_S`` per API process (a burst of uploads costs one look); each
job admitted meanwhile is added to the cached backlog, so a burst cannot slip past the limit.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api.errors import ServiceUnavailable
from api.services import Services
from celeryconfig import CPU_QUEUE, STAGE_QUEUES, task_routes

CACHE_S = 2.0
STORE_SPACE_CACHE_S = 30.0
# Seconds a stage message is assumed to take on a worker that has not reported its own yet.
UNMEASURED_STAGE_S = 0.5
# Which stages wait in which queue (celeryconfig's routes).
STAGES_BY_QUEUE = {queue: [task.removeprefix("avatar.") for task, route in task_routes.items()
                           if route["queue"] == queue] for queue in STAGE_QUEUES}


@dataclass
class Backlog:
    """What the stage queues hold and how fast the live workers drain each."""

    depths: dict[str, int]
    # Seconds of the fleet's time one more message in the queue costs (per message / processes);
    # None: no live worker serves the queue.
    drain_per_message_s: dict[str, float | None]

    @property
    def depth(self) -> int:
        return sum(self.depths.values())

    @property
    def drain_s(self) -> float | None:
        """How long until the queues are empty; None if a queue holding messages has no worker."""
        times = []
        for queue, depth in self.depths.items():
            if depth:
                if self.drain_per_message_s[queue] is None:
                    return None
                times.append(depth * self.drain_per_message_s[queue])
        return max(times, default=0.0)

    def admitted(self) -> None:
        """One more job accepted since this was measured: its first message is in the cpu queue."""
        self.depths[CPU_QUEUE] += 1


def check_room_for_a_job(svc: Services) -> None:
    """Raise ``ServiceUnavailable`` (503 with Retry-After) if a new job cannot be taken now."""
    low = low_disk(svc)
    if low:
        raise ServiceUnavailable(f"The service is short of disk space ({low}), so it is not taking new "
                                 "avatars; please retry later.", None, {"Retry-After": "300"})
    settings = svc.settings
    backlog = _cached(svc, "backlog", CACHE_S, lambda: measure_backlog(svc))
    if settings.max_queue_depth > 0:
        if backlog.depth >= settings.max_queue_depth:
            raise ServiceUnavailable(f"The service has {backlog.depth} jobs waiting, its limit; please "
                                     "retry in a minute.", None, {"Retry-After": "60"})
        backlog.admitted()
        return
    if backlog.drain_s is not None and backlog.drain_s > settings.job_timeout_s:
        retry_after = max(1, min(300, math.ceil(backlog.drain_s - settings.job_timeout_s)))
        raise ServiceUnavailable(f"The service has more work waiting than it can finish in "
                                 f"{settings.job_timeout_s:g} s ({backlog.depth} steps queued); please "
                                 f"retry in {retry_after} s.", None, {"Retry-After": str(retry_after)})
    backlog.admitted()  # counted until the next measurement, so a burst cannot all slip through


def measure_backlog(svc: Services) -> Backlog:
    """The stage queues' depth and the time the live workers need to drain them."""
    pipe = svc.redis.pipeline(transaction=False)
    for queue in STAGE_QUEUES:
        pipe.llen(queue)
    depths = dict(zip(STAGE_QUEUES, (int(n) for n in pipe.execute())))
    workers = svc.workers.alive()
    per_message: dict[str, float | None] = {}
    for queue in STAGE_QUEUES:
        serving = [w for w in workers if queue in w.get("queues", [])]
        seconds = [_seconds_per_message(w, queue) for w in serving]
        per_message[queue] = sum(seconds) / len(seconds) / len(serving) if serving else None
    return Backlog(depths, per_message)


def _seconds_per_message(worker: dict[str, Any], queue: str) -> float:
    measured = worker.get("secondsPerStage") or {}
    stages = STAGES_BY_QUEUE[queue]
    return sum(measured.get(stage, UNMEASURED_STAGE_S) for stage in stages) / len(stages)


def low_disk(svc: Services) -> str | None:
    """Why disk space is too low for new jobs ("12 MB free on /data"), or None."""
    minimum = svc.settings.min_free_disk_mb * 1024 * 1024
    try:
        space = svc.files.free_bytes()  # None: object storage, no local volume to fill
    except OSError:
        space = None
    free = space[0] if space is not None else None
    if free is not None and free < minimum:
        return f"{free // (1024 * 1024)} MB free on {svc.files.location}"
    store_free = _cached(svc, "store-space", STORE_SPACE_CACHE_S, lambda: store_free_bytes(svc))
    if store_free is not None and store_free < minimum:
        return f"{store_free // (1024 * 1024)} MB free on the job store's volume"
    return None


def store_free_bytes(svc: Services) -> int | None:
    """Free bytes on the store's volume, where it says (MongoDB's dbStats); None if it does not."""
    try:
        stats = svc.store.db.command("dbStats")
    except Exception:
        return None
    if "fsTotalSize" in stats and "fsUsedSize" in stats:
        return int(stats["fsTotalSize"]) - int(stats["fsUsedSize"])
    return None


_cache: dict[tuple[int, str], tuple[float, Any]] = {}
_cache_lock = threading.Lock()


def _cached(svc: Services, what: str, max_age_s: float, compute: Callable[[], Any]) -> Any:
    """``compute()``, or its value from less than ``max_age_s`` ago for the same app's services."""
    key = (id(svc), what)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < max_age_s:
        return hit[1]
    value = compute()
    with _cache_lock:
        _cache[key] = (now, value)
    return value
