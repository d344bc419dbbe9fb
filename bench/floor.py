"""The least the pieces the service is built from cost one job on this machine, each measured bare.

The goal is POST → completed within 1.5× the in-process avatar, so the service may add half
an in-process avatar. Before any work of the service's own, a job needs: one multipart POST through
gunicorn; three Celery deliveries over Redis, each to another process; its record inserted before it
is queued, a guarded update when it completes and a read to answer; the photos and each stage's
output handed on as files on the shared volume; and the waiting request told that the job has ended.
Here each is measured alone on an otherwise idle machine: a gunicorn app that only reads the body,
Celery tasks that only queue the next, the job store's own calls on an idle store, plain file
writes and reads, one Redis publish to a subscriber. Their sum is the floor under the service's
overhead; ``floorOverAllowance`` above 1 means the prescribed pieces alone cost more than 1.5×
allows, before parsing or checking the photos, authentication, rate limits or the audit log.

The same for throughput, in CPU time: with every core busy, avatars/s within 1.5× of the
in-process pipeline's leaves the service half an in-process avatar's CPU time per job on top of the
pipeline's own. ``cpuMsPerJob`` is what each piece costs the cores (the servers' processes and the
sending side; not the benchmark's client), ``cpuFloorOverAllowance`` the same comparison.

``python -m bench.floor`` prints one JSON.
"""
from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery

from bench.photos import avatar_views
from bench.pipeline_bench import median_ms
from bench.service import multipart_body, tree_cpu_s
from jobs import localstack

REPEATS = 40
# Jobs in the runs that measure a server's CPU time, which it counts in 10 ms ticks: the store's
# calls and the notifications.
CPU_JOBS = 150

# -- one POST through gunicorn -------------------------------------------------------------------


