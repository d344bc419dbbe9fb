"""Many subjects through one service: bounded concurrency, resumable, one summary line per subject.

``run_batch`` does the work; ``client.batch_cli`` is the command line around it. Each worker thread
takes one subject at a time through submit → wait → download, so at most ``concurrency`` subjects
are in flight. What the server has been told is appended to the state file as it happens (see
``client.batch_state``), which is what makes a rerun skip finished subjects and resume the rest.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from client.avatar_client import AvatarClient
from client.batch_state import Action, BatchState, Plan, SubjectRecord, plan_subject
from client.errors import (ApiError, ClientError, Forbidden, Gone, Interrupted, InvalidRequest, JobCanceled,
                           JobFailed, NotFound, TransportError, Unauthorized, WaitTimeout)
from client.subjects import VIEWS, Subject

# Job error codes that say the service, not the photos, was at fault: worth a new submission.
TRANSIENT_JOB_CODES = frozenset({"internal_error", "timeout", "queue_unavailable", "models_unavailable",
                                 "worker_lost", "stalled"})


@dataclass
class BatchOptions:
    out_dir: Path
    state_path: Path
    concurrency: int = 4
    # New submissions per subject after a failure that was not the photos' fault.
    retries: int = 2
    wait_timeout_s: float = 600.0
    retry_failed: bool = False


@dataclass
class SubjectResult:
    """One summary line."""

    subject: str
    status: str                      # completed | failed | interrupted
    avatarId: str | None = None
    errorCode: str | None = None
    errorMessage: str | None = None
    permanent: bool | None = None    # for failures: True if sending the same photos again cannot help
    glb: str | None = None
    glbBytes: int | None = None
    run: str = "this"                # "earlier" when a previous run finished it
    submissions: int = 0             # POSTs made for it in this run
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchReport:
    results: list[SubjectResult]
    elapsed_s: float
    interrupted: bool = False
    aborted: str | None = None       # why the whole batch stopped (a refused token)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def new_submissions(self) -> int:
        return sum(r.submissions for r in self.results)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 0 if all(r.status == "completed" for r in self.results) else 1


class _Abort(Exception):
    """Every further request would be refused the same way (bad token): stop the batch."""


def run_batch(client: AvatarClient, subjects: list[Subject], options: BatchOptions,
              stop_event: threading.Event, on_result: Callable[[SubjectResult], None] | None = None,
              on_skipped: Callable[[list[SubjectResult]], None] | None = None,
              on_stop: Callable[[], None] | None = None) -> BatchReport:
    """Make an avatar of every subject; returns when all are done, or soon after ``stop_event`` is set.

    ``on_skipped(results)`` is called once with the subjects finished by earlier runs,
    ``on_result`` after each subject this run handles (from the calling thread).
    Ctrl-C (KeyboardInterrupt in the calling thread) or setting ``stop_event`` stops the batch: no
    new subject is started, waits end at once, requests in flight finish and are recorded (a second
    Ctrl-C stops waiting for them), and every subject not finished is left for the next run.
    """
    start = time.monotonic()
    state = BatchState(options.state_path)
    records = state.open()
    try:
        return _run(client, subjects, options, stop_event, state, records, on_result, on_skipped, on_stop,
                    start)
    finally:
        state.close()


def _run(client, subjects, options, stop_event, state, records, on_result, on_skipped, on_stop,
         start) -> BatchReport:
    results: dict[str, SubjectResult] = {}
    todo: "queue.Queue[Subject]" = queue.Queue()
    for subject in subjects:
        earlier = _finished_earlier(subject, records.get(subject.name), options)
        if earlier is not None:
            results[subject.name] = earlier
        else:
            todo.put(subject)
    if on_skipped:
        on_skipped(list(results.values()))

    done: "queue.Queue[SubjectResult]" = queue.Queue()
    abort: list[str] = []

    def worker() -> None:
        while not stop_event.is_set():
            try:
                subject = todo.get_nowait()
            except queue.Empty:
                return
            try:
                result = _process(client, subject, records.get(subject.name), options, state)
            except _Abort as exc:
                abort.append(str(exc))
                stop_event.set()
                result = SubjectResult(subject.name, "interrupted", errorMessage=str(exc))
            except Interrupted:
                result = SubjectResult(subject.name, "interrupted")
            except Exception as exc:  # a bug must not hang the batch: report it as this subject's failure
                result = SubjectResult(subject.name, "failed", errorCode="client_error",
                                       errorMessage=f"{type(exc).__name__}: {exc}", permanent=False)
            done.put(result)

    threads = [threading.Thread(target=worker, name=f"batch-{i}", daemon=True)
               for i in range(max(1, min(options.concurrency, todo.qsize())))]
    for thread in threads:
        thread.start()
    # The calling thread only collects, so it stays free to take Ctrl-C.
    interrupts = 0
    while any(t.is_alive() for t in threads) or not done.empty():
        try:
            try:
                result = done.get(timeout=0.1)
            except queue.Empty:
                continue
            results[result.subject] = result
            if on_result:
                on_result(result)
        except KeyboardInterrupt:
            interrupts += 1
            stop_event.set()
            if interrupts >= 2:
                break  # the threads are daemons; what they had not recorded, the next run redoes
            if on_stop:
                on_stop()

    ordered = []
    for subject in subjects:
        ordered.append(results.get(subject.name) or SubjectResult(subject.name, "interrupted"))
    interrupted = stop_event.is_set() and not abort
    return BatchReport(ordered, time.monotonic() - start, interrupted, abort[0] if abort else None)


def _finished_earlier(subject: Subject, record: SubjectRecord | None,
                      options: BatchOptions) -> SubjectResult | None:
    """The earlier run's result if this subject needs nothing more (its photos unchanged)."""
    if subject.problem or record is None or record.outcome is None:
        return None
    inputs = photos_digest(subject) if record.inputs else None
    plan = plan_subject(record, inputs, glb_path(options.out_dir, subject), options.retry_failed)
    if plan.action is not Action.SKIP:
        return None
    outcome = record.outcome
    return SubjectResult(subject.name, outcome["event"], avatarId=record.avatar_id,
                         errorCode=outcome.get("code"), errorMessage=outcome.get("message"),
                         permanent=outcome.get("permanent"), glb=outcome.get("glb"),
                         glbBytes=outcome.get("glbBytes"), run="earlier",
                         timings=dict(outcome.get("timings") or {}))


