"""The audit log: one MongoDB document per API operation, successful or not.

    {time, operation, method, path, avatarId, userId, ip, userAgent, success, status, errorCode,
     requestId, durationMs}

Queried by user (``userId`` + ``time`` index) and by time (the ``time`` index, which is also the TTL
index that deletes records ``AUDIT_RETENTION_DAYS`` after they were written). No photo, token or
request body is ever recorded.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pymongo
import pymongo.errors
from pymongo.collection import Collection
from pymongo.database import Database

log = logging.getLogger(__name__)

TTL_INDEX = "time_ttl"
# MongoDB's "an index with this name exists with other options" (the retention changed).
_INDEX_OPTIONS_CONFLICT = {85, 86}


class AuditLog:
    """The ``audit`` collection."""

    def __init__(self, db: Database, retention_days: int):
        self.records: Collection = db["audit"]
        self.retention_days = retention_days

    def ensure_indexes(self) -> None:
        """Indexes for queries by user and by time; the time index expires old records."""
        ttl = self.retention_days * 86400
        try:
            self.records.create_index([("time", pymongo.ASCENDING)], name=TTL_INDEX, expireAfterSeconds=ttl)
        except pymongo.errors.OperationFailure as exc:
            if exc.code not in _INDEX_OPTIONS_CONFLICT:
                raise
            # AUDIT_RETENTION_DAYS changed since the index was made: change it in place.
            self.records.database.command("collMod", self.records.name,
                                          index={"name": TTL_INDEX, "expireAfterSeconds": ttl})
        self.records.create_index([("userId", pymongo.ASCENDING), ("time", pymongo.DESCENDING)],
                                  name="userId_time")
        self.records.create_index([("avatarId", pymongo.ASCENDING), ("time", pymongo.DESCENDING)],
                                  name="avatarId_time")
        self.records.create_index([("requestId", pymongo.ASCENDING)], name="requestId")
        # Records that carry their own end (anonymous refusals, their summaries) go then.
        self.records.create_index([("expiresAt", pymongo.ASCENDING)], name="expiresAt_ttl", expireAfterSeconds=0)

    def record(self, entries: list[Mapping[str, Any]]) -> None:
        """Write records in one round trip; one that fails does not keep out the others.
        (``time`` must be a datetime: the TTL index only expires dates.)"""
        self.records.insert_many([dict(entry) for entry in entries], ordered=False)

    def for_user(self, user_id: str | None, since: datetime | None = None, until: datetime | None = None,
                 limit: int = 100) -> list[dict[str, Any]]:
        """``user_id``'s operations (None: anonymous ones), newest first."""
        return self._find({"userId": user_id, **_time_range(since, until)}, limit)

    def between(self, since: datetime | None = None, until: datetime | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
        """Every operation in a time range, newest first."""
        return self._find(_time_range(since, until), limit)

    def for_avatar(self, avatar_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return self._find({"avatarId": avatar_id}, limit)

    def for_request(self, request_id: str) -> dict[str, Any] | None:
        """The record of one request (its ``X-Request-Id`` response header)."""
        return self.records.find_one({"requestId": request_id}, {"_id": 0})

    def _find(self, query: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
        cursor = self.records.find(query, {"_id": 0}).sort("time", pymongo.DESCENDING).limit(limit)
        return list(cursor)


def _time_range(since: datetime | None, until: datetime | None) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    if since is not None:
        bounds["$gte"] = since
    if until is not None:
        bounds["$lt"] = until
    return {"time": bounds} if bounds else {}
