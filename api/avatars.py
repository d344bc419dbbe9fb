"""The avatar resource: generate, info, download, delete, list."""
from __future__ import annotations

import logging
import re
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait

from flask import Blueprint, Response, request, send_file

from api import audit, idempotency, timing
from api.auth import current_owner, require_owner
from api.bodies import accepted_body, completed_body, info_body, list_item, ok, status_url
from api.errors import BadRequest, Conflict, Gone, ServiceUnavailable, Unprocessable
from api.lookup import load_job
from api.multipart import read_form
from api.services import Services, services
from api.uploads import Upload, validate_uploads
from jobs.events import FinishedWait
from jobs.store import Job, JobNotFound, JobStatus, TransitionError
from jobs.webhooks import CallbackRefused, check_url
from pipeline import MESH_KINDS
from worker.app import enqueue_job

log = logging.getLogger(__name__)

bp = Blueprint("avatars", __name__, url_prefix="/api/avatar")

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


@bp.post("/generate")
def generate() -> Response:
    """Validate, store, record, enqueue; with ``Prefer: wait=N``, wait up to N s for the result."""
    svc = services()
    owner = current_owner()
    wait_s = prefer_wait_seconds(request.headers.get("Prefer"), svc.settings.max_wait_s)
    key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    with timing.step("parse"):
        parts = read_form(request.stream, request.content_type, svc.settings.max_image_bytes)
    claim = None
    if key is not None:
        with timing.step("idempotency"):
            claim = idempotency.claim(svc.redis, key, owner, parts, svc.settings.idempotency_ttl_s)
    if isinstance(claim, idempotency.Replay):
        return _replay(svc, claim.avatar_id, wait_s)
    try:
        job, waiting = _submit(svc, owner, parts, wait_s)
    except BaseException:
        if claim is not None:
            claim.release()  # nothing was queued: a retry with this key starts afresh
        raise
    if claim is not None:
        claim.complete(job.id)
    return _respond(job, waiting, wait_s)


def _submit(svc: Services, owner: str | None, parts, wait_s: int) -> tuple[Job, FinishedWait | None]:
    """Validate, store, record and queue one job; subscribed to its end when ``wait_s``."""
    with timing.step("validate"):
        mesh = _mesh_kind(parts)
        uploads = validate_uploads(parts, svc.settings)
        callback_url = _callback_url(parts, svc.settings.webhook_allow_private)

    job_id = str(uuid.uuid4())
    audit.note_avatar(job_id)
    # The record exists before the job is queued, so a worker never gets an id it cannot find.
    job, syncing = _store_and_record(svc, job_id, owner, uploads, callback_url, mesh)
    with timing.step("enqueue"):
        waiting = _enqueue_or_fail(svc, job_id, listen=bool(wait_s), mesh=mesh)
    with timing.step("sync"):
        _wait_until_durable(svc, job_id, syncing, waiting)
    return job, waiting


def _store_and_record(svc: Services, job_id: str, owner: str | None, uploads: dict[str, Upload],
                      callback_url: str | None, mesh: str) -> tuple[Job, list[Future[None]]]:
    """Write the photos and insert the record at the same time; both have succeeded when this
    returns. If either fails the other is undone, so no job is left without its photos.

    The photos are then written (any process can read them), not yet surely on disk: the futures
    returned end when each one has been synced.
    """
    written, syncing = _save_photos_meanwhile(svc, job_id, {view: upload.data for view, upload in uploads.items()})
    try:
        with timing.step("record"):
            job = svc.store.create(
                job_id, owner=owner, uploads={view: u.describe() for view, u in uploads.items()},
                client={"ip": request.remote_addr, "userAgent": request.headers.get("User-Agent")},
                callback_url=callback_url, mesh=mesh,
            )
    except BaseException:
        wait(syncing)  # none is still writing while the job is undone
        svc.files.discard_inputs(job_id)
        raise
    wait(written)
    try:
        timing.record("store", max(future.result() for future in written))
    except BaseException as exc:
        wait(syncing)
        _forget_record(svc, job_id)
        if isinstance(exc, OSError):  # disk full, volume gone, ...
            log.error("could not store the photos of job %s: %s", job_id, exc)
            raise ServiceUnavailable(PHOTOS_NOT_STORED, headers={"Retry-After": "30"}) from None
        raise
    return job, syncing


