"""Scale-out: jobs/s as worker nodes are added, and avatars/s through the whole service.

    python -m bench.fleet                       # this machine: 1..cores+1 nodes serving both queues
    python -m bench.fleet --nodes 1,2,4,8,12,14 --gpu-nodes 2 --side 1024 --timeout 540   # a GPU box

One private stack (Redis, the MongoDB wire-protocol store, optionally moto's S3 server, the API
under gunicorn), then two measurements, one JSON on stdout:

``scaleOut``: for each node count N, a backlog of ``--jobs-per-node`` x N jobs is submitted through
the API while no worker runs, and its queue is parked under another Redis key; N single-process
worker nodes (and ``--gpu-nodes`` G gpu nodes) start, and once every one has loaded its models the
backlog is released in one step (a RENAME). jobs/s is the backlog over the time from its release to
its last job's ``finishedAt``: the nodes' start-up is left out, the queue's FIFO order (every
preprocess, then the inferences and exports) is not.
With G = 0 every node serves both queues, as ``avatar up`` runs them; with G > 0 the N nodes serve
the cpu queue (decode, detect, export) and G threads-pool nodes the gpu queue with cross-job
inference batching (``INFERENCE_BATCH_MAX``). ``flattensAt`` is the first N whose jobs/s is less
than 10% above the one before. Per round: the store's operations per job (its ``opcounters``) and
its CPU per job, the worker nodes' CPU per job and memory.

``service``: with the largest N (and G) running, ``--clients`` concurrent clients in
``--client-processes`` processes POST with ``Prefer: wait`` for ``--service-seconds``: avatars/s
through the service, POST → completed p50/p95, cores used by each piece, the store's operations per
job, GPU utilisation (nvidia-smi, if there is one) and where a job's time goes (medians of the job
records' timings and the API's Server-Timing).

Everything stops within ``--timeout`` seconds: rounds that would not fit are skipped and named.
Nothing is installed or fetched at run time; on a GPU machine the models run on CUDA when
onnxruntime-gpu is installed (``workerProviders`` says what each node really got).
"""
from __future__ import annotations

import os

# One thread per process for numpy's BLAS, as the workers run (worker/__init__.py).
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import psutil  # noqa: E402

from bench.photos import avatar_views  # noqa: E402
from bench.service import Client, _medians, multipart_body, tree_cpu_s  # noqa: E402
from jobs import localstack  # noqa: E402
from jobs.events import WorkerRegistry  # noqa: E402
from jobs.settings import Settings  # noqa: E402
from jobs.store import JobStore  # noqa: E402

HOST = socket.gethostname()
S3_BUCKET = "avatar-bench"
# Less than this gain over the previous node count: the curve has flattened.
FLAT_GAIN = 0.10


# -- the stack -------------------------------------------------------------------------------------

