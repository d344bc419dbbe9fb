"""Deleting what the service no longer needs to keep: expired avatars, and files nothing refers to.

Two mechanisms, because MongoDB can expire records but not files:

- The job record carries ``expiresAt`` (created + ``RESULT_RETENTION_DAYS``) under a TTL index: the
  server deletes the record by itself (within about a minute of the time).
- ``sweep`` deletes files (on the volume or in object storage alike): the GLB and any leftovers of jobs whose record has expired or is gone,
  and photos or stage files of jobs that have ended (or never got a record: the API died between
  storing the photos and recording the job). It also removes records past ``expiresAt`` that the
  TTL monitor has not reached yet, with their files.

``sweep`` runs from ``avatar sweep`` (cron) and inside the workers: at the end of a job, at most once
per ``SWEEP_INTERVAL_S`` across the fleet (a Redis lock), so a deployment without cron is still
swept. Files younger than ``grace_s`` are left alone: a POST writes the photos a moment before it
writes the record.
"""
from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from jobs.files import FileStore
from jobs.store import JobNotFound, JobStore, utcnow

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 3600.0
SWEEP_LOCK_KEY = "avatar:retention-sweep"


@dataclass
class SweepReport:
    expired_records: int = 0
    orphan_results: int = 0
    leftover_inputs: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"expiredRecords": self.expired_records, "orphanResults": self.orphan_results,
                "leftoverInputs": self.leftover_inputs, "errors": self.errors}


def sweep(store: JobStore, files: FileStore, now: datetime | None = None,
          grace_s: float = DEFAULT_GRACE_S) -> SweepReport:
    """One pass; see the module docstring. Safe to run from several processes at once."""
    now = now or utcnow()
    report = SweepReport()
    for job_id in store.expired_ids(now):
        with contextlib.suppress(JobNotFound):
            store.delete(job_id)
        files.purge_all(job_id)
        report.expired_records += 1

    cutoff = now.timestamp() - grace_s
    results = files.result_ages()
    known = _statuses(store, [i for i in results if _is_job_id(i)])
    for job_id, modified in results.items():
        if job_id not in known and modified < cutoff:
            files.storage.delete(files.result_key(job_id))
            report.orphan_results += 1
    report.leftover_inputs = discard_ended_inputs(store, files, grace_s, now)
    if any(report.as_dict()[k] for k in ("expiredRecords", "orphanResults", "leftoverInputs")):
        log.info("retention sweep: %s", report.as_dict())
    return report


def discard_ended_inputs(store: JobStore, files: FileStore, grace_s: float = DEFAULT_GRACE_S,
                         now: datetime | None = None) -> int:
    """Delete the photos and stage files of jobs that have ended, and of ids with no record once
    they are older than ``grace_s``; returns how many jobs' inputs went.

    A job deletes its own inputs when it ends; this catches a worker that died between recording
    the end and deleting them (its message may be gone too, so nothing else would come back).
    Cheap: it lists only the in-flight jobs' files. The reconciler runs it on every pass.
    """
    cutoff = (now.timestamp() if now else time.time()) - grace_s
    inputs = files.input_ages()
    known = _statuses(store, [i for i in inputs if _is_job_id(i)])
    discarded = 0
    for job_id, newest in inputs.items():
        status = known.get(job_id)
        if status is not None and not status.is_terminal():
            continue  # a running job's photos: the job deletes them when it ends
        if status is not None or newest < cutoff:
            # Ended: at once. No record: only past the grace, since a POST writes the photos a
            # moment before it writes the record.
            files.purge_inputs(job_id)
            discarded += 1
    return discarded


def _statuses(store: JobStore, ids: list[str]) -> dict:
    known = {}
    for start in range(0, len(ids), 500):
        known.update(store.statuses(ids[start:start + 500]))
    return known


# When this process may next ask for the sweep lock (time.monotonic()): every job's end calls
# sweep_if_due, and a Redis round trip per job to learn that another process holds the lock costs
# more than the check.
_next_lock_try = 0.0


def sweep_if_due(store: JobStore, files: FileStore, redis_client, interval_s: float,
                 grace_s: float = DEFAULT_GRACE_S) -> SweepReport | None:
    """``sweep`` unless another process swept within ``interval_s`` (a Redis lock with that expiry);
    each process asks for the lock at most once per ``interval_s``. Never raises: retention must not
    fail the job whose end triggered it."""
    global _next_lock_try
    if interval_s <= 0:
        return None
    now = time.monotonic()
    if now < _next_lock_try:
        return None
    _next_lock_try = now + interval_s
    try:
        if not redis_client.set(SWEEP_LOCK_KEY, "1", nx=True, ex=int(interval_s)):
            return None
        return sweep(store, files, grace_s=grace_s)
    except Exception as exc:
        log.warning("retention sweep failed: %s", exc)
        return None


def _is_job_id(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False
