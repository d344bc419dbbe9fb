"""Every Prometheus metric the service exports, and how each kind of process makes them readable.

The API and the workers run as several processes (gunicorn's workers; Celery's pool processes, or
several single-process nodes on one machine), and a scrape must see all of them. prometheus_client's
multiprocess mode does that without a Pushgateway: each process writes its samples to memory-mapped
files in one folder (``PROMETHEUS_MULTIPROC_DIR``), and whoever answers a scrape sums the folder.

- API: ``avatar api`` (and the local stack) gives its gunicorn a fresh folder; ``GET /metrics`` on
  the API reads it (``api.metrics``).
- Workers: one endpoint per worker node, at ``METRICS_PORT`` on ``HOST``. A Celery node's main process
  serves the folder its pool processes write. Where several single-process nodes run on one
  machine (``avatar up``, ``avatar worker --per-gpu``), they share one folder and the process that
  started them serves it, so a machine is one scrape target however many processes it runs.

The folder must be named in the environment before ``prometheus_client`` is imported (it picks its
storage then), so the launchers (``jobs.localstack``, ``avatar api/worker/up``) prepare it and pass
it to the processes they start. A process started without one (``avatar generate``, the tests'
in-process apps) keeps its metrics in memory.

Stage names are not a fixed list: ``avatar_stage_duration_seconds{stage=...}`` takes whatever names
the pipeline's and the tasks' timings carry (``decode``, ``detect``, ``landmarks``, ``texture``,
``glb``, ``preprocessStage``, ``inferenceQueueWait``, ...), so a new pipeline step shows up by itself.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client import REGISTRY as PROCESS_REGISTRY
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds. Requests: a few ms (reads) to a minute (``Prefer: wait=60``).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Seconds. Stages and queue waits: a crop takes a millisecond, a backlog minutes.
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Seconds. Submission to the job's end.
JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
# Bytes of the photos of one upload (three of at most 10 MB).
UPLOAD_BUCKETS = (64 * 1024, 256 * 1024, 1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20, 32 << 20)

# -- the API (per request) -------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "avatar_http_requests", "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"])
HTTP_DURATION = Histogram(
    "avatar_http_request_duration_seconds",
    "Time from a request's arrival to its response's headers, by route template and method.",
    ["route", "method"], buckets=REQUEST_BUCKETS)
UPLOAD_BYTES = Histogram(
    "avatar_upload_bytes", "Bytes of the form parts of each generate request that was read whole.",
    buckets=UPLOAD_BUCKETS)
RATE_LIMITED = Counter(
    "avatar_rate_limited", "Requests refused with 429, by the limit they ran into (generate or default).",
    ["limit"])

# -- jobs (the API, the workers and the reconciler all count here) ---------------------------------

JOBS_SUBMITTED = Counter("avatar_jobs_submitted", "Jobs accepted and queued by the API.")
JOBS_COMPLETED = Counter("avatar_jobs_completed", "Jobs that ended completed.")
JOBS_FAILED = Counter("avatar_jobs_failed", "Jobs that ended failed, by error code (no_face, timeout, ...).",
                      ["code"])
JOB_DURATION = Histogram(
    "avatar_job_duration_seconds", "Submission to the job's end (completed or failed), end to end.",
    ["outcome"], buckets=JOB_BUCKETS)
STAGE_DURATION = Histogram(
    "avatar_stage_duration_seconds",
    "Time of each timed step of a job: the pipeline's steps (decode, detect, landmarks, texture, "
    "glb, ...), each task's own load/save/whole stage (preprocessStage, ...), and the wait of each "
    "stage's message in its queue (preprocessQueueWait, inferenceQueueWait, exportQueueWait).",
    ["stage"], buckets=STAGE_BUCKETS)

# -- the workers -----------------------------------------------------------------------------------

WORKER_INFO = Gauge(
    "avatar_worker_info",
    "1 for each live worker process: its node, queues and the execution provider its models run on "
    "(CUDAExecutionProvider or CPUExecutionProvider).",
    ["node", "queues", "provider"], multiprocess_mode="liveall")
RECONCILER_RESENT = Counter(
    "avatar_reconciler_resent", "Stages the reconciler sent again because their message was lost, by "
    "the status the job waited in.", ["status"])
WEBHOOK_DELIVERIES = Counter(
    "avatar_webhook_deliveries", "Webhook attempts by outcome: delivered, retrying (failed, will be "
    "tried again), gave_up (failed the last attempt), refused (the URL may not be called).", ["outcome"])

# The metrics defined here (for the deploy-file checks: dashboards may only query these).
EXPORTED = (HTTP_REQUESTS, HTTP_DURATION, UPLOAD_BYTES, RATE_LIMITED, JOBS_SUBMITTED, JOBS_COMPLETED,
            JOBS_FAILED, JOB_DURATION, STAGE_DURATION, WORKER_INFO, RECONCILER_RESENT, WEBHOOK_DELIVERIES)
# Computed when scraped, by the API (api.metrics.QueueCollector).
QUEUE_DEPTH = "avatar_queue_depth"
QUEUE_OLDEST_AGE = "avatar_queue_oldest_message_age_seconds"


def observe_timings(timings_ms: dict[str, float]) -> None:
    """One ``avatar_stage_duration_seconds`` sample per timing (milliseconds, by step name)."""
    for stage, ms in timings_ms.items():
        if ms is not None and ms >= 0:
            STAGE_DURATION.labels(stage=stage).observe(ms / 1000)


def multiprocess_dir() -> Path | None:
    """The folder this process writes its samples to, or None if it keeps them in memory."""
    value = os.environ.get(MULTIPROCESS_ENV)
    return Path(value) if value else None


def node_dir(base: Path, node: str) -> Path:
    """The folder for the processes of one node (``api-3000``, ``local@host``, ...) under ``base``."""
    return base / re.sub(r"[^A-Za-z0-9._@-]", "_", node)


def prepare_dir(path: Path) -> Path:
    """Empty ``path`` (a node's earlier run left its counts there) and create it. Call before any
    process that will write to it starts."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """The text a scrape gets: every process's samples (this process's alone without a
    multiprocess folder), plus ``extra`` collectors evaluated now."""
    output = generate_latest(collecting_registry())
    if extra:
        registry = CollectorRegistry(auto_describe=False)
        for collector in extra:
            registry.register(collector)
        output += generate_latest(registry)
    return output


def collecting_registry(folder: Path | None = None) -> CollectorRegistry:
    """A registry that reads every process's files in ``folder`` (default: this process's
    multiprocess folder), else this process's own metrics."""
    folder = folder or multiprocess_dir()
    if folder is None:
        return PROCESS_REGISTRY
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_AllProcesses(folder))
    return registry


