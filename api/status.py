"""The job resource: where a generation is, and canceling it."""
from __future__ import annotations

from flask import Blueprint, Response, request

from api.bodies import ok, status_body
from api.errors import Conflict
from api.lookup import load_job
from api.services import services
from api.waiting import await_end, prefer_wait_seconds
from jobs.store import TransitionError

bp = Blueprint("jobs", __name__, url_prefix="/api/avatar/jobs")


@bp.get("/<avatar_id>")
def job_status(avatar_id: str) -> Response:
    """Where the job is. ``Prefer: wait=N`` (long poll): answer when it ends, or after N s."""
    svc = services()
    wait_s = prefer_wait_seconds(request.headers.get("Prefer"), svc.settings.max_wait_s)
    job = await_end(svc, load_job(avatar_id), wait_s)
    return ok(status_body(job), 200, {"Preference-Applied": f"wait={wait_s}"} if wait_s else None)


@bp.post("/<avatar_id>/cancel")
def cancel(avatar_id: str) -> Response:
    """Stop a queued or running job (409 if it already ended). Its photos are deleted at once."""
    svc = services()
    job = load_job(avatar_id)
    try:
        svc.store.cancel(job.id)
    except TransitionError as exc:
        status = exc.actual.value if exc.actual else "deleted"
        raise Conflict(f"The avatar has already ended ({status}); there is nothing to cancel.",
                       {"avatarId": job.id, "status": status}) from None
    svc.files.discard_inputs(job.id)
    svc.events.publish_finished(job.id, "canceled")
    return ok(status_body(svc.store.get(job.id)))
