"""Short outages and full disks or queues, on stacks of their own: a store restart in the middle of a
stage is ridden out (the job completes, not internal_error), and new work is refused with 503 and
Retry-After when the volume is nearly full or the backlog is beyond what the workers can finish."""
from __future__ import annotations

import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import pytest
import requests
from service_stack import LocalStack, multipart, start_api, start_small_stack

from api import create_app
from api.admission import STAGES_BY_QUEUE
from bench.photos import encode_with_pil as encode
from jobs import localstack
from jobs.store import JobStatus, JobStore


OUTAGE_S = 15.0


def test_a_store_restart_in_the_middle_of_a_stage_does_not_fail_the_job(tmp_path: Path, astronaut) -> None:
    processes: list = []
    store_dir, store_port = tmp_path / "store", localstack.free_port()
    try:
        redis_url, redis_proc = localstack.start_redis(tmp_path / "redis", persist=False)
        processes.append(redis_proc)
        mongo_uri, store = localstack.start_mongo(store_dir, store_port, log_path=tmp_path / "store.log")
        settings = localstack.stack_settings(redis_url, mongo_uri, tmp_path / "data", api_workers=1,
                                             reconcile_interval_s=0)
        localstack.wait_redis(redis_url, redis_proc)
        localstack.wait_mongo(mongo_uri, store)
        nodes = localstack.start_solo_workers(settings, ("cpu", "gpu"), 1, "outage@localhost", tmp_path / "logs")
        processes.extend(nodes.values())
        localstack.wait_solo_workers(settings, nodes)
        base_url = start_api(settings, tmp_path, processes)

        big = encode(cv2.resize(astronaut, (4096, 4096), interpolation=cv2.INTER_LINEAR), "PNG")
        files = {view: (f"{view}.png", big, "image/png") for view in ("front", "left", "right")}
        posted = requests.post(f"{base_url}/api/avatar/generate", files=files, timeout=60)
        assert posted.status_code == 202, posted.text
        avatar_id = posted.json()["data"]["avatarId"]
        # The worker is held (SIGSTOP) while the store goes down, so the outage surely falls in the
        # middle of its stage; the store stays down for longer than the client's 5 s server selection,
        # so the stage's store calls fail with a connection error at least once (before, that made
        # the job internal_error).
        (worker,) = nodes.values()
        worker.send_signal(signal.SIGSTOP)
        localstack.stop(store)
        worker.send_signal(signal.SIGCONT)
        time.sleep(OUTAGE_S)
        _, store = localstack.start_mongo(store_dir, store_port, log_path=tmp_path / "store.log")
        processes.append(store)
        localstack.wait_mongo(mongo_uri, store)

        jobs = JobStore.from_settings(settings)
        deadline = time.monotonic() + 60
        while not (job := jobs.get(avatar_id)).status.is_terminal():
            assert time.monotonic() < deadline, f"the job is still {job.status.value}"
            time.sleep(0.2)
        assert job.status is JobStatus.COMPLETED, job.error
        log = (tmp_path / "logs" / "worker-1.log").read_text()
        assert "failed (ServerSelectionTimeoutError" in log and "trying again in" in log  # it waited for the store
    finally:
        for process in reversed(processes):
            localstack.stop(process)


