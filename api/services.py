"""The clients and stores one API process uses, built once in ``create_app``."""
from __future__ import annotations

from dataclasses import dataclass

import pymongo
import redis
from celery import Celery
from flask import current_app

from jobs.audit import AuditLog
from jobs.events import JobEvents, WorkerRegistry
from jobs.files import FileStore
from jobs.settings import Settings
from jobs.store import JobStore, connect
from worker.app import create_celery

# Health must answer within a second even when a dependency is down.
HEALTH_TIMEOUT_S = 0.4


@dataclass
class Services:
    settings: Settings
    store: JobStore
    files: FileStore
    events: JobEvents
    workers: WorkerRegistry
    celery: Celery
    redis: redis.Redis
    audit: AuditLog
    # Short-timeout clients for the health check only.
    health_mongo: pymongo.MongoClient
    health_redis: redis.Redis

    @classmethod
    def build(cls, settings: Settings) -> "Services":
        client = redis.Redis.from_url(settings.broker_url, socket_timeout=10, socket_connect_timeout=2)
        timeout_ms = int(HEALTH_TIMEOUT_S * 1000)
        store = JobStore.from_settings(settings)
        return cls(
            settings=settings,
            store=store,
            files=FileStore.from_settings(settings),
            events=JobEvents(client),
            workers=WorkerRegistry(client, settings.worker_heartbeat_ttl_s),
            celery=create_celery(settings),
            redis=client,
            audit=AuditLog(store.db, settings.audit_retention_days),
            health_mongo=connect(settings, server_selection_timeout_ms=timeout_ms),
            health_redis=redis.Redis.from_url(settings.broker_url, socket_timeout=HEALTH_TIMEOUT_S,
                                              socket_connect_timeout=HEALTH_TIMEOUT_S),
        )


def services() -> Services:
    """The current app's services (inside a request)."""
    return current_app.extensions["avatar"]
