"""The job state machine against the real wire-protocol store: guarded transitions, atomic counters."""
from __future__ import annotations

import time
import uuid
from datetime import timedelta, timezone
from concurrent.futures import ThreadPoolExecutor

import pytest

from jobs.store import JobNotFound, JobStatus, JobStore, TransitionError


@pytest.fixture()
def store(stack) -> JobStore:
    return stack.store


def new_job(store: JobStore, owner: str | None = None) -> str:
    job_id = str(uuid.uuid4())
    store.create(job_id, owner=owner, uploads={"front": {"size": 1}})
    return job_id


def test_happy_path_records_stages_timings_and_result(store: JobStore) -> None:
    job_id = new_job(store)
    assert store.get(job_id).status is JobStatus.QUEUED
    store.start(job_id, worker="w1")
    assert store.get(job_id).status is JobStatus.PREPROCESSING
    # Finishing a stage enters the next one in the same update.
    assert store.advance(job_id, JobStatus.PREPROCESSING, {"preprocessingMs": 1.5}, worker="w1",
                         trace={"preprocessFinished": 100.0}) is JobStatus.INFERENCE
    assert store.get(job_id).status is JobStatus.INFERENCE
    assert store.advance(job_id, JobStatus.INFERENCE, {"inferenceMs": 1.5}, worker="w2") is JobStatus.EXPORTING
    store.complete(job_id, {"glbSize": 10}, {"exportMs": 2.0}, worker="w1", trace={"exportFinished": 101.5})

    job = store.get(job_id)
    assert job.status is JobStatus.COMPLETED and job.status.is_terminal()
    assert job.progress == 1.0
    assert job.timings == {"preprocessingMs": 1.5, "inferenceMs": 1.5, "exportMs": 2.0}
    assert job.trace == {"preprocessFinished": 100.0, "exportFinished": 101.5}
    assert job.result == {"glbSize": 10}
    assert job.doc["workers"] == {"preprocessing": "w1", "inference": "w2", "exporting": "w1"}
    assert job.finished_at is not None


def test_a_stage_cannot_finish_a_job_that_has_moved_past_it(store: JobStore) -> None:
    job_id = new_job(store)
    store.start(job_id)
    store.advance(job_id, JobStatus.PREPROCESSING, {})
    # A redelivered preprocess cannot move the job.
    with pytest.raises(TransitionError) as raised:
        store.advance(job_id, JobStatus.PREPROCESSING, {})
    assert raised.value.actual is JobStatus.INFERENCE
    store.advance(job_id, JobStatus.INFERENCE, {})
    with pytest.raises(TransitionError) as raised:  # nor a redelivered inference
        store.advance(job_id, JobStatus.INFERENCE, {})
    assert raised.value.actual is JobStatus.EXPORTING
    with pytest.raises(ValueError):
        store.advance(job_id, JobStatus.EXPORTING, {})
    # A late start (a redelivered preprocess) does not take the job back either.
    store.start(job_id)
    assert store.get(job_id).status is JobStatus.EXPORTING


def test_a_stage_recorded_before_the_one_that_queued_it_wins_and_the_late_record_is_refused(
        store: JobStore) -> None:
    """Each stage queues the next before recording its own end, so in a slow store the next stage
    can finish first: that must work, and the late record must not take the job back."""
    job_id = new_job(store)
    assert store.advance(job_id, JobStatus.INFERENCE, {"landmarks": 2.0}) is JobStatus.EXPORTING
    with pytest.raises(TransitionError) as raised:
        store.advance(job_id, JobStatus.PREPROCESSING, {"decode": 1.0})
    assert raised.value.actual is JobStatus.EXPORTING
    store.complete(job_id, {"glbSize": 10}, {"glb": 1.0})
    with pytest.raises(TransitionError) as raised:
        store.advance(job_id, JobStatus.INFERENCE, {})
    assert raised.value.actual is JobStatus.COMPLETED
    job = store.get(job_id)
    assert job.status is JobStatus.COMPLETED and job.doc["completions"] == 1
    assert job.doc["startedAt"] >= job.doc["createdAt"]  # set by the first record that landed


