"""Service benchmark: POST → completed through the real local stack (gunicorn, Redis, Celery, store).

Measures, for 3×1024² and 3×4096² JPEGs made from a real photo, the latency from the start of the POST
to the job being completed (``Prefer: wait``, so no polling interval is added), p50/p95, and the
sustained throughput (avatars/s) with ``workers`` worker processes and ``clients`` concurrent clients.
Prints JSON with ``python -m bench.service``.
"""
from __future__ import annotations

import io
import json
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

from jobs import localstack
from jobs.settings import Settings

WORKER_NAME = "bench@" + socket.gethostname()


def photo_jpeg(side: int) -> bytes:
    """The astronaut photo scaled to ``side``² and encoded as JPEG (quality 90)."""
    from skimage import data

    image = Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _generate(base_url: str, jpeg: bytes) -> float:
    files = {view: (f"{view}.jpg", jpeg, "image/jpeg") for view in ("front", "left", "right")}
    start = time.perf_counter()
    response = requests.post(f"{base_url}/api/avatar/generate", files=files,
                             headers={"Prefer": "wait=60"}, timeout=90)
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"generate answered {response.status_code}: {response.text[:300]}")
    return elapsed


def _percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


def run_service_bench(sides: tuple[int, ...] = (1024, 4096), requests_per_size: int = 20,
                      throughput_requests: int = 40, workers: int = 2, clients: int = 4,
                      warmup: int = 3) -> dict[str, Any]:
    """Start a private stack, measure, stop it; returns the numbers as a dict."""
    with tempfile.TemporaryDirectory(prefix="avatar-bench-") as tmp:
        root = Path(tmp)
        processes = []
        try:
            redis_url, redis_proc = localstack.start_redis(root / "redis", persist=False)
            processes.append(redis_proc)
            mongo_uri, mongo_proc = localstack.start_mongo(None, log_path=root / "mongo.log")
            processes.append(mongo_proc)
            port = localstack.free_port()
            settings = Settings.from_env({
                "redis_url": redis_url, "mongodb_uri": mongo_uri, "data_dir": root / "data",
                "port": port, "host": "127.0.0.1", "worker_concurrency": workers,
                "api_workers": 2, "api_threads": 8,
            }, environ={})
            localstack.wait_redis(redis_url, redis_proc)
            worker = localstack.start_worker(settings, ("cpu", "gpu"), workers, WORKER_NAME,
                                             root / "worker.log")
            processes.append(worker)
            localstack.wait_mongo(mongo_uri, mongo_proc)
            api = localstack.start_api(settings, root / "api.log")
            processes.append(api)
            base_url = f"http://127.0.0.1:{port}"
            localstack.wait_api(base_url, api)
            localstack.wait_worker(settings, WORKER_NAME, workers, worker)
            return _measure(base_url, sides, requests_per_size, throughput_requests, workers, clients, warmup)
        finally:
            for process in reversed(processes):
                localstack.stop(process)


def _measure(base_url: str, sides: tuple[int, ...], requests_per_size: int, throughput_requests: int,
             workers: int, clients: int, warmup: int) -> dict[str, Any]:
    photos = {side: photo_jpeg(side) for side in sides}
    for _ in range(warmup):
        _generate(base_url, photos[sides[0]])
    latency = {}
    for side, jpeg in photos.items():
        samples = [_generate(base_url, jpeg) for _ in range(requests_per_size)]
        latency[f"3x{side}"] = {
            "jpegBytes": len(jpeg), "n": len(samples),
            "p50_ms": _percentile(samples, 50), "p95_ms": _percentile(samples, 95),
            "mean_ms": round(statistics.fmean(samples), 1),
        }
    small = photos[sides[0]]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: _generate(base_url, small), range(throughput_requests)))
    elapsed = time.perf_counter() - start
    return {
        "service": {
            "postToCompleted": latency,
            "throughput": {"photos": f"3x{sides[0]}", "requests": throughput_requests, "clients": clients,
                           "workerProcesses": workers,
                           "avatarsPerSecond": round(throughput_requests / elapsed, 2)},
        }
    }


def main() -> None:
    print(json.dumps(run_service_bench(), indent=2))


if __name__ == "__main__":
    main()
