"""The three Celery tasks of a job, chained: preprocess (cpu) → inference (gpu) → export (cpu).

Each task only adapts: it gets a job id, loads that job's files, calls one pipeline stage, writes
the stage's output file and records the transition. The id is returned so the chain hands it on.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from jobs.files import result_filename
from jobs.store import JobNotFound, JobStatus, TransitionError, utcnow
from pipeline import VIEWS, PipelineError
from pipeline.stages import MODEL_VERSION, PreparedViews, ViewLandmarks, build_avatar, infer_landmarks, prepare_views
from worker import runtime
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


@shared_task(name="avatar.preprocess", bind=True)
def preprocess(self: Task, job_id: str) -> str | None:
    """Decode the three photos, find the faces, save the aligned crops."""

    def work(rt: WorkerRuntime) -> StageOutput:
        images = rt.files.read_uploads(job_id, VIEWS)
        prepared = prepare_views(images, _models(rt))
        with rt.files.writing(rt.files.work_path(job_id, "prepared")) as path:
            prepared.save(path)
        return StageOutput(prepared.timings_ms)

    return run_stage(self, job_id, JobStatus.PREPROCESSING, work)


@shared_task(name="avatar.inference", bind=True)
def inference(self: Task, job_id: str) -> str | None:
    """Run the landmark model on the crops (the one GPU-bound step)."""

    def work(rt: WorkerRuntime) -> StageOutput:
        prepared = PreparedViews.load(rt.files.work_path(job_id, "prepared"))
        landmarks = infer_landmarks(prepared, _models(rt))
        with rt.files.writing(rt.files.work_path(job_id, "landmarks")) as path:
            landmarks.save(path)
        return StageOutput(landmarks.timings_ms)

    return run_stage(self, job_id, JobStatus.INFERENCE, work)


@shared_task(name="avatar.export", bind=True)
def export(self: Task, job_id: str) -> str | None:
    """Mesh, texture, features and the GLB; the job completes here."""

    def work(rt: WorkerRuntime) -> StageOutput:
        prepared = PreparedViews.load(rt.files.work_path(job_id, "prepared"))
        landmarks = ViewLandmarks.load(rt.files.work_path(job_id, "landmarks"))
        avatar = build_avatar(prepared, landmarks)
        rt.files.save_result(job_id, avatar.glb)
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


def _models(rt: WorkerRuntime):
    if rt.models is None:
        raise ModelsUnavailable(rt.model_error)
    return rt.models


class ModelsUnavailable(RuntimeError):
    """The worker process could not load its ONNX models at start."""


# Where a stage's own wall time is recorded (the pipeline's finer timings go beside it).
STAGE_TIMING_KEY = {
    JobStatus.PREPROCESSING: "preprocessStage",
    JobStatus.INFERENCE: "inferenceStage",
    JobStatus.EXPORTING: "exportStage",
}


def run_stage(task: Task, job_id: str, stage: JobStatus,
              work: Callable[[WorkerRuntime], StageOutput]) -> str | None:
    """Enter ``stage``, do ``work``, record the outcome. Returns the job id to continue the chain.

    A ``PipelineError`` is the photos' fault: it becomes ``error {code, message}`` on the job. Any
    other exception becomes ``internal_error`` with a generic message (the traceback goes to the
    log). Either way the chain stops and the job ends ``failed``: no job is left running.
    """
    rt = runtime.current()
    jlog = JobLog(log, {"job_id": job_id})
    try:
        rt.store.start_stage(job_id, stage, worker=task.request.hostname or rt.hostname)
    except (TransitionError, JobNotFound) as exc:
        # Canceled, deleted or already failed: nothing to do.
        jlog.info("skipping %s: %s", stage.value, exc)
        _stop_chain(task)
        return None

    started = time.perf_counter()
    try:
        output = work(rt)
        timings = dict(output.timings_ms)
        timings[STAGE_TIMING_KEY[stage]] = (time.perf_counter() - started) * 1000
        if stage is JobStatus.EXPORTING:
            rt.store.complete(job_id, output.result or {}, timings)
            _job_ended(rt, job_id, JobStatus.COMPLETED)
            jlog.info("completed in %.0f ms of work", output.result["generationTime"])
        else:
            rt.store.finish_stage(job_id, stage, timings)
        return job_id
    except (TransitionError, JobNotFound) as exc:
        # Canceled or deleted while this stage ran: drop what it wrote, the GLB included.
        jlog.info("stopped during %s: %s", stage.value, exc)
        gone = isinstance(exc, JobNotFound) or exc.actual in (None, JobStatus.CANCELED)
        (rt.files.discard_all if gone else rt.files.discard_inputs)(job_id)
        _stop_chain(task)
        return None
    except PipelineError as exc:
        jlog.info("failed in %s: %s (%s)", stage.value, exc.message, exc.code)
        _fail(rt, task, job_id, exc.code, exc.message, exc.view)
    except ModelsUnavailable as exc:
        jlog.error("no models loaded: %s", exc)
        _fail(rt, task, job_id, "models_unavailable", MODELS_MISSING_MESSAGE)
    except SoftTimeLimitExceeded:
        jlog.error("%s ran past %d s", stage.value, rt.settings.job_timeout_s)
        _fail(rt, task, job_id, "timeout",
              f"Generating the avatar took longer than {rt.settings.job_timeout_s} s at the "
              f"{stage.value} step. Please try again, or send smaller photos.")
    except Exception:
        jlog.exception("internal error in %s", stage.value)
        _fail(rt, task, job_id, "internal_error", INTERNAL_ERROR_MESSAGE)
    return None


def _fail(rt: WorkerRuntime, task: Task, job_id: str, code: str, message: str,
          view: str | None = None) -> None:
    _stop_chain(task)
    try:
        rt.store.fail(job_id, code, message, view)
    except (TransitionError, JobNotFound) as exc:
        log.info("[job %s] not marked failed: %s", job_id, exc)
    _job_ended(rt, job_id, JobStatus.FAILED)


def _job_ended(rt: WorkerRuntime, job_id: str, status: JobStatus) -> None:
    """The photos are biometric data: delete them (and the crops) as soon as the job is over."""
    rt.files.discard_inputs(job_id)
    try:
        rt.events.publish_finished(job_id, status.value)
    except Exception as exc:  # waiters re-read the record anyway; a lost notification only delays them
        log.warning("[job %s] could not publish %s: %s", job_id, status.value, exc)


def _stop_chain(task: Task) -> None:
    # Celery sends the next signature in request.chain after the task returns; clearing it ends here.
    task.request.chain = None
