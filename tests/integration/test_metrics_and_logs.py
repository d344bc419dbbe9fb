"""Prometheus metrics from the API (GET /metrics, gunicorn's processes summed) and from the worker
node (its main process serves its pool processes' samples), and the JSON log lines that follow a
request's id from the API into the workers. Over the session's real stack (LOG_FORMAT=json there)."""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import timedelta

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from service_stack import LocalStack, multipart

from api import create_app
from api.auth import mint_token
from celeryconfig import QUEUE_NAMES

Samples = dict[tuple[str, frozenset], float]
GENERATE = ("/api/avatar/generate", "POST")


def scrape(url: str, headers: Mapping[str, str] | None = None) -> Samples:
    response = requests.get(url, headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def api_metrics(stack: LocalStack) -> Samples:
    return scrape(stack.url("/metrics"))


def worker_metrics(stack: LocalStack) -> Samples:
    return scrape(f"http://127.0.0.1:{stack.settings.metrics_port}/metrics")


def wait_until_idle(stack: LocalStack, timeout_s: float = 30) -> None:
    """No message waiting and no stage running: jobs of earlier tests cannot move the counters."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = api_metrics(stack)
        waiting = sum(value(samples, "avatar_queue_depth", queue=queue) for queue in QUEUE_NAMES)
        if not waiting and not list(stack.broker.scan_iter(match="avatar:running:*")):
            return
        assert time.monotonic() < deadline, "the workers did not become idle"
        time.sleep(0.1)


def test_a_completed_and_a_failed_job_show_in_the_api_and_worker_metrics(
        stack: LocalStack, astronaut_jpeg: bytes, coffee_jpeg: bytes) -> None:
    wait_until_idle(stack)
    api_before, workers_before = api_metrics(stack), worker_metrics(stack)

    good = requests.post(stack.url("/api/avatar/generate"), files=multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg),
                         timeout=30)
    faceless = requests.post(stack.url("/api/avatar/generate"), files=multipart(coffee_jpeg, astronaut_jpeg, astronaut_jpeg),
                             timeout=30)
    assert good.status_code == faceless.status_code == 202
    completed = stack.wait_for_end(good.json()["data"]["avatarId"])
    failed = stack.wait_for_end(faceless.json()["data"]["avatarId"])
    assert completed["status"] == "completed" and failed["error"]["code"] == "no_face"
    wait_until_idle(stack)
    api_after, workers_after = api_metrics(stack), worker_metrics(stack)

    def api_delta(name: str, **labels: str) -> float:
        return value(api_after, name, **labels) - value(api_before, name, **labels)

    def worker_delta(name: str, **labels: str) -> float:
        return value(workers_after, name, **labels) - value(workers_before, name, **labels)

    # The API: requests by route and status with their latency, upload bytes, submissions.
    route, method = GENERATE
    assert api_delta("avatar_http_requests_total", route=route, method=method, status="202") == 2
    assert api_delta("avatar_http_request_duration_seconds_count", route=route, method=method) == 2
    assert api_delta("avatar_http_request_duration_seconds_bucket", route=route, method=method, le="+Inf") == 2
    assert 0 < api_delta("avatar_http_request_duration_seconds_sum", route=route, method=method) < 10
    assert api_delta("avatar_upload_bytes_count") == 2
    assert api_delta("avatar_upload_bytes_sum") == 5 * len(astronaut_jpeg) + len(coffee_jpeg)
    assert api_delta("avatar_jobs_submitted_total") == 2
    status_route = "/api/avatar/jobs/<avatar_id>"
    assert api_delta("avatar_http_requests_total", route=status_route, method="GET", status="200") >= 2
    for queue in QUEUE_NAMES:
        assert value(api_after, "avatar_queue_depth", queue=queue) == 0
        assert value(api_after, "avatar_queue_oldest_message_age_seconds", queue=queue) == 0

    # The workers: outcomes by code, end-to-end time, every timed step of the completed job.
    assert worker_delta("avatar_jobs_completed_total") == 1
    assert worker_delta("avatar_jobs_failed_total", code="no_face") == 1
    assert worker_delta("avatar_job_duration_seconds_count", outcome="completed") == 1
    assert worker_delta("avatar_job_duration_seconds_count", outcome="failed") == 1
    assert 0 < worker_delta("avatar_job_duration_seconds_sum", outcome="completed") \
        <= completed["timings"]["total"] / 1000 + 0.5
    for stage, ms in completed["timings"].items():
        if stage in ("queueWait", "inferenceQueueWait", "exportQueueWait", "total"):
            continue  # the status endpoint's own arithmetic, not a step the worker timed
        assert worker_delta("avatar_stage_duration_seconds_count", stage=stage) == 1, stage
        assert worker_delta("avatar_stage_duration_seconds_sum", stage=stage) == pytest.approx(ms / 1000, abs=1e-6), stage
    for stage in ("decode", "detect", "landmarks", "texture", "glb", "preprocessStage", "exportStage"):
        assert worker_delta("avatar_stage_duration_seconds_count", stage=stage) == 1, stage
    # Every hop's wait in its queue: both jobs' first messages, the completed job's two others.
    assert worker_delta("avatar_stage_duration_seconds_count", stage="preprocessQueueWait") == 2
    assert worker_delta("avatar_stage_duration_seconds_count", stage="inferenceQueueWait") == 1
    assert worker_delta("avatar_stage_duration_seconds_count", stage="exportQueueWait") == 1

    # One info series per live worker process, naming its execution provider.
    live = [dict(labels) for (name, labels), v in workers_after.items() if name == "avatar_worker_info" and v == 1]
    assert len(live) == 2 and {w["node"] for w in live} == {"itest@localhost"}, live
    assert {w["provider"] for w in live} == {"CPUExecutionProvider"} and len({w["pid"] for w in live}) == 2


def test_the_metrics_are_for_this_machine_and_admin_tokens(stack: LocalStack) -> None:
    client = create_app(stack.settings).test_client()
    elsewhere = {"REMOTE_ADDR": "192.0.2.50"}
    refused = client.get("/metrics", environ_base=elsewhere)
    assert refused.status_code == 403 and "avatar token --admin" in refused.get_json()["error"]
    user = mint_token(stack.settings, "someone", timedelta(minutes=5))
    assert client.get("/metrics", environ_base=elsewhere, headers={"Authorization": f"Bearer {user}"}).status_code == 403
    admin = mint_token(stack.settings, "prometheus", timedelta(minutes=5), admin=True)
    allowed = client.get("/metrics", environ_base=elsewhere, headers={"Authorization": f"Bearer {admin}"})
    assert allowed.status_code == 200 and b"avatar_queue_depth" in allowed.data


def test_json_log_lines_follow_the_request_id_into_the_workers(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    response = requests.post(stack.url("/api/avatar/generate"), files=multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg),
                             headers={"Prefer": "wait=30"}, timeout=60)
    assert response.status_code == 200
    request_id, avatar_id = response.headers["X-Request-Id"], response.json()["data"]["avatarId"]

    def lines(name: str) -> list[dict]:
        parsed = []
        for line in (stack.logs / name).read_text(errors="replace").splitlines():
            if line.startswith("{"):
                parsed.append(json.loads(line))
        return parsed

    access = [entry for entry in lines("api.log") if entry.get("requestId") == request_id]
    assert any(entry["route"] == "/api/avatar/generate" and entry["status"] == 200 and entry["jobId"] == avatar_id
               and entry["durationMs"] > 0 for entry in access), access
    deadline = time.monotonic() + 5
    while True:
        stages = {entry["stage"]: entry for entry in lines("worker.log")
                  if entry.get("requestId") == request_id and "durationMs" in entry}
        if len(stages) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(stages) == {"preprocess", "inference", "export"}, stages
    for stage, entry in stages.items():
        assert entry["jobId"] == avatar_id and entry["durationMs"] > 0 and entry["level"] == "INFO"
        assert entry["message"].startswith(f"[job {avatar_id}] {stage} finished in ")
