"""A stage's time limit stops the work, not just the job: a photo decode still running in its thread
when the limit fails the job makes its worker process exit, so no decoder keeps burning CPU for a
job that has ended (its supervisor starts a new process)."""
from __future__ import annotations

from pathlib import Path

import cv2
import requests
from service_stack import start_small_stack

from bench.photos import encode_with_pil as encode
from jobs import localstack
from worker.tasks import EXIT_AFTER_RUNAWAY_WORK


def test_a_timed_out_stage_leaves_no_decoder_running(tmp_path: Path, astronaut, astronaut_jpeg: bytes) -> None:
    processes: list = []
    try:
        # 50 ms: far less than decoding a 4096² PNG takes (~0.3 s here, in a decoder thread).
        settings, base_url, worker = start_small_stack(tmp_path, processes, "limit@localhost",
                                                       job_timeout_s=0.05, reconcile_interval_s=0)

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
