"""What each worker process holds for its whole life: the ONNX sessions, store clients, a heartbeat.

Everything is opened in ``worker_process_init``, i.e. in the pool child after the fork: ONNX
sessions, MongoDB clients and Redis connections must not be shared across a fork.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import signals

import celeryconfig
from jobs import logs, metrics
from jobs.events import JobEvents, WorkerRegistry
from jobs.files import FileStore
from jobs.settings import Settings
from jobs.store import JobStore
from pipeline.models import FaceModels
from pipeline.stages import warm_up
from worker.batching import BatchedModels, LandmarkBatcher
from worker.reconciler import RUNNING_KEY, Reconciler

log = logging.getLogger(__name__)


class RecentOutputs:
    """The stage outputs this process last produced or loaded, by job id (a few jobs at most).

    When a job's next stage runs in the same process it takes the previous output from here instead
    of loading the file. The file is written all the same: the next task may go to another process
    or machine, and a task redelivered after its worker died reads it.
    """

    def __init__(self, max_jobs: int = 4):
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Pool processes run one task at a time; the lock is for threaded pools.
        self._lock = threading.Lock()

    def put(self, job_id: str, name: str, value: Any) -> None:
        with self._lock:
            self._jobs.setdefault(job_id, {})[name] = value
            self._jobs.move_to_end(job_id)
            while len(self._jobs) > self.max_jobs:
                self._jobs.popitem(last=False)

    def get(self, job_id: str, name: str) -> Any | None:
        with self._lock:
            return self._jobs.get(job_id, {}).get(name)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)


@dataclass
class WorkerRuntime:
    """The per-process resources tasks use."""

    settings: Settings
    hostname: str
    queues: tuple[str, ...]
    store: JobStore
    files: FileStore
    events: JobEvents
    registry: WorkerRegistry
    models: FaceModels | None = None  # None if loading failed
    model_error: str | None = None
    outputs: RecentOutputs = field(default_factory=RecentOutputs)
    # Shares landmark-model runs between concurrent inference tasks (threaded gpu workers only).
    batcher: LandmarkBatcher | None = None
    # The jobs this process is running a stage of right now (kept alive in Redis for the reconciler).
    running: set[str] = field(default_factory=set)
    # Recent seconds per stage (exponentially weighted): the API estimates from them how long the
    # queues take to drain (api.admission).
    seconds_per_stage: dict[str, float] = field(default_factory=dict)
    _running_lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def process_name(self) -> str:
        return f"{self.hostname}:{os.getpid()}"

    @classmethod
    def open(cls, settings: Settings, hostname: str, queues: tuple[str, ...]) -> "WorkerRuntime":
        client = redis.Redis.from_url(settings.broker_url, socket_timeout=5)
        runtime = cls(
            settings=settings, hostname=hostname, queues=queues,
            store=JobStore.from_settings(settings), files=FileStore.from_settings(settings),
            events=JobEvents(client), registry=WorkerRegistry(client, settings.worker_heartbeat_ttl_s),
        )
        runtime.load_models()
        if runtime.models is not None and runtime.models.landmarks is not None \
                and settings.inference_batch_max > 1:
            runtime.batcher = LandmarkBatcher(runtime.models.predict_landmarks, settings.inference_batch_max,
                                              settings.inference_batch_window_ms / 1000)
        return runtime

    def load_models(self) -> None:
        """Load only what this worker's queues need: the detector for cpu, the landmark model for gpu."""
        try:
            self.models = FaceModels.load(
                detector=celeryconfig.CPU_QUEUE in self.queues,
                landmarks=celeryconfig.GPU_QUEUE in self.queues,
                threads=self.settings.onnx_threads,
                landmark_path=self.settings.onnx_model_path or None,
            )
            if celeryconfig.CPU_QUEUE in self.queues:
                warm_up()  # the texel map costs ~150 ms once; not on the first job
            log.info("models loaded for queues %s, providers %s", ",".join(self.queues),
                     self.models.providers)
            provider = self.models.providers[0] if self.models.providers else "none"
        except Exception as exc:  # keep serving health; tasks will fail with a clear error
            log.exception("could not load the ONNX models")
            self.model_error = f"{type(exc).__name__}: {exc}"
            provider = "none"
        metrics.WORKER_INFO.labels(node=self.hostname, queues=",".join(self.queues), provider=provider).set(1)

    def landmark_models(self) -> FaceModels | BatchedModels | None:
        """The models an inference task uses: through the batcher when there is one."""
        if self.models is not None and self.batcher is not None:
            return BatchedModels(self.models, self.batcher)
        return self.models

    # -- what this process is running (the reconciler leaves these jobs alone) ------------------

    def began(self, job_id: str) -> None:
        with self._running_lock:
            self.running.add(job_id)
        self._mark_running([job_id])

    def ended(self, job_id: str) -> None:
        with self._running_lock:
            self.running.discard(job_id)
        try:
            self.registry.redis.delete(RUNNING_KEY.format(job_id=job_id))
        except redis.RedisError:
            pass  # it expires by itself

    def _mark_running(self, job_ids: list[str]) -> None:
        if not job_ids:
            return
        try:
            pipe = self.registry.redis.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.set(RUNNING_KEY.format(job_id=job_id), self.process_name, ex=self.settings.worker_heartbeat_ttl_s)
            pipe.execute()
        except redis.RedisError as exc:  # Redis away: the heartbeat writes them again when it is back
            log.warning("could not mark jobs running: %s", exc)

    def note_stage_time(self, stage: str, seconds: float) -> None:
        """Fold one stage's wall time into ``seconds_per_stage`` (weight 0.2 for the newest)."""
        with self._running_lock:
            previous = self.seconds_per_stage.get(stage)
            self.seconds_per_stage[stage] = seconds if previous is None else 0.8 * previous + 0.2 * seconds

    def describe(self) -> dict[str, Any]:
        """What the heartbeat publishes (health and the API's admission check read it)."""
        with self._running_lock:
            per_stage = {stage: round(s, 4) for stage, s in self.seconds_per_stage.items()}
        info: dict[str, Any] = {"hostname": self.hostname, "pid": os.getpid(), "queues": list(self.queues),
                                "concurrency": self.settings.worker_concurrency,
                                "inferenceBatchMax": self.settings.inference_batch_max if self.batcher else 1,
                                "secondsPerStage": per_stage}
        if self.models is not None:
            info["model"] = self.models.describe()
            info["detector"] = self.models.detector is not None
        else:
            info["model"] = {"initialized": False, "error": self.model_error}
        return info

    def start_heartbeat(self) -> None:
        interval = max(1.0, self.settings.worker_heartbeat_ttl_s / 3)

        def beat_forever() -> None:
            while True:
                try:
                    self.registry.beat(self.process_name, self.describe())
                except redis.RedisError as exc:
                    log.warning("heartbeat failed: %s", exc)
                with self._running_lock:
                    running = list(self.running)
                self._mark_running(running)
                if self._stop.wait(interval):
                    return

        threading.Thread(target=beat_forever, name="heartbeat", daemon=True).start()

    def start_reconciler(self, celery) -> None:
        """Run the reconciler in a daemon thread (see ``worker.reconciler``); off when the interval is 0."""
        if self.settings.reconcile_interval_s <= 0:
            return
        reconciler = Reconciler(self.settings, self.store, self.registry.redis, celery, self.files)
        threading.Thread(target=reconciler.run_forever, args=(self.process_name, self._stop),
                         name="reconciler", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        try:
            self.registry.forget(self.process_name)
        except redis.RedisError:
            pass


# The parent learns its node name and queues (after -Q is applied); pool children inherit them.
_identity: dict[str, Any] = {"hostname": "worker", "queues": celeryconfig.STAGE_QUEUES}
_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


@signals.worker_init.connect
def remember_identity(sender: Any = None, **_: Any) -> None:
    _identity["hostname"] = sender.hostname
    _identity["queues"] = tuple(sorted(sender.app.amqp.queues.consume_from))
    _identity["pool"] = getattr(sender.pool_cls, "__module__", str(sender.pool_cls))


@signals.worker_init.connect
def serve_metrics(**_: Any) -> None:
    """The node's main process serves the metrics of all its processes (``jobs.metrics``); a node
    started with METRICS_PORT=0 leaves that to the process that started it."""
    settings = Settings.from_env()
    if settings.metrics_port <= 0:
        return
    if metrics.multiprocess_dir() is None:
        log.warning("PROMETHEUS_MULTIPROC_DIR is not set, so only the main process's metrics are "
                    "served; start workers with `avatar worker` to have every process's")
    metrics.serve(settings.host, settings.metrics_port)


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def format_log_lines(logger: logging.Logger, **_: Any) -> None:
    """Celery sets up its own handlers; with LOG_FORMAT=json their lines are JSON (``jobs.logs``)."""
    if Settings.from_env().log_json:
        for handler in logger.handlers:
            handler.setFormatter(logs.JsonFormatter())


@signals.worker_ready.connect
def open_runtime_in_threaded_worker(**_: Any) -> None:
    """A threads or solo pool has no pool processes (no ``worker_process_init``): open the runtime
    here, before the first task, so models load and the heartbeat starts at once. A prefork parent
    must not: its children would inherit the ONNX sessions and connections."""
    if "prefork" not in _identity.get("pool", "prefork"):
        current()


@signals.worker_process_init.connect
def open_runtime(**_: Any) -> None:
    global _runtime
    _runtime = WorkerRuntime.open(Settings.from_env(), _identity["hostname"], _identity["queues"])
    _runtime.start_heartbeat()
    _runtime.start_reconciler(_celery_app())


@signals.worker_process_shutdown.connect
def close_runtime(**_: Any) -> None:
    if _runtime is not None:
        _runtime.close()


def current() -> WorkerRuntime:
    """This process's runtime (opened on first use where no pool signal ran, e.g. a solo pool)."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:  # a threads pool: the first tasks arrive together
            if _runtime is None:
                runtime = WorkerRuntime.open(Settings.from_env(), _identity["hostname"], _identity["queues"])
                runtime.start_heartbeat()
                runtime.start_reconciler(_celery_app())
                _runtime = runtime
    return _runtime


def _celery_app():
    from worker.app import app  # the worker's app; imported late: worker.app is being imported now
    return app
