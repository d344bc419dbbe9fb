"""The reconciler: finds running jobs whose message was lost and sends their current stage again.

A job's progress lives in two places: its record (MongoDB) and one message (Redis) for the stage it
waits for. The message can be lost while the record says the job is running: Redis restarted
without persistence (every queued message gone), or a whole worker node was killed with messages
it had taken (they come back only after the broker's visibility timeout, minutes later). The record
is the truth, so the reconciler makes the queue agree with it.

A job is *stalled* when all of these hold:
- it is running (queued, preprocessing, inference, exporting) and its record has not changed for
  ``STALL_AFTER_S`` seconds;
- no message for its current stage waits in that stage's queue (it is not just waiting in line);
- no live worker process is running it (each process keeps ``avatar:running:<job id>`` alive while it
  runs a stage; the key expires with the process).

Each pass also counts the running jobs that nothing holds (no message, no worker) once they have
sat still for ``ORPHAN_GRACE_S`` — before they count as stalled — and records the pass in Redis
(``LAST_PASS_KEY``), so that health can say at once that jobs are waiting on the reconciler (after
Redis lost its queues, say) and when it last ran.

For each stalled job the reconciler claims the re-send with a guarded update (same status and same
``updatedAt`` as read, so two reconcilers cannot both send) that also counts it in ``requeues``, then
sends the stage's task again with ``resent=True``. After ``STALL_MAX_REQUEUES`` re-sends the job fails
with code ``stalled``. Each pass also deletes the photos of jobs that ended while their worker died
before it could (``jobs.retention.discard_ended_inputs``). A re-sent task that finds its job already moved on does nothing, and every
stage transition is guarded, so a message that was only late (not lost) cannot complete a job twice.

Where it runs: inside every worker process as a daemon thread (``WorkerRuntime.start_reconciler``),
with a fleet-wide Redis lock so one tick runs per interval however many processes there are; or on
its own with ``avatar reconciler`` (set ``RECONCILE_INTERVAL_S=0`` for the workers then).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from celery import Celery

from celeryconfig import STAGE_QUEUES
from jobs import metrics
from jobs.events import JobEvents
from jobs.files import FileStore
from jobs.retention import discard_ended_inputs
from jobs.settings import Settings
from jobs.store import Job, JobNotFound, JobStatus, JobStore, TransitionError, utcnow
from worker.app import EXPORT, INFERENCE, PREPROCESS, enqueue_stage, message_job

log = logging.getLogger(__name__)

RUNNING_KEY = "avatar:running:{job_id}"
LOCK_KEY = "avatar:reconciler:lock"
LAST_PASS_KEY = "avatar:reconciler:last-pass"
# A running job untouched for this long with no message and no worker is counted as held by
# nothing (a job between its record and its message is never that long).
ORPHAN_GRACE_S = 5.0

# The task that performs the stage a running status waits for.
STAGE_TASK = {
    JobStatus.QUEUED: PREPROCESS,
    JobStatus.PREPROCESSING: PREPROCESS,
    JobStatus.INFERENCE: INFERENCE,
    JobStatus.EXPORTING: EXPORT,
}

STALLED_MESSAGE = ("The avatar could not be generated: its job was lost by the workers {n} times "
                   "(a worker or the queue failed). Please submit it again.")


@dataclass
class ReconcileReport:
    """What one pass did (for logs and tests)."""

    stale: int = 0
    resent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # Running jobs that no message and no worker holds (re-sent once stalled).
    orphans: int = 0

    def as_dict(self) -> dict[str, int | list[str]]:
        return {"stale": self.stale, "orphans": self.orphans, "resent": self.resent, "failed": self.failed}


class Reconciler:
    """One pass at a time over the stalled jobs; ``run_forever`` ticks it."""

    def __init__(self, settings: Settings, store: JobStore, broker: redis.Redis, celery: Celery,
                 files: FileStore | None = None):
        self.settings = settings
        self.store = store
        self.redis = broker
        self.celery = celery
        self.files = files or FileStore.from_settings(settings, keyed=False)
        self.events = JobEvents(broker)

    def run_once(self) -> ReconcileReport:
        report = ReconcileReport()
        discard_ended_inputs(self.store, self.files)
        now = utcnow()
        still = self.store.stale_jobs(now - timedelta(seconds=min(ORPHAN_GRACE_S, self.settings.stall_after_s)))
        if still:
            waiting = self.waiting_messages()
            running = self.running_jobs([job.id for job in still])
            orphans = [job for job in still if (STAGE_TASK[job.status], job.id) not in waiting
                       and job.id not in running]
        else:
            orphans = []
        report.orphans = len(orphans)
        cutoff = now - timedelta(seconds=self.settings.stall_after_s)
        stalled = [job for job in orphans if job.updated_at < cutoff]
        report.stale = sum(1 for job in still if job.updated_at < cutoff)
        for job in stalled:
            task = STAGE_TASK[job.status]
            if not self.store.mark_requeued(job):
                continue  # it moved meanwhile, or another reconciler claimed it
            requeues = int(job.doc.get("requeues", 0))
            if requeues >= self.settings.stall_max_requeues:
                self._fail_stalled(job, requeues)
                report.failed.append(job.id)
                continue
            enqueue_stage(self.celery, task, job.id, resent=True)
            metrics.RECONCILER_RESENT.labels(status=job.status.value).inc()
            report.resent.append(job.id)
            log.warning("[job %s] stalled in %s for over %.0f s with no message or worker: sent %s "
                        "again (re-send %d of %d)", job.id, job.status.value, self.settings.stall_after_s,
                        task, requeues + 1, self.settings.stall_max_requeues)
        return report

    def waiting_messages(self) -> set[tuple[str, str]]:
        """(task name, job id) of every message waiting in the queues (Redis lists, kombu's format)."""
        waiting: set[tuple[str, str]] = set()
        for queue in STAGE_QUEUES:
            for raw in self.redis.lrange(queue, 0, -1):
                parsed = message_job(raw)
                if parsed is not None:
                    waiting.add(parsed)
        return waiting

    def running_jobs(self, job_ids: list[str]) -> set[str]:
        """The ids among ``job_ids`` that a live worker process is running right now."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.exists(RUNNING_KEY.format(job_id=job_id))
        return {job_id for job_id, exists in zip(job_ids, pipe.execute()) if exists}

    def _fail_stalled(self, job: Job, requeues: int) -> None:
        try:
            self.store.fail(job.id, "stalled", STALLED_MESSAGE.format(n=requeues))
        except (TransitionError, JobNotFound) as exc:
            log.info("[job %s] not marked stalled: %s", job.id, exc)
            return
        log.error("[job %s] failed as stalled after %d re-sends", job.id, requeues)
        metrics.JOBS_FAILED.labels(code="stalled").inc()
        metrics.JOB_DURATION.labels(outcome=JobStatus.FAILED.value).observe(
            max(0.0, (utcnow() - job.created_at).total_seconds()))
        try:
            self.events.publish_finished(job.id, JobStatus.FAILED.value)
        except redis.RedisError:
            pass
        self.files.discard_inputs(job.id)
        try:  # the submitter's webhook still hears about it
            self.celery.send_task("avatar.webhook", args=(job.id,), kwargs={"event": "avatar.failed"})
        except Exception as exc:
            log.warning("[job %s] could not queue its webhook: %s", job.id, exc)

    def tick(self, holder: str) -> ReconcileReport | None:
        """One pass if this caller gets the fleet-wide lock for this interval, else None."""
        interval_ms = max(100, int(self.settings.reconcile_interval_s * 1000))
        if not self.redis.set(LOCK_KEY, holder, nx=True, px=interval_ms):
            return None
        report = self.run_once()
        record_pass(self.redis, holder, report)
        return report

    def run_forever(self, holder: str, stop: threading.Event) -> None:
        """Tick every ``reconcile_interval_s`` until ``stop`` is set; errors are logged, not fatal."""
        while not stop.wait(self.settings.reconcile_interval_s):
            try:
                report = self.tick(holder)
            except Exception as exc:  # Redis or the store down: try again next tick
                log.warning("reconciler pass failed: %s: %s", type(exc).__name__, exc)
                continue
            if report and (report.resent or report.failed):
                log.warning("reconciler: %d stale, re-sent %d, failed %d as stalled",
                            report.stale, len(report.resent), len(report.failed))


def record_pass(broker: redis.Redis, holder: str, report: ReconcileReport) -> None:
    """Keep what the last pass saw where health reads it (``last_pass``)."""
    record = {"at": time.time(), "by": holder, "orphans": report.orphans,
              "resent": len(report.resent), "failed": len(report.failed)}
    broker.set(LAST_PASS_KEY, json.dumps(record), ex=24 * 3600)


def last_pass(broker: redis.Redis) -> dict | None:
    """The last pass's record (``record_pass``), or None if none ran in the last day."""
    raw = broker.get(LAST_PASS_KEY)
    return json.loads(raw) if raw else None
