"""Service benchmark: POST → completed through the real local stack (gunicorn, Redis, Celery, store).

For 3×1024² and 3×4096² JPEGs (the same real photos the pipeline benchmark uses) it measures the time
from sending the POST to receiving the completed body (``Prefer: wait``, so no polling interval is
added), p50/p95, and the sustained throughput (avatars/s) with ``workers`` worker processes and
``clients`` concurrent clients. It also reports where the time of a job goes: the API's steps (its
``Server-Timing`` header), each stage's load/compute/save, the hops between stages (from the job
record's trace), and the CPU each process of the stack used, the benchmark client included.

The client is lean on purpose: it shares the 2 cores with the service, so it builds each multipart
body once and sends it over a kept-alive ``http.client`` connection.
"""
from __future__ import annotations

import http.client
import json
import resource
import socket
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.photos import avatar_views
from jobs import localstack
from jobs.settings import Settings
from jobs.store import JobStore

WORKER_NAME = "bench@" + socket.gethostname()


# -- the client ------------------------------------------------------------------------------------

def multipart_body(views: Mapping[str, bytes]) -> tuple[bytes, str]:
    """``(body, content_type)`` of a multipart form with one JPEG file per view."""
    boundary = uuid.uuid4().hex
    parts = []
    for view, data in views.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{view}"; '
                     f'filename="{view}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass
class Sample:
    ms: float
    avatar_id: str
    server_timing: dict[str, float] = field(default_factory=dict)


class Client:
    """One kept-alive connection that posts a prepared body with ``Prefer: wait``."""

    def __init__(self, host: str, port: int):
        self.conn = http.client.HTTPConnection(host, port, timeout=90)

    def generate(self, body: bytes, content_type: str) -> Sample:
        start = time.perf_counter()
        self.conn.request("POST", "/api/avatar/generate", body=body,
                          headers={"Content-Type": content_type, "Prefer": "wait=60"})
        response = self.conn.getresponse()
        payload = response.read()
        ms = (time.perf_counter() - start) * 1000
        if response.status != 200:
            raise RuntimeError(f"generate answered {response.status}: {payload[:300]!r}")
        return Sample(ms, json.loads(payload)["data"]["avatarId"],
                      parse_server_timing(response.getheader("Server-Timing", "")))

    def close(self) -> None:
        self.conn.close()


def parse_server_timing(header: str) -> dict[str, float]:
    """``{"parse": 2.1, ...}`` from ``parse;dur=2.1, ...``."""
    steps = {}
    for entry in filter(None, (e.strip() for e in header.split(","))):
        name, _, rest = entry.partition(";")
        for param in rest.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur":
                steps[name] = float(value)
    return steps


# -- the stack -------------------------------------------------------------------------------------

class BenchStack:
    """A private local stack as `avatar up` runs it: Redis, the store, ``workers`` single-process
    (solo) worker nodes, the API."""

    def __init__(self, root: Path, workers: int, api_workers: int, api_connections: int):
        self.root = root
        self.processes: dict[str, Any] = {}
        redis_url, self.processes["redis"] = localstack.start_redis(root / "redis", persist=False)
        mongo_uri, self.processes["mongodb"] = localstack.start_mongo(None, log_path=root / "mongo.log")
        self.settings = localstack.stack_settings(redis_url, mongo_uri, root / "data", **{
            "worker_concurrency": workers, "api_workers": api_workers, "api_connections": api_connections})
        self.port = self.settings.port
        localstack.wait_redis(redis_url, self.processes["redis"])
        nodes = localstack.start_solo_workers(self.settings, ("cpu", "gpu"), workers, WORKER_NAME, root)
        self.processes["worker"] = list(nodes.values())
        localstack.wait_mongo(mongo_uri, self.processes["mongodb"])
        self.processes["api"] = localstack.start_api(self.settings, root / "api.log")
        localstack.wait_api(f"http://127.0.0.1:{self.port}", self.processes["api"])
        localstack.wait_solo_workers(self.settings, nodes)
        self.store = JobStore.from_settings(self.settings)

    def client(self) -> Client:
        return Client("127.0.0.1", self.port)

    def worker_providers(self) -> dict[str, list[str]]:
        """The execution providers each worker process reports in health (what really runs the models)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/avatar/health", timeout=10) as response:
            health = json.load(response)["data"]
        return {p["hostname"]: p["model"].get("providers", []) for p in health["workers"]["processes"]}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each piece has used so far, its child processes included."""
        used = {}
        for name, processes in self.processes.items():
            try:
                used[name] = tree_cpu_s(_as_list(processes))
            except psutil.Error:
                used[name] = float("nan")
        return used

    def stop(self) -> None:
        for processes in reversed(list(self.processes.values())):
            for process in _as_list(processes):
                localstack.stop(process)


def _as_list(processes: Any) -> list[Any]:
    return processes if isinstance(processes, list) else [processes]


