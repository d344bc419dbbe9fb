"""A fleet split by queue, as production runs it: one node for the cpu queue (prefork) and one for
the gpu queue with landmark micro-batching (threads pool, INFERENCE_BATCH_MAX=4), started through
``avatar worker`` with WORKER_QUEUES / WORKER_HOSTNAME / WORKER_CONCURRENCY from the environment."""
from __future__ import annotations

import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.photos import avatar_views
from client.avatar_client import AvatarClient
from jobs import localstack
from jobs.store import JobStore
from service_stack import start_api, start_redis_and_store

JOBS = 24


def test_cpu_and_gpu_nodes_with_batched_inference(tmp_path) -> None:
    processes = []
    try:
        settings = start_redis_and_store(tmp_path, processes, mongodb_db="avatar_fleet", api_workers=1,
                                         api_connections=1000, inference_batch_max=4, inference_batch_window_ms=20.0)
        nodes = {"cpu": ("cpu-node@fleet", "2", "prefork"), "gpu": ("gpu-node@fleet", "4", "threads")}
        for queue, (hostname, concurrency, pool) in nodes.items():
            env = {**os.environ, **settings.to_env(), "WORKER_QUEUES": queue, "WORKER_HOSTNAME": hostname,
                   "WORKER_CONCURRENCY": concurrency}
            processes.append(localstack._spawn([sys.executable, "-m", "avatar_cli", "worker", "--pool", pool],
                                               tmp_path / f"{queue}.log", env))
        base_url = start_api(settings, tmp_path, processes)
        localstack.wait_worker(settings, "cpu-node@fleet", 2, processes[2])
        localstack.wait_worker(settings, "gpu-node@fleet", 1, processes[3])

        health = requests.get(f"{base_url}/api/avatar/health", timeout=5).json()["data"]
        assert health["queues"]["cpu"]["hosts"] == ["cpu-node@fleet"], health["queues"]
        assert health["queues"]["gpu"]["hosts"] == ["gpu-node@fleet"], health["queues"]
        gpu = [p for p in health["workers"]["processes"] if p["hostname"] == "gpu-node@fleet"]
        assert gpu[0]["inferenceBatchMax"] == 4 and gpu[0]["queues"] == ["gpu"]
        assert health["model"]["initialized"] and health["status"] == "healthy"

        views = avatar_views(512)
        client = AvatarClient(base_url, timeout=30)
        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = list(pool.map(lambda _: client.submit(views["front"], views["left"], views["right"],
                                                        idempotency_key=str(uuid.uuid4())).avatar_id,
                                range(JOBS)))
        store = JobStore.from_settings(settings)
        deadline = time.monotonic() + 90
        while store.jobs.count_documents({"_id": {"$in": ids}, "status": "completed"}) < JOBS:
            assert time.monotonic() < deadline, "not every job completed"
            time.sleep(0.2)
        workers = {doc["workers"]["inference"] for doc in store.jobs.find({"_id": {"$in": ids}}, {"workers": 1})}
        assert workers == {"gpu-node@fleet"}
    finally:
        for process in reversed(processes):
            localstack.stop(process)
