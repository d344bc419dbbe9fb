"""The ``avatar`` command: one function per subcommand, registered in ``SUBCOMMANDS``.

    avatar generate  three photos to a GLB in this process, no service needed
    avatar batch     submit a folder (or CSV manifest) of subjects to a server, resumably
    avatar up        Redis, the store, a worker and the API on this machine (what `make run` does)
    avatar worker    one Celery worker (queues, concurrency)
    avatar reconciler  re-send the stage of jobs whose message was lost (also runs inside workers)
    avatar api       the HTTP API under gunicorn
    avatar token     mint a Bearer token for a user (signed with JWT_SECRET_KEY)
    avatar sweep     delete expired avatars and files no job needs any more (retention)
    avatar probe     is this container's API or worker alive (Kubernetes probes)

To add a subcommand, write ``def cmd_<name>(args) -> int`` and ``def add_<name>_arguments(parser)``
and list them in ``SUBCOMMANDS``.
"""
from __future__ import annotations

import argparse
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from client.batch_cli import add_batch_arguments, cmd_batch
from jobs import localstack
from jobs.settings import DEFAULT_VAR_DIR, Settings, UnsafeExposure, check_exposure


# -- avatar generate ----------------------------------------------------------------------------

def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    for view in ("front", "left", "right"):
        parser.add_argument(f"--{view}", type=Path, required=True, help=f"{view} photo (JPEG, PNG or WebP)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the GLB")
    parser.add_argument("--texture-size", choices=["auto", "512", "1024", "2048"], default="auto",
                        help="texture side in texels (default auto: as much as the front photo's face has, "
                             "up to 2048)")
    parser.add_argument("--mesh", choices=("head", "face"), default="head",
                        help="head (default): the whole head with eyes, teeth and 52 ARKit blend shapes; "
                             "face: the 468-vertex face mask in the landmark model's vertex order")


def cmd_generate(args: argparse.Namespace) -> int:
    """Make one avatar offline; print the contract's data body as JSON."""
    import json

    from pipeline import PipelineError
    from pipeline.models import FaceModels
    from pipeline.stages import run_pipeline

    try:
        photos = {view: getattr(args, view).read_bytes() for view in ("front", "left", "right")}
    except OSError as exc:
        print(f"avatar generate: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        result = run_pipeline(photos, FaceModels.load(), texture_size=args.texture_size, mesh=args.mesh)
    except PipelineError as exc:
        print(f"avatar generate: {exc.message}", file=sys.stderr)
        return 1
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    args.output.write_bytes(result.glb)
    print(json.dumps(result.to_response_dict(filename=args.output.name), indent=2))
    return 0


# -- avatar up -----------------------------------------------------------------------------------

def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="API port (default: $PORT or 3000)")
    parser.add_argument("--var-dir", type=Path, default=DEFAULT_VAR_DIR,
                        help="where the local Redis, store, uploads and results live (default: var/)")
    parser.add_argument("--concurrency", type=int, help="worker processes (default: $WORKER_CONCURRENCY or 2)")


def cmd_up(args: argparse.Namespace) -> int:
    """Start every piece, wait until each answers, print the URL, stop them all on Ctrl-C, SIGTERM
    or a closed terminal (SIGHUP)."""
    var_dir: Path = args.var_dir.absolute()
    lock = localstack.StackLock(var_dir)
    try:
        lock.acquire()
    except localstack.StackAlreadyRunning as exc:
        print(f"avatar up: {exc}", file=sys.stderr)
        return 1
    if lock.stale is not None:
        print(f"avatar up: the stack recorded in {var_dir}/ (pid {lock.stale.pid}) is no longer running; "
              "starting a new one", file=sys.stderr)
    try:
        return _run_stack(args, var_dir, lock)
    finally:
        lock.release()


