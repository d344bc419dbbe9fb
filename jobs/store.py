"""The job record in MongoDB and the one state machine every job follows.

    queued → preprocessing → inference → exporting → completed
       └──────────┴──────────────┴────────────┴──────→ failed | canceled

``queued`` is entered by the API and left when the first stage starts (``start``: a note nobody waits
for; finishing preprocess accepts queued too). Past that, a running status names the stage the job is
waiting for or running: the update that finishes one stage also enters the next (``advance``), so
each stage costs one round trip to the store, not two.

Every transition is a guarded ``update_one({"_id": id, "status": <expected>}, ...)`` followed by a
``modified_count`` check, so two processes racing on one job cannot both win: the loser gets a
``TransitionError``. (``find_one_and_update`` would read back the document in the same round trip, but
the local wire-protocol store answers it with a collection scan; the read-back is only done on the
failure path here.)
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

import pymongo
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.write_concern import WriteConcern

from jobs.settings import Settings

log = logging.getLogger(__name__)


class JobStatus(str, Enum):
    QUEUED = "queued"
    PREPROCESSING = "preprocessing"
    INFERENCE = "inference"
    EXPORTING = "exporting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED})
ACTIVE_STATUSES = tuple(s for s in JobStatus if s not in TERMINAL_STATUSES)

# What finishing a stage enters.
NEXT_STAGE = {JobStatus.PREPROCESSING: JobStatus.INFERENCE, JobStatus.INFERENCE: JobStatus.EXPORTING,
              JobStatus.EXPORTING: JobStatus.COMPLETED}

# The statuses a stage may be finished from: its own, or any running one before it. A stage queues
# the next stage's task as soon as its work is done and records its own end while that task is on
# its way (worker.tasks), so the next stage can start, and in a slow store even finish, before the
# record shows it. Never from a later or an ended status: a late record of an earlier stage cannot
# take the job back, and nothing moves a job out of completed, failed or canceled.
FINISHABLE_FROM = {
    JobStatus.PREPROCESSING: (JobStatus.QUEUED, JobStatus.PREPROCESSING),
    JobStatus.INFERENCE: (JobStatus.QUEUED, JobStatus.PREPROCESSING, JobStatus.INFERENCE),
    JobStatus.EXPORTING: (JobStatus.QUEUED, JobStatus.PREPROCESSING, JobStatus.INFERENCE, JobStatus.EXPORTING),
}

# Writes nobody waits for (JobStore.start).
UNACKNOWLEDGED = WriteConcern(w=0)

# Rough share of the work done when a status is entered (for clients' progress bars).
PROGRESS = {
    JobStatus.QUEUED: 0.0,
    JobStatus.PREPROCESSING: 0.1,
    JobStatus.INFERENCE: 0.5,
    JobStatus.EXPORTING: 0.7,
    JobStatus.COMPLETED: 1.0,
}


class JobStoreError(Exception):
    """Base for the store's domain errors (the API maps each to a status code)."""


class JobNotFound(JobStoreError):
    def __init__(self, job_id: str):
        super().__init__(f"Avatar not found: no avatar has the id {job_id!r}")
        self.job_id = job_id


class TransitionError(JobStoreError):
    """The job was not in a state that allows the transition (someone else moved it first)."""

    def __init__(self, job_id: str, transition: str, expected: tuple[JobStatus, ...],
                 actual: JobStatus | None):
        self.job_id = job_id
        self.transition = transition
        self.expected = expected
        self.actual = actual
        wanted = " or ".join(s.value for s in expected)
        now = actual.value if actual else "deleted"
        super().__init__(f"cannot {transition} avatar {job_id}: it is {now}, not {wanted}")


