"""GET /api/avatar/health: can this service generate avatars right now, and if not, why not.

Anyone gets the status (``healthy``, ``degraded``, ``unhealthy``: what a load balancer needs). The
detailed report (model path, workers and their hosts, queues, memory, disk) goes only to a caller
on this machine (loopback: the operator, a container healthcheck) or one with an admin token
(``avatar token --admin``): paths and host names help an attacker more than a user.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import psutil
from flask import Blueprint, Response

from api.auth import is_operator
from api.bodies import iso, ok
from api.errors import error_response
from api.services import Services, services
from api.admission import low_disk
from celeryconfig import GPU_QUEUE, QUEUE_NAMES, STAGE_QUEUES
from jobs.store import JobStore
from worker.reconciler import last_pass
from worker.app import message_job

bp = Blueprint("health", __name__, url_prefix="/api/avatar")


@bp.get("/health")
def health() -> Response:
    """200 when Redis, MongoDB and (if used) the object storage answer (``degraded`` if no worker
    serves a queue, or ``warnings`` names a worker to fix); 503 otherwise."""
    svc = services()
    redis_state = _probe(lambda: svc.health_redis.ping())
    mongo_state = _probe(lambda: svc.health_mongo.admin.command("ping"))
    workers: list[dict[str, Any]] = []
    depths: dict[str, int | None] = {name: None for name in QUEUE_NAMES}
    if redis_state["reachable"]:
        workers = _safe(lambda: _worker_processes(svc), [])
        depths = _safe(lambda: {name: int(svc.health_redis.llen(name)) for name in QUEUE_NAMES}, depths)
    oldest: dict[str, float | None] = {}
    if redis_state["reachable"] and mongo_state["reachable"]:
        oldest = _safe(lambda: {name: _oldest_waiting_s(svc, name) for name in QUEUE_NAMES}, {})
    queues = _queues(depths, workers, oldest)

    served = {queue for w in workers for queue in w["queues"]}
    unserved = [queue for queue in QUEUE_NAMES if queue not in served]
    reconciler = _safe(lambda: _reconciler(svc), None) if redis_state["reachable"] else None
    low = _safe(lambda: low_disk(svc), None)
    warnings = (_worker_warnings(workers) + _queue_warnings(queues, unserved)
                + _reconciler_warnings(svc, reconciler, bool(workers))
                + ([f"disk space is low ({low}): new avatars are refused until space is freed"] if low else []))
    disk = _disk(svc)
    # Object storage answers for itself (the volume's trouble is low space, a warning above).
    storage_state = {"reachable": disk.get("reachable", True)}
    down = [name for name, state in (("Redis", redis_state), ("MongoDB", mongo_state),
                                     ("the object storage", storage_state)) if not state["reachable"]]
    stages_unserved = [queue for queue in unserved if queue in STAGE_QUEUES]
    status = "unhealthy" if down else ("degraded" if stages_unserved or warnings else "healthy")

    data = {
        "status": status,
        "warnings": warnings,
        "model": _model_summary(workers),
        "workers": {"seen": len(workers), "processes": workers, "queuesWithoutWorkers": unserved},
        "queues": queues,
        "reconciler": reconciler,
        "redis": redis_state,
        "mongodb": mongo_state,
        "memory": _memory(),
        "disk": disk,
        "timestamp": iso(datetime.now(timezone.utc)),
    }
    if not _may_see_details():
        data = {"status": status, "timestamp": data["timestamp"]}
    if down:
        return error_response(503, f"Service unavailable: {' and '.join(down)} unreachable", data,
                              {"Retry-After": "30"})
    return ok(data)


def _may_see_details() -> bool:
    return is_operator()


def _worker_processes(svc: Services) -> list[dict[str, Any]]:
    """Every worker process with a live heartbeat."""
    now = time.time()
    return [{
        "name": beat.get("name"),
        "hostname": beat.get("hostname"),
        "pid": beat.get("pid"),
        "queues": beat.get("queues", []),
        "model": beat.get("model") or {},
        "providers": (beat.get("model") or {}).get("providers", []),
        "concurrency": beat.get("concurrency"),
        "inferenceBatchMax": beat.get("inferenceBatchMax", 1),
        "secondsPerStage": beat.get("secondsPerStage", {}),
        "lastSeenSecondsAgo": round(now - beat.get("seenAt", now), 1),
    } for beat in sorted(svc.workers.alive(), key=lambda b: b.get("name", ""))]


def _worker_warnings(workers: list[dict[str, Any]]) -> list[str]:
    """What an operator should fix although every queue is served."""
    return [f"{w['name']}: onnxruntime-gpu is installed but its models run on the CPU, because the CUDA or "
            "cuDNN libraries could not be loaded (the worker's log says which); install the gpu extra's "
            "CUDA libraries or fix the driver (docs/FLEET.md)"
            for w in workers if w["model"].get("cudaFallback")]


def _queue_warnings(queues: dict[str, dict[str, Any]], unserved: list[str]) -> list[str]:
    """A queue outside the stages (webhooks) with messages and no worker: they are not delivered."""
    return [f"{queues[q]['depth']} message(s) wait in the '{q}' queue and no worker serves it: start one "
            f"(`avatar worker --queues {q} --pool threads`)"
            for q in unserved if q not in STAGE_QUEUES and queues[q]["depth"]]


def _reconciler(svc: Services) -> dict[str, Any] | None:
    """What the reconciler's last pass found (``worker.reconciler.record_pass``), or None if none ran."""
    record = last_pass(svc.health_redis)
    if record is None:
        return None
    return {"lastPassSecondsAgo": round(time.time() - record["at"], 1), "by": record.get("by"),
            "jobsWithoutMessage": record.get("orphans", 0), "resentLastPass": record.get("resent", 0),
            "failedLastPass": record.get("failed", 0)}