def _run_stack(args: argparse.Namespace, var_dir: Path, lock: localstack.StackLock) -> int:
    overrides: dict = {}
    if args.port:
        overrides["port"] = args.port
    if args.concurrency:
        overrides["worker_concurrency"] = args.concurrency
    if "DATA_DIR" not in os.environ:
        overrides["data_dir"] = var_dir / "data"
    settings = Settings.from_env(overrides)
    settings = settings.replace(data_dir=settings.data_dir.absolute())
    if not settings.upload_encryption_key:
        from jobs.encryption import KEY_FILE_NAME, ensure_local_key
        # Created once (0600) and reused, so photos stored by one run can be read by the next.
        settings = settings.replace(upload_encryption_key=ensure_local_key(var_dir / KEY_FILE_NAME))
    try:
        check_exposure(settings)
    except UnsafeExposure as exc:
        print(f"avatar up: {exc}", file=sys.stderr)
        return 2
    logs = var_dir / "logs"
    _check_port_free(settings.port)

    def say(message: str) -> None:
        print(f"avatar up: {message}", file=sys.stderr, flush=True)

    supervisor = localstack.Supervisor(say)

    def request_stop(_signum: int, _frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGHUP, request_stop)  # the terminal was closed
    signal.signal(signal.SIGINT, request_stop)  # also when started in the background (SIGINT ignored)
    try:
        redis_proc = mongo_proc = None
        if not settings.redis_url:
            # A fixed port: a Redis started again after a crash must be where everyone looks.
            redis_port = localstack.free_port()
            redis_proc = supervisor.add("redis", lambda: localstack.start_redis(var_dir / "redis", redis_port)[1])
            settings = settings.replace(redis_url=f"redis://127.0.0.1:{redis_port}/0")
        if not settings.mongodb_uri:
            store_port = localstack.free_port()
            mongo_proc = supervisor.add("the store", lambda: localstack.start_mongo(
                var_dir / "mongo", store_port, log_path=logs / "mongo.log")[1])
            settings = settings.replace(mongodb_uri=f"mongodb://127.0.0.1:{store_port}/?retryWrites=false")
        localstack.wait_redis(settings.broker_url, redis_proc)
        # WORKER_CONCURRENCY worker processes, each its own solo node (see start_solo_workers), and
        # the node that delivers webhooks. Their metrics go to one folder, served here (one scrape
        # target for the machine, whichever of them the supervisor has restarted).
        host = socket.gethostname()
        shared_metrics = localstack.shared_metrics_dir(settings, f"local@{host}")
        workers = {}
        for index in range(1, settings.worker_concurrency + 1):
            node = f"local-{index}@{host}"
            workers[node] = supervisor.add(node, functools.partial(
                localstack.start_solo_worker, settings, ("cpu", "gpu"), node, logs / f"worker-{index}.log",
                shared_metrics))
        supervisor.add(f"webhooks@{host}", functools.partial(
            localstack.start_webhook_worker, settings, f"webhooks@{host}", logs / "webhooks.log", shared_metrics))
        _serve_worker_metrics(settings, shared_metrics)
        localstack.wait_mongo(settings.mongodb_uri, mongo_proc, directory=var_dir / "mongo" if mongo_proc else None)
        api = supervisor.add("the API", lambda: localstack.start_api(settings, logs / "api.log"))
        base_url = f"http://{_url_host(settings.host)}:{settings.port}"
        localstack.wait_api(base_url, api)
        localstack.wait_solo_workers(settings, workers)
        lock.record(base_url, settings.to_env())
        print(f"avatar service ready: {base_url}/  (the API under /api/avatar, its reference at /docs; "
              f"logs in {logs}/, Ctrl-C stops)", flush=True)
        while True:
            supervisor.watch()
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except localstack.StackError as exc:
        print(f"avatar up: {exc} (logs in {logs}/)", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C / SIGTERM / SIGHUP must not interrupt the orderly stop below.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        print("stopping…", file=sys.stderr, flush=True)
        supervisor.stop_all()


def _serve_worker_metrics(settings: Settings, folder: Path) -> None:
    """Serve the metrics of the workers this process started (they share ``folder`` and serve
    none themselves) at METRICS_PORT: one scrape target for the machine."""
    from jobs import metrics

    metrics.serve(settings.host, settings.metrics_port, folder)


def _url_host(host: str) -> str:
    """The host to put in a URL for a server bound to ``host`` (a wildcard address is reached on loopback)."""
    if host in ("0.0.0.0", "::", "[::]", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _check_port_free(port: int) -> None:
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise SystemExit(f"avatar up: port {port} is already in use; set PORT or pass --port")


# -- avatar worker -------------------------------------------------------------------------------

def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queues", default=None,
                        help="comma-separated queues: cpu (decode, detect, export), gpu (landmark model) "
                             "(default: $WORKER_QUEUES or cpu,gpu)")
    parser.add_argument("--concurrency", type=int, help="processes (default: $WORKER_CONCURRENCY or 2)")
    parser.add_argument("--hostname", default=None,
                        help="node name (default: $WORKER_HOSTNAME or <queues>@<host>)")
    parser.add_argument("--pool", default=None, choices=["prefork", "threads", "solo"],
                        help="prefork (default: $WORKER_POOL or prefork); threads for the webhooks queue "
                             "or a gpu worker that batches inference (INFERENCE_BATCH_MAX > 1)")
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--per-gpu", action="store_true",
                        help="one single-process worker per visible NVIDIA GPU, each pinned to its GPU "
                             "(a GPU container that sees all of its host's GPUs)")


