"""The three Celery tasks of a job: preprocess (cpu) → inference (gpu) → export (cpu).

Each task only adapts: it gets a job id, loads that job's files, calls one pipeline stage, writes
the stage's output file, queues the next stage's task with the id and records the transition.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from jobs import logs, metrics, webhooks
from jobs.files import result_filename
from jobs.outages import OUTAGES, retrying
from jobs.retention import sweep_if_due
from jobs.store import FINISHABLE_FROM, NEXT_STAGE, Job, JobNotFound, JobStatus, TransitionError, utcnow
from pipeline import DEFAULT_MESH, VIEWS, PipelineError
from pipeline.stages import (MODEL_VERSION, PreparedViews, ViewLandmarks, build_avatar, decoding_in_progress,
                             infer_landmarks, prepare_views)
from worker import runtime
from worker.app import EXPORT, INFERENCE, enqueue_stage
from worker.deadline import deadline
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = ("The avatar could not be generated because of an error on our side. "
                          "Please try again; if it keeps failing, report the avatar id.")
MODELS_MISSING_MESSAGE = ("The avatar could not be generated: this worker has no face model loaded. "
                          "Please try again later; an operator should check /api/avatar/health.")


class JobLog(logging.LoggerAdapter):
    """Prefix every line with the job id, so one job's story can be grepped across workers."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[job {self.extra['job_id']}] {msg}", kwargs


@dataclass
class StageOutput:
    """What a stage hands back: its measured timings and, for the last stage, the result record."""

    timings_ms: dict[str, float] = field(default_factory=dict)
    result: dict[str, Any] | None = None


class StageClock:
    """Wall time of a task's own parts (loading the previous output, saving its own), in ms.

    ``clock("load")`` in the inference task records ``inferenceLoad``; the pipeline's compute timings
    (decode, detect, landmarks, ...) come from the pipeline itself.
    """

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.timings_ms: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            key = f"{self.prefix}{part[0].upper()}{part[1:]}"
            self.timings_ms[key] = self.timings_ms.get(key, 0.0) + (time.perf_counter() - start) * 1000


# Records that the job has started (queued → preprocessing); a stage's work gets one, and only
# the first stage calls it. The work also gets the job's record as it was when the stage began.
NoteStarted = Callable[[], None]
StageWork = Callable[[WorkerRuntime, StageClock, NoteStarted, Job], StageOutput]


@shared_task(name="avatar.preprocess", bind=True)
def preprocess(self: Task, job_id: str, resent: bool = False) -> str | None:
    """Decode the three photos, find the faces, save the aligned crops (and the job's options,
    ``mesh`` and ``textureSize``, for the export stage)."""

    def work(rt: WorkerRuntime, clock: StageClock, note_started: NoteStarted, job: Job) -> StageOutput:
        with clock("load"):
            images = rt.files.read_uploads(job_id, VIEWS)
        # The options travel in the record; the stage file carries them on to the export.
        texture_size = job.options.get("textureSize")
        # The store writes the start note on the other core while detection runs on this one;
        # sent before decoding, it competed with the decoder threads (decoding took ~1.3 ms longer).
        prepared = prepare_views(images, _models(rt), on_decoded=note_started, texture_size=texture_size)
        prepared.mesh = job.options.get("mesh", DEFAULT_MESH)
        with clock("save"):
            _save_output(rt, job_id, PREPARED, prepared)
        return StageOutput(prepared.timings_ms)

    return run_stage(self, job_id, JobStatus.PREPROCESSING, work, resent)


@shared_task(name="avatar.inference", bind=True)
def inference(self: Task, job_id: str, resent: bool = False) -> str | None:
    """Run the landmark model on the crops (the one GPU-bound step)."""

    def work(rt: WorkerRuntime, clock: StageClock, note_started: NoteStarted, job: Job) -> StageOutput:
        with clock("load"):
            prepared = _load_output(rt, job_id, PREPARED, PreparedViews)
        landmarks = infer_landmarks(prepared, _models(rt, batched=True))
        with clock("save"):
            _save_output(rt, job_id, LANDMARKS, landmarks)
        return StageOutput(landmarks.timings_ms)

    return run_stage(self, job_id, JobStatus.INFERENCE, work, resent)