def test_preprocess_finishes_even_if_its_start_never_landed(store: JobStore) -> None:
    """start() is not waited for; the guarded finish must not depend on it."""
    job_id = new_job(store)
    assert store.advance(job_id, JobStatus.PREPROCESSING, {"decode": 1.0}) is JobStatus.INFERENCE
    job = store.get(job_id)
    assert job.status is JobStatus.INFERENCE
    assert job.doc["startedAt"] >= job.doc["createdAt"]


def test_start_keeps_the_time_the_worker_took_the_job(store: JobStore) -> None:
    job_id = new_job(store)
    taken = store.get(job_id).created_at + timedelta(milliseconds=2)
    store.start(job_id, worker="w1", started_at=taken)
    time.sleep(0.02)  # finishing later must not move startedAt
    store.advance(job_id, JobStatus.PREPROCESSING, {})
    job = store.get(job_id)
    assert job.doc["workers"]["preprocessing"] == "w1"
    assert job.doc["startedAt"].replace(tzinfo=timezone.utc) == taken


def test_a_redelivered_stage_may_restart(store: JobStore) -> None:
    job_id = new_job(store)
    store.start(job_id, worker="died")
    store.start(job_id, worker="retry")
    assert store.get(job_id).doc["workers"]["preprocessing"] == "retry"


@pytest.mark.parametrize("end", ["fail", "cancel"])
def test_terminal_states_refuse_every_transition(store: JobStore, end: str) -> None:
    job_id = new_job(store)
    store.start(job_id)
    if end == "fail":
        store.fail(job_id, "no_face", "left: no face found", "left")
        assert store.get(job_id).error == {"code": "no_face", "message": "left: no face found", "view": "left"}
    else:
        store.cancel(job_id)
    ended = store.get(job_id).status
    store.start(job_id)  # not waited for, and guarded: it must not revive the job
    attempts = [
        lambda: store.advance(job_id, JobStatus.PREPROCESSING, {"x": 1}),
        lambda: store.complete(job_id, {}, {}),
        lambda: store.fail(job_id, "internal_error", "boom"),
        lambda: store.cancel(job_id),
    ]
    for attempt in attempts:
        with pytest.raises(TransitionError) as raised:
            attempt()
        assert raised.value.actual is ended
    assert store.get(job_id).status is ended


def test_finishing_a_stage_after_cancel_tells_the_worker_to_stop(store: JobStore) -> None:
    job_id = new_job(store)
    store.start(job_id)
    store.cancel(job_id)
    with pytest.raises(TransitionError) as raised:
        store.advance(job_id, JobStatus.PREPROCESSING, {"decode": 1})
    assert raised.value.actual is JobStatus.CANCELED


def test_unknown_job(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        store.get(str(uuid.uuid4()))
    with pytest.raises(JobNotFound):
        store.cancel(str(uuid.uuid4()))


def test_concurrent_downloads_all_count(store: JobStore) -> None:
    job_id = new_job(store)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: store.count_downloads(job_id), range(40)))
    assert store.get(job_id).download_count == 40


def test_only_one_of_two_racing_transitions_wins(store: JobStore) -> None:
    job_id = new_job(store)
    store.start(job_id)
    outcomes = []

    def try_(transition):
        try:
            transition()
            outcomes.append("won")
        except TransitionError:
            outcomes.append("lost")

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(try_, [lambda: store.cancel(job_id), lambda: store.fail(job_id, "x", "y")]))
    assert sorted(outcomes) == ["lost", "won"]


def test_listing_is_per_owner_newest_first(store: JobStore) -> None:
    owner = f"user-{uuid.uuid4()}"
    ids = []
    for _ in range(3):
        ids.append(new_job(store, owner))
        time.sleep(0.003)  # createdAt has millisecond resolution
    new_job(store, "someone-else")
    page, total = store.list_for_owner(owner, skip=0, limit=2)
    assert total == 3
    assert [job.id for job in page] == ids[::-1][:2]


def test_file_store_paths_are_absolute_whatever_the_setting(tmp_path, monkeypatch) -> None:
    from jobs.files import FileStore

    monkeypatch.chdir(tmp_path)
    storage = FileStore("var/data").storage
    assert storage.root == tmp_path / "var" / "data"
    assert storage.path("results/x.glb").is_absolute()
