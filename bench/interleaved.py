"""Issue 3's ratios, measured in alternating rounds: service over in-process pipeline.

This VM's speed changes by 20-30% from one few-second stretch to the next (every step of the
pipeline at once: 38 ms or 48 ms for the same in-process avatar). Measured as two halves minutes
apart, the same code gave latency ratios from 1.8 to 3.2. So here, on one running stack, each round
measures latency in pairs, one in-process avatar then one POST → completed, for each size; then
in-process avatars/s with ``workers`` processes, then the service's avatars/s with as many worker
processes. Each round has its own ratios, and the reported ratio is the median of the rounds'.

The stack stays up between its measurements. While the in-process pipeline runs, the stack is idle:
its workers wait on Redis and its reconciler wakes every 10 s.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

from bench.photos import avatar_views
from bench.pipeline_bench import run_pipeline_throughput
from bench.service import BenchStack, measure_latency, measure_throughput, multipart_body
from jobs.settings import Settings
from pipeline.models import FaceModels
from pipeline.stages import run_pipeline, warm_up


# Between two measured avatars: lets the stack finish what it does after answering (acks, the
# webhook lookup) before the in-process avatar, and gives both sides the same pause.
PAUSE_S = 0.02


def paired_latency(stack: BenchStack, models: FaceModels, views: dict[str, bytes], n: int) -> dict[str, Any]:
    """``n`` pairs of one in-process avatar and one POST → completed, alternated, so that both
    sides of each pair see the machine in the same state; the medians of each side and their ratio."""
    body, content_type = multipart_body(views)
    client = stack.client()
    inprocess, service = [], []
    try:
        for _ in range(n):
            start = time.perf_counter()
            run_pipeline(views, models)
            inprocess.append((time.perf_counter() - start) * 1000)
            time.sleep(PAUSE_S)
            service.append(client.generate(body, content_type).ms)
            time.sleep(PAUSE_S)
    finally:
        client.close()
    inproc, p50 = statistics.median(inprocess), statistics.median(service)
    return {"inprocess_median_ms": round(inproc, 2), "service_p50_ms": round(p50, 1),
            "ratio": round(p50 / inproc, 2)}


def run_interleaved(rounds: int = 3, sides: tuple[int, ...] = (1024, 4096), latency_n: int = 15,
                    throughput_requests: int = 80, workers: int = 2, clients: int = 4) -> dict[str, Any]:
    """``rounds`` rounds of (in-process, service) per size and for throughput; per-round ratios and
    their medians. Latency ratio: service p50 / in-process median; throughput ratio: in-process
    avatars/s / service avatars/s (both: 1.0 is no overhead, above is slower)."""
    cv2.setNumThreads(1)  # as the workers and bench.pipeline_bench run
    models = FaceModels.load(threads=1)
    warm_up()
    photos = {side: avatar_views(side) for side in sides}
    defaults = Settings.from_env()
    measured: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="avatar-bench-") as tmp:
        stack = BenchStack(Path(tmp), workers, defaults.api_workers, defaults.api_connections)
        try:
            for side in sides:  # warm-up: the first avatars of each size, both sides
                run_pipeline(photos[side], models)
                measure_latency(stack, photos[side], 3)
            for _ in range(rounds):
                measured.append(_one_round(stack, models, photos, latency_n, throughput_requests,
                                           workers, clients))
        finally:
            stack.stop()
    return {"rounds": measured, "median": _medians(measured),
            "method": f"{rounds} rounds on one stack, latency in alternating pairs (in-process, "
                      "service); each ratio is the median of the rounds' ratios"}


def _one_round(stack: BenchStack, models: FaceModels, photos: dict[int, dict[str, bytes]], latency_n: int,
               throughput_requests: int, workers: int, clients: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for side, views in photos.items():
        row[f"latency_3x{side}"] = paired_latency(stack, models, views, latency_n)
    first = next(iter(photos))
    inproc_rate = run_pipeline_throughput(workers, first, per_process=max(5, throughput_requests // workers))
    service_rate = measure_throughput(stack, photos[first], throughput_requests, clients)["avatarsPerSecond"]
    row["throughput"] = {"inprocess_avatars_per_s": inproc_rate["avatarsPerSecond"],
                         "service_avatars_per_s": service_rate, "processes": workers,
                         "ratio": round(inproc_rate["avatarsPerSecond"] / service_rate, 2)}
    return row


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per measure, the median over the rounds of each number (ratios included)."""
    out: dict[str, Any] = {}
    for measure in rounds[0]:
        out[measure] = {key: round(statistics.median(r[measure][key] for r in rounds), 2)
                        for key in rounds[0][measure]}
    return out