@shared_task(name="avatar.export", bind=True)
def export(self: Task, job_id: str, resent: bool = False) -> str | None:
    """Mesh, texture, features and the GLB; the job completes here."""

    def work(rt: WorkerRuntime, clock: StageClock, note_started: NoteStarted, job: Job) -> StageOutput:
        with clock("load"):
            prepared = _load_output(rt, job_id, PREPARED, PreparedViews)
            landmarks = _load_output(rt, job_id, LANDMARKS, ViewLandmarks)
        avatar = build_avatar(prepared, landmarks, mesh=prepared.mesh)
        with clock("save"):
            rt.files.save_result(job_id, avatar.glb)
        rt.outputs.forget(job_id)
        filename = result_filename(job_id, utcnow())
        result = {
            "generationTime": avatar.generation_ms,
            "inferenceTime": avatar.inference_ms,
            "facialFeatures": avatar.facial_features,
            "meshInfo": avatar.mesh_info,
            "glbSize": len(avatar.glb),
            "filename": filename,
            "modelVersion": MODEL_VERSION,
            "warnings": avatar.warnings,
        }
        # build_avatar's timings include the earlier stages' (carried in the files); keep only its own.
        own = {k: v for k, v in avatar.timings_ms.items()
               if k not in prepared.timings_ms and k not in landmarks.timings_ms}
        return StageOutput(own, result)

    return run_stage(self, job_id, JobStatus.EXPORTING, work, resent)


# The files one stage hands to the next, under work/<id>/.
PREPARED = "prepared"
LANDMARKS = "landmarks"


def _save_output(rt: WorkerRuntime, job_id: str, name: str, output: PreparedViews | ViewLandmarks) -> None:
    """Write the output file (encrypted, atomically), and keep the object for a next stage in this
    process."""
    rt.files.save_stage(job_id, name, output.to_bytes())
    rt.outputs.put(job_id, name, output)


def _load_output(rt: WorkerRuntime, job_id: str, name: str, kind: type) -> Any:
    """The previous stage's output: from this process's memory if it ran here, else from its file
    (decrypted in memory: the decoded faces never touch the disk in clear)."""
    cached = rt.outputs.get(job_id, name)
    if cached is not None:
        return cached
    return kind.from_bytes(rt.files.load_stage(job_id, name))


def _models(rt: WorkerRuntime, batched: bool = False):
    if rt.models is None:
        raise ModelsUnavailable(rt.model_error)
    return rt.landmark_models() if batched else rt.models


class ModelsUnavailable(RuntimeError):
    """The worker process could not load its ONNX models at start."""


# Where a stage's own wall time is recorded (the pipeline's finer timings go beside it), and the
# prefix of its load/save timings and trace points.
STAGE_KEY = {
    JobStatus.PREPROCESSING: "preprocess",
    JobStatus.INFERENCE: "inference",
    JobStatus.EXPORTING: "export",
}
# The task that runs each stage after the first.
STAGE_TASK = {JobStatus.INFERENCE: INFERENCE, JobStatus.EXPORTING: EXPORT}


