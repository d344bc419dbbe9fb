"""A stage's time limit stops the work, not just the job: a photo decode still running in its thread
when the limit fails the job makes its worker process exit, so no decoder keeps burning CPU for a
job that has ended (its supervisor starts a new process)."""
from __future__ import annotations

from pathlib import Path

import cv2
import requests
from service_stack import start_api, start_redis_and_store

from bench.photos import encode_with_pil as encode
from jobs import localstack
from worker.tasks import EXIT_AFTER_RUNAWAY_WORK


def test_a_timed_out_stage_leaves_no_decoder_running(tmp_path: Path, astronaut, astronaut_jpeg: bytes) -> None:
    processes: list = []
    try:
        # 50 ms: far less than decoding a 4096² PNG takes (~0.3 s here, in a decoder thread).
        settings = start_redis_and_store(tmp_path, processes, api_workers=1, job_timeout_s=0.05,
                                         reconcile_interval_s=0)
        nodes = localstack.start_solo_workers(settings, ("cpu", "gpu"), 1, "limit@localhost", tmp_path / "logs")
        processes.extend(nodes.values())
        (node, worker), = nodes.items()
        localstack.wait_solo_workers(settings, nodes)
        base_url = start_api(settings, tmp_path, processes)

        front = encode(cv2.resize(astronaut, (4096, 4096), interpolation=cv2.INTER_LINEAR), "PNG")
        files = {"front": ("front.png", front, "image/png"), "left": ("left.jpg", astronaut_jpeg, "image/jpeg"),
                 "right": ("right.jpg", astronaut_jpeg, "image/jpeg")}
        posted = requests.post(f"{base_url}/api/avatar/generate", files=files, headers={"Prefer": "wait=30"},
                               timeout=60)
        assert posted.status_code == 422, posted.text
        assert posted.json()["details"]["code"] == "timeout"

        # The process ends itself rather than keep a decoder running for a failed job.
        assert worker.wait(30) == EXIT_AFTER_RUNAWAY_WORK
        log = (tmp_path / "logs" / "worker-1.log").read_text()
        assert "still running after the time limit" in log
    finally:
        for process in reversed(processes):
            localstack.stop(process)
