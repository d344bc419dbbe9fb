"""The Celery app. The worker runs ``celery -A worker.app worker``; the API uses it only to send.

Sending goes by task name, so the API never imports the tasks (nor the pipeline and its models).
"""
from __future__ import annotations

import base64
import json
import time
from typing import Any

from celery import Celery

import celeryconfig
from jobs.settings import Settings

PREPROCESS = "avatar.preprocess"
INFERENCE = "avatar.inference"
EXPORT = "avatar.export"


def create_celery(settings: Settings | None = None, *, with_tasks: bool = False) -> Celery:
    """A Celery app configured from ``celeryconfig`` plus ``settings`` (the environment by default)."""
    celery = Celery("avatar", include=["worker.tasks"] if with_tasks else [])
    celery.config_from_object(celeryconfig)
    if settings is not None:
        celery.conf.update(celeryconfig.settings_dependent(settings))
    return celery


def enqueue_job(celery: Celery, job_id: str) -> None:
    """Queue the first stage of ``job_id``. Each stage queues the next as soon as its work is done,
    then records its own end (see ``worker.tasks.run_stage``); every message carries only the job id."""
    enqueue_stage(celery, PREPROCESS, job_id)


def enqueue_stage(celery: Celery, task_name: str, job_id: str, **kwargs: Any) -> None:
    """Send one stage's task; ``celeryconfig.task_routes`` puts it on the cpu or gpu queue.

    One message per stage instead of a Celery chain: a chain carries the remaining signatures in
    every message and took ~0.5 ms more to build and send (1.5 vs 0.95 ms from the API), and a
    stage that fails or finds its job canceled simply queues nothing. The message's ``sentAt``
    header (unix seconds) measures its wait in the queue (``jobs.metrics``).
    """
    celery.send_task(task_name, args=(job_id,), kwargs=kwargs or None, headers={"sentAt": time.time()})


def message_headers(raw: bytes) -> dict[str, Any] | None:
    """The headers of one of our messages as it waits in a Redis queue (kombu's JSON envelope)."""
    try:
        headers = json.loads(raw)["headers"]
    except (ValueError, KeyError, TypeError):
        return None
    return headers if isinstance(headers, dict) else None


def message_job(raw: bytes) -> tuple[str, str] | None:
    """(task name, job id) of one of our messages as it waits in a Redis queue (kombu's JSON
    envelope, body base64-encoded ``[args, kwargs, embed]``), or None if it is not one of ours."""
    try:
        message = json.loads(raw)
        task = message["headers"]["task"]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return task, str(args[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


# The worker's app: `celery -A worker.app worker -Q cpu,gpu`.
app = create_celery(with_tasks=True)