def tree_cpu_s(processes: Iterable[Any]) -> float:
    """CPU time (user + system) that ``processes`` (anything with a ``pid``) and their children
    have used so far, in seconds."""
    total = 0.0
    for process in processes:
        parent = psutil.Process(process.pid)
        for proc in [parent, *parent.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
    return total


# -- measuring -------------------------------------------------------------------------------------

def _percentile(values: Iterable[float], q: float) -> float:
    return round(float(np.percentile(list(values), q)), 1)


def _medians(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for d in dicts for k in d})
    return {k: round(statistics.median([d[k] for d in dicts if k in d]), 2) for k in keys}


def _client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def job_breakdown(store: JobStore, samples: list[Sample]) -> dict[str, Any]:
    """Medians over ``samples`` of the API's steps and of what the job records say about each stage."""
    from api.bodies import status_body

    timings = [status_body(store.get(s.avatar_id))["timings"] for s in samples]
    return {"apiServerTiming": _medians([s.server_timing for s in samples]),
            "jobTimings": _medians(timings)}


def measure_latency(stack: BenchStack, views: Mapping[str, bytes], n: int) -> dict[str, Any]:
    """``n`` POST → completed, one at a time."""
    body, content_type = multipart_body(views)
    client = stack.client()
    try:
        samples = [client.generate(body, content_type) for _ in range(n)]
    finally:
        client.close()
    values = [s.ms for s in samples]
    return {"n": n, "p50_ms": _percentile(values, 50), "p95_ms": _percentile(values, 95),
            "mean_ms": round(statistics.fmean(values), 1), "inputBytes": sum(map(len, views.values())),
            "breakdown_median_ms": job_breakdown(stack.store, samples)}


def measure_throughput(stack: BenchStack, views: Mapping[str, bytes], requests: int,
                       clients: int) -> dict[str, Any]:
    """``requests`` avatars from ``clients`` concurrent clients; avatars/s and CPU by process."""
    body, content_type = multipart_body(views)
    remaining = iter(range(requests))
    lock = threading.Lock()
    samples: list[Sample] = []
    errors: list[BaseException] = []
    conns = [stack.client() for _ in range(clients)]

    def run(client: Client) -> None:
        try:
            while True:
                with lock:
                    if next(remaining, None) is None:
                        return
                sample = client.generate(body, content_type)
                with lock:
                    samples.append(sample)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    cpu_before, client_before = stack.cpu_seconds(), _client_cpu_s()
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    cpu_after, client_after = stack.cpu_seconds(), _client_cpu_s()
    for conn in conns:
        conn.close()
    if errors:
        raise errors[0]
    cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
    cpu["benchClient"] = client_after - client_before
    return {
        "requests": requests, "clients": clients, "seconds": round(elapsed, 2),
        "avatarsPerSecond": round(requests / elapsed, 2),
        "latency_p50_ms": _percentile([s.ms for s in samples], 50),
        # Cores busy on average, per piece: 2.0 is the whole machine.
        "coresUsed": {name: round(seconds / elapsed, 2) for name, seconds in cpu.items()},
        "cpuMsPerAvatar": {name: round(seconds * 1000 / requests, 1) for name, seconds in cpu.items()},
    }


def run_service_bench(sides: tuple[int, ...] = (1024, 4096), requests_per_size: int = 30,
                      throughput_requests: int = 120, workers: int = 2, clients: int = 4,
                      warmup: int = 5, api_workers: int | None = None,
                      api_connections: int | None = None) -> dict[str, Any]:
    """Start a private stack, measure, stop it; returns the numbers as a dict.

    The API runs with the gunicorn workers and threads `avatar up` would use unless told otherwise.
    """
    defaults = Settings.from_env()  # API_WORKERS / API_CONNECTIONS apply, as for `avatar up`
    api_workers = api_workers or defaults.api_workers
    api_connections = api_connections or defaults.api_connections
    photos = {side: avatar_views(side) for side in sides}
    with tempfile.TemporaryDirectory(prefix="avatar-bench-") as tmp:
        stack = BenchStack(Path(tmp), workers, api_workers, api_connections)
        try:
            providers = stack.worker_providers()
            measure_latency(stack, photos[sides[0]], warmup)
            latency = {f"3x{side}": measure_latency(stack, photos[side], requests_per_size) for side in sides}
            throughput = measure_throughput(stack, photos[sides[0]], throughput_requests, clients)
        finally:
            stack.stop()
    return {
        "stack": {"workerProcesses": workers, "workerPool": "solo", "apiWorkers": api_workers,
                  "apiConnections": api_connections, "workerProviders": providers},
        "postToCompleted": latency,
        "throughput": {"photos": f"3x{sides[0]}", "workerProcesses": workers, **throughput},
    }


def main() -> None:
    print(json.dumps(run_service_bench(), indent=2))


if __name__ == "__main__":
    main()
