"""Waiting for a job's end inside a request: ``Prefer: wait=N`` on generate and status, and a
download of a job that is still running.

A waiting request registers with the process's one "job finished" listener (``jobs.events``), so it
costs no Redis connection of its own, and reads the record only when a notification arrives (or
once a second, in case one was lost).
"""
from __future__ import annotations

import re

from api.services import Services, services
from jobs.events import FinishedWait
from jobs.store import Job

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


def prefer_wait_seconds(prefer: str | None, maximum: int) -> int:
    """``Prefer: wait=N`` (RFC 7240) as seconds, capped at ``maximum``; 0 when absent."""
    match = _PREFER_WAIT.search(prefer or "")
    return min(int(match.group(1)), maximum) if match else 0


def await_end(svc: Services, job: Job, wait_s: float) -> Job:
    """``job`` once it has ended, or as it is after ``wait_s`` seconds; at once if it has already
    ended or ``wait_s`` is 0. ``JobNotFound`` if it is deleted meanwhile."""
    if job.status.is_terminal() or wait_s <= 0:
        return job
    waiting = svc.events.subscribe(job.id)
    try:
        job = svc.store.get(job.id)  # it may have ended before the subscription started
        if job.status.is_terminal():
            return job
        return wait_for_end(job.id, waiting, wait_s)
    finally:
        waiting.close()


def wait_for_end(job_id: str, waiting: FinishedWait, timeout_s: float) -> Job:
    """The job once it has ended, or as it is after ``timeout_s``; ``waiting`` was subscribed
    before the job could end, so the record is only read when a notification arrives."""
    svc = services()
    latest: dict[str, Job] = {}

    def ended() -> bool:
        latest["job"] = svc.store.get(job_id)
        return latest["job"].status.is_terminal()

    waiting.wait(ended, timeout_s)
    return latest["job"]