PHOTOS_NOT_STORED = "The photos could not be stored, so the avatar was not started; please retry in a minute."

# Writes the photos, each in its own thread, while the request's thread inserts the record: the
# writers wait on the disk, the insert on the store, so together they take as long as the slowest.
_photo_writer = ThreadPoolExecutor(max_workers=12, thread_name_prefix="photo-writer")


def _save_photos_meanwhile(svc: Services, job_id: str,
                           images: dict[str, bytes]) -> tuple[list[Future[float]], list[Future[None]]]:
    """Start storing the photos. Returns a future per photo that gives the ms since the start when
    it was written, and one that ends when it is also synced to disk.

    The sync (fsync) comes after the job is queued, and the answer after the sync: the client only
    hears that a job was accepted once its photos are safe, but the worker does not wait for the
    disk (it reads them from the page cache). Syncing first kept every job ~1.5 ms longer at
    3x1024² and ~7.5 ms at 3x4096² here (the store step: 5.5 → 3.9 ms, 14.1 → 6.6 ms).
    """
    started = time.perf_counter()

    def save(view: str, data: bytes, written: Future[float]) -> None:
        try:
            svc.files.save_upload(job_id, view, data, sync=False)
        except BaseException as exc:
            written.set_exception(exc)
            return
        written.set_result((time.perf_counter() - started) * 1000)
        svc.files.sync_upload(job_id, view)

    written: dict[str, Future[float]] = {view: Future() for view in images}
    syncing = [_photo_writer.submit(save, view, data, written[view]) for view, data in images.items()]
    return list(written.values()), syncing


def _wait_until_durable(svc: Services, job_id: str, syncing: list[Future[None]],
                        waiting: FinishedWait | None) -> None:
    """Return once every photo is synced. If one could not be, fail the job and answer 503 as for
    a failed write; unless the job has ended meanwhile (its photos were read: nothing was lost)."""
    wait(syncing)
    errors = [future.exception() for future in syncing if future.exception() is not None]
    if not errors:
        return
    log.error("could not sync the photos of job %s to disk: %s", job_id, errors[0])
    try:
        svc.store.fail(job_id, "storage_unavailable", "The photos could not be stored; nothing was generated.")
    except (TransitionError, JobNotFound):
        return
    if waiting is not None:
        waiting.close()
    svc.files.discard_inputs(job_id)
    raise ServiceUnavailable(PHOTOS_NOT_STORED, {"avatarId": job_id, "status": "failed"}, {"Retry-After": "30"})


def _forget_record(svc: Services, job_id: str) -> None:
    """The photos could not be stored: remove the record too, so no queued job without photos stays."""
    svc.files.discard_inputs(job_id)
    try:
        svc.store.delete(job_id)
    except Exception as exc:  # the reconciler ends it: its preprocess finds no photos
        log.error("could not remove the record of job %s whose photos were not stored: %s", job_id, exc)


def _replay(svc: Services, job_id: str, wait_s: int) -> Response:
    """The answer to a repeated Idempotency-Key: the original job, as it is now (waited for under
    ``Prefer: wait`` like a first request)."""
    job = load_job(job_id)
    waiting = None
    if wait_s and not job.status.is_terminal():
        waiting = svc.events.subscribe(job_id)
        job = load_job(job_id)  # it may have ended before the subscription started
        if job.status.is_terminal():
            waiting.close()
            waiting = None
    response = _respond(job, waiting, wait_s)
    response.headers[idempotency.REPLAYED_HEADER] = "true"
    return response


