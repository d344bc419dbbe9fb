"""The avatar resource: generate, info, download, delete, list."""
from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from flask import Blueprint, Response, g, redirect, request
from gunicorn.http.errors import ParseException

from api import audit, idempotency, timing
from api.admission import check_room_for_a_job
from api.auth import current_owner, require_owner
from api.bodies import accepted_body, completed_body, info_body, list_item, ok, status_url
from api.errors import BadRequest, Conflict, Gone, RequestTimeout, ServiceUnavailable, Unprocessable
from api.lookup import load_job
from api.multipart import read_form, upload_deadline
from api.sending import send_stored_file
from api.services import Services, services
from api.uploads import Upload, validate_uploads
from api.waiting import await_end, prefer_wait_seconds, wait_for_end
from jobs import metrics
from jobs.events import FinishedWait
from jobs.store import Job, JobNotFound, JobStatus, TransitionError
from jobs.webhooks import CallbackRefused, check_url
from pipeline import MESH_KINDS
from pipeline.texture import check_texture_size
from worker.app import enqueue_job

log = logging.getLogger(__name__)

bp = Blueprint("avatars", __name__, url_prefix="/api/avatar")



@bp.post("/generate")
def generate() -> Response:
    """Validate, store, record, enqueue; with ``Prefer: wait=N``, wait up to N s for the result."""
    svc = services()
    owner = current_owner()
    wait_s = prefer_wait_seconds(request.headers.get("Prefer"), svc.settings.max_wait_s)
    key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    with timing.step("admission"):
        check_room_for_a_job(svc)
    with timing.step("parse"):
        parts = _read_upload(svc)
    metrics.UPLOAD_BYTES.observe(sum(part.size for part in parts.all))
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
    if waiting is not None:
        try:
            with timing.step("wait"):
                job = wait_for_end(job.id, waiting, wait_s)
            if waiting.wake_ms is not None:
                timing.record("notify", waiting.wake_ms)
        finally:
            waiting.close()
    return _respond(job, wait_s)


def _read_upload(svc: Services):
    """The form's parts, read within UPLOAD_TIMEOUT_S (408 for a client still sending after it;
    400 for a body that breaks off or whose chunked encoding is malformed)."""
    seconds = svc.settings.upload_timeout_s
    with upload_deadline(request.environ, seconds) as expired:
        try:
            return read_form(request.stream, request.content_type, svc.settings.max_image_bytes)
        except Exception as exc:
            if not expired():
                # gunicorn's body reader: a malformed chunk, or the peer gone mid-body.
                if isinstance(exc, (OSError, ParseException)):
                    raise BadRequest(BODY_BROKEN, {"reason": str(exc)[:200]}) from None
                raise
    raise RequestTimeout(f"The upload took longer than {seconds:g} s, so it was stopped. Send the photos "
                         "again over a faster connection, or smaller photos.", None, {"Connection": "close"})


BODY_BROKEN = ("The upload broke off or its chunked transfer encoding is malformed; send the photos "
               "again as multipart/form-data.")


def _submit(svc: Services, owner: str | None, parts, wait_s: int) -> tuple[Job, FinishedWait | None]:
    """Validate, store, record and queue one job; subscribed to its end when ``wait_s``."""
    with timing.step("validate"):
        options = _job_options(parts)
        uploads = validate_uploads(parts, svc.settings)
        callback_url = _callback_url(parts, svc.settings.webhook_allow_private)

    job_id = str(uuid.uuid4())
    audit.note_avatar(job_id)
    # The record exists before the job is queued, so a worker never gets an id it cannot find.
    job, syncing = _store_and_record(svc, job_id, owner, uploads, callback_url, options)
    with timing.step("enqueue"):
        waiting = _enqueue_or_fail(svc, job_id, listen=bool(wait_s))
    with timing.step("sync"):
        _wait_until_durable(svc, job_id, syncing, waiting)
    return job, waiting


