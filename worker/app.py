"""The Celery app. The worker runs ``celery -A worker.app worker``; the API uses it only to send.

Sending goes by task name, so the API never imports the tasks (nor the pipeline and its models).
"""
from __future__ import annotations

from celery import Celery, chain

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
    """Queue the three stages for ``job_id``; each passes the id on to the next."""
    chain(
        celery.signature(PREPROCESS, args=(job_id,)),
        celery.signature(INFERENCE),
        celery.signature(EXPORT),
    ).apply_async()


# The worker's app: `celery -A worker.app worker -Q cpu,gpu`.
app = create_celery(with_tasks=True)