def cmd_worker(args: argparse.Namespace) -> int:
    """Replace this process with a Celery worker for the given queues (or, with --per-gpu, run one
    worker per GPU until one of them stops)."""
    settings = settings_here()
    os.environ.update({name: value for name, value in settings.to_env().items() if name not in os.environ})
    queues = [q.strip() for q in (args.queues or settings.worker_queues).split(",") if q.strip()]
    hostname = args.hostname or settings.worker_hostname or f"{'-'.join(queues)}@{socket.gethostname()}"
    if args.per_gpu:
        return _run_per_gpu_workers(settings, queues, hostname, args.loglevel)
    # The node's processes share a fresh metrics folder; its main process serves it (worker.runtime).
    os.environ.update(localstack.metrics_env(settings, hostname))
    argv = localstack.worker_command(queues, args.concurrency or settings.worker_concurrency,
                                     hostname, args.loglevel, pool=args.pool or settings.worker_pool)
    os.execv(argv[0], argv)
    return 0  # not reached


def _run_per_gpu_workers(settings: Settings, queues: list[str], hostname: str, loglevel: str) -> int:
    """Start a worker per visible GPU with its output on ours; when one stops, stop the others and
    exit non-zero, so the container's restart policy starts them all again. The workers share a
    metrics folder, which this process serves at METRICS_PORT."""
    gpus = localstack.visible_gpus()
    if not gpus:
        print("avatar worker --per-gpu: no NVIDIA GPU is visible (no /proc/driver/nvidia/gpus/*); "
              "check the container's GPU reservation and the NVIDIA container toolkit", file=sys.stderr)
        return 2
    folder = localstack.shared_metrics_dir(settings, hostname)
    shared = localstack.worker_metrics_env(settings, hostname, folder)
    workers = [subprocess.Popen(argv, env={**os.environ, **env, **shared})
               for argv, env in localstack.per_gpu_workers(gpus, queues, hostname, loglevel)]
    _serve_worker_metrics(settings, folder)
    print(f"avatar worker: {len(workers)} worker(s), one per GPU ({', '.join(gpus)})", flush=True)

    def stop_all(_signum: int, _frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    try:
        while all(worker.poll() is None for worker in workers):
            time.sleep(1.0)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for worker in workers:
            localstack.stop(worker, timeout_s=60)


# -- avatar reconciler ---------------------------------------------------------------------------

def add_reconciler_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="one pass, print what it did, exit")