def _store_and_record(svc: Services, job_id: str, owner: str | None, uploads: dict[str, Upload],
                      callback_url: str | None, options: dict) -> tuple[Job, list[Future[None]]]:
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
                # The request's id follows the job into the workers' log lines.
                client={"ip": request.remote_addr, "userAgent": request.headers.get("User-Agent"),
                        "requestId": g.get("request_id")},
                callback_url=callback_url, options=options,
            )
    except BaseException:
        wait(syncing)  # none is still writing while the job is undone
        _discard_inputs_quietly(svc, job_id)
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
    metrics.JOBS_FAILED.labels(code="storage_unavailable").inc()
    if waiting is not None:
        waiting.close()
    _discard_inputs_quietly(svc, job_id)
    raise ServiceUnavailable(PHOTOS_NOT_STORED, {"avatarId": job_id, "status": "failed"}, {"Retry-After": "30"})


def _forget_record(svc: Services, job_id: str) -> None:
    """The photos could not be stored: remove the record too, so no queued job without photos stays."""
    _discard_inputs_quietly(svc, job_id)
    try:
        svc.store.delete(job_id)
    except Exception as exc:  # the reconciler ends it: its preprocess finds no photos
        log.error("could not remove the record of job %s whose photos were not stored: %s", job_id, exc)


def _discard_inputs_quietly(svc: Services, job_id: str) -> None:
    """Delete what a failed submission stored, if the storage lets us: the error being answered is
    what the client needs to hear, and the retention sweep removes leftovers without a record."""
    try:
        svc.files.discard_inputs(job_id)
    except OSError as exc:
        log.warning("could not delete the photos of job %s that was not started: %s", job_id, exc)


def _replay(svc: Services, job_id: str, wait_s: int) -> Response:
    """The answer to a repeated Idempotency-Key: the original job, as it is now (waited for under
    ``Prefer: wait`` like a first request)."""
    response = _respond(await_end(svc, load_job(job_id), wait_s), wait_s)
    response.headers[idempotency.REPLAYED_HEADER] = "true"
    return response


def _respond(job: Job, wait_s: int) -> Response:
    """202 with where to poll; under ``Prefer: wait`` the finished job's answer (or the 202 if it
    has not finished in time)."""
    if not wait_s:
        return ok(accepted_body(job), 202, {"Location": status_url(job.id)})
    headers = {"Preference-Applied": f"wait={wait_s}"}
    if job.status is JobStatus.COMPLETED:
        return ok(completed_body(job), 200, headers)
    if job.status is JobStatus.FAILED:
        raise Unprocessable(job.error["message"], {"avatarId": job.id, "status": job.status.value,
                                                   **job.error}, headers)
    if job.status is JobStatus.CANCELED:
        raise Gone("The avatar was canceled before it was finished.", {"avatarId": job.id})
    return ok(accepted_body(job), 202, {"Location": status_url(job.id), **headers})


def _job_options(parts) -> dict[str, Any]:
    """What the client chose besides the photos, as the job record keeps it: ``mesh`` and, when
    given, ``textureSize``."""
    options: dict[str, Any] = {"mesh": _mesh_kind(parts)}
    size = _texture_size(parts)
    if size is not None:
        options["textureSize"] = size
    return options


def _texture_size(parts) -> int | None:
    """The optional ``textureSize`` form field: 512, 1024, 2048 or auto (the default: None)."""
    part = parts.get("textureSize")
    if part is None or part.filename is not None:
        return None
    try:
        return check_texture_size(part.data.decode("utf-8", "replace").strip())
    except ValueError as exc:
        raise BadRequest(f"{exc}: the texture's side in texels, or auto for as much detail as the "
                         "front photo has.", {"field": "textureSize"}) from None


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


def _enqueue_or_fail(svc: Services, job_id: str, listen: bool) -> FinishedWait | None:
    """Queue the job (subscribed to its end first when ``listen``: it cannot then end unseen, and
    the record need not be read before the notification). If Redis is down, end the job ``failed``
    and answer 503: no job is left ``queued`` with nothing in the queue."""
    waiting = None
    try:
        waiting = svc.events.subscribe(job_id) if listen else None
        enqueue_job(svc.celery, job_id)
        metrics.JOBS_SUBMITTED.inc()
        return waiting
    except Exception as exc:
        if waiting is not None:
            waiting.close()
        log.error("could not queue job %s: %s", job_id, exc)
        svc.store.fail(job_id, "queue_unavailable", "The job queue was unreachable; nothing was generated.")
        metrics.JOBS_FAILED.labels(code="queue_unavailable").inc()
        _discard_inputs_quietly(svc, job_id)
        raise ServiceUnavailable("The job queue is unreachable, so the avatar was not started; "
                                 "please retry in a minute.", headers={"Retry-After": "30"}) from None