def _respond(job: Job, waiting: FinishedWait | None, wait_s: int) -> Response:
    """202 with where to poll; or, after waiting up to ``wait_s``, the finished job's answer."""
    job_id = job.id
    if waiting is None and wait_s and job.status.is_terminal():
        return _finished_response(job, {"Preference-Applied": f"wait={wait_s}"})
    try:
        if waiting is None:
            return ok(accepted_body(job), 202, {"Location": status_url(job_id)})
        with timing.step("wait"):
            job = wait_for_end(job_id, waiting, wait_s)
        if waiting.wake_ms is not None:
            timing.record("notify", waiting.wake_ms)
    finally:
        if waiting is not None:
            waiting.close()

    return _finished_response(job, {"Preference-Applied": f"wait={wait_s}"})


def _finished_response(job: Job, headers: dict[str, str]) -> Response:
    job_id = job.id
    if job.status is JobStatus.COMPLETED:
        return ok(completed_body(job), 200, headers)
    if job.status is JobStatus.FAILED:
        raise Unprocessable(job.error["message"], {"avatarId": job_id, "status": job.status.value,
                                                   **job.error}, headers)
    if job.status is JobStatus.CANCELED:
        raise Gone("The avatar was canceled before it was finished.", {"avatarId": job_id})
    return ok(accepted_body(job), 202, {"Location": status_url(job_id), **headers})


def _mesh_kind(parts) -> str:
    """The optional ``mesh`` form field: ``head`` (the default: the whole head) or ``face`` (the
    468-vertex face mask in the landmark model's vertex order)."""
    part = parts.get("mesh")
    if part is None:
        return MESH_KINDS[0]
    value = part.data.decode("utf-8", "replace").strip()
    if part.filename is not None or value not in MESH_KINDS:
        shown = "a file" if part.filename is not None else repr(value[:40])
        raise BadRequest(f"The mesh field must be {' or '.join(repr(k) for k in MESH_KINDS)} (got {shown}): 'head' "
                         "for the whole head, 'face' for the face mask alone; or leave it out for the head.",
                         {"field": "mesh", "allowed": list(MESH_KINDS)})
    return value


def _callback_url(parts, allow_private: bool) -> str | None:
    """The optional ``callbackUrl`` form field (a plain field, not a file): checked here for shape and
    literal addresses; its host is resolved and checked again when the webhook is sent."""
    part = parts.get("callbackUrl")
    if part is None or part.filename is not None:
        return None
    url = part.data.decode("utf-8", "replace").strip()
    if not url:
        return None
    try:
        check_url(url, allow_private)
    except CallbackRefused as exc:
        raise BadRequest(f"{exc}. Send a public http(s) URL that accepts a POST when the avatar is "
                         "done, or leave callbackUrl out.", {"field": "callbackUrl"}) from None
    return url


def _enqueue_or_fail(svc: Services, job_id: str, listen: bool, mesh: str = "head") -> FinishedWait | None:
    """Queue the job (subscribed to its end first when ``listen``: it cannot then end unseen, and
    the record need not be read before the notification). If Redis is down, end the job ``failed``
    and answer 503: no job is left ``queued`` with nothing in the queue."""
    waiting = None
    try:
        waiting = svc.events.subscribe(job_id) if listen else None
        enqueue_job(svc.celery, job_id, mesh)
        return waiting
    except Exception as exc:
        if waiting is not None:
            waiting.close()
        log.error("could not queue job %s: %s", job_id, exc)
        svc.store.fail(job_id, "queue_unavailable", "The job queue was unreachable; nothing was generated.")
        svc.files.discard_inputs(job_id)
        raise ServiceUnavailable("The job queue is unreachable, so the avatar was not started; "
                                 "please retry in a minute.", headers={"Retry-After": "30"}) from None