def utcnow() -> datetime:
    # MongoDB stores milliseconds; truncating here keeps what we return equal to what we read back.
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Job:
    """A read-only view of one job record."""

    doc: Mapping[str, Any]

    @property
    def id(self) -> str:
        return self.doc["_id"]

    @property
    def status(self) -> JobStatus:
        return JobStatus(self.doc["status"])

    @property
    def owner(self) -> str | None:
        return self.doc.get("owner")

    @property
    def stage(self) -> str:
        return self.doc.get("stage", self.doc["status"])

    @property
    def progress(self) -> float:
        if self.status in PROGRESS:
            return PROGRESS[self.status]
        return PROGRESS.get(JobStatus(self.stage), 0.0)  # failed / canceled: how far it got

    @property
    def error(self) -> dict | None:
        return self.doc.get("error")

    @property
    def options(self) -> dict[str, Any]:
        """What the client asked for beyond the photos (``textureSize``)."""
        return dict(self.doc.get("options") or {})

    @property
    def result(self) -> dict:
        return self.doc.get("result") or {}

    @property
    def timings(self) -> dict[str, float]:
        return dict(self.doc.get("timings") or {})

    @property
    def trace(self) -> dict[str, float]:
        """Wall-clock points (epoch seconds) the stages recorded: when each started and finished."""
        return dict(self.doc.get("trace") or {})

    @property
    def created_at(self) -> datetime:
        return _aware(self.doc["createdAt"])

    @property
    def updated_at(self) -> datetime:
        return _aware(self.doc["updatedAt"])

    @property
    def finished_at(self) -> datetime | None:
        value = self.doc.get("finishedAt")
        return _aware(value) if value else None

    @property
    def download_count(self) -> int:
        return int(self.doc.get("downloadCount", 0))


def _aware(value: datetime) -> datetime:
    # pymongo returns naive UTC datetimes unless the client is tz_aware; be robust to either.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def connect(settings: Settings, server_selection_timeout_ms: int = 5000) -> pymongo.MongoClient:
    """A client for ``settings.mongodb_uri``.

    ``retryWrites=false`` unless the URI decides: retryable writes buy nothing on a standalone
    server, and the local wire-protocol store slows down after ~10,000 of them. Real MongoDB 7
    accepts the option unchanged.
    """
    uri = settings.mongodb_uri or "mongodb://127.0.0.1:27017"
    options: dict[str, Any] = {"tz_aware": True, "serverSelectionTimeoutMS": server_selection_timeout_ms}
    if "retrywrites=" not in uri.lower():
        options["retryWrites"] = False
    return pymongo.MongoClient(uri, **options)