class FleetStack:
    """Redis, the store, (moto's S3), the API; worker nodes come and go per round."""

    def __init__(self, root: Path, api_workers: int, storage: str):
        self.root = root
        self.processes: dict[str, subprocess.Popen] = {}
        redis_url, self.processes["redis"] = localstack.start_redis(root / "redis", persist=False)
        mongo_uri, self.processes["store"] = localstack.start_mongo(None, log_path=root / "store.log")
        overrides: dict[str, Any] = {"api_workers": api_workers, "api_connections": 1000, "mongodb_db": "fleet",
                                     # The benchmark's own reconciler would only add store queries.
                                     "reconcile_interval_s": 0, "sweep_interval_s": 0}
        if storage == "s3":
            os.environ.update(localstack.LOCAL_S3_CREDENTIALS)
            endpoint, self.processes["s3"] = localstack.start_s3(root / "s3.log")
            localstack.wait_s3(endpoint, self.processes["s3"], bucket=S3_BUCKET)
            overrides.update(storage_url=f"s3://{S3_BUCKET}/fleet", s3_endpoint_url=endpoint)
        self.settings = localstack.stack_settings(redis_url, mongo_uri, root / "data", **overrides)
        localstack.wait_redis(redis_url, self.processes["redis"])
        localstack.wait_mongo(mongo_uri, self.processes["store"])
        self.processes["api"] = localstack.start_api(self.settings, root / "api.log")
        self.base_url = f"http://127.0.0.1:{self.settings.port}"
        localstack.wait_api(self.base_url, self.processes["api"])
        self.store = JobStore.from_settings(self.settings)
        self.store.ensure_indexes()
        self.nodes: dict[str, subprocess.Popen] = {}

    def start_nodes(self, cpu_nodes: int, gpu_nodes: int, gpu_threads: int, gpu_batch: int) -> None:
        """``cpu_nodes`` solo nodes (both queues when there is no gpu node), ``gpu_nodes`` threads-pool
        gpu nodes sharing inference runs; returns once every one has loaded its models."""
        env = {**os.environ, **self.settings.to_env(), "WORKER_CONCURRENCY": "1"}
        queues = ("cpu",) if gpu_nodes else ("cpu", "gpu")
        for index in range(1, cpu_nodes + 1):
            name = f"fleet-cpu-{index}@{HOST}"
            self.nodes[name] = localstack._spawn(localstack.worker_command(queues, 1, name, pool="solo"),
                                                 self.root / "logs" / f"{name}.log", env)
        gpu_env = {**env, "WORKER_CONCURRENCY": str(gpu_threads), "INFERENCE_BATCH_MAX": str(gpu_batch)}
        for index in range(1, gpu_nodes + 1):
            name = f"fleet-gpu-{index}@{HOST}"
            self.nodes[name] = localstack._spawn(
                localstack.worker_command(("gpu",), gpu_threads, name, pool="threads"),
                self.root / "logs" / f"{name}.log", gpu_env)
        for name, process in self.nodes.items():
            localstack.wait_worker(self.settings, name, 1, process, timeout_s=120)

    def stop_nodes(self) -> None:
        for process in self.nodes.values():
            localstack.stop(process)
        self.nodes.clear()

    def node_usage(self) -> dict[str, dict[str, float]]:
        """CPU seconds and resident memory (MB) of each running node."""
        usage = {}
        for name, process in self.nodes.items():
            cpu_s = rss = 0.0
            try:
                proc = psutil.Process(process.pid)
                family = [proc, *proc.children(recursive=True)]
            except psutil.Error:
                family = []
            for member in family:
                try:  # a child may end between listing and reading it
                    times, memory = member.cpu_times(), member.memory_info()
                except psutil.Error:
                    continue
                cpu_s += times.user + times.system
                rss += memory.rss
            usage[name] = {"cpuS": cpu_s, "rssMB": rss / 2**20, "peakRssMB": _peak_rss_mb(family)}
        return usage

    def providers(self) -> dict[str, list[str]]:
        registry = WorkerRegistry(self.store_redis(), self.settings.worker_heartbeat_ttl_s)
        return {beat["hostname"]: (beat.get("model") or {}).get("providers", []) for beat in registry.alive()}

    def store_redis(self):
        import redis
        return redis.Redis.from_url(self.settings.broker_url)

    def store_counters(self) -> dict[str, float]:
        """The store's operation counters and the CPU seconds its process has used."""
        counters = dict(self.store.db.client.admin.command("serverStatus")["opcounters"])
        counters["cpuS"] = tree_cpu_s([self.processes["store"]])
        return counters

    def piece_cpu_s(self) -> dict[str, float]:
        used = {name: tree_cpu_s([process]) for name, process in self.processes.items()}
        used["workers"] = tree_cpu_s(self.nodes.values())
        return used

    def piece_memory_mb(self) -> dict[str, float]:
        """Resident memory of each piece (its processes together), the worker nodes each."""
        memory = {}
        for name, process in [*self.processes.items(), *self.nodes.items()]:
            try:
                proc = psutil.Process(process.pid)
                memory[name] = round(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
                                     / 2**20)
            except psutil.Error:
                continue
        return memory

    def stop(self) -> None:
        self.stop_nodes()
        for process in reversed(list(self.processes.values())):
            localstack.stop(process)