def cmd_reconciler(args: argparse.Namespace) -> int:
    """Re-send the current stage of running jobs whose message was lost (see worker/reconciler.py)."""
    import json
    import threading

    import redis

    from jobs import logs, metrics
    from jobs.files import FileStore
    from jobs.store import JobStore
    from worker.app import create_celery
    from worker.reconciler import Reconciler, record_pass

    settings = settings_here()
    logs.configure(settings.log_json)
    reconciler = Reconciler(settings, JobStore.from_settings(settings), redis.Redis.from_url(settings.broker_url),
                            create_celery(settings), FileStore.from_settings(settings, keyed=False))
    holder = f"reconciler@{socket.gethostname()}:{os.getpid()}"
    if args.once:
        report = reconciler.run_once()
        record_pass(reconciler.redis, holder, report)
        print(json.dumps(report.as_dict()))
        return 0
    if settings.reconcile_interval_s <= 0:
        print("avatar reconciler: RECONCILE_INTERVAL_S must be above 0", file=sys.stderr)
        return 2
    metrics.serve(settings.host, settings.metrics_port)  # its re-sends and the jobs it failed
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        reconciler.run_forever(holder, stop)
    except KeyboardInterrupt:
        pass
    return 0


# -- avatar token --------------------------------------------------------------------------------

def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="the user id the token stands for")
    parser.add_argument("--admin", action="store_true",
                        help="the token also sees the detailed health report (paths, hosts, memory)")
    parser.add_argument("--expires", default="7d",
                        help="lifetime: 3600s, 30m, 12h, 7d or 2w (default 7d, at most 366d)")


def cmd_token(args: argparse.Namespace) -> int:
    """Print a Bearer token for --user, valid for --expires, signed with $JWT_SECRET_KEY."""
    from api.auth import mint_token, parse_duration

    settings = settings_here()
    try:
        token = mint_token(settings, args.user, parse_duration(args.expires), admin=args.admin)
    except ValueError as exc:
        print(f"avatar token: {exc}", file=sys.stderr)
        return 2
    if settings.jwt_secret_key == Settings().jwt_secret_key:
        print("avatar token: warning: JWT_SECRET_KEY is the development default; only a local stack "
              "accepts this token", file=sys.stderr)
    print(token)
    return 0


# -- avatar sweep --------------------------------------------------------------------------------

def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grace", type=float, default=3600.0,
                        help="leave files younger than this many seconds alone (default 3600)")


def cmd_sweep(args: argparse.Namespace) -> int:
    """Delete expired avatars (record + GLB) and photos/stage files no running job needs; print counts."""
    import json

    from jobs.files import FileStore
    from jobs.retention import sweep
    from jobs.store import JobStore

    settings = settings_here()
    report = sweep(JobStore.from_settings(settings), FileStore.from_settings(settings, keyed=False),
                   grace_s=args.grace)
    print(json.dumps(report.as_dict()))
    return 0


# -- avatar api ----------------------------------------------------------------------------------

def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bind", default=None, help="host:port (default: $HOST:$PORT, 127.0.0.1:3000)")


def cmd_api(args: argparse.Namespace) -> int:
    """Replace this process with gunicorn serving the API."""
    settings = Settings.from_env()
    if args.bind:
        host, _, port = args.bind.rpartition(":")
        if not host or not port.isdigit():
            print(f"avatar api: --bind wants host:port, got {args.bind!r}", file=sys.stderr)
            return 2
        settings = settings.replace(host=host, port=int(port))
        os.environ.update(HOST=host, PORT=port)  # what the app checks its secrets against
    try:
        check_exposure(settings)
    except UnsafeExposure as exc:
        print(f"avatar api: {exc}", file=sys.stderr)
        return 2
    # gunicorn's processes share a fresh metrics folder; GET /metrics sums it.
    os.environ.update(localstack.metrics_env(settings, localstack.api_metrics_node(settings)))
    argv = localstack.api_command(settings)
    os.execv(argv[0], argv)
    return 0  # not reached