def run_stage(task: Task, job_id: str, stage: JobStatus, work: StageWork, resent: bool = False) -> str | None:
    """Do ``work`` for ``stage``; queue the next stage's task; then record this stage's end and enter
    the next stage in one guarded update, while that task is on its way (the store's round trip
    overlaps the hop; ``FINISHABLE_FROM`` lets the next stage finish even if this record is late).
    Returns the job id, or None when the job stopped or failed.

    Only the first stage records its start (queued → preprocessing, and the job's ``startedAt``: the
    work's ``note_started``), without waiting for the store's answer; later stages were entered by
    the update that finished the one before. A job canceled or deleted while queued has lost its
    photos, so its preprocess stops at once, and the guarded update at the end of the stage says why.

    A ``PipelineError`` is the photos' fault: it becomes ``error {code, message}`` on the job. Any
    other exception becomes ``internal_error`` with a generic message (the traceback goes to the
    log). Either way no next stage is queued and the job ends ``failed``: no job is left running.
    A job canceled while a stage ran has its next stage queued all the same; that stage finds the
    job ended (or its files gone) and stops.

    Running a stage twice is harmless: every transition is guarded, so a duplicate's result is
    dropped. Every message (re-sent by the reconciler, redelivered by the broker, or restored from a
    Redis snapshot as a fresh delivery alike) first checks that the job still waits for this stage,
    and does nothing if it moved on; and a stage only ever fails a job that is at most at its own
    stage, so a stale message cannot fail a job that is further along. While the stage runs, this
    process keeps the job marked running for the reconciler.

    The store or Redis being unreachable is not the job's fault: each store step is retried with
    back-off for up to ``OUTAGE_RETRY_S`` (a restart of a few seconds is ridden out); past that the
    stage gives up without touching the job, and the reconciler sends it again once the job has
    sat still for STALL_AFTER_S.
    """
    received = time.time()
    started = time.perf_counter()
    rt = runtime.current()
    worker = task.request.hostname or rt.hostname
    key = STAGE_KEY[stage]
    jlog = JobLog(log, {"job_id": job_id})
    sent_at = task.request.get("sentAt")
    if isinstance(sent_at, (int, float)):  # how long the message waited in its queue
        metrics.STAGE_DURATION.labels(stage=f"{key}QueueWait").observe(max(0.0, received - sent_at))
    with logs.bound(jobId=job_id, stage=key):
        return _run_stage_of(task, rt, job_id, stage, work, worker, key, jlog, received, started)


def _run_stage_of(task: Task, rt: WorkerRuntime, job_id: str, stage: JobStatus, work: StageWork, worker: str,
                  key: str, jlog: JobLog, received: float, started: float) -> str | None:
    try:
        job = _retrying(lambda: rt.store.find(job_id), jlog, "reading the job")
    except OUTAGES as exc:
        jlog.warning("the store is unreachable (%s); %s is left to the reconciler", exc, stage.value)
        return None
    if job is None or job.status not in FINISHABLE_FROM[stage]:
        jlog.info("skipping a repeated %s message: the job is %s", stage.value,
                  "gone" if job is None else job.status.value)
        if job is None or job.status.is_terminal():
            # A worker that died between recording a job's end and deleting its photos leaves them
            # behind; a repeated message is the first chance to delete them.
            rt.files.discard_inputs(job_id)
        return None
    rt.began(job_id)
    try:
        # The request that submitted the job names every line about it (LOG_FORMAT=json).
        with logs.bound(requestId=submitting_request(job)):
            return _run_stage(task, rt, job, stage, work, worker, key, jlog, received, started)
    finally:
        rt.ended(job_id)


def submitting_request(job: Job) -> str | None:
    """The X-Request-Id of the request that submitted ``job`` (kept on its record)."""
    return (job.doc.get("client") or {}).get("requestId")


# How long a stage keeps retrying a store step before leaving the job to the reconciler.
OUTAGE_RETRY_S = 30.0


def _retrying(step: Callable[[], Any], jlog: JobLog, what: str) -> Any:
    """``step()``, with outages retried for up to ``OUTAGE_RETRY_S``."""
    return retrying(step, OUTAGE_RETRY_S, jlog, what)