def _peak_rss_mb(processes: list[psutil.Process]) -> float:
    """The largest resident size any of ``processes`` has had (Linux's VmHWM), in MB."""
    peak = 0
    for process in processes:
        try:
            with open(f"/proc/{process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            continue
    return peak / 2**20


def store_delta(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, Any]:
    """Store operations and CPU per job between two ``store_counters`` (the two serverStatus calls
    that read them are taken out of the commands)."""
    ops = {name: round((after[name] - before[name] - (1 if name == "command" else 0)) / jobs, 2)
           for name in ("insert", "query", "update", "delete", "getmore", "command")}
    ops["total"] = round(sum(ops.values()), 2)
    return {"opsPerJob": ops, "storeCpuMsPerJob": round((after["cpuS"] - before["cpuS"]) * 1000 / jobs, 2)}


# -- submitting ------------------------------------------------------------------------------------

def submit_backlog(stack: FleetStack, body: bytes, content_type: str, jobs: int, clients: int = 4) -> list[str]:
    """``jobs`` POSTs without waiting (no worker runs yet): they queue up."""
    host, port = "127.0.0.1", stack.settings.port

    def post_many(count: int) -> list[str]:
        import http.client

        conn = http.client.HTTPConnection(host, port, timeout=60)
        ids = []
        try:
            for _ in range(count):
                conn.request("POST", "/api/avatar/generate", body=body, headers={"Content-Type": content_type})
                response = conn.getresponse()
                payload = response.read()
                if response.status != 202:
                    raise RuntimeError(f"generate answered {response.status}: {payload[:300]!r}")
                ids.append(json.loads(payload)["data"]["avatarId"])
        finally:
            conn.close()
        return ids

    shares = [jobs // clients + (1 if i < jobs % clients else 0) for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        return [avatar_id for ids in pool.map(post_many, shares) for avatar_id in ids]


# -- GPU utilisation ---------------------------------------------------------------------------------

class GpuSampler:
    """nvidia-smi's utilisation and memory of each GPU, every ``interval_s``, while running."""

    def __init__(self, interval_s: float = 0.5):
        self.binary = shutil.which("nvidia-smi")
        self.interval_s = interval_s
        self.samples: list[list[tuple[float, float]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "GpuSampler":
        if self.binary:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run([self.binary, "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                     timeout=5).stdout
                self.samples.append([tuple(float(v) for v in line.split(",")) for line in out.strip().splitlines()])
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(self.interval_s)

    def summary(self) -> dict[str, Any] | None:
        if not self.binary:
            return None
        if not self.samples:
            return {"samples": 0}
        gpus = len(self.samples[0])
        per_gpu = []
        for index in range(gpus):
            util = [s[index][0] for s in self.samples if len(s) > index]
            mem = [s[index][1] for s in self.samples if len(s) > index]
            per_gpu.append({"gpu": index, "utilisationPercentMean": round(statistics.fmean(util), 1),
                            "utilisationPercentMax": max(util), "memoryUsedMBMax": max(mem)})
        return {"samples": len(self.samples), "perGpu": per_gpu}


def gpu_names() -> list[str]:
    binary = shutil.which("nvidia-smi")
    if not binary:
        return []
    try:
        out = subprocess.run([binary, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


# -- the scale-out rounds ------------------------------------------------------------------------------

def finished_times(store: JobStore, ids: list[str]) -> tuple[list[float], dict[str, int]]:
    """Sorted completion times (epoch s) of ``ids`` that completed, and a count of every status."""
    times, statuses = [], {}
    for doc in store.jobs.find({"_id": {"$in": ids}}, {"status": 1, "finishedAt": 1}):
        statuses[doc["status"]] = statuses.get(doc["status"], 0) + 1
        if doc["status"] == "completed":
            times.append(doc["finishedAt"].timestamp())
    return sorted(times), statuses


PARKED_KEY = "bench-fleet:parked"


def scale_out_round(stack: FleetStack, body: bytes, content_type: str, cpu_nodes: int, gpu_nodes: int,
                    args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """Submit a backlog, park it, start the nodes, release it at once, time it until it is done."""
    jobs = args.jobs_per_node * cpu_nodes
    api_before = stack.store_counters()
    ids = submit_backlog(stack, body, content_type, jobs)
    api_after = stack.store_counters()
    # The first stage's messages wait under another name while the nodes start, so that no node
    # works alone before the others are ready; RENAME gives them all back in one step.
    broker = stack.store_redis()
    broker.rename("cpu", PARKED_KEY)
    before = stack.store_counters()
    with GpuSampler() as gpu:
        stack.start_nodes(cpu_nodes, gpu_nodes, args.gpu_threads, args.gpu_batch)
        usage_before = stack.node_usage()
        providers = stack.providers()
        released = time.time()
        broker.rename(PARKED_KEY, "cpu")
        # Polled twice a second, by count (the store is one of the pieces being measured); the
        # drain time comes from the records' finishedAt, not from when the poll noticed.
        ended_query = {"_id": {"$in": ids}, "status": {"$in": ["completed", "failed", "canceled"]}}
        while stack.store.jobs.count_documents(ended_query) < jobs and time.monotonic() < deadline:
            time.sleep(0.5)
        usage_after = stack.node_usage()
        times, statuses = finished_times(stack.store, ids)
    after = stack.store_counters()
    stack.stop_nodes()
    drained_s = times[-1] - released if times else float("nan")
    rate = len(times) / drained_s if times else float("nan")
    node_cpu = sum(usage_after[n]["cpuS"] - usage_before[n]["cpuS"] for n in usage_after)
    return {
        "cpuNodes": cpu_nodes, "gpuNodes": gpu_nodes, "jobs": jobs, "statuses": statuses,
        "jobsPerSecond": round(rate, 2), "jobsPerSecondPerCpuNode": round(rate / cpu_nodes, 2),
        "drainSeconds": round(drained_s, 2),
        "workerCpuMsPerJob": round(node_cpu * 1000 / max(1, len(times)), 1),
        "nodeMemoryMB": {name: round(u["rssMB"]) for name, u in usage_after.items()},
        "nodePeakMemoryMB": {name: round(u["peakRssMB"]) for name, u in usage_after.items()},
        "storePerJobDuringWork": store_delta(before, after, jobs),
        "storePerJobDuringSubmit": store_delta(api_before, api_after, jobs),
        "workerProviders": providers,
        "gpu": gpu.summary(),
    }


def per_node_count(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cpu node count: the median jobs/s of its rounds, every round's, and the speed-up over
    the smallest count."""
    counts = sorted({row["cpuNodes"] for row in rows})
    table = []
    for count in counts:
        rates = [row["jobsPerSecond"] for row in rows if row["cpuNodes"] == count]
        table.append({"cpuNodes": count, "jobsPerSecond": round(statistics.median(rates), 2), "rounds": rates})
    for row in table:
        row["speedUp"] = round(row["jobsPerSecond"] / table[0]["jobsPerSecond"], 2) if table[0]["jobsPerSecond"] else None
    return table


def flattens_at(rows: list[dict[str, Any]]) -> int | None:
    """The first node count whose jobs/s is less than FLAT_GAIN above the previous one's."""
    for previous, row in zip(rows, rows[1:]):
        if row["jobsPerSecond"] < previous["jobsPerSecond"] * (1 + FLAT_GAIN):
            return row["cpuNodes"]
    return None


# -- through the service ---------------------------------------------------------------------------

def _client_process(port: int, body: bytes, content_type: str, threads: int, seconds: float) -> dict[str, Any]:
    """``threads`` kept-alive clients POSTing with ``Prefer: wait`` for ``seconds``: their samples."""
    stop_at = time.monotonic() + seconds
    samples: list[tuple[float, float, str, dict[str, float]]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        client = Client("127.0.0.1", port)
        try:
            while time.monotonic() < stop_at:
                started = time.time()
                try:
                    sample = client.generate(body, content_type)
                except Exception as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    client.close()
                    client = Client("127.0.0.1", port)
                    continue
                with lock:
                    samples.append((started, sample.ms, sample.avatar_id, sample.server_timing))
        finally:
            client.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    usage = psutil.Process().cpu_times()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    used = psutil.Process().cpu_times()
    return {"samples": samples, "errors": errors, "cpuS": used.user + used.system - usage.user - usage.system}


def through_service(stack: FleetStack, body: bytes, content_type: str, cpu_nodes: int, gpu_nodes: int,
                    args: argparse.Namespace) -> dict[str, Any]:
    from api.bodies import status_body

    stack.start_nodes(cpu_nodes, gpu_nodes, args.gpu_threads, args.gpu_batch)
    try:
        providers = stack.providers()
        warm = Client("127.0.0.1", stack.settings.port)
        for _ in range(3):
            warm.generate(body, content_type)
        warm.close()
        per_process = max(1, args.clients // args.client_processes)
        before, cpu_before = stack.store_counters(), stack.piece_cpu_s()
        started = time.perf_counter()
        with GpuSampler() as gpu, ProcessPoolExecutor(args.client_processes) as pool:
            results = list(pool.map(_client_process, *zip(*[
                (stack.settings.port, body, content_type, per_process, args.service_seconds)
                for _ in range(args.client_processes)])))
        elapsed = time.perf_counter() - started
        after, cpu_after = stack.store_counters(), stack.piece_cpu_s()
        memory = stack.piece_memory_mb()
    finally:
        stack.stop_nodes()
    samples = sorted((s for r in results for s in r["samples"]), key=lambda s: s[0])
    errors = [e for r in results for e in r["errors"]]
    latencies = sorted(s[1] for s in samples)
    n = len(samples)
    cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    cpu["benchClients"] = sum(r["cpuS"] for r in results)
    picked = samples[:: max(1, n // 100)]  # the job records of ~100 of them, spread over the run
    timings = [status_body(stack.store.get(s[2]))["timings"] for s in picked]
    return {
        "cpuNodes": cpu_nodes, "gpuNodes": gpu_nodes, "clients": per_process * args.client_processes,
        "seconds": round(elapsed, 2), "avatars": n, "errors": len(errors), "firstErrors": errors[:3],
        "avatarsPerSecond": round(n / elapsed, 2),
        "postToCompletedMs": {"p50": _pct(latencies, 50), "p95": _pct(latencies, 95), "p99": _pct(latencies, 99)},
        "coresUsed": {name: round(seconds / elapsed, 2) for name, seconds in cpu.items()},
        "cpuMsPerAvatar": {name: round(seconds * 1000 / max(1, n), 2) for name, seconds in cpu.items()},
        "store": store_delta(before, after, max(1, n)),
        "memoryMB": memory,
        "whereTimeGoesMedianMs": {"apiServerTiming": _medians([s[3] for s in picked]),
                                  "jobTimings": _medians(timings)},
        "workerProviders": providers,
        "gpu": gpu.summary(),
    }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(len(values) * q / 100))], 1)


# -- main -----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cores = os.cpu_count() or 2
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default=",".join(str(n) for n in range(1, cores + 2)),
                        help=f"cpu node counts to measure (default 1..cores+1: 1..{cores + 1})")
    parser.add_argument("--gpu-nodes", type=int, default=0,
                        help="threads-pool nodes for the gpu queue (0: every node serves both queues)")
    parser.add_argument("--gpu-threads", type=int, default=8, help="concurrent inference tasks per gpu node")
    parser.add_argument("--gpu-batch", type=int, default=8, help="INFERENCE_BATCH_MAX of the gpu nodes")
    parser.add_argument("--jobs-per-node", type=int, default=60, help="backlog per cpu node in a round")
    parser.add_argument("--side", type=int, default=512, help="photo side in px (three JPEGs of it)")
    parser.add_argument("--storage", choices=["volume", "s3"], default="volume")
    parser.add_argument("--api-workers", type=int, default=max(2, cores // 4), help="gunicorn workers")
    parser.add_argument("--service-seconds", type=float, default=20.0,
                        help="length of the through-the-service run (0: skip it)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in that run")
    parser.add_argument("--client-processes", type=int, default=1, help="processes the clients run in")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per node count (medians are reported)")
    parser.add_argument("--timeout", type=float, default=540.0, help="stop everything within this many seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    deadline = began + args.timeout
    node_counts = [int(n) for n in args.nodes.split(",") if n.strip()]
    views = avatar_views(args.side)
    body, content_type = multipart_body(views)
    report: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "gpus": gpu_names(),
                    "memoryGB": round(psutil.virtual_memory().total / 2**30, 1)},
        "settings": {"photos": f"3x{args.side}", "storage": args.storage, "gpuNodes": args.gpu_nodes,
                     "repeat": args.repeat,
                     "gpuThreads": args.gpu_threads, "gpuBatch": args.gpu_batch,
                     "jobsPerNode": args.jobs_per_node, "apiWorkers": args.api_workers},
        "scaleOut": [], "skipped": [],
    }
    with tempfile.TemporaryDirectory(prefix="avatar-fleet-") as tmp:
        stack = FleetStack(Path(tmp), args.api_workers, args.storage)
        try:
            # Round n's cost grows with n (its backlog); a round is skipped if the last one's time
            # scaled to it would not fit, keeping room for the service run.
            reserve = args.service_seconds + 40 if args.service_seconds else 0
            last_s_per_job = None
            # Repeats go round the node counts in turn (1, 2, 3, 1, 2, 3, ...), so a slow stretch of
            # a shared machine does not land on one count only; the medians are compared.
            for count in node_counts * args.repeat:
                estimate = (last_s_per_job or 0) * args.jobs_per_node * count + 15
                if time.monotonic() + estimate + reserve > deadline:
                    report["skipped"].append(f"{count} cpu nodes: would not fit in --timeout")
                    continue
                round_started = time.monotonic()
                row = scale_out_round(stack, body, content_type, count, args.gpu_nodes, args, deadline - reserve)
                last_s_per_job = (time.monotonic() - round_started) / (args.jobs_per_node * count)
                report["scaleOut"].append(row)
                print(f"{count} cpu + {args.gpu_nodes} gpu nodes: {row['jobsPerSecond']} jobs/s",
                      file=sys.stderr, flush=True)
            report["perNodeCount"] = per_node_count(report["scaleOut"])
            report["flattensAt"] = flattens_at(report["perNodeCount"])
            if args.service_seconds and report["scaleOut"] and time.monotonic() + args.service_seconds + 30 < deadline:
                largest = max(row["cpuNodes"] for row in report["scaleOut"])
                report["service"] = through_service(stack, body, content_type, largest, args.gpu_nodes, args)
        except Exception as exc:  # report what was measured, and why the rest is missing
            report["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            stack.stop()
    report["elapsedS"] = round(time.monotonic() - began, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
