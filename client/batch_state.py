"""The batch's memory between runs: an append-only JSON-lines file, one event per line.

Each line is flushed and fsynced before the batch goes on, so after a crash or Ctrl-C the file
says, for every subject, at least what the server has already been told:

    {"event": "submitting", "subject": "alice", "key": "<Idempotency-Key>", "inputs": "<sha256>", ...}
    {"event": "accepted",   "subject": "alice", "key": "...", "avatarId": "<id>"}
    {"event": "completed",  "subject": "alice", "avatarId": "<id>", "glb": "out/alice.glb", ...}
    {"event": "failed",     "subject": "alice", "avatarId": "<id>", "code": "no_face",
                            "message": "left: no face found", "permanent": true}

The key is written *before* the POST, so a run killed mid-request re-sends with the same key (the
server then returns the job it already made instead of a second one). A line cut short by a crash
is ignored when the file is read.
"""
from __future__ import annotations

import enum
import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

try:
    import fcntl
except ImportError:  # Windows: no advisory lock, the rest works
    fcntl = None  # type: ignore[assignment]


class StateLocked(Exception):
    """Another batch is using the same state file."""


@dataclass
class SubjectRecord:
    """What the state file knows about one subject (the fold of its events, last one wins)."""

    subject: str
    key: str | None = None
    inputs: str | None = None
    avatar_id: str | None = None
    outcome: dict[str, Any] | None = None  # the "completed" or "failed" event
    submissions: int = 0

    @property
    def status(self) -> str:
        if self.outcome is not None:
            return self.outcome["event"]
        return "accepted" if self.avatar_id else ("submitting" if self.key else "new")


def fold_events(events: list[dict[str, Any]]) -> dict[str, SubjectRecord]:
    """Replay the events in order into one record per subject."""
    records: dict[str, SubjectRecord] = {}
    for event in events:
        name = event.get("subject")
        kind = event.get("event")
        if not isinstance(name, str) or not isinstance(kind, str):
            continue
        record = records.setdefault(name, SubjectRecord(name))
        if kind == "submitting":
            # A new submission (or a retry under a new key) starts the subject over.
            record.key = event.get("key")
            record.inputs = event.get("inputs")
            record.avatar_id = None
            record.outcome = None
            record.submissions += 1
        elif kind == "accepted":
            if event.get("key") == record.key or record.key is None:
                record.avatar_id = event.get("avatarId")
        elif kind in ("completed", "failed"):
            record.outcome = event
            if event.get("avatarId"):
                record.avatar_id = event["avatarId"]
    return records


class Action(str, enum.Enum):
    """What a run does for a subject, given what the state file says."""

    SKIP = "skip"                      # finished: completed with its GLB present, or failed for good
    DOWNLOAD = "download"              # completed, but the GLB file is gone: download it again
    POLL = "poll"                      # accepted earlier: wait for that avatarId
    RESUBMIT_SAME_KEY = "resubmit"     # the POST may or may not have arrived: send it again, same key
    SUBMIT = "submit"                  # nothing (usable) known: a new submission with a new key


@dataclass(frozen=True)
class Plan:
    action: Action
    key: str | None = None
    avatar_id: str | None = None
    reason: str = ""


def plan_subject(record: SubjectRecord | None, inputs: str | None, glb_path: Path,
                 retry_failed: bool = False) -> Plan:
    """Decide what to do with one subject so that nothing finished is submitted again.

    ``inputs`` is the digest of the subject's photos now; when it differs from the one recorded,
    the photos were changed and the subject is made again (under a new key).
    """
    if record is None or record.key is None and record.avatar_id is None:
        return Plan(Action.SUBMIT, reason="new")
    if inputs is not None and record.inputs is not None and inputs != record.inputs:
        return Plan(Action.SUBMIT, reason="photos changed since the last run")
    outcome = record.outcome
    if outcome is not None and outcome["event"] == "completed":
        if glb_path.is_file():
            return Plan(Action.SKIP, record.key, record.avatar_id, "completed earlier")
        return Plan(Action.DOWNLOAD, record.key, record.avatar_id, "completed earlier, GLB missing")
    if outcome is not None and outcome["event"] == "failed":
        if outcome.get("permanent") and not retry_failed:
            return Plan(Action.SKIP, record.key, record.avatar_id, "failed earlier")
        return Plan(Action.SUBMIT, reason="failed earlier, retrying")
    if record.avatar_id:
        return Plan(Action.POLL, record.key, record.avatar_id, "accepted earlier")
    return Plan(Action.RESUBMIT_SAME_KEY, record.key, None, "submitted earlier, no answer recorded")


class BatchState:
    """The state file: read once at the start, then appended to from any thread."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._handle: TextIO | None = None

    def open(self) -> dict[str, SubjectRecord]:
        """Lock the file for this run, read what earlier runs wrote, and get ready to append."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise StateLocked(f"another batch is using {self.path}; wait for it to end "
                                  f"or pass a different --state") from None
        handle.seek(0)
        text = handle.read()
        events = []
        for line in text.splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if isinstance(event, dict):
                events.append(event)
        if text and not text.endswith("\n"):
            handle.write("\n")  # so the next event does not continue a torn line
            handle.flush()
        self._handle = handle
        return fold_events(events)

    def append(self, event: str, subject: str, **fields: Any) -> None:
        """Write one event and make it durable before returning."""
        line = json.dumps({"t": _now(), "event": event, "subject": subject, **fields},
                          ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            if self._handle is None:
                raise RuntimeError("BatchState.open() first")
            self._handle.write(line + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()  # closing releases the lock
                self._handle = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