def raw_body_app(environ: dict[str, Any], start_response) -> list[bytes]:
    """A WSGI app that reads the whole body and answers a small JSON: HTTP and gunicorn, nothing else."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    received = len(environ["wsgi.input"].read(length))
    body = json.dumps({"success": True, "received": received}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def http_post_ms(root: Path, views: dict[str, bytes]) -> tuple[float, float]:
    """Median of POSTing the three photos as multipart to ``raw_body_app``, served as the API is;
    and the server's CPU ms per POST."""
    settings = localstack.stack_settings("redis://unused", "mongodb://unused", root / "data",
                                         api_workers=1, api_connections=1000)
    argv = localstack.api_command(settings, app="bench.floor:raw_body_app")
    server = subprocess.Popen(argv, cwd=localstack.REPO_ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    body, content_type = multipart_body(views)
    conn = http.client.HTTPConnection(settings.host, settings.port, timeout=10)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn.connect()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the bare gunicorn app did not start") from None
                time.sleep(0.1)
        samples = []
        for index in range(REPEATS + 5):
            if index == 5:
                cpu_before = tree_cpu_s([server])
            start = time.perf_counter()
            conn.request("POST", "/", body=body, headers={"Content-Type": content_type})
            conn.getresponse().read()
            samples.append((time.perf_counter() - start) * 1000)
            time.sleep(0.02)
        return round(statistics.median(samples[5:]), 2), _per_job_ms(tree_cpu_s([server]) - cpu_before, REPEATS)
    finally:
        conn.close()
        localstack.stop(server)


# -- three Celery deliveries ------------------------------------------------------------------------

# The worker side: `celery -A bench.floor:hop_app worker`, configured as the service's workers are
# (celeryconfig: acks late, prefetch 1, the cpu and gpu queues), on the benchmark's own Redis.
hop_app = Celery("floor")
hop_app.config_from_object("celeryconfig")
hop_app.conf.update(
    broker_url=os.environ.get("FLOOR_BROKER", "redis://127.0.0.1:6379/0"),
    task_routes={"floor.first": {"queue": "cpu"}, "floor.second": {"queue": "gpu"},
                 "floor.third": {"queue": "cpu"}})
NEXT_HOP = {"floor.first": "floor.second", "floor.second": "floor.third"}
_broker: dict[str, Any] = {}  # the worker process's Redis client, made on its first task


def _hop(name: str, sent_at: float) -> None:
    """Send the next task, then note (in Redis) how long the message took to reach this one."""
    import redis

    arrived = time.time()
    if name in NEXT_HOP:
        hop_app.send_task(NEXT_HOP[name], args=(time.time(),))
    if "client" not in _broker:
        _broker["client"] = redis.Redis.from_url(hop_app.conf.broker_url)
    _broker["client"].rpush(f"floor:{name}", arrived - sent_at)


@hop_app.task(name="floor.first")
def first(sent_at: float) -> None:
    _hop("floor.first", sent_at)


@hop_app.task(name="floor.second")
def second(sent_at: float) -> None:
    _hop("floor.second", sent_at)


@hop_app.task(name="floor.third")
def third(sent_at: float) -> None:
    _hop("floor.third", sent_at)


def notify_ms(client, redis_process: subprocess.Popen, repeats: int = REPEATS) -> tuple[float, float]:
    """Median from publishing "finished" to a subscriber (the waiting API) receiving it; and the CPU
    ms per notice of both sides and Redis."""
    pubsub = client.pubsub()
    pubsub.subscribe("floor:finished")
    pubsub.get_message(timeout=1)  # the subscription's confirmation
    samples = []
    for index in range(repeats + 5):
        if index == 5:
            cpu_before = tree_cpu_s([redis_process]) + time.process_time()
        start = time.perf_counter()
        client.publish("floor:finished", "completed")
        if pubsub.get_message(timeout=5) is None:
            raise RuntimeError("a published notice did not reach its subscriber")
        samples.append((time.perf_counter() - start) * 1000)
    cpu = tree_cpu_s([redis_process]) + time.process_time() - cpu_before
    pubsub.close()
    return round(statistics.median(samples[5:]), 2), _per_job_ms(cpu, repeats)


def celery_hops_ms(root: Path) -> dict[str, Any]:
    """Medians of each of three deliveries (API → worker, worker → worker, worker → worker) between
    two solo worker nodes, as the local stack runs them, and of the "finished" notification; and
    the CPU ms per job of each (the three deliveries together: the sender's ``send_task``, the
    nodes and Redis; the nodes' own timing notes make that a little high)."""
    import redis

    url, redis_process = localstack.start_redis(root / "redis", persist=False)
    env = {**os.environ, "FLOOR_BROKER": url}
    workers = []
    try:
        localstack.wait_redis(url, redis_process)
        for index in (1, 2):
            argv = [sys.executable, "-m", "celery", "-A", "bench.floor:hop_app", "worker",
                    "--queues", "cpu,gpu", "--pool", "solo", "--hostname", f"floor-{index}@%h",
                    "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]
            workers.append(subprocess.Popen(argv, cwd=localstack.REPO_ROOT, env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        client = redis.Redis.from_url(url)
        sender = Celery("floor-client", broker=url)
        sender.conf.update(task_routes=hop_app.conf.task_routes)
        sending_cpu_s = 0.0
        for count in range(1, REPEATS + 6):  # one chain at a time, the first 5 as warm-up
            if count == 6:
                cpu_before = tree_cpu_s([*workers, redis_process])
            before_send = time.process_time()
            sender.send_task("floor.first", args=(time.time(),))
            if count >= 6:
                sending_cpu_s += time.process_time() - before_send
            deadline = time.monotonic() + 30
            while client.llen("floor:floor.third") < count:
                if time.monotonic() > deadline:
                    raise RuntimeError("the bare Celery chain did not finish (its workers did not start?)")
                time.sleep(0.005)
            time.sleep(0.02)
        hops_cpu_s = tree_cpu_s([*workers, redis_process]) - cpu_before + sending_cpu_s
        hops = [round(statistics.median(float(x) * 1000 for x in client.lrange(f"floor:{name}", 5, -1)), 2)
                for name in ("floor.first", "floor.second", "floor.third")]
        notify, notify_cpu = notify_ms(client, redis_process, CPU_JOBS)
        return {"hops": hops, "notify": notify,
                "hopsCpu": _per_job_ms(hops_cpu_s, REPEATS), "notifyCpu": notify_cpu}
    finally:
        for worker in workers:
            localstack.stop(worker)
        localstack.stop(redis_process)


# -- the store ------------------------------------------------------------------------------------

def store_ms(root: Path, result: dict[str, Any]) -> tuple[dict[str, float], float]:
    """Medians of the job store's insert, guarded completion and read, on an idle local store with
    the service's indexes; and the CPU ms of the three together (the store and the client)."""
    import pymongo

    from jobs.store import JobStatus, JobStore

    uri, process = localstack.start_mongo(None, log_path=root / "mongo.log")
    try:
        localstack.wait_mongo(uri, process)
        store = JobStore(pymongo.MongoClient(uri)["floor"], timedelta(days=30))
        store.ensure_indexes()
        samples: dict[str, list[float]] = {"insert": [], "complete": [], "read": []}

        def timed(name: str, call) -> None:
            start = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - start) * 1000)

        for _ in range(REPEATS + 5):
            job_id = str(uuid.uuid4())
            timed("insert", lambda: store.create(job_id, owner=None, uploads={}))
            store.advance(job_id, JobStatus.PREPROCESSING, {})
            store.advance(job_id, JobStatus.INFERENCE, {})
            timed("complete", lambda: store.complete(job_id, result, {"exportStage": 1.0}))
            timed("read", lambda: store.get(job_id))
            time.sleep(0.01)
        # The CPU, in a run of its own: the two stage updates above are the service's choice.
        cpu_before = tree_cpu_s([process]) + time.process_time()
        for _ in range(CPU_JOBS):
            job_id = str(uuid.uuid4())
            store.create(job_id, owner=None, uploads={})
            store.complete(job_id, result, {"exportStage": 1.0})
            store.get(job_id)
        cpu = _per_job_ms(tree_cpu_s([process]) + time.process_time() - cpu_before, CPU_JOBS)
        return {name: round(statistics.median(values[5:]), 2) for name, values in samples.items()}, cpu
    finally:
        localstack.stop(process)


# -- stage files ---------------------------------------------------------------------------------

def files_ms(root: Path, outputs: list[bytes], glb: bytes) -> tuple[float, float]:
    """Median of writing (atomically) and reading back each of ``outputs``, and writing the GLB
    with an fsync: what the API and the tasks hand each other through the shared volume (the
    photos, then each stage's output), without encryption; and the CPU ms of it."""
    samples = []
    for index in range(REPEATS + 5):
        if index == 5:
            cpu_before = time.process_time()
        start = time.perf_counter()
        for number, data in enumerate(outputs):
            final = root / f"stage-{index}-{number}"
            temp = final.with_suffix(".tmp")
            temp.write_bytes(data)
            temp.rename(final)
            final.read_bytes()
        with open(root / f"avatar-{index}.glb", "wb") as fh:
            fh.write(glb)
            fh.flush()
            os.fsync(fh.fileno())
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples[5:]), 2), _per_job_ms(time.process_time() - cpu_before, REPEATS)


