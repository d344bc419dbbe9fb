"""``GET /metrics`` (Prometheus text format), and the per-request measurements behind it.

The catalogue of metrics and how gunicorn's processes share them is in ``jobs.metrics``. Here every
request is counted by route template (``/api/avatar/jobs/<avatar_id>``, never the id itself: one
series per route, not per avatar), method and status, and timed to its response's headers (a
download's body streams after that). With ``LOG_FORMAT=json`` the same hook writes one access line
per request, with its request id.

Who may read it: the same callers as the detailed health report, i.e. a caller on this machine or
one with an admin token (``avatar token --admin``); anyone else gets 403. The metrics name no
person, but they show the service's load, error rates and queue backlog, which help an attacker
time an attack; Prometheus sends the admin token (``deploy/monitoring/prometheus.yml``).
"""
from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from api.auth import is_operator
from api.errors import Forbidden
from api.services import services
from celeryconfig import QUEUE_NAMES
from jobs import metrics
from worker.app import message_headers

bp = Blueprint("metrics", __name__)
access_log = logging.getLogger("avatar.access")

# Any other method (a client may send any token) is counted as "other": one series per method seen
# would let a client grow the metrics without bound.
METRICS_PATH = "/metrics"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"


@bp.get(METRICS_PATH)
def scrape() -> Response:
    if not is_operator():
        raise Forbidden("The metrics are for operators: read them from this machine, or send "
                        "'Authorization: Bearer <token>' with a token minted by `avatar token --admin`.")
    body = metrics.exposition([QueueCollector(services())])
    return Response(body, mimetype=None, content_type=metrics.CONTENT_TYPE)


class QueueCollector(Collector):
    """Per queue: messages waiting, and how long the oldest has waited (from the time its sender
    wrote into the message's headers; a queue whose oldest message has none reports no age)."""

    def __init__(self, svc):
        self.redis = svc.health_redis

    def collect(self):
        depth = GaugeMetricFamily(metrics.QUEUE_DEPTH, "Messages waiting in each job queue.", labels=["queue"])
        age = GaugeMetricFamily(metrics.QUEUE_OLDEST_AGE, "Seconds the oldest waiting message of each "
                                "queue has waited.", labels=["queue"])
        try:
            pipe = self.redis.pipeline(transaction=False)
            for queue in QUEUE_NAMES:
                pipe.llen(queue)
                pipe.lindex(queue, -1)  # consumers take from the tail: the oldest message
            answers = pipe.execute()
        except Exception:  # Redis away: health says so; the scrape still gets everything else
            return
        now = time.time()
        for index, queue in enumerate(QUEUE_NAMES):
            waiting, oldest = answers[2 * index], answers[2 * index + 1]
            depth.add_metric([queue], int(waiting))
            sent_at = (message_headers(oldest) or {}).get("sentAt") if oldest else None
            if isinstance(sent_at, (int, float)):
                age.add_metric([queue], max(0.0, now - sent_at))
            elif not waiting:
                age.add_metric([queue], 0.0)
        yield depth
        yield age


def init_app(app: Flask) -> None:
    """Measure every request. Register before the other hooks: a request refused by an earlier
    ``before_request`` (the rate limiter's) must still have its start time."""
    app.before_request(_start)
    app.after_request(_observe)


def _start() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.get("metrics_started")
    seconds = time.perf_counter() - started if started is not None else 0.0
    route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
    method = request.method if request.method in KNOWN_METHODS else "other"
    metrics.HTTP_REQUESTS.labels(route=route, method=method, status=str(response.status_code)).inc()
    metrics.HTTP_DURATION.labels(route=route, method=method).observe(seconds)
    if services().settings.log_json:
        access_log.info("%s %s %d", request.method, request.path, response.status_code, extra={
            "method": request.method, "path": request.path[:1024], "route": route,
            "status": response.status_code, "durationMs": round(seconds * 1000, 3),
            "jobId": _avatar_id(), "remoteAddr": request.remote_addr})
    return response


def _avatar_id() -> str | None:
    avatar_id = g.get("audit_avatar_id") or (request.view_args or {}).get("avatar_id")
    return str(avatar_id) if avatar_id is not None else None
