"""The three Celery tasks of a job: preprocess (cpu) → inference (gpu) → export (cpu).

Each task only adapts: it gets a job id, loads that job's files, calls one pipeline stage, writes
the stage's output file, records the transition and queues the next stage's task with the id.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from jobs.files import result_filename
from jobs.store import JobNotFound, JobStatus, TransitionError, utcnow
from pipeline import VIEWS, PipelineError
from pipeline.stages import MODEL_VERSION, PreparedViews, ViewLandmarks, build_avatar, infer_landmarks, prepare_views
from worker import runtime
from worker.app import EXPORT, INFERENCE, enqueue_stage
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


@shared_task(name="avatar.preprocess", bind=True)
def preprocess(self: Task, job_id: str) -> str | None:
    """Decode the three photos, find the faces, save the aligned crops."""

    def work(rt: WorkerRuntime, clock: StageClock) -> StageOutput:
        with clock("load"):
            images = rt.files.read_uploads(job_id, VIEWS)
        prepared = prepare_views(images, _models(rt))
        with clock("save"):
            _save_output(rt, job_id, PREPARED, prepared)
        return StageOutput(prepared.timings_ms)

    return run_stage(self, job_id, JobStatus.PREPROCESSING, work)


@shared_task(name="avatar.inference", bind=True)
def inference(self: Task, job_id: str) -> str | None:
    """Run the landmark model on the crops (the one GPU-bound step)."""

    def work(rt: WorkerRuntime, clock: StageClock) -> StageOutput:
        with clock("load"):
            prepared = _load_output(rt, job_id, PREPARED, PreparedViews)
        landmarks = infer_landmarks(prepared, _models(rt))
        with clock("save"):
            _save_output(rt, job_id, LANDMARKS, landmarks)
        return StageOutput(landmarks.timings_ms)

    return run_stage(self, job_id, JobStatus.INFERENCE, work)


@shared_task(name="avatar.export", bind=True)
def export(self: Task, job_id: str) -> str | None:
    """Mesh, texture, features and the GLB; the job completes here."""

    def work(rt: WorkerRuntime, clock: StageClock) -> StageOutput:
        with clock("load"):
            prepared = _load_output(rt, job_id, PREPARED, PreparedViews)
            landmarks = _load_output(rt, job_id, LANDMARKS, ViewLandmarks)
        avatar = build_avatar(prepared, landmarks)
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

    return run_stage(self, job_id, JobStatus.EXPORTING, work)


# The files one stage hands to the next, under work/<id>/.
PREPARED = "prepared"
LANDMARKS = "landmarks"


def _save_output(rt: WorkerRuntime, job_id: str, name: str, output: PreparedViews | ViewLandmarks) -> None:
    """Write the output file (atomically), and keep the object for a next stage in this process."""
    with rt.files.writing(rt.files.work_path(job_id, name)) as path:
        output.save(path)
    rt.outputs.put(job_id, name, output)


def _load_output(rt: WorkerRuntime, job_id: str, name: str, kind: type) -> Any:
    """The previous stage's output: from this process's memory if it ran here, else from its file."""
    cached = rt.outputs.get(job_id, name)
    if cached is not None:
        return cached
    return kind.load(rt.files.work_path(job_id, name))


def _models(rt: WorkerRuntime):
    if rt.models is None:
        raise ModelsUnavailable(rt.model_error)
    return rt.models


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


def run_stage(task: Task, job_id: str, stage: JobStatus,
              work: Callable[[WorkerRuntime, StageClock], StageOutput]) -> str | None:
    """Do ``work`` for ``stage``; record it and enter the next stage in one update; queue the next
    stage's task. Returns the job id, or None when the job stopped or failed.

    Only the first stage records its start (queued → preprocessing: a cheap check that the job was
    not canceled before the costliest step, and the job's ``startedAt``); later stages were entered
    by the update that finished the one before.

    A ``PipelineError`` is the photos' fault: it becomes ``error {code, message}`` on the job. Any
    other exception becomes ``internal_error`` with a generic message (the traceback goes to the
    log). Either way no next stage is queued and the job ends ``failed``: no job is left running.
    """
    received = time.time()
    started = time.perf_counter()
    rt = runtime.current()
    worker = task.request.hostname or rt.hostname
    key = STAGE_KEY[stage]
    jlog = JobLog(log, {"job_id": job_id})
    if stage is JobStatus.PREPROCESSING:
        try:
            rt.store.start_stage(job_id, stage, worker=worker)
        except (TransitionError, JobNotFound) as exc:
            # Canceled, deleted, failed, or a redelivery of a stage already done: nothing to do.
            jlog.info("skipping %s: %s", stage.value, exc)
            return None

    try:
        clock = StageClock(key)
        output = work(rt, clock)
        timings = {**output.timings_ms, **clock.timings_ms,
                   f"{key}Stage": (time.perf_counter() - started) * 1000}
        trace = {f"{key}Received": received, f"{key}Finished": time.time()}
        if stage is JobStatus.EXPORTING:
            rt.store.complete(job_id, output.result or {}, timings, worker=worker, trace=trace)
            _job_ended(rt, job_id, JobStatus.COMPLETED)
            jlog.info("completed in %.0f ms of work", output.result["generationTime"])
        else:
            following = rt.store.advance(job_id, stage, timings, worker=worker, trace=trace)
            enqueue_stage(task.app, STAGE_TASK[following], job_id)
        return job_id
    except (TransitionError, JobNotFound) as exc:
        _stopped(rt, job_id, stage, exc)
    except PipelineError as exc:
        jlog.info("failed in %s: %s (%s)", stage.value, exc.message, exc.code)
        _fail(rt, job_id, exc.code, exc.message, exc.view)
    except ModelsUnavailable as exc:
        jlog.error("no models loaded: %s", exc)
        _fail(rt, job_id, "models_unavailable", MODELS_MISSING_MESSAGE)
    except SoftTimeLimitExceeded:
        jlog.error("%s ran past %d s", stage.value, rt.settings.job_timeout_s)
        _fail(rt, job_id, "timeout",
              f"Generating the avatar took longer than {rt.settings.job_timeout_s} s at the "
              f"{stage.value} step. Please try again, or send smaller photos.")
    except Exception as exc:
        _fail_unexpected(rt, job_id, stage, exc)
    return None


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
    # Still running at a later stage: this was a redelivered duplicate; the files belong to the
    # task that is ahead of it.


def _fail_unexpected(rt: WorkerRuntime, job_id: str, stage: JobStatus, exc: Exception) -> None:
    """An error of ours, or the job's files vanished because it was canceled meanwhile."""
    try:
        rt.store.fail(job_id, "internal_error", INTERNAL_ERROR_MESSAGE)
    except (TransitionError, JobNotFound) as ended:
        _stopped(rt, job_id, stage, ended)
        return
    log.exception("[job %s] internal error in %s", job_id, stage.value, exc_info=exc)
    _job_ended(rt, job_id, JobStatus.FAILED)


def _fail(rt: WorkerRuntime, job_id: str, code: str, message: str,
          view: str | None = None) -> None:
    try:
        rt.store.fail(job_id, code, message, view)
    except (TransitionError, JobNotFound) as exc:
        log.info("[job %s] not marked failed: %s", job_id, exc)
    _job_ended(rt, job_id, JobStatus.FAILED)


def _job_ended(rt: WorkerRuntime, job_id: str, status: JobStatus) -> None:
    """Tell waiters first (they only need the record), then delete the photos and crops: they are
    biometric data and go as soon as the job is over."""
    rt.outputs.forget(job_id)
    try:
        rt.events.publish_finished(job_id, status.value)
    except Exception as exc:  # waiters re-read the record anyway; a lost notification only delays them
        log.warning("[job %s] could not publish %s: %s", job_id, status.value, exc)
    rt.files.discard_inputs(job_id)