@bp.get("/info/<avatar_id>")
def info(avatar_id: str) -> Response:
    return ok(info_body(load_job(avatar_id)))


@bp.get("/download/<avatar_id>")
def download(avatar_id: str) -> Response:
    """The GLB. A job still queued or running is waited for (``DOWNLOAD_WAIT_S``), so a client that
    downloads right after submitting gets the file, not an error. ETag/304 and Range/206 as for any
    file; a download counts once the file's last byte is sent (HEAD, 304 and partial ranges don't).
    The bytes stream from the storage; with ``DOWNLOAD_PRESIGN_S`` and object storage a GET is
    redirected to a presigned URL instead."""
    svc = services()
    job = await_end(svc, load_job(avatar_id), svc.settings.download_wait_s)
    ensure_downloadable(job, svc.settings.download_wait_s)
    if svc.settings.download_presign_s > 0 and request.method == "GET" and not _from_a_page_script():
        url = svc.files.result_url(job.id, job.result["filename"], svc.settings.download_presign_s)
        if url is not None:
            # The storage sends the bytes (and answers Range and If-None-Match itself), so the
            # download is counted when its URL is handed out: the service never sees the last byte.
            svc.store.count_downloads(job.id)
            response = redirect(url, 302)
            response.cache_control.no_store = True
            return response
    try:
        stored = svc.files.open_result(job.id)
    except FileNotFoundError:
        raise Gone("The avatar's file is no longer stored; generate it again.", {"avatarId": job.id}) from None
    return send_stored_file(stored.stream, stored.size, f"{job.id}-{stored.etag}",
                            "model/gltf-binary", job.result["filename"],
                            on_sent=lambda: svc.store.count_downloads(job.id))


def _from_a_page_script() -> bool:
    """A browser's fetch() from a page (``Sec-Fetch-Mode`` other than navigate): it gets the bytes
    from here, since a redirect to the storage's origin would have to pass the page's
    Content-Security-Policy (ours allows this origin only) and the bucket's CORS rules. Programs that
    send no such header, and a browser following a link, are redirected."""
    return request.headers.get("Sec-Fetch-Mode", "navigate") != "navigate"


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
    page = _int_arg("page", 1, minimum=1, maximum=MAX_PAGE)
    limit = _int_arg("limit", svc.settings.default_page_size, minimum=1, maximum=svc.settings.max_page_size)
    jobs, total = svc.store.list_for_owner(owner, skip=(page - 1) * limit, limit=limit)
    return ok({"avatars": [list_item(job) for job in jobs], "page": page, "limit": limit, "total": total})


# Far beyond any real list (a million pages), and small enough that the store's skip stays a number.
MAX_PAGE = 1_000_000


def ensure_downloadable(job: Job, waited_s: float = 0) -> None:
    """409 while running, 422 if it failed, 410 if canceled."""
    if job.status is JobStatus.COMPLETED:
        return
    if job.status is JobStatus.FAILED:
        raise Unprocessable(f"The avatar failed, so there is nothing to download: {job.error['message']}",
                            {"avatarId": job.id, "status": job.status.value, **job.error})
    if job.status is JobStatus.CANCELED:
        raise Gone("The avatar was canceled, so there is nothing to download.",
                   {"avatarId": job.id, "status": job.status.value})
    waited = f" after waiting {waited_s:g} s" if waited_s else ""
    raise Conflict(f"The avatar is not ready yet (status: {job.status.value}){waited}; poll the statusUrl "
                   "until the status is 'completed', then download.",
                   {"avatarId": job.id, "status": job.status.value, "progress": job.progress,
                    "statusUrl": status_url(job.id)})


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
