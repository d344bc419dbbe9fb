"""Bearer tokens (flask-jwt-extended, HS256): who is asking, and whether they may see an avatar.

- No ``Authorization`` header: an anonymous request, unless ``REQUIRE_AUTH`` is on (then 401).
- A header that is not a valid, unexpired ``Bearer`` token signed with ``JWT_SECRET_KEY``: 401,
  never silently treated as anonymous.
- An avatar made with a token belongs to that user: only a request with a token for the same user
  may read its status or info, download, cancel or delete it (403 otherwise, anonymous callers
  included). An avatar made anonymously belongs to whoever holds its id (a random UUID4: 122 bits).

Tokens are minted by ``avatar token --user ID --expires 7d`` (``mint_token``).
"""
from __future__ import annotations

import re
from datetime import timedelta

import jwt
from flask import Flask, g, request
from flask_jwt_extended import JWTManager, create_access_token, get_jwt, get_jwt_identity, verify_jwt_in_request
from flask_jwt_extended.exceptions import JWTExtendedException

from api.errors import Forbidden, Unauthorized
from api.services import services
from jobs.settings import Settings
from jobs.store import Job

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="avatar"'}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_TOKEN_LIFETIME = timedelta(days=366)
# A token with this claim set to true sees the detailed health report from anywhere.
ADMIN_CLAIM = "admin"


def configure_jwt(app: Flask, settings: Settings) -> None:
    app.config.update(JWT_SECRET_KEY=settings.jwt_secret_key, JWT_TOKEN_LOCATION=["headers"],
                      JWT_ALGORITHM="HS256", JWT_DECODE_ALGORITHMS=["HS256"])
    JWTManager(app)


def current_owner() -> str | None:
    """The user id of a valid ``Authorization: Bearer`` token, or None without one (401 when
    ``REQUIRE_AUTH`` is on). Resolved once per request."""
    if "auth_user" in g:
        return g.auth_user
    owner = _token_user()
    if owner is None and services().settings.require_auth:
        raise Unauthorized("This service needs a signed-in user: send 'Authorization: Bearer <token>' "
                           "(an operator mints one with `avatar token --user ID`).", headers=_CHALLENGE)
    g.auth_user = owner
    return owner


def is_admin() -> bool:
    """The request carries a valid token minted with ``avatar token --admin`` (401 for an invalid
    one); no token at all is simply not an admin, whatever ``REQUIRE_AUTH`` says."""
    return _token_user() is not None and get_jwt().get(ADMIN_CLAIM) is True


def is_operator() -> bool:
    """The caller may see how the service is doing inside (the detailed health report, the
    metrics): it is on this machine (loopback: the operator, a container healthcheck) or sends an
    admin token."""
    from jobs.settings import is_loopback

    return is_loopback(request.remote_addr or "") or is_admin()


def _token_user() -> str | None:
    """The user id of the request's valid Bearer token, None without an Authorization header;
    401 for anything else."""
    try:
        verify_jwt_in_request(optional=True)
    except jwt.ExpiredSignatureError:
        raise Unauthorized("Access token expired: get a new one and send it as "
                           "'Authorization: Bearer <token>'.", headers=_CHALLENGE) from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("Access token signature is invalid: it was not issued by this service.",
                           headers=_CHALLENGE) from None
    except (JWTExtendedException, jwt.PyJWTError) as exc:
        raise Unauthorized(f"Invalid access token ({exc}). Send a valid 'Authorization: Bearer <token>' "
                           "header, or none to use the API anonymously.", headers=_CHALLENGE) from None
    identity = get_jwt_identity()
    if identity is None and request.headers.get("Authorization"):
        raise Unauthorized("Unsupported Authorization header: send 'Authorization: Bearer <token>', "
                           "or no Authorization header to use the API anonymously.", headers=_CHALLENGE)
    return str(identity) if identity is not None else None


def require_owner() -> str:
    """The caller's user id; 401 for anonymous callers."""
    owner = current_owner()
    if owner is None:
        raise Unauthorized("This needs a signed-in user: send 'Authorization: Bearer <token>'.",
                           headers=_CHALLENGE)
    return owner


def check_access(job: Job, owner: str | None) -> None:
    """An avatar made with a token belongs to that user alone; anonymous ones to whoever has the id."""
    if job.owner is not None and job.owner != owner:
        raise Forbidden("This avatar belongs to another user: sign in as its owner to use it.")


def parse_duration(text: str) -> timedelta:
    """``90`` / ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` as a positive ``timedelta``."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (use for example 3600s, 30m, 12h, 7d or 2w)")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def mint_token(settings: Settings, user_id: str, expires: timedelta, admin: bool = False) -> str:
    """An access token for ``user_id`` that the API built from ``settings`` accepts until ``expires``
    from now; ``admin`` tokens also see the detailed health report."""
    if not user_id.strip():
        raise ValueError("the user id must not be empty")
    if expires > MAX_TOKEN_LIFETIME:
        raise ValueError(f"tokens live at most {MAX_TOKEN_LIFETIME.days} days")
    app = Flask("avatar-token")
    configure_jwt(app, settings)
    with app.app_context():
        return create_access_token(identity=user_id, expires_delta=expires,
                                   additional_claims={ADMIN_CLAIM: True} if admin else None)