def _per_job_ms(cpu_s: float, jobs: int) -> float:
    return round(cpu_s * 1000 / jobs, 2)


# -- all together ---------------------------------------------------------------------------------

def run_floor(side: int = 1024) -> dict[str, Any]:
    import cv2

    from pipeline.models import FaceModels
    from pipeline.stages import build_avatar, infer_landmarks, prepare_views, run_pipeline, warm_up

    cv2.setNumThreads(1)  # as the workers and bench.pipeline_bench run
    models = FaceModels.load(threads=1)
    warm_up()
    views = avatar_views(side)
    repeats = REPEATS if side <= 1024 else REPEATS // 2
    cpu_before = time.process_time()
    inprocess = median_ms(lambda: run_pipeline(views, models), repeats)
    inprocess_cpu = (time.process_time() - cpu_before) * 1000 / (repeats + 1)  # with its warm-up call
    prepared = prepare_views(views, models)
    landmarks = infer_landmarks(prepared, models)
    avatar = build_avatar(prepared, landmarks)
    result = {"generationTime": avatar.generation_ms, "inferenceTime": avatar.inference_ms,
              "facialFeatures": avatar.facial_features, "meshInfo": avatar.mesh_info,
              "glbSize": len(avatar.glb), "filename": "avatar.glb", "warnings": avatar.warnings}
    with tempfile.TemporaryDirectory(prefix="avatar-floor-") as tmp:
        root = Path(tmp)
        celery = celery_hops_ms(root)
        post, post_cpu = http_post_ms(root, views)
        store, store_cpu = store_ms(root, result)
        files, files_cpu = files_ms(root, [*views.values(), prepared.to_bytes(), landmarks.to_bytes()], avatar.glb)
    parts = {"httpPost": post, "celeryDeliveries": celery["hops"], "store": store,
             "finishedNotification": celery["notify"], "files": files}
    cpu = {"httpPost": post_cpu, "celeryDeliveries": celery["hopsCpu"], "store": store_cpu,
           "finishedNotification": celery["notifyCpu"], "files": files_cpu}
    total = post + sum(celery["hops"]) + sum(store.values()) + celery["notify"] + files
    cpu_total = sum(cpu.values())
    allowance = inprocess * 0.5
    cpu_allowance = inprocess_cpu * 0.5
    return {"inprocessAvatarMs": round(inprocess, 2),
            "allowanceMs": round(allowance, 2), "floorMs": parts, "floorTotalMs": round(total, 2),
            "floorOverAllowance": round(total / allowance, 2),
            "inprocessCpuMsPerAvatar": round(inprocess_cpu, 2), "cpuAllowanceMs": round(cpu_allowance, 2),
            "cpuMsPerJob": cpu, "cpuFloorTotalMs": round(cpu_total, 2),
            "cpuFloorOverAllowance": round(cpu_total / cpu_allowance, 2)}


def main() -> None:
    print(json.dumps({f"3x{side}": run_floor(side) for side in (1024, 4096)}, indent=2))


if __name__ == "__main__":
    main()
