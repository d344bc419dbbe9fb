"""What measuring a request costs: the API's metrics hooks (``api.metrics``) in multiprocess mode,
as under gunicorn, against the same Flask route without them, in alternating rounds; the bare
counter + histogram update; and one scrape's exposition.

``python -m bench.metrics_cost`` prints one JSON. It sets its own PROMETHEUS_MULTIPROC_DIR (a
temporary folder) before anything imports prometheus_client.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from types import SimpleNamespace

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="avatar-metrics-bench-"))

from flask import Flask  # noqa: E402  (after the folder is set)

from api import metrics as api_metrics  # noqa: E402
from jobs import metrics  # noqa: E402
from jobs.settings import Settings  # noqa: E402

ROUTE = "/api/avatar/jobs/<avatar_id>"


def _client(measured: bool):
    app = Flask("metrics-cost")
    app.extensions["avatar"] = SimpleNamespace(settings=Settings())  # all the hook reads of the services
    if measured:
        api_metrics.init_app(app)
    app.add_url_rule(ROUTE, "status", lambda avatar_id: {"success": True, "data": {"avatarId": avatar_id}})
    return app.test_client()


def _per_request_us(client, requests: int) -> float:
    start = time.perf_counter()
    for _ in range(requests):
        client.get("/api/avatar/jobs/x")
    return (time.perf_counter() - start) / requests * 1e6


def main(rounds: int = 7, requests: int = 3000) -> dict:
    plain, measured = _client(False), _client(True)
    for client in (plain, measured):
        _per_request_us(client, 300)  # warm up
    without, with_ = [], []
    for _ in range(rounds):
        without.append(_per_request_us(plain, requests))
        with_.append(_per_request_us(measured, requests))
    updates = 100_000
    start = time.perf_counter()
    for _ in range(updates):
        metrics.HTTP_REQUESTS.labels(route=ROUTE, method="GET", status="200").inc()
        metrics.HTTP_DURATION.labels(route=ROUTE, method="GET").observe(0.01)
    update_us = (time.perf_counter() - start) / updates * 1e6
    start = time.perf_counter()
    for _ in range(50):
        body = metrics.exposition()
    return {
        "requestUsWithoutMetrics": round(statistics.median(without), 1),
        "requestUsWithMetrics": round(statistics.median(with_), 1),
        "metricsUsPerRequest": round(statistics.median(w - o for w, o in zip(with_, without)), 1),
        "counterAndHistogramUpdateUs": round(update_us, 2),
        "scrapeMsOneProcess": round((time.perf_counter() - start) / 50 * 1000, 2),
        "scrapeBytes": len(body),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