def _run_stage(task: Task, rt: WorkerRuntime, job: Job, stage: JobStatus, work: StageWork,
               worker: str, key: str, jlog: JobLog, received: float, started: float) -> str | None:
    job_id = job.id

    def note_started() -> None:
        try:
            rt.store.start(job_id, worker=worker, started_at=datetime.fromtimestamp(received, timezone.utc))
        except OUTAGES as exc:  # only a note for pollers: the stage's end records the start if need be
            jlog.warning("could not note the start (%s: %s)", type(exc).__name__, exc)

    try:
        clock = StageClock(key)
        with deadline(rt.settings.job_timeout_s):
            output = work(rt, clock, note_started, job)
        stage_s = time.perf_counter() - started
        rt.note_stage_time(key, stage_s)
        timings = {**output.timings_ms, **clock.timings_ms, f"{key}Stage": stage_s * 1000}
        trace = {f"{key}Received": received, f"{key}Finished": time.time()}
        if stage is JobStatus.EXPORTING:
            _retrying(lambda: rt.store.complete(job_id, output.result or {}, timings, worker=worker, trace=trace),
                      jlog, "recording the completion")
            _stage_done(jlog, key, timings)
            _job_ended(rt, job, JobStatus.COMPLETED)
            jlog.info("completed in %.0f ms of work", output.result["generationTime"])
        else:
            # The next stage is queued first and this one recorded while its task is on its way:
            # the store's round trip (~5 ms here) overlaps the hop instead of preceding it.
            _enqueue_next(task, NEXT_STAGE[stage], job_id, jlog)
            _retrying(lambda: rt.store.advance(job_id, stage, timings, worker=worker, trace=trace),
                      jlog, f"recording the end of {stage.value}")
            _stage_done(jlog, key, timings)
            if stage is JobStatus.PREPROCESSING:
                # Handed over: no later step reads the photos (a retry or re-send of inference or
                # export starts from the stage files), so they go now, while the next stage runs,
                # not at the job's end, where the deletion would delay the answer.
                rt.files.discard_uploads(job_id)
        return job_id
    except (TransitionError, JobNotFound) as exc:
        _stopped(rt, job_id, stage, exc)
    except OUTAGES as exc:
        jlog.warning("the store or Redis stayed unreachable (%s: %s); %s is left to the reconciler",
                     type(exc).__name__, exc, stage.value)
    except PipelineError as exc:
        jlog.info("failed in %s: %s (%s)", stage.value, exc.message, exc.code)
        _fail(rt, job, stage, exc.code, exc.message, exc.view)
    except ModelsUnavailable as exc:
        jlog.error("no models loaded: %s", exc)
        _fail(rt, job, stage, "models_unavailable", MODELS_MISSING_MESSAGE)
    except SoftTimeLimitExceeded:
        jlog.error("%s ran past %g s", stage.value, rt.settings.job_timeout_s)
        _fail(rt, job, stage, "timeout",
              f"Generating the avatar took longer than {rt.settings.job_timeout_s:g} s at the "
              f"{stage.value} step. Please try again, or send smaller photos.")
        _exit_if_work_goes_on(jlog)
    except Exception as exc:
        _fail_unexpected(rt, job, stage, exc)
    return None


def _stage_done(jlog: JobLog, key: str, timings: dict[str, float]) -> None:
    """One sample per timed step for the metrics, and one line for the log."""
    metrics.observe_timings(timings)
    stage_ms = timings[f"{key}Stage"]
    jlog.info("%s finished in %.0f ms", key, stage_ms, extra={"durationMs": round(stage_ms, 3)})


# The exit status of a worker process that stopped itself because a timed-out stage left a decoder
# thread running (its supervisor starts a new one).
EXIT_AFTER_RUNAWAY_WORK = 75


def _exit_if_work_goes_on(jlog: JobLog) -> None:
    """The time limit interrupts the stage's own thread, not a photo decode running in another: a
    decoder cannot be stopped from outside. If one still runs, the job has been failed; end this
    process so the decoder's CPU is given back (its supervisor — ``avatar up``, Celery's prefork
    parent, the container's restart policy — starts a fresh one; the message, never acked, is
    redelivered and skipped, since the job has ended)."""
    if decoding_in_progress():
        jlog.error("a photo decode is still running after the time limit; this worker process exits "
                   "(status %d) so that it stops", EXIT_AFTER_RUNAWAY_WORK)
        logging.shutdown()
        os._exit(EXIT_AFTER_RUNAWAY_WORK)