@bp.get("/info/<avatar_id>")
def info(avatar_id: str) -> Response:
    return ok(info_body(load_job(avatar_id)))


@bp.get("/download/<avatar_id>")
def download(avatar_id: str) -> Response:
    """The GLB, once the job has completed."""
    svc = services()
    job = load_job(avatar_id)
    ensure_downloadable(job)
    path = svc.files.result_path(job.id)
    if not path.exists():
        raise Gone("The avatar's file is no longer stored; generate it again.", {"avatarId": job.id})
    response = send_file(path, mimetype="model/gltf-binary", max_age=0, conditional=False)
    response.headers["Content-Disposition"] = f'attachment; filename="{job.result["filename"]}"'
    svc.store.count_downloads(job.id)
    return response


# Only an id-shaped segment matches, so /api/avatar/health is not also "DELETE an avatar named
# health" (its 405 would otherwise offer DELETE).
@bp.delete("/<uuid:avatar_id>")
def delete(avatar_id: uuid.UUID) -> Response:
    """Cancel if still running, then remove the record and every file."""
    svc = services()
    job = load_job(str(avatar_id))
    if not job.status.is_terminal():
        try:
            svc.store.cancel(job.id)
        except Exception as exc:  # it ended meanwhile; deleting is what was asked either way
            log.info("job %s ended before it could be canceled: %s", job.id, exc)
    svc.store.delete(job.id)
    svc.files.discard_all(job.id)
    svc.events.publish_finished(job.id, "deleted")
    return ok({"avatarId": job.id, "deleted": True})


@bp.get("")
def list_avatars() -> Response:
    """The caller's avatars, newest first: ``?page=1&limit=20``."""
    svc = services()
    owner = require_owner()
    page = _int_arg("page", 1, minimum=1)
    limit = _int_arg("limit", svc.settings.default_page_size, minimum=1, maximum=svc.settings.max_page_size)
    jobs, total = svc.store.list_for_owner(owner, skip=(page - 1) * limit, limit=limit)
    return ok({"avatars": [list_item(job) for job in jobs], "page": page, "limit": limit, "total": total})


def ensure_downloadable(job: Job) -> None:
    """409 while running, 422 if it failed, 410 if canceled."""
    if job.status is JobStatus.COMPLETED:
        return
    if job.status is JobStatus.FAILED:
        raise Unprocessable(f"The avatar failed, so there is nothing to download: {job.error['message']}",
                            {"avatarId": job.id, "status": job.status.value, **job.error})
    if job.status is JobStatus.CANCELED:
        raise Gone("The avatar was canceled, so there is nothing to download.",
                   {"avatarId": job.id, "status": job.status.value})
    raise Conflict(f"The avatar is not ready yet (status: {job.status.value}); poll the statusUrl "
                   "until the status is 'completed', then download.",
                   {"avatarId": job.id, "status": job.status.value, "progress": job.progress,
                    "statusUrl": status_url(job.id)})


def prefer_wait_seconds(prefer: str | None, maximum: int) -> int:
    """``Prefer: wait=N`` (RFC 7240) as seconds, capped at ``maximum``; 0 when absent."""
    match = _PREFER_WAIT.search(prefer or "")
    return min(int(match.group(1)), maximum) if match else 0


def wait_for_end(job_id: str, waiting: FinishedWait, timeout_s: float) -> Job:
    """The job once it has ended, or as it is after ``timeout_s``; ``waiting`` was subscribed
    before the job was queued, so the record is only read when a notification arrives."""
    svc = services()
    latest: dict[str, Job] = {}

    def ended() -> bool:
        latest["job"] = svc.store.get(job_id)
        return latest["job"].status.is_terminal()

    waiting.wait(ended, timeout_s)
    return latest["job"]


def _int_arg(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"Query parameter '{name}' must be a whole number, got {raw!r}.") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise BadRequest(f"Query parameter '{name}' must be {bound}, got {value}.")
    return value
