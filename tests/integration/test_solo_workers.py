"""The workers as `avatar up` runs them: one solo process per worker node (``start_solo_workers``).

Both nodes share the jobs, and a stage that runs past JOB_TIMEOUT_S fails the job with code
"timeout" even though Celery's own time limit does not exist in the solo pool (``worker.deadline``).
"""
from __future__ import annotations

import time

import pytest

from bench.photos import avatar_views
from client.avatar_client import AvatarClient
from client.errors import JobFailed
from jobs import localstack
from jobs.store import JobStore
from service_stack import start_api, start_redis_and_store

JOBS = 8


def test_solo_nodes_share_the_jobs_and_enforce_the_stage_time_limit(tmp_path) -> None:
    processes = []
    try:
        settings = start_redis_and_store(tmp_path, processes, mongodb_db="avatar_solo", api_workers=1,
                                         api_connections=1000)
        nodes = localstack.start_solo_workers(settings, ("cpu", "gpu"), 2, "solo@itest", tmp_path)
        processes.extend(nodes.values())
        base_url = start_api(settings, tmp_path, processes)
        assert sorted(nodes) == ["solo-1@itest", "solo-2@itest"]
        localstack.wait_solo_workers(settings, nodes)

        views = avatar_views(512)
        client = AvatarClient(base_url, timeout=30)
        ids = [client.submit(views["front"], views["left"], views["right"]).avatar_id for _ in range(JOBS)]
        states = [client.wait(avatar_id, timeout=60) for avatar_id in ids]
        assert [s.status for s in states] == ["completed"] * JOBS
        store = JobStore.from_settings(settings)
        ran_on = {name for doc in store.jobs.find({"_id": {"$in": ids}}, {"workers": 1})
                  for name in doc["workers"].values()}
        assert ran_on == set(nodes), "both solo nodes should have run stages"

        for process in nodes.values():
            localstack.stop(process)

        # A node for the cpu queue alone: a job stops at inference, so what preprocess left is seen.
        # The photos are gone as soon as preprocess has handed over; the stage file is still there.
        cpu_only = localstack.start_solo_workers(settings, ("cpu",), 1, "cpu-only@itest", tmp_path / "cpu-only")
        (process,) = cpu_only.values()
        processes.append(process)
        localstack.wait_solo_workers(settings, cpu_only)
        avatar_id = client.submit(views["front"], views["left"], views["right"]).avatar_id
        deadline = time.monotonic() + 30
        while store.get(avatar_id).status.value != "inference":
            assert time.monotonic() < deadline, store.get(avatar_id).status
            time.sleep(0.05)
        deadline = time.monotonic() + 5  # the deletion follows the hand-over
        while settings.data_dir.joinpath("uploads", avatar_id).exists():
            assert time.monotonic() < deadline, "the photos outlived preprocess"
            time.sleep(0.01)
        assert any(settings.data_dir.joinpath("work", avatar_id).iterdir())
        client.cancel(avatar_id)
        localstack.stop(process)

        # The same kind of node with a 5 ms stage limit: every preprocess runs past it.
        strict = settings.replace(job_timeout_s=0.005)
        strict_nodes = localstack.start_solo_workers(strict, ("cpu", "gpu"), 1, "strict@itest", tmp_path / "strict")
        (process,) = strict_nodes.values()
        processes.append(process)
        localstack.wait_solo_workers(settings, strict_nodes)
        avatar_id = client.submit(views["front"], views["left"], views["right"]).avatar_id
        with pytest.raises(JobFailed) as failed:
            client.wait(avatar_id, timeout=30)
        assert failed.value.code == "timeout"
        job = store.get(avatar_id)
        assert job.error["code"] == "timeout", job.error
        assert "longer than 0.005 s at the preprocessing step" in job.error["message"]
        assert not settings.data_dir.joinpath("uploads", avatar_id).exists()
        # The node survived its timed-out stage.
        time.sleep(0.2)
        assert process.poll() is None
    finally:
        for process in reversed(processes):
            localstack.stop(process)