def _enqueue_next(task: Task, following: JobStatus, job_id: str, jlog: JobLog) -> None:
    """Queue the next stage. The job advances right after whatever happens here, so a broker outage
    must not fail it: the reconciler re-sends the stage once the job has sat still for STALL_AFTER_S."""
    try:
        enqueue_stage(task.app, STAGE_TASK[following], job_id)
    except Exception as exc:
        jlog.warning("could not queue %s (%s: %s); the reconciler will send it again",
                     following.value, type(exc).__name__, exc)


def _stopped(rt: WorkerRuntime, job_id: str, stage: JobStatus,
             exc: TransitionError | JobNotFound) -> None:
    """The job moved on while this stage ran: canceled, deleted, or this task is a duplicate."""
    rt.outputs.forget(job_id)
    actual = None if isinstance(exc, JobNotFound) else exc.actual
    log.info("[job %s] stopped during %s: %s", job_id, stage.value, exc)
    if actual in (None, JobStatus.CANCELED):
        rt.files.discard_all(job_id)  # the GLB too, if this was the export
    elif actual.is_terminal():
        rt.files.discard_inputs(job_id)
    elif stage is JobStatus.PREPROCESSING:
        rt.files.discard_uploads(job_id)  # a later stage runs: nothing reads the photos again
    # Otherwise still running at a later stage (a redelivered duplicate, or the next stage recorded
    # its end before this one): the stage files belong to the task that is ahead.


def _fail_unexpected(rt: WorkerRuntime, job: Job, stage: JobStatus, exc: Exception) -> None:
    """An error of ours, or the job's files vanished because it was canceled meanwhile."""
    if _fail(rt, job, stage, "internal_error", INTERNAL_ERROR_MESSAGE):
        log.exception("[job %s] internal error in %s", job.id, stage.value, exc_info=exc)


def _fail(rt: WorkerRuntime, job: Job, stage: JobStatus, code: str, message: str,
          view: str | None = None) -> bool:
    """Fail the job if it is at most at ``stage`` (a stale message never fails a job that is further
    along); True if this call failed it."""
    job_id = job.id
    jlog = JobLog(log, {"job_id": job_id})
    try:
        _retrying(lambda: rt.store.fail(job_id, code, message, view, at_most=stage), jlog, "recording the failure")
    except (TransitionError, JobNotFound) as exc:  # canceled, deleted or moved on meanwhile: not ours to fail
        _stopped(rt, job_id, stage, exc)
        return False
    except OUTAGES as exc:
        jlog.warning("could not record the failure (%s); the reconciler will send %s again", exc, stage.value)
        return False
    _job_ended(rt, job, JobStatus.FAILED, code)
    return True


def _job_ended(rt: WorkerRuntime, job: Job, status: JobStatus, code: str | None = None) -> None:
    """Delete the photos and crops (biometric data: gone before anyone learns the job is over, so
    a client that sees the end never finds them), then tell the waiters."""
    job_id = job.id
    _count_end(job, status, code)
    rt.outputs.forget(job_id)
    rt.files.discard_inputs(job_id)
    try:
        rt.events.publish_finished(job_id, status.value)
    except Exception as exc:  # waiters re-read the record anyway; a lost notification only delays them
        log.warning("[job %s] could not publish %s: %s", job_id, status.value, exc)
    sweep_if_due(rt.store, rt.files, rt.events.redis, rt.settings.sweep_interval_s)
    _queue_webhook(rt, job, status)


def _count_end(job: Job, status: JobStatus, code: str | None) -> None:
    """The job's outcome (failures by code) and its time from submission to now."""
    if status is JobStatus.COMPLETED:
        metrics.JOBS_COMPLETED.inc()
    else:
        metrics.JOBS_FAILED.labels(code=code or "unknown").inc()
    metrics.JOB_DURATION.labels(outcome=status.value).observe(max(0.0, (utcnow() - job.created_at).total_seconds()))