def test_new_avatars_are_refused_before_the_disk_is_full(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    free_mb = shutil.disk_usage(stack.files.storage.root).free // (1024 * 1024)
    app = create_app(stack.settings.replace(min_free_disk_mb=free_mb + 1024))
    client = app.test_client()
    response = client.post("/api/avatar/generate", content_type="multipart/form-data", buffered=True,
                           data={v: (__import__("io").BytesIO(astronaut_jpeg), f"{v}.jpg") for v in ("front", "left", "right")},
                           environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 503
    assert "short of disk space" in response.get_json()["error"] and response.headers["Retry-After"] == "300"
    health = client.get("/api/avatar/health", environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_json()["data"]
    assert health["status"] == "degraded" and any("disk space is low" in w for w in health["warnings"])
    assert health["disk"]["minFreeBytes"] > health["disk"]["freeBytes"]


def test_a_backlog_beyond_what_the_workers_finish_in_time_is_refused_with_retry_after(
        tmp_path: Path, astronaut_jpeg: bytes) -> None:
    """One worker process, a 2 s stage limit: the queue holds what it works through in 2 s and no
    more; the rest is told when to come back. Everything accepted completes. (The worker is paused
    with SIGSTOP while the jobs arrive, so the backlog builds whatever this machine's speed.)"""
    processes: list = []
    try:
        settings, base_url, worker = start_small_stack(tmp_path, processes, "backlog@localhost",
                                                       job_timeout_s=2.0, reconcile_interval_s=0)
        files = multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg)
        warm = requests.post(f"{base_url}/api/avatar/generate", files=files, headers={"Prefer": "wait=30"},
                             timeout=40)
        assert warm.status_code == 200  # the worker has now measured its stages
        time.sleep(settings.worker_heartbeat_ttl_s / 3 + 0.5)  # ... and said so in a heartbeat
        (beat,) = requests.get(f"{base_url}/api/avatar/health", timeout=5).json()["data"]["workers"]["processes"]
        per_message = {queue: sum(beat["secondsPerStage"][s] for s in STAGES_BY_QUEUE[queue]) / len(STAGES_BY_QUEUE[queue])
                       for queue in STAGES_BY_QUEUE}
        # What the queues may hold: the 2 s of work one process does within the limit.
        room = int(settings.job_timeout_s / per_message["cpu"])

        def post(_: int) -> requests.Response:
            return requests.post(f"{base_url}/api/avatar/generate", files=files, timeout=40)

        worker.send_signal(signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                answers = list(pool.map(post, range(room + 20)))
        finally:
            worker.send_signal(signal.SIGCONT)
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {202, 503}, statuses
        refused = [a for a in answers if a.status_code == 503]
        # Each job puts a preprocess message in the cpu queue: about ``room`` of them fit.
        assert refused and room * 0.8 <= statuses.count(202) <= room * 1.2 + 2, (room, statuses)
        assert "more work waiting than it can finish in 2 s" in refused[0].json()["error"]
        assert 1 <= int(refused[0].headers["Retry-After"]) <= 300
        accepted = [a.json()["data"]["avatarId"] for a in answers if a.status_code == 202]
        jobs = JobStore.from_settings(settings)
        deadline = time.monotonic() + 120
        while any(not jobs.get(i).status.is_terminal() for i in accepted):
            assert time.monotonic() < deadline, "the accepted backlog did not drain"
            time.sleep(0.5)
        assert {jobs.get(i).status for i in accepted} == {JobStatus.COMPLETED}
    finally:
        for process in reversed(processes):
            localstack.stop(process)


@pytest.mark.parametrize("raw,status,says", [
    (b"GET /api/avatar/health?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "request line is too long"),
    (b"GET /api/avatar/health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200))
     + b"\r\n", 431, "headers are too many or too large"),
    (b"POST /api/avatar/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
     b"Content-Type: multipart/form-data; boundary=b\r\n\r\nZZZ\r\nxx\r\n0\r\n\r\n", 400, "chunked transfer encoding"),
])
def test_what_the_http_server_refuses_itself_is_the_envelope_too(stack: LocalStack, raw: bytes, status: int,
                                                                  says: str) -> None:
    import json
    import socket

    with socket.create_connection(("127.0.0.1", stack.settings.port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
                answer.partition(b"Content-Length: ")[2].split(b"\r\n")[0] or 0):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode()), head
    assert b"Content-Type: application/json" in head
    envelope = json.loads(body)
    assert envelope["success"] is False and says in envelope["error"] and envelope["details"] is None \
        or status == 400 and says in envelope["error"]


def test_a_page_number_beyond_any_list_is_a_400(stack: LocalStack) -> None:
    from datetime import timedelta

    from api.auth import mint_token

    token = mint_token(stack.settings, "pager", timedelta(hours=1))
    for page in ("1000001", "99999999999999999999", "1" * 3000):
        response = requests.get(stack.url(f"/api/avatar?page={page}"), headers={"Authorization": f"Bearer {token}"},
                                timeout=5)
        assert response.status_code == 400, (page[:30], response.text[:200])
        assert "page" in response.json()["error"]