def _process(client: AvatarClient, subject: Subject, record: SubjectRecord | None,
             options: BatchOptions, state: BatchState) -> SubjectResult:
    """One subject, start to end (or to Ctrl-C)."""
    started = time.monotonic()
    result = SubjectResult(subject.name, "failed")
    if subject.problem:
        result.errorCode, result.errorMessage, result.permanent = "invalid_subject", subject.problem, True
        return result
    try:
        photos = {view: subject.photos[view].read_bytes() for view in VIEWS}
    except OSError as exc:
        result.errorCode, result.errorMessage = "unreadable_photo", f"cannot read {exc.filename}: {exc.strerror}"
        result.permanent = True
        return result
    inputs = _digest(photos)
    out = glb_path(options.out_dir, subject)
    plan = plan_subject(record, inputs, out, options.retry_failed)
    failures = 0  # service-side failures and unreachable spells; bounded by options.retries

    while True:
        try:
            if plan.action in (Action.SUBMIT, Action.RESUBMIT_SAME_KEY):
                key = plan.key if plan.action is Action.RESUBMIT_SAME_KEY else str(uuid.uuid4())
                if plan.action is Action.SUBMIT:
                    state.append("submitting", subject.name, key=key, inputs=inputs)
                t = time.monotonic()
                result.submissions += 1
                submission = client.submit(photos["front"], photos["left"], photos["right"], idempotency_key=key)
                result.timings["submitMs"] = _ms(t)
                state.append("accepted", subject.name, key=key, avatarId=submission.avatar_id)
                plan = Plan(Action.POLL, key, submission.avatar_id)
            result.avatarId = plan.avatar_id
            if plan.action is Action.POLL:
                t = time.monotonic()
                final = client.wait(plan.avatar_id, options.wait_timeout_s)
                result.timings["waitMs"] = _ms(t)
                if "total" in final.timings:
                    result.timings["serverTotalMs"] = final.timings["total"]
            t = time.monotonic()
            client.download(plan.avatar_id, out)
            result.timings["downloadMs"] = _ms(t)
            result.status, result.glb, result.glbBytes = "completed", str(out), out.stat().st_size
            result.timings["totalMs"] = _ms(started)
            state.append("completed", subject.name, avatarId=plan.avatar_id, glb=str(out),
                         glbBytes=result.glbBytes, timings=result.timings)
            return result
        except JobFailed as exc:
            permanent = exc.code not in TRANSIENT_JOB_CODES
            if not permanent and failures < options.retries:
                failures += 1
                plan = Plan(Action.SUBMIT, reason=f"{exc.code}, retrying")
                continue
            return _failed(state, result, started, exc.avatar_id or plan.avatar_id, exc.code, exc.message, permanent)
        except JobCanceled as exc:
            return _failed(state, result, started, exc.avatar_id, "canceled",
                           "the avatar was canceled on the server", True)
        except InvalidRequest as exc:
            return _failed(state, result, started, None, "invalid_photos",
                           describe_refusal(exc, subject.photos), True)
        except (Unauthorized, Forbidden) as exc:
            raise _Abort(f"the server refused the request ({exc.status}): {exc.message}") from exc
        except (NotFound, Gone) as exc:
            # The recorded avatar was deleted (or its file expired): make it again under a new key.
            if failures < options.retries:
                failures += 1
                plan = Plan(Action.SUBMIT, reason="the earlier avatar is gone")
                continue
            return _failed(state, result, started, plan.avatar_id, "gone", exc.message, False)
        except (TransportError, ApiError, WaitTimeout) as exc:
            # The service is unreachable, overloaded or slow. The same step is repeated (same key, same
            # avatarId); if it still fails, nothing final is recorded, so the next run resumes it.
            if failures < options.retries:
                failures += 1
                client.pause(min(30.0, 2.0 * 2 ** failures))
                continue
            result.errorCode = "timeout" if isinstance(exc, WaitTimeout) else "unreachable"
            result.errorMessage = getattr(exc, "message", None) or str(exc)
            result.permanent = False
            result.timings["totalMs"] = _ms(started)
            return result
        except Interrupted:
            raise  # Ctrl-C: not this subject's failure; the next run resumes it
        except ClientError as exc:  # e.g. the download was not a GLB
            result.errorCode, result.errorMessage, result.permanent = "client_error", str(exc), False
            result.timings["totalMs"] = _ms(started)
            return result