def _queue_webhook(rt: WorkerRuntime, job: Job, status: JobStatus) -> None:
    """If the job was submitted with a callbackUrl, queue its webhook (delivered by ``webhook``).
    After the waiters were told and the photos deleted: a webhook never delays a job's end.

    ``job`` is the record as the stage read it at its start: the callbackUrl never changes, so the
    job's end needs no second read of the store (one round trip fewer per job)."""
    job_id = job.id
    try:
        if job.doc.get("callbackUrl"):
            event = "avatar.completed" if status is JobStatus.COMPLETED else "avatar.failed"
            webhook.apply_async(args=(job_id,), kwargs={"event": event})
    except Exception as exc:
        log.warning("[job %s] could not queue its webhook: %s", job_id, exc)


@shared_task(name="avatar.webhook", bind=True)
def webhook(self: Task, job_id: str, event: str) -> bool:
    """POST the signed event to the job's callbackUrl; retried with back-off up to
    WEBHOOK_MAX_ATTEMPTS times. Each attempt's outcome is noted on the job (``webhook``)."""
    with logs.bound(jobId=job_id, stage="webhook"):
        return _deliver_webhook(self, job_id, event)


def _deliver_webhook(task: Task, job_id: str, event: str) -> bool:
    rt = runtime.current()
    settings = rt.settings
    job = rt.store.find(job_id)
    if job is None or not job.doc.get("callbackUrl"):
        return False
    logs.bind(requestId=submitting_request(job))  # undone with the block in webhook()
    attempt = task.request.retries + 1
    body = webhooks.event_body(event, job_id, job.status.value, webhook_data(job))
    try:
        outcome = webhooks.deliver(job.doc["callbackUrl"], body, event, settings.webhook_secret,
                                   allow_private=settings.webhook_allow_private,
                                   timeout_s=settings.webhook_timeout_s)
    except webhooks.CallbackRefused as exc:
        log.warning("[job %s] webhook refused: %s", job_id, exc)
        rt.store.record_webhook(job_id, event=event, attempts=attempt, state="refused", lastError=str(exc))
        metrics.WEBHOOK_DELIVERIES.labels(outcome="refused").inc()
        return False
    if outcome.ok:
        rt.store.record_webhook(job_id, event=event, attempts=attempt, state="delivered",
                                lastStatus=outcome.status, deliveredAt=utcnow())
        metrics.WEBHOOK_DELIVERIES.labels(outcome="delivered").inc()
        return True
    if attempt >= settings.webhook_max_attempts:
        log.warning("[job %s] webhook gave up after %d attempts: %s", job_id, attempt, outcome.error)
        rt.store.record_webhook(job_id, event=event, attempts=attempt, state="gave_up",
                                lastStatus=outcome.status, lastError=outcome.error)
        metrics.WEBHOOK_DELIVERIES.labels(outcome="gave_up").inc()
        return False
    rt.store.record_webhook(job_id, event=event, attempts=attempt, state="retrying",
                            lastStatus=outcome.status, lastError=outcome.error)
    metrics.WEBHOOK_DELIVERIES.labels(outcome="retrying").inc()
    raise task.retry(countdown=settings.webhook_backoff_s * 2 ** (attempt - 1), max_retries=None)


def webhook_data(job: Job) -> dict[str, Any]:
    """What the event says about the job: the result's summary, or the error."""
    if job.status is JobStatus.COMPLETED:
        result = job.result
        return {"downloadUrl": f"/api/avatar/download/{job.id}", "statusUrl": f"/api/avatar/jobs/{job.id}",
                "generationTime": result.get("generationTime"), "inferenceTime": result.get("inferenceTime"),
                "glbInfo": {"size": result.get("glbSize"), "filename": result.get("filename")},
                "warnings": result.get("warnings", [])}
    return {"statusUrl": f"/api/avatar/jobs/{job.id}", "error": job.error}