def _reconciler_warnings(svc: Services, reconciler: dict[str, Any] | None, workers_seen: bool) -> list[str]:
    """Jobs nothing holds (Redis lost their messages?), and a reconciler that has stopped running
    (no record at all is a fleet that started less than an interval ago, or one that runs none)."""
    warnings = []
    if reconciler and reconciler["jobsWithoutMessage"]:
        warnings.append(f"{reconciler['jobsWithoutMessage']} running job(s) have no queue message and no worker "
                        f"(lost by the queue?); the reconciler sends their stage again once they have sat still "
                        f"for {svc.settings.stall_after_s:g} s")
    interval = svc.settings.reconcile_interval_s
    if reconciler and interval > 0 and reconciler["lastPassSecondsAgo"] > 3 * interval + 10:
        warnings.append(f"the reconciler last ran {reconciler['lastPassSecondsAgo']:.0f} s ago (it runs every "
                        f"{interval:g} s inside the workers{'' if workers_seen else ', and none is running'}): "
                        "jobs whose queue message is lost are not sent again")
    return warnings


def _queues(depths: dict[str, int | None], workers: list[dict[str, Any]],
            oldest_s: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    """Per queue: messages waiting, the worker processes (and hosts) consuming it, and how long its
    oldest message has been waiting."""
    out = {}
    for name in QUEUE_NAMES:
        serving = [w for w in workers if name in w["queues"]]
        out[name] = {"depth": depths.get(name), "processes": len(serving),
                     "hosts": sorted({w["hostname"] for w in serving if w.get("hostname")}),
                     "oldestWaitingSeconds": oldest_s.get(name)}
    return out


def _oldest_waiting_s(svc: Services, queue: str) -> float | None:
    """Seconds the oldest message in ``queue`` has waited: consumers take from the list's tail, so
    that is the oldest; its job's ``updatedAt`` is when the job entered the stage the message is for.
    Two lookups by key, whatever the queue's length (no scan of the jobs)."""
    parsed = message_job(svc.health_redis.lindex(queue, -1) or b"")
    if parsed is None:
        return None
    job = JobStore(svc.health_mongo[svc.settings.database_name]).find(parsed[1])
    if job is None:
        return None
    return round((datetime.now(timezone.utc) - job.updated_at).total_seconds(), 2)


def _model_summary(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """The landmark model as a worker serving the gpu queue reports it (the contract's ``model``)."""
    for worker in workers:
        model = worker["model"]
        if GPU_QUEUE in worker["queues"] and model.get("initialized"):
            return {"initialized": True, "path": model.get("path"), "inputShape": model.get("inputShape"),
                    "outputShape": model.get("outputShape"), "providers": model.get("providers"),
                    "reportedBy": worker["name"]}
    errors = [w["model"].get("error") for w in workers if w["model"].get("error")]
    return {"initialized": False,
            "error": errors[0] if errors else f"no worker serving the '{GPU_QUEUE}' queue has reported in"}


def _probe(check) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        check()
    except Exception as exc:
        return {"reachable": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"reachable": True, "latencyMs": round((time.perf_counter() - start) * 1000, 2)}


def _safe(read, fallback):
    try:
        return read()
    except Exception:
        return fallback


def _memory() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    return {"totalBytes": vm.total, "availableBytes": vm.available, "usedPercent": vm.percent,
            "apiProcessRssBytes": psutil.Process().memory_info().rss}


def _disk(svc: Services) -> dict[str, Any]:
    """Where the files go: the volume's path, free space and the minimum new jobs need, or the
    bucket and whether it answers (object storage writes nothing under DATA_DIR: no local space)."""
    disk = svc.files.describe()
    if "path" in disk:
        disk["minFreeBytes"] = svc.settings.min_free_disk_mb * 1024 * 1024
    return disk
