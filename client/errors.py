"""What the client raises: the server's error envelope as typed exceptions.

Every error the API returns is ``{"success": false, "error": "<message>", "details": …}``; the
exceptions carry that message unchanged, so a caller can show it to a person as is.
"""
from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base class of everything ``client`` raises."""


class ApiError(ClientError):
    """The server answered with an error envelope (or something that was not one)."""

    def __init__(self, status: int, message: str, details: Any = None,
                 retry_after_s: float | None = None):
        said = f"{status}: {message}" if status else message
        explained = describe_details(details)
        super().__init__(f"{said} ({explained})" if explained else said)
        self.status = status
        self.message = message
        self.details = details
        self.retry_after_s = retry_after_s


class InvalidRequest(ApiError):
    """400 / 413 / 415: the photos were refused; ``details`` lists each field's verdict."""

    def refusals(self) -> dict[str, str]:
        """What was refused and why: ``{"left": "Image too small…"}``, keyed by the view (or, for
        a part that is not one of the photos, its file name)."""
        return refusals(self.details)


class Unauthorized(ApiError):
    """401: the token is invalid or missing where one is needed."""


class Forbidden(ApiError):
    """403: the avatar belongs to another user."""


class NotFound(ApiError):
    """404: no such avatar (or it was deleted)."""


class Conflict(ApiError):
    """409: not possible in the job's current state (e.g. download before completion)."""


class Gone(ApiError):
    """410: the avatar was canceled, or its file is no longer stored."""


class RateLimited(ApiError):
    """429 after the client's retries ran out; ``retry_after_s`` says when to try again."""


class ServiceUnavailable(ApiError):
    """503 (or 502/504) after the client's retries ran out."""


class TransportError(ClientError):
    """The server could not be reached, or the connection broke, after the client's retries."""

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.message = message
        self.cause = cause


class JobFailed(ClientError):
    """The job ran and failed: ``code`` is stable (``no_face``), ``message`` reads "left: no face found"."""

    def __init__(self, avatar_id: str | None, code: str, message: str, view: str | None = None):
        super().__init__(message)
        self.avatar_id = avatar_id
        self.code = code
        self.message = message
        self.view = view


class JobCanceled(ClientError):
    """The job was canceled (or deleted) before it finished."""

    def __init__(self, avatar_id: str, message: str = "the avatar was canceled before it was finished"):
        super().__init__(message)
        self.avatar_id = avatar_id
        self.message = message


class WaitTimeout(ClientError):
    """``wait`` gave up before the job ended; the job itself goes on."""

    def __init__(self, avatar_id: str, status: str, waited_s: float):
        super().__init__(f"avatar {avatar_id} still {status} after {waited_s:.1f} s")
        self.avatar_id = avatar_id
        self.status = status
        self.waited_s = waited_s


class Interrupted(ClientError):
    """The client's stop event was set while it was waiting (Ctrl-C in the batch)."""


# The three photos of a submission; the server lists its verdicts on them in this order, then one
# for each other part it refused.
VIEWS = ("front", "left", "right")


def refusals(details: Any) -> dict[str, str]:
    """``{view or file name: error}`` for each refused part in an "Image validation failed" body."""
    if not isinstance(details, list):
        return {}
    refused = {}
    for index, item in enumerate(details):
        if isinstance(item, dict) and item.get("valid") is False:
            key = VIEWS[index] if index < len(VIEWS) else str(item.get("filename") or f"part {index + 1}")
            refused[key] = str(item.get("error"))
    return refused


def describe_details(details: Any) -> str:
    """The envelope's ``details`` in a few words for an exception's message ("" if nothing to add)."""
    if isinstance(details, list):
        return "; ".join(f"{key}: {error}" for key, error in refusals(details).items())
    if isinstance(details, str):
        return details
    if isinstance(details, dict):
        return ", ".join(f"{key}={value}" for key, value in details.items()
                         if isinstance(value, (str, int, float)) and key != "avatarId")
    return ""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest, 413: InvalidRequest, 415: InvalidRequest,
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: Gone,
    429: RateLimited, 502: ServiceUnavailable, 503: ServiceUnavailable, 504: ServiceUnavailable,
}


def api_error(status: int, message: str, details: Any = None,
              retry_after_s: float | None = None) -> ApiError:
    """The ``ApiError`` subclass for ``status``."""
    return _BY_STATUS.get(status, ApiError)(status, message, details, retry_after_s)
