"""Python client for the avatar service, and the batch command built on it.

``AvatarClient`` wraps the HTTP API (submit, status, wait, download, info, health) with bounded,
safe retries; ``client.batch_cli`` is ``avatar batch``.
"""
from client.avatar_client import AvatarClient, JobState, Submission
from client.backoff import Backoff, parse_retry_after
from client.errors import (ApiError, ClientError, Conflict, Forbidden, Gone, Interrupted, InvalidRequest,
                           JobCanceled, JobFailed, NotFound, RateLimited, ServiceUnavailable, TransportError,
                           Unauthorized, WaitTimeout)

__all__ = [
    "AvatarClient", "Submission", "JobState", "Backoff", "parse_retry_after",
    "ClientError", "ApiError", "InvalidRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict", "Gone",
    "RateLimited", "ServiceUnavailable", "TransportError", "JobFailed", "JobCanceled", "WaitTimeout",
    "Interrupted",
]