class JobStore:
    """The ``jobs`` collection: creates records and moves them through the state machine."""

    def __init__(self, db: Database, result_retention: timedelta | None = None):
        self.db = db
        self.jobs: Collection = db["jobs"]
        # How long a job's record (and, through jobs.retention, its GLB) is kept; None: for ever.
        self.result_retention = result_retention

    @classmethod
    def from_settings(cls, settings: Settings, client: pymongo.MongoClient | None = None) -> "JobStore":
        client = client or connect(settings)
        days = settings.result_retention_days
        return cls(client[settings.database_name], timedelta(days=days) if days > 0 else None)

    def ensure_indexes(self) -> None:
        """Indexes for "my avatars" (owner, newest first) and for sweeping stale jobs."""
        self.jobs.create_index([("owner", pymongo.ASCENDING), ("createdAt", pymongo.DESCENDING)],
                               name="owner_createdAt")
        self.jobs.create_index([("status", pymongo.ASCENDING), ("updatedAt", pymongo.ASCENDING)],
                               name="status_updatedAt")
        # Retention: the server deletes a record once its expiresAt has passed (jobs.retention
        # deletes the files that go with it).
        self.jobs.create_index([("expiresAt", pymongo.ASCENDING)], name="expiresAt_ttl", expireAfterSeconds=0)

    def ping(self) -> None:
        self.db.client.admin.command("ping")

    # -- retention (jobs.retention) ------------------------------------------------------------

    def statuses(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """The status of each of ``job_ids`` that still has a record."""
        docs = self.jobs.find({"_id": {"$in": list(job_ids)}}, {"status": 1})
        return {doc["_id"]: JobStatus(doc["status"]) for doc in docs}

    def expired_ids(self, now: datetime, limit: int = 1000) -> list[str]:
        """Ended jobs whose retention has run out (the TTL monitor may not have removed them yet)."""
        query = {"expiresAt": {"$lte": now}, "status": {"$in": [s.value for s in TERMINAL_STATUSES]}}
        return [doc["_id"] for doc in self.jobs.find(query, {"_id": 1}).limit(limit)]

    # -- records -----------------------------------------------------------------------------

    def create(self, job_id: str, *, owner: str | None, uploads: Mapping[str, Mapping[str, Any]],
               client: Mapping[str, Any] | None = None, method: str = "image_upload",
               callback_url: str | None = None, options: Mapping[str, Any] | None = None) -> Job:
        """Insert a new ``queued`` job. Call before enqueueing, so a worker always finds the record.

        ``callback_url`` (optional) receives a signed webhook when the job ends (``jobs.webhooks``);
        ``options`` (optional) are the generation options the client chose (``mesh``: what the GLB
        holds, the whole ``head`` or the ``face`` mask; ``textureSize``).
        """
        now = utcnow()
        doc = {
            "_id": job_id,
            "owner": owner,
            "method": method,
            "status": JobStatus.QUEUED.value,
            "stage": JobStatus.QUEUED.value,
            "createdAt": now,
            "updatedAt": now,
            "uploads": dict(uploads),
            "client": dict(client or {}),
            "timings": {},
            "workers": {},
            "downloadCount": 0,
        }
        if self.result_retention is not None:
            doc["expiresAt"] = now + self.result_retention
        if callback_url:
            doc["callbackUrl"] = callback_url
        if options:
            doc["options"] = dict(options)
        self.jobs.insert_one(doc)
        return Job(doc)

    def get(self, job_id: str) -> Job:
        doc = self.jobs.find_one({"_id": job_id})
        if doc is None:
            raise JobNotFound(job_id)
        return Job(doc)

    def find(self, job_id: str) -> Job | None:
        doc = self.jobs.find_one({"_id": job_id})
        return Job(doc) if doc else None

    def list_for_owner(self, owner: str | None, *, skip: int, limit: int) -> tuple[list[Job], int]:
        """One page of ``owner``'s jobs, newest first, and the total count."""
        query = {"owner": owner}
        total = self.jobs.count_documents(query)
        cursor = self.jobs.find(query).sort("createdAt", pymongo.DESCENDING).skip(skip).limit(limit)
        return [Job(doc) for doc in cursor], total

    def delete(self, job_id: str) -> None:
        if self.jobs.delete_one({"_id": job_id}).deleted_count == 0:
            raise JobNotFound(job_id)

    def count_downloads(self, job_id: str) -> None:
        """One more download, counted atomically on the server (concurrent downloads all count)."""
        self.jobs.update_one({"_id": job_id}, {"$inc": {"downloadCount": 1}})

    # -- transitions -------------------------------------------------------------------------

    def start(self, job_id: str, *, worker: str | None = None, started_at: datetime | None = None) -> None:
        """queued → preprocessing, without waiting for the store's answer.

        It only tells pollers (and ``startedAt``) that a worker has picked the job up, and it costs a
        full store round trip on every job's critical path when waited for. Nothing depends on it
        having landed: finishing preprocess is guarded on queued *or* preprocessing, so a canceled or
        deleted job is still caught there, and it cannot resurrect an ended job (it is guarded on
        queued, or on preprocessing for a task redelivered after its worker died).
        """
        update: dict[str, Any] = {"status": JobStatus.PREPROCESSING.value, "stage": JobStatus.PREPROCESSING.value,
                                  "updatedAt": utcnow(), "startedAt": _ms(started_at or utcnow())}
        if worker:
            update[f"workers.{JobStatus.PREPROCESSING.value}"] = worker
        guard = {"$in": [JobStatus.QUEUED.value, JobStatus.PREPROCESSING.value]}
        self.jobs.with_options(write_concern=UNACKNOWLEDGED).update_one({"_id": job_id, "status": guard},
                                                                        {"$set": update})

    def advance(self, job_id: str, stage: JobStatus, timings_ms: Mapping[str, float], *,
                worker: str | None = None, trace: Mapping[str, float] | None = None) -> JobStatus:
        """Finish ``stage`` and enter the next one in one guarded update; returns the status entered.

        The next stage's task may still be waiting in its queue, or already running: a running
        status means "waiting for, or running, that stage or a later one". Guarded on
        ``FINISHABLE_FROM``; ``startedAt`` is set if ``start()`` never landed. Finishing the last
        stage is ``complete``.
        """
        following = NEXT_STAGE[stage]
        if following is JobStatus.COMPLETED:
            raise ValueError("the last stage ends with complete(), which records the result")
        now = utcnow()
        update = _stage_fields(stage, timings_ms, worker, trace)
        update.update({"status": following.value, "stage": following.value, "updatedAt": now})
        change: dict[str, Any] = {"$set": update}
        change["$min"] = {"startedAt": now}
        self._transition(job_id, f"finish {stage.value}", FINISHABLE_FROM[stage], change)
        return following

    def complete(self, job_id: str, result: Mapping[str, Any], timings_ms: Mapping[str, float], *,
                 worker: str | None = None, trace: Mapping[str, float] | None = None) -> None:
        """exporting → completed, with the result metadata (not the GLB: that is a file)."""
        now = utcnow()
        update = _stage_fields(JobStatus.EXPORTING, timings_ms, worker, trace)
        update.update({"status": JobStatus.COMPLETED.value, "updatedAt": now, "finishedAt": now,
                       "result": dict(result)})
        # ``completions`` counts winning complete() calls: the guard keeps it at 1, and the fault
        # tests check that it does, whatever was redelivered or re-sent.
        self._transition(job_id, "complete", FINISHABLE_FROM[JobStatus.EXPORTING],
                         {"$set": update, "$inc": {"completions": 1}})

    def fail(self, job_id: str, code: str, message: str, view: str | None = None,
             at_most: JobStatus | None = None) -> None:
        """A running state → failed, with a stable ``code`` and a ``message`` a person can act on.

        ``at_most``: the stage failing it; the job must be at that stage or an earlier one
        (``FINISHABLE_FROM``), so that a stale message of an earlier stage cannot fail a job that
        has moved past it. None: any running state (the API, the reconciler).
        """
        now = utcnow()
        error = {"code": code, "message": message}
        if view:
            error["view"] = view
        allowed = ACTIVE_STATUSES if at_most is None else FINISHABLE_FROM[at_most]
        self._transition(job_id, "fail", allowed, {"$set": {
            "status": JobStatus.FAILED.value, "updatedAt": now, "finishedAt": now, "error": error}})

    def cancel(self, job_id: str) -> None:
        """Any running state → canceled. Work already in flight notices at its next transition."""
        now = utcnow()
        self._transition(job_id, "cancel", ACTIVE_STATUSES, {"$set": {
            "status": JobStatus.CANCELED.value, "updatedAt": now, "finishedAt": now}})

    # -- recovery (the reconciler) -------------------------------------------------------------

    def stale_jobs(self, updated_before: datetime, limit: int = 500) -> list[Job]:
        """Running jobs whose record has not changed since ``updated_before``, oldest first."""
        cursor = self.jobs.find(
            {"status": {"$in": [s.value for s in ACTIVE_STATUSES]}, "updatedAt": {"$lt": updated_before}},
            {"status": 1, "stage": 1, "updatedAt": 1, "createdAt": 1, "requeues": 1},
        ).sort("updatedAt", pymongo.ASCENDING).limit(limit)
        return [Job(doc) for doc in cursor]

    def mark_requeued(self, job: Job) -> bool:
        """Claim the re-send of ``job``'s current stage: only if the record is exactly as it was read
        (same status and ``updatedAt``), so of two reconcilers racing only one re-sends. Counts the
        re-send in ``requeues`` and restarts the stall clock. True if this caller won."""
        query = {"_id": job.id, "status": job.status.value, "updatedAt": job.doc["updatedAt"]}
        update = {"$set": {"updatedAt": utcnow()}, "$inc": {"requeues": 1}}
        return self.jobs.update_one(query, update).modified_count == 1

    # -- webhooks ----------------------------------------------------------------------------

    def record_webhook(self, job_id: str, **fields: Any) -> None:
        """Note a delivery attempt's outcome on the job (``webhook.<field>``); not a transition."""
        self.jobs.update_one({"_id": job_id}, {"$set": {f"webhook.{k}": v for k, v in fields.items()}})

    def _transition(self, job_id: str, name: str, expected: tuple[JobStatus, ...],
                    update: Mapping[str, Any]) -> None:
        # Every transition writes a new updatedAt, so a guard that matched always modifies.
        guard = [s.value for s in expected]
        query = {"_id": job_id, "status": guard[0] if len(guard) == 1 else {"$in": guard}}
        if self.jobs.update_one(query, update).modified_count == 1:
            return
        current = self.find(job_id)
        if current is None:
            raise JobNotFound(job_id)
        raise TransitionError(job_id, name, expected, current.status)


def _stage_fields(stage: JobStatus, timings_ms: Mapping[str, float], worker: str | None,
                  trace: Mapping[str, float] | None) -> dict[str, Any]:
    """The ``$set`` fields a finished stage records: its timings, its worker, its trace points."""
    fields: dict[str, Any] = {f"timings.{name}": round(float(ms), 3) for name, ms in timings_ms.items()}
    if worker:
        fields[f"workers.{stage.value}"] = worker
    for name, epoch_s in (trace or {}).items():
        fields[f"trace.{name}"] = round(float(epoch_s), 4)
    return fields


def _ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)
