"""Finding the avatar a URL names, for the caller asking."""
from __future__ import annotations

import uuid

from api.auth import check_access, current_owner
from api.errors import NotFound
from api.services import services
from jobs.store import Job


def load_job(avatar_id: str) -> Job:
    """The job ``avatar_id`` names, if the caller may see it (404 unknown or malformed, 403 not theirs)."""
    owner = current_owner()
    if not is_avatar_id(avatar_id):
        raise NotFound("Avatar not found",
                       f"{avatar_id!r} is not an avatar id: ids look like 'b3f1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d'.")
    job = services().store.get(avatar_id)
    check_access(job, owner)
    return job


def is_avatar_id(value: str) -> bool:
    """Avatar ids are random UUID4s in canonical form."""
    try:
        return str(uuid.UUID(value)) == value and uuid.UUID(value).version == 4
    except ValueError:
        return False
