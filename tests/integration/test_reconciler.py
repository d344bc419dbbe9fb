"""The reconciler against the real stack: a job whose message was lost is sent again and completes;
a job a worker is running, or that was re-sent too often, is treated as such; re-sent duplicates of a
finished stage do nothing. (The whole fleet under faults: test_fault_tolerance.py.)"""
from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
import redis
from service_stack import LocalStack

from jobs.files import FileStore
from jobs.store import JobStore, utcnow
from worker.app import EXPORT, create_celery
from worker.reconciler import RUNNING_KEY, Reconciler


@pytest.fixture
def reconciler(stack: LocalStack) -> Reconciler:
    settings = stack.settings.replace(stall_after_s=5.0, stall_max_requeues=2)
    return Reconciler(settings, stack.store, redis.Redis.from_url(settings.broker_url), create_celery(settings),
                      FileStore.from_settings(settings))


def orphan_job(stack: LocalStack, photo: bytes | None, requeues: int = 0, mesh: str = "head") -> str:
    """A job recorded (and its photos stored) as the API does, whose queue message never arrived, last
    touched 10 s ago."""
    job_id = str(uuid.uuid4())
    if photo is not None:
        files = FileStore.from_settings(stack.settings)
        for view in ("front", "left", "right"):
            files.save_upload(job_id, view, photo)
    stack.store.create(job_id, owner=None, uploads={}, options={"mesh": mesh})
    stack.store.jobs.update_one({"_id": job_id}, {"$set": {"updatedAt": utcnow() - timedelta(seconds=10),
                                                           "requeues": requeues}})
    return job_id


def wait_status(store: JobStore, job_id: str, status: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while store.get(job_id).status.value != status:
        assert time.monotonic() < deadline, f"{job_id} is {store.get(job_id).status.value}, not {status}"
        time.sleep(0.05)


def test_a_job_whose_message_was_lost_is_sent_again_and_completes(stack: LocalStack, reconciler: Reconciler,
                                                                 astronaut_jpeg: bytes) -> None:
    job_id = orphan_job(stack, astronaut_jpeg)
    report = reconciler.run_once()
    assert job_id in report.resent
    assert job_id not in reconciler.run_once().resent  # its updatedAt was refreshed by the claim
    wait_status(stack.store, job_id, "completed")
    doc = stack.store.get(job_id).doc
    assert doc["requeues"] == 1 and doc["completions"] == 1
    assert stack.files.has_result(job_id)

    # A stray re-send of a stage the job has finished does nothing.
    reconciler.celery.send_task(EXPORT, args=(job_id,), kwargs={"resent": True})
    log = stack.logs / "worker.log"
    deadline = time.monotonic() + 10
    while f"[job {job_id}] skipping a repeated exporting" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the re-sent export was not skipped"
        time.sleep(0.05)
    assert stack.store.get(job_id).doc["completions"] == 1


def test_a_resent_job_keeps_its_mesh_kind(stack: LocalStack, reconciler: Reconciler,
                                          astronaut_jpeg: bytes) -> None:
    job_id = orphan_job(stack, astronaut_jpeg, mesh="face")
    assert job_id in reconciler.run_once().resent
    wait_status(stack.store, job_id, "completed")
    assert stack.store.get(job_id).result["meshInfo"]["vertexCount"] == 468


def test_a_job_a_worker_is_running_is_left_alone(stack: LocalStack, reconciler: Reconciler) -> None:
    job_id = orphan_job(stack, None)
    reconciler.redis.set(RUNNING_KEY.format(job_id=job_id), "some-worker:1", ex=30)
    try:
        assert job_id not in reconciler.run_once().resent
    finally:
        reconciler.redis.delete(RUNNING_KEY.format(job_id=job_id))
        stack.store.cancel(job_id)


def test_after_too_many_resends_the_job_fails_as_stalled(stack: LocalStack, reconciler: Reconciler) -> None:
    job_id = orphan_job(stack, None, requeues=2)
    report = reconciler.run_once()
    assert job_id in report.failed and job_id not in report.resent
    job = stack.store.get(job_id)
    assert job.status.value == "failed" and job.error["code"] == "stalled"
    assert "submit it again" in job.error["message"]


def test_of_two_reconcilers_that_read_the_same_job_only_one_resends_it(stack: LocalStack) -> None:
    job_id = orphan_job(stack, None)
    seen = [job for job in stack.store.stale_jobs(utcnow() - timedelta(seconds=5)) if job.id == job_id]
    assert len(seen) == 1
    assert stack.store.mark_requeued(seen[0]) is True
    assert stack.store.mark_requeued(seen[0]) is False  # the second, with the same stale read
    stack.store.cancel(job_id)


def test_a_stale_message_for_a_job_in_a_later_stage_changes_nothing(stack: LocalStack) -> None:
    """A preprocess message restored from a Redis snapshot arrives as a fresh delivery (no resent or
    redelivered flag) for a job already exporting, whose photos are gone: it is skipped, and it
    could not fail the job anyway (a stage fails a job only up to its own stage)."""
    from jobs.store import JobStatus, TransitionError
    from worker.app import PREPROCESS

    job_id = str(uuid.uuid4())
    stack.store.create(job_id, owner=None, uploads={})
    stack.store.advance(job_id, JobStatus.PREPROCESSING, {})
    stack.store.advance(job_id, JobStatus.INFERENCE, {})
    create_celery(stack.settings).send_task(PREPROCESS, args=(job_id,))
    log = stack.logs / "worker.log"
    deadline = time.monotonic() + 10
    while f"[job {job_id}] skipping a repeated preprocessing message: the job is exporting" not in \
            log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the stale preprocess message was not skipped"
        time.sleep(0.05)
    job = stack.store.get(job_id)
    assert job.status is JobStatus.EXPORTING and job.error is None
    with pytest.raises(TransitionError):
        stack.store.fail(job_id, "internal_error", "a stale preprocess", at_most=JobStatus.PREPROCESSING)
    assert stack.store.get(job_id).status is JobStatus.EXPORTING
    stack.store.cancel(job_id)


def test_health_shows_running_jobs_that_no_message_holds_and_the_last_pass(stack: LocalStack,
                                                                          reconciler: Reconciler) -> None:
    """After Redis lost its messages, health says so at the reconciler's next pass, well before the
    jobs count as stalled, and when that pass ran."""
    import requests

    from worker.reconciler import record_pass

    lost = [orphan_job(stack, None) for _ in range(3)]
    # Touched 10 s ago: past the 5 s grace, not yet stalled for a reconciler that waits 60 s.
    patient = Reconciler(stack.settings.replace(stall_after_s=60.0), stack.store, reconciler.redis,
                         reconciler.celery, reconciler.files)
    try:
        report = patient.run_once()
        assert report.orphans >= 3 and not set(lost) & set(report.resent)
        record_pass(patient.redis, "test-reconciler", report)
        data = requests.get(stack.url("/api/avatar/health"), timeout=5).json()["data"]
        assert data["reconciler"]["jobsWithoutMessage"] == report.orphans
        assert data["reconciler"]["lastPassSecondsAgo"] < 5 and data["reconciler"]["by"] == "test-reconciler"
        assert data["status"] == "degraded"
        assert any("have no queue message and no worker" in w for w in data["warnings"])
    finally:
        for job_id in lost:
            stack.store.cancel(job_id)
        record_pass(patient.redis, "test-reconciler", patient.run_once())
    assert requests.get(stack.url("/api/avatar/health"), timeout=5).json()["data"]["status"] == "healthy"