# -- avatar probe --------------------------------------------------------------------------------

def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("role", choices=["api", "worker"], help="what runs in this container")
    parser.add_argument("--hostname", default=None,
                        help="worker: the node name to look for (default: $WORKER_HOSTNAME)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")


def cmd_probe(args: argparse.Namespace) -> int:
    """Exit 0 if this container's API or worker is alive (for Kubernetes liveness and startup probes).

    api: the API on this container's loopback answers its health check at all, healthy or not (a
    503 because Redis, MongoDB or the storage is away is no reason to restart it: readiness takes it
    out of the Service for that). worker: the worker node WORKER_HOSTNAME (or --hostname) keeps a
    heartbeat in Redis, the one health's worker list is read from; if Redis itself cannot be reached
    the worker is not the one to restart, so that passes too."""
    settings = Settings.from_env()
    if args.role == "api":
        import requests

        url = f"http://127.0.0.1:{settings.port}/api/avatar/health"
        try:
            body = requests.get(url, timeout=args.timeout).json()
        except (requests.RequestException, ValueError) as exc:
            print(f"avatar probe: the API at {url} did not answer: {exc}", file=sys.stderr)
            return 1
        # 200 puts the report in "data", a 503 in the envelope's "details".
        report = body.get("data") or body.get("details") or {}
        print(f"API answered: {report.get('status', 'unknown')}")
        return 0
    import redis

    from jobs.events import HEARTBEAT_KEY

    node = args.hostname or settings.worker_hostname
    if not node:
        print("avatar probe worker: set WORKER_HOSTNAME or pass --hostname", file=sys.stderr)
        return 2
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=args.timeout,
                                  socket_connect_timeout=args.timeout)
    try:
        beating = list(client.scan_iter(match=HEARTBEAT_KEY.format(name=f"{node}:*"), count=1000))
    except redis.RedisError as exc:
        print(f"avatar probe: Redis cannot be reached ({exc}); not the worker's fault", file=sys.stderr)
        return 0
    if not beating:
        print(f"avatar probe: no process of worker {node} has a heartbeat in Redis", file=sys.stderr)
        return 1
    print(f"{node}: {len(beating)} process(es) alive")
    return 0


# -- settings ------------------------------------------------------------------------------------

def settings_here() -> Settings:
    """The settings for a command run beside a local stack: the environment's, on top of those of
    the stack `avatar up` runs from ./var (its Redis, store, files and keys), if one runs."""
    stack = localstack.running_stack(DEFAULT_VAR_DIR.absolute())
    if stack is None:
        return Settings.from_env()
    return Settings.from_env(environ={**stack.env, **os.environ})


def _local_server() -> str | None:
    stack = localstack.running_stack(DEFAULT_VAR_DIR.absolute())
    return stack.url if stack else None


# -- wiring --------------------------------------------------------------------------------------

Subcommand = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

SUBCOMMANDS: dict[str, Subcommand] = {
    "generate": (add_generate_arguments, cmd_generate),
    "batch": (lambda parser: add_batch_arguments(parser, _local_server()), cmd_batch),
    "up": (add_up_arguments, cmd_up),
    "worker": (add_worker_arguments, cmd_worker),
    "reconciler": (add_reconciler_arguments, cmd_reconciler),
    "api": (add_api_arguments, cmd_api),
    "token": (add_token_arguments, cmd_token),
    "sweep": (add_sweep_arguments, cmd_sweep),
    "probe": (add_probe_arguments, cmd_probe),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar", description="Photo-to-3D-avatar service.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, run) in SUBCOMMANDS.items():
        doc = (run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else None
        sub_parser = sub.add_parser(name, help=doc, description=doc)
        add_arguments(sub_parser)
        sub_parser.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
