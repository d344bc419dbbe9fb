"""One frozen configuration object, built from the environment, passed into every factory."""
from __future__ import annotations

import dataclasses
import os
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
    host: str = "0.0.0.0"
    redis_url: str = ""
    mongodb_uri: str = ""
    mongodb_db: str = "avatar"
    data_dir: Path = DEFAULT_VAR_DIR / "data"
    # Landmark model the workers load; empty means the file committed in models/.
    onnx_model_path: str = ""
    # Signs and verifies the optional Bearer tokens. The default is only good for a laptop.
    jwt_secret_key: str = "dev-only-signing-key-change-me-in-production"
    # Longest a single pipeline stage may run; the broker's visibility timeout is set above it.
    job_timeout_s: int = 300
    # Upload limits from the API contract.
    max_image_bytes: int = 10 * 1024 * 1024
    min_image_side: int = 224
    max_image_side: int = 4096
    # Upper bound for ``Prefer: wait=N``.
    max_wait_s: int = 60
    # gunicorn: worker processes and threads per process (threads serve long ``Prefer: wait`` requests).
    api_workers: int = 2
    api_threads: int = 8
    # Celery worker processes per `avatar worker` and ONNX threads per process.
    worker_concurrency: int = 2
    onnx_threads: int = 1
    # How long a worker heartbeat stays valid in Redis; workers refresh it at a third of this.
    worker_heartbeat_ttl_s: int = 15
    # Page size bounds for GET /api/avatar.
    default_page_size: int = 20
    max_page_size: int = 100

    @classmethod
    def from_env(cls, overrides: Mapping[str, Any] | None = None,
                 environ: Mapping[str, str] | None = None) -> "Settings":
        """Defaults, then ``environ`` (``os.environ`` by default), then ``overrides`` (field names)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(field.name.upper())
            if raw is not None and raw != "":
                values[field.name] = _coerce(field, raw)
        for name, value in (overrides or {}).items():
            field = _field(cls, name)
            values[name] = _coerce(field, value) if isinstance(value, str) else value
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
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


def _field(cls: type, name: str) -> dataclasses.Field:
    for field in fields(cls):
        if field.name == name:
            return field
    raise ValueError(f"unknown setting {name!r}")


def _coerce(field: dataclasses.Field, raw: str) -> Any:
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind == "int":
            return int(raw)
        if kind == "Path":
            return Path(raw)
    except ValueError:
        raise ValueError(f"setting {field.name.upper()} must be an integer, got {raw!r}") from None
    return raw