class _AllProcesses(Collector):
    """The samples of every process that writes to ``folder``, read at each scrape."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._files = multiprocess.MultiProcessCollector(None, path=str(folder))

    def collect(self):
        self._forget_dead_processes()
        return self._files.collect()

    def _forget_dead_processes(self) -> None:
        """A process that died without saying so (killed, crashed) would be reported live for
        ever by the ``liveall`` gauges: drop its gauge files. All writers share one pid space
        (one machine or container)."""
        import psutil

        for path in self.folder.glob("gauge_live*_*.db"):
            pid = int(path.stem.rsplit("_", 1)[1])
            if not psutil.pid_exists(pid):
                multiprocess.mark_process_dead(pid, str(self.folder))


def serve(host: str, port: int, folder: Path | None = None) -> bool:
    """Serve the metrics of the processes writing to ``folder`` (default: this process's folder,
    else this process alone) at ``http://host:port/metrics`` from a daemon thread (workers).
    Returns False, logged, when the port is taken: a second node on one machine must not fail to
    start over its metrics."""
    from prometheus_client import start_http_server

    if port <= 0:
        return False
    try:
        start_http_server(port, addr=host, registry=collecting_registry(folder))
    except OSError as exc:
        log.warning("could not serve metrics on %s:%d (%s); this node's metrics are not exported", host, port, exc)
        return False
    log.info("metrics on http://%s:%d/metrics", host, port)
    return True
