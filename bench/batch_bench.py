"""Batch benchmark: avatars per second with ``avatar batch`` as the client, 1 and 2 worker processes.

For each worker count a private local stack is started (Redis, the store, one Celery worker with
that many processes, gunicorn), a warm-up batch runs, then a measured batch of ``subjects`` subject
folders (3×``side``² JPEGs made from real photos) goes through the batch CLI in this process
(``client.batch_cli.main``, exactly what ``avatar batch`` runs). Reported: wall time, jobs/s, and
the per-subject submit→GLB-on-disk latency from the batch summary. ``python -m bench.batch_bench``
prints the JSON.
"""
from __future__ import annotations

import contextlib
import io
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.photos import avatar_views
from bench.pipeline_bench import measure_inference_batching
from jobs import localstack

WORKER_NAME = "batchbench@" + socket.gethostname()


@contextlib.contextmanager
def local_stack(root: Path, worker_processes: int, nodes: int = 1) -> Iterator[str]:
    """A private stack with ``worker_processes`` worker processes, split over ``nodes`` Celery worker
    nodes (separate OS process trees, as a fleet runs them); yields its base URL."""
    processes = []
    try:
        redis_url, redis_proc = localstack.start_redis(root / "redis", persist=False)
        processes.append(redis_proc)
        mongo_uri, mongo_proc = localstack.start_mongo(None, log_path=root / "logs" / "mongo.log")
        processes.append(mongo_proc)
        settings = localstack.stack_settings(redis_url, mongo_uri, root / "data", **{
            "worker_concurrency": worker_processes, "api_workers": 2, "api_connections": 1000})
        port = settings.port
        localstack.wait_redis(redis_url, redis_proc)
        per_node = max(1, worker_processes // nodes)
        workers = {}
        for index in range(nodes):
            name = WORKER_NAME if nodes == 1 else f"batchbench{index}@{socket.gethostname()}"
            workers[name] = localstack.start_worker(settings, ("cpu", "gpu"), per_node, name,
                                                    root / "logs" / f"worker{index}.log")
            processes.append(workers[name])
        localstack.wait_mongo(mongo_uri, mongo_proc)
        api = localstack.start_api(settings, root / "logs" / "api.log")
        processes.append(api)
        base_url = f"http://127.0.0.1:{port}"
        localstack.wait_api(base_url, api)
        for name, worker in workers.items():
            localstack.wait_worker(settings, name, per_node, worker)
        yield base_url
    finally:
        for process in reversed(processes):
            localstack.stop(process)


def write_subjects(root: Path, count: int, views: dict[str, bytes]) -> Path:
    """``count`` subject folders with the same three photos (every POST is still its own job)."""
    for i in range(count):
        folder = root / f"subject-{i:04d}"
        folder.mkdir(parents=True)
        for view, data in views.items():
            (folder / f"{view}.jpg").write_bytes(data)
    return root


def time_batch(base_url: str, subjects_dir: Path, out_dir: Path, concurrency: int) -> dict[str, Any]:
    """Run the batch CLI once; wall time and the per-subject numbers from its summary."""
    from client.batch_cli import main as batch_main

    summary = out_dir / "summary.jsonl"
    stderr = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(stderr):
        code = batch_main([str(subjects_dir), "--server", base_url, "--out", str(out_dir),
                           "--concurrency", str(concurrency), "--summary", str(summary), "--no-progress"])
    wall = time.perf_counter() - start
    lines = [json.loads(line) for line in summary.read_text().splitlines()]
    if code != 0:
        failed = [f"{r['subject']}: {r['errorMessage']}" for r in lines if r["status"] != "completed"]
        raise RuntimeError(f"batch exited {code}: {failed[:3]} {stderr.getvalue()[-500:]}")
    totals = [r["timings"]["totalMs"] for r in lines]
    return {"wall_s": round(wall, 3), "jobsPerSecond": round(len(lines) / wall, 2),
            "subjectTotalMs": {"p50": round(float(np.percentile(totals, 50)), 1),
                               "p95": round(float(np.percentile(totals, 95)), 1),
                               "mean": round(statistics.fmean(totals), 1)}}


# (worker processes, worker nodes): one process; two in one node; two nodes of one process each.
LAYOUTS = ((1, 1), (2, 1), (2, 2))


def run_batch_bench(subjects: int = 40, side: int = 1024,
                    layouts: tuple[tuple[int, int], ...] = LAYOUTS,
                    concurrency: int = 4, warmup: int = 4) -> dict[str, Any]:
    """jobs/s through ``avatar batch`` for each (worker processes, nodes) layout, and what batching
    the landmark model would buy on this CPU; returns the numbers as a dict."""
    views = avatar_views(side)
    runs = []
    with tempfile.TemporaryDirectory(prefix="avatar-batch-bench-") as tmp:
        root = Path(tmp)
        measured = write_subjects(root / "subjects", subjects, views)
        warm = write_subjects(root / "warmup", warmup, views)
        for workers, nodes in layouts:
            stack_root = root / f"stack-{workers}x{nodes}"
            with local_stack(stack_root, workers, nodes) as base_url:
                time_batch(base_url, warm, stack_root / "warmup-out", concurrency)
                result = time_batch(base_url, measured, stack_root / "out", concurrency)
            runs.append({"workerProcesses": workers, "workerNodes": nodes, **result})
    report: dict[str, Any] = {"subjects": subjects, "photos": f"3x{side} JPEG", "clientConcurrency": concurrency,
                              "runs": runs}
    one = next((r for r in runs if r["workerProcesses"] == 1), None)
    if one and one["jobsPerSecond"]:
        # What adding processes bought on this machine, per layout with more than one.
        report["speedupOverOneProcess"] = {f"{r['workerProcesses']}proc/{r['workerNodes']}node":
                                           round(r["jobsPerSecond"] / one["jobsPerSecond"], 2)
                                           for r in runs if r["workerProcesses"] > 1}
    report["inferenceBatching"] = measure_inference_batching()
    return {"batch": report}


def main() -> None:
    print(json.dumps(run_batch_bench(), indent=2))


if __name__ == "__main__":
    main()
