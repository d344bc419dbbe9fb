"""Helpers for the integration tests: the running stack's handles and request builders."""
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import requests
from PIL import Image

from jobs import localstack
from jobs.audit import AuditLog
from jobs.files import FileStore
from jobs.settings import Settings
from jobs.store import JobStore


# Runs a test that takes ``stack`` once per storage backend: the shared volume and S3 object storage.
on_each_storage = pytest.mark.parametrize("stack", ["volume", "s3"], indirect=True)


@dataclass
class LocalStack:
    settings: Settings
    base_url: str
    store: JobStore
    files: FileStore
    broker: redis.Redis
    logs: Path

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def audit_record(self, request_id: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """The audit record of the request whose ``X-Request-Id`` is ``request_id``; the API writes it
        after the response has been sent, so wait for it a little."""
        log = AuditLog(self.store.db, self.settings.audit_retention_days)
        deadline = time.monotonic() + timeout_s
        while (record := log.for_request(request_id)) is None:
            if time.monotonic() > deadline:
                pytest.fail(f"no audit record for request {request_id} after {timeout_s} s")
            time.sleep(0.02)
        return record

    def wait_for_end(self, avatar_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """Poll the status endpoint until the job ends; returns its last ``data``."""
        deadline = time.monotonic() + timeout_s
        while True:
            body = requests.get(self.url(f"/api/avatar/jobs/{avatar_id}"), timeout=5).json()
            if body["data"]["status"] in ("completed", "failed", "canceled"):
                return body["data"]
            if time.monotonic() > deadline:
                pytest.fail(f"job {avatar_id} still {body['data']['status']} after {timeout_s} s; "
                            f"worker log: {self.logs / 'worker.log'}")
            time.sleep(0.02)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def multipart(front: bytes, left: bytes, right: bytes) -> dict[str, tuple[str, bytes, str]]:
    return {"front": ("front.jpg", front, "image/jpeg"), "left": ("left.jpg", left, "image/jpeg"),
            "right": ("right.jpg", right, "image/jpeg")}


def start_redis_and_store(root: Path, processes: list, **overrides: Any) -> Settings:
    """A test's own Redis and wire-protocol store under ``root`` (appended to ``processes``, which
    the caller stops), both answering; returns the stack settings for them with ``overrides``."""
    redis_url, redis_proc = localstack.start_redis(root / "redis", persist=False)
    processes.append(redis_proc)
    mongo_uri, mongo_proc = localstack.start_mongo(None, log_path=root / "mongo.log")
    processes.append(mongo_proc)
    settings = localstack.stack_settings(redis_url, mongo_uri, root / "data", **overrides)
    localstack.wait_redis(redis_url, redis_proc)
    localstack.wait_mongo(mongo_uri, mongo_proc)
    return settings


def start_api(settings: Settings, root: Path, processes: list) -> str:
    """The API for ``settings`` (appended to ``processes``), answering; returns its base URL."""
    api = localstack.start_api(settings, root / "api.log")
    processes.append(api)
    base_url = f"http://127.0.0.1:{settings.port}"
    localstack.wait_api(base_url, api)
    return base_url


def start_small_stack(root: Path, processes: list, node: str, **overrides: Any) -> tuple[Settings, str, Any]:
    """A test's own Redis, store, one single-process worker node (named ``node``) and the API,
    all answering (appended to ``processes``); returns the settings, the API's base URL and the
    worker's process."""
    settings = start_redis_and_store(root, processes, api_workers=1, **overrides)
    nodes = localstack.start_solo_workers(settings, ("cpu", "gpu"), 1, node, root / "logs")
    processes.extend(nodes.values())
    localstack.wait_solo_workers(settings, nodes)
    return settings, start_api(settings, root, processes), next(iter(nodes.values()))
