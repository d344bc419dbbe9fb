"""One frozen configuration object, built from the environment, passed into every factory."""
from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# Where the local stack keeps its state (Redis dump, the store's files, uploads and results).
DEFAULT_VAR_DIR = Path("var")


@dataclass(frozen=True)
class Settings:
    """Service configuration. Each field reads the environment variable of the same name, upper-cased.

    ``redis_url`` / ``mongodb_uri`` left empty mean "not configured": ``avatar up`` then starts the
    embedded Redis / store and fills them in.
    """

    port: int = 3000
    # Loopback unless set: the API is reachable from other machines only when asked for, and then
    # refuses to start with development secrets (``exposure_problems``).
    host: str = "127.0.0.1"
    redis_url: str = ""
    mongodb_uri: str = ""
    # The database; empty means the one named in MONGODB_URI's path, else "avatar".
    mongodb_db: str = ""
    data_dir: Path = DEFAULT_VAR_DIR / "data"
    # Where photos, stage files and GLBs are kept (jobs.storage): empty for the volume at DATA_DIR,
    # or S3-compatible object storage as s3://bucket/prefix (then nothing is written under DATA_DIR).
    # Credentials and region come the standard AWS way (AWS_ACCESS_KEY_ID, AWS_REGION, a role, ...).
    storage_url: str = ""
    # The S3 API's address for a server other than AWS (MinIO: http://minio:9000); empty for AWS.
    s3_endpoint_url: str = ""
    # The address clients reach the object storage by, for presigned download URLs, where it differs
    # from S3_ENDPOINT_URL (a cluster-internal name); empty: the same.
    s3_public_endpoint_url: str = ""
    # With object storage: answer a download with a redirect to a presigned URL valid this many
    # seconds, so the bytes go from the storage to the client; 0 streams them through the API.
    download_presign_s: int = 0
    # Landmark model the workers load; empty means the file committed in models/.
    onnx_model_path: str = ""
    # Signs and verifies the optional Bearer tokens (JWT_SECRET is read too, as the original API
    # named it). The default is only good for a laptop.
    jwt_secret_key: str = dataclasses.field(default="dev-only-signing-key-change-me-in-production",
                                            repr=False)
    # -- security and privacy --
    # true: every /api/avatar request except health needs a valid Bearer token (401 without one).
    require_auth: bool = False
    # AES-256-GCM key for the photos and stage files on DATA_DIR: base64 of 32 random bytes. Required
    # by the API and the workers; `avatar up` creates one in var/ (0600) on its first run.
    upload_encryption_key: str = dataclasses.field(default="", repr=False)
    # Per client IP (flask-limiter syntax, counted in Redis): POST /generate, and every other request.
    rate_limit_generate: str = "10 per 15 minutes"
    rate_limit_default: str = "100 per 15 minutes"
    # Reverse proxies in front of the API that append to X-Forwarded-For. 0: the client IP is the
    # socket's peer and X-Forwarded-For is ignored (it is whatever the client wrote).
    trusted_proxies: int = 0
    # Audit records and finished avatars (record + GLB) are deleted after these many days.
    audit_retention_days: int = 365
    # Refusals of anonymous requests (scans, floods): at most this many audit records a minute per
    # API process (the rest are counted in one summary record a minute), kept this many days.
    audit_anonymous_failures_per_minute: int = 60
    audit_anonymous_retention_days: int = 30
    result_retention_days: int = 30
    # Workers run the retention sweep (jobs.retention) at a job's end at most this often, fleet-wide;
    # 0 leaves it to `avatar sweep` (cron).
    sweep_interval_s: int = 3600
    # Longest a single pipeline stage may run (worker.deadline); the broker's visibility timeout is
    # set above it.
    job_timeout_s: float = 300.0
    # Upload limits from the API contract.
    max_image_bytes: int = 10 * 1024 * 1024
    min_image_side: int = 224
    max_image_side: int = 4096
    # Upper bound for ``Prefer: wait=N``.
    max_wait_s: int = 60
    # New jobs are refused (503) below this much free disk on DATA_DIR (or the store's volume, where
    # it reports one), before a full volume takes running jobs with it.
    min_free_disk_mb: int = 512
    # New jobs are refused (503) once the stage queues hold this many messages; 0: once they hold
    # more than the live workers can finish within JOB_TIMEOUT_S (api.admission).
    max_queue_depth: int = 0
    # The longest an upload's body may take to arrive (408 after it): three 10 MB photos over a
    # 4 Mbit/s line take ~60 s.
    upload_timeout_s: float = 120.0
    # A download of a job still queued or running waits this long for its end before answering 409.
    download_wait_s: float = 30.0
    # Browser origins allowed to call the API (CORS), comma-separated, e.g.
    # "https://app.example.com,http://localhost:5173"; empty: none (same-origin pages only).
    cors_allowed_origins: str = ""
    # gunicorn: worker processes, and the connections each serves at once. The workers are gevent's
    # (one greenlet per connection), so a slow client or a long ``Prefer: wait`` costs a greenlet,
    # not one of a few threads.
    api_workers: int = 2
    api_connections: int = 1000
    # Celery worker processes per `avatar worker` and ONNX threads per process.
    worker_concurrency: int = 2
    onnx_threads: int = 1
    # How long a worker heartbeat stays valid in Redis; workers refresh it at a third of this.
    worker_heartbeat_ttl_s: int = 15
    # Page size bounds for GET /api/avatar.
    default_page_size: int = 20
    max_page_size: int = 100

    # -- fleet and fault tolerance --
    # How long a POST's Idempotency-Key is remembered: a repeat within this window names the same job.
    idempotency_ttl_s: int = 24 * 3600
    # Signs the completion webhooks (X-Avatar-Signature: sha256=HMAC(body)). Change it in production.
    webhook_secret: str = "dev-only-webhook-secret-change-me"
    # Deliver webhooks to private, loopback and link-local addresses (off: they could reach internal
    # services on the workers' network).
    webhook_allow_private: bool = False
    webhook_max_attempts: int = 5
    # Back-off between webhook attempts: base * 2**attempt seconds (1 s, 2 s, 4 s, ... by default).
    webhook_backoff_s: float = 1.0
    webhook_timeout_s: float = 5.0
    # `avatar worker` without options: the queues it consumes and its node name (default <queues>@<host>).
    worker_queues: str = "cpu,gpu"
    worker_hostname: str = ""
    # `avatar worker`'s Celery pool: prefork for the stages; threads for the webhooks queue (its
    # tasks wait on receivers) or a gpu worker that batches inference.
    worker_pool: str = "prefork"
    # The reconciler re-sends the current stage of a running job that has not moved for this long and
    # that no queue or worker holds (its message was lost); after stall_max_requeues re-sends the job
    # fails with code "stalled". reconcile_interval_s 0 turns off the reconciler inside the workers.
    stall_after_s: float = 60.0
    stall_max_requeues: int = 3
    reconcile_interval_s: float = 10.0
    # Landmark-model micro-batching in a threaded gpu worker: up to this many jobs' crops in one run,
    # waiting at most the window for more to arrive. 1 turns it off (on CPU it does not pay).
    inference_batch_max: int = 1
    inference_batch_window_ms: float = 5.0

    # -- operating it --
    # "text" (one human-readable line per event) or "json" (one JSON object per line, with the
    # request id, job id, stage and duration where there is one: for log collectors).
    log_format: str = "text"
    # Where a worker node serves its processes' Prometheus metrics (GET /metrics on this port, on
    # HOST); 0 turns the endpoint off. The API serves its own at /metrics on PORT.
    metrics_port: int = 9808
    # Where the processes of one API or worker node keep their metric samples (prometheus_client's
    # multiprocess files), each node in a folder of its own under it, emptied when the node starts.
    metrics_dir: Path = Path(tempfile.gettempdir()) / "avatar-metrics"

    def __post_init__(self) -> None:
        if self.log_format.strip().lower() not in LOG_FORMATS:
            raise ValueError(f"setting LOG_FORMAT must be {' or '.join(LOG_FORMATS)}, got {self.log_format!r}")

    @classmethod
    def from_env(cls, overrides: Mapping[str, Any] | None = None,
                 environ: Mapping[str, str] | None = None) -> "Settings":
        """Defaults, then ``environ`` (``os.environ`` by default), then ``overrides`` (field names)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            for name in (field.name.upper(), *ENV_ALIASES.get(field.name, ())):
                raw = env.get(name)
                if raw is not None and raw != "":
                    values[field.name] = _coerce(field, raw)
                    break
        for name, value in (overrides or {}).items():
            field = _field(cls, name)
            values[name] = _coerce(field, value) if isinstance(value, str) else value
        for name in ("data_dir", "metrics_dir"):
            if name in values:
                values[name] = Path(values[name])
        return cls(**values)

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The environment variables that rebuild these settings in a child process."""
        return {f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    @property
    def broker_url(self) -> str:
        return self.redis_url or "redis://127.0.0.1:6379/0"

    @property
    def database_name(self) -> str:
        """MONGODB_DB, else the database MONGODB_URI names (``mongodb://host/sace_io``), else "avatar"."""
        if self.mongodb_db:
            return self.mongodb_db
        from pymongo.uri_parser import parse_uri

        try:
            named = parse_uri(self.mongodb_uri)["database"] if self.mongodb_uri else None
        except Exception:  # an unparsable URI fails where the client connects, with pymongo's message
            named = None
        return named or DEFAULT_DATABASE

    @property
    def log_json(self) -> bool:
        return self.log_format.strip().lower() == "json"

    @property
    def cors_origins(self) -> list[str]:
        return [origin.strip() for origin in self.cors_allowed_origins.split(",") if origin.strip()]


DEFAULT_DATABASE = "avatar"
LOG_FORMATS = ("text", "json")
# Other environment variable names a setting answers to (the original API document's names).
ENV_ALIASES = {"jwt_secret_key": ("JWT_SECRET",)}
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    """Only this machine can connect to ``host`` (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    host = host.strip()
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_problems(settings: Settings) -> list[str]:
    """What must change before the API may listen beyond loopback: each a sentence saying how."""
    defaults = Settings()
    problems = []
    if settings.jwt_secret_key == defaults.jwt_secret_key:
        problems.append("JWT_SECRET_KEY is the development default: set it to a long random secret, e.g. "
                        "JWT_SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(48))')")
    if settings.webhook_secret == defaults.webhook_secret:
        problems.append("WEBHOOK_SECRET is the development default: set it to a long random secret that "
                        "your webhook receivers check signatures with")
    if not settings.upload_encryption_key:
        problems.append("UPLOAD_ENCRYPTION_KEY is not set: set it to base64 of 32 random bytes, e.g. "
                        "UPLOAD_ENCRYPTION_KEY=$(python -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')")
    return problems


class UnsafeExposure(RuntimeError):
    """The API was asked to listen beyond loopback with development secrets."""

    def __init__(self, host: str, problems: list[str]):
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"refusing to listen on {host}: other machines could reach this service, and\n"
                         f"{lines}\n(or listen on 127.0.0.1 only: unset HOST)")


def check_exposure(settings: Settings, host: str | None = None) -> None:
    """Raise ``UnsafeExposure`` if ``host`` (default ``settings.host``) is not loopback while
    ``exposure_problems`` finds any."""
    host = settings.host if host is None else host
    if is_loopback(host):
        return
    problems = exposure_problems(settings)
    if problems:
        raise UnsafeExposure(host, problems)


def _field(cls: type, name: str) -> dataclasses.Field:
    for field in fields(cls):
        if field.name == name:
            return field
    raise ValueError(f"unknown setting {name!r}")


_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "Path": "a path"}


def _coerce(field: dataclasses.Field, raw: str) -> Any:
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind == "int":
            return int(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
    except ValueError:
        raise ValueError(f"setting {field.name.upper()} must be {_KIND_WORDS.get(kind, kind)}, "
                         f"got {raw!r}") from None
    return raw
