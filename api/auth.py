"""Optional Bearer tokens: no token is an anonymous request; a bad token is refused, never ignored."""
from __future__ import annotations

import jwt
from flask_jwt_extended import get_jwt_identity, verify_jwt_in_request
from flask_jwt_extended.exceptions import JWTExtendedException

from api.errors import Forbidden, Unauthorized
from jobs.store import Job


def current_owner() -> str | None:
    """The user id of a valid ``Authorization: Bearer`` token, or None without one."""
    try:
        verify_jwt_in_request(optional=True)
    except (JWTExtendedException, jwt.PyJWTError) as exc:
        raise Unauthorized(
            f"Invalid access token ({exc}). Send a valid 'Authorization: Bearer <token>' header, "
            "or none to use the API anonymously.") from None
    identity = get_jwt_identity()
    return str(identity) if identity is not None else None


def require_owner() -> str:
    """The caller's user id; 401 for anonymous callers."""
    owner = current_owner()
    if owner is None:
        raise Unauthorized("This needs a signed-in user: send 'Authorization: Bearer <token>'.")
    return owner


def check_access(job: Job, owner: str | None) -> None:
    """An avatar made with a token belongs to that user alone; anonymous ones to whoever has the id."""
    if job.owner is not None and job.owner != owner:
        raise Forbidden("This avatar belongs to another user: sign in as its owner to use it.")