def _failed(state: BatchState, result: SubjectResult, started: float, avatar_id: str | None,
            code: str, message: str, permanent: bool) -> SubjectResult:
    result.avatarId = avatar_id or result.avatarId
    result.errorCode, result.errorMessage, result.permanent = code, message, permanent
    result.timings["totalMs"] = _ms(started)
    state.append("failed", result.subject, avatarId=result.avatarId, code=code, message=message,
                 permanent=permanent, timings=result.timings)
    return result


def describe_refusal(exc: InvalidRequest, photos: Mapping[str, Path]) -> str:
    """"Image validation failed: left photo subjects/ann/left.jpg: Image too small…", naming the
    file each refused view came from."""
    bad = [f"{view} photo {photos[view]}: {error}" if view in photos else f"{view}: {error}"
           for view, error in exc.refusals().items()]
    return f"{exc.message}: {'; '.join(bad)}" if bad else exc.message


def glb_path(out_dir: Path, subject: Subject) -> Path:
    return Path(out_dir) / f"{subject.output_stem}.glb"


def photos_digest(subject: Subject) -> str | None:
    try:
        return _digest({view: subject.photos[view].read_bytes() for view in VIEWS})
    except (OSError, KeyError):
        return None


def _digest(photos: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for view in VIEWS:
        h.update(view.encode() + b"\0" + len(photos[view]).to_bytes(8, "big") + photos[view])
    return h.hexdigest()


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 1)


# -- the summary file ----------------------------------------------------------------------------

SUMMARY_CSV_COLUMNS = ("subject", "status", "avatarId", "errorCode", "errorMessage", "permanent", "glb",
                       "glbBytes", "run", "submissions", "submitMs", "waitMs", "downloadMs", "totalMs",
                       "serverTotalMs")


def write_summary(path: Path, results: list[SubjectResult]) -> None:
    """JSON lines (one object per subject), or CSV when ``path`` ends in ``.csv``; replaced atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            if path.suffix.lower() == ".csv":
                writer = csv.DictWriter(out, SUMMARY_CSV_COLUMNS, extrasaction="ignore")
                writer.writeheader()
                for r in results:
                    row: dict[str, Any] = {**asdict(r), **r.timings}
                    writer.writerow(row)
            else:
                for r in results:
                    out.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
