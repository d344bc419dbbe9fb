"""Where the service's files live: a shared volume (DATA_DIR) or S3-compatible object storage.

``FileStore`` (jobs.files) names every file by a key such as ``uploads/<id>/front`` and seals the
biometric ones; a ``Storage`` keeps the bytes under those keys. Both backends give the same
guarantees, which the tests check on each:

- **Atomic visibility.** A reader sees a whole object or none: the volume writes a temporary file
  and renames it over the key; S3 makes an object visible only once its PUT has completed.
- **Durability on return.** ``put(..., durable=True)`` returns once the bytes survive a crash of this
  machine (fsync on the volume; S3 acknowledges a PUT only once it is stored). ``durable=False``
  leaves that to a later ``sync`` (a no-op on S3).
- **Deletion** of one key or of every key under a prefix, **listing** with modification times (what
  jobs.retention sweeps by), a **free-space** query (None where the service uses no local volume).

``STORAGE_URL`` picks one: empty for the volume at ``DATA_DIR``, ``s3://bucket/prefix`` for object
storage (``S3_ENDPOINT_URL`` for MinIO and other S3-compatible servers; credentials and region the
standard AWS way: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, a profile, or the
pod's or instance's role). With S3 nothing is written under DATA_DIR.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlparse

from jobs.settings import Settings


class StorageConfigError(ValueError):
    """STORAGE_URL (or a setting that goes with it) cannot be used; the message says how to fix it."""


class StorageUnavailable(OSError):
    """The object storage refused or did not answer (not: the key does not exist). An ``OSError``,
    as a full or missing volume is: callers treat both alike (the API answers 503)."""


@dataclass
class StoredObject:
    """An open object: a stream of its ``size`` bytes, a strong ``etag`` that changes when its content
    does, and its modification time (epoch seconds). The caller closes ``stream``."""

    stream: BinaryIO
    size: int
    etag: str
    modified: float


class Storage(Protocol):
    """Bytes by key (``a/b/c``: no leading slash, no ``..``); see the module docstring."""

    location: str  # where, for messages: a path or s3://bucket/prefix

    def put(self, key: str, data: bytes, durable: bool = True) -> None: ...
    def sync(self, key: str) -> None: ...
    def get(self, key: str) -> bytes: ...
    def open(self, key: str) -> StoredObject: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def delete_many(self, keys: list[str]) -> None: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def list(self, prefix: str) -> Iterator[tuple[str, float]]: ...
    def free_bytes(self) -> tuple[int, int] | None: ...
    def presigned_url(self, key: str, expires_s: int, download_name: str, content_type: str) -> str | None: ...
    def prepare(self) -> None: ...
    def describe(self) -> dict[str, Any]: ...


def storage_from_settings(settings: Settings) -> "Storage":
    """The backend ``STORAGE_URL`` names (the volume at DATA_DIR when it is empty)."""
    url = settings.storage_url.strip()
    if not url:
        return VolumeStorage(settings.data_dir)
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageConfigError(f"STORAGE_URL must be empty (files on DATA_DIR) or s3://bucket/prefix, "
                                 f"not {url!r}")
    return S3Storage(parsed.netloc, parsed.path.strip("/"), endpoint_url=settings.s3_endpoint_url or None,
                     public_endpoint_url=settings.s3_public_endpoint_url or None)


def _check_key(key: str) -> str:
    # Keys are built from our own ids and names; this only guards against a bug making a path escape.
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"not a storage key: {key!r}")
    return key


# -- the shared volume ----------------------------------------------------------------------------

class VolumeStorage:
    """Files under ``root`` (DATA_DIR), each written to a temporary name in its folder and renamed
    over the key, so a reader on another machine (NFS) sees either the whole file or none of it."""

    backend = "volume"

    def __init__(self, root: str | os.PathLike):
        # Absolute: a relative DATA_DIR (`make run`'s var/data) must not depend on the working
        # directory of whoever opens a file later.
        self.root = Path(root).absolute()
        self.location = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, data: bytes, durable: bool = True) -> None:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name starts with a dot (listings skip it) and keeps the suffix.
        temp = final.with_name(f".{final.stem}.{uuid.uuid4().hex}.tmp{final.suffix}")
        try:
            with open(temp, "wb") as fh:
                fh.write(data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(temp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def sync(self, key: str) -> None:
        """fsync a file written with ``durable=False``. Reopened by name: the writer has closed it,
        which is what makes it whole for a reader on another host (NFS). A file already deleted
        needs nothing more."""
        try:
            fd = os.open(self.path(key), os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def open(self, key: str) -> StoredObject:
        stream = open(self.path(key), "rb")
        stat = os.fstat(stream.fileno())
        return StoredObject(stream, stat.st_size, f"{stat.st_size:x}-{stat.st_mtime_ns:x}", stat.st_mtime)

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def delete_many(self, keys: list[str]) -> None:
        """Delete ``keys`` (missing ones are fine), then their folders if that left them empty."""
        for key in keys:
            self.delete(key)
        for folder in sorted({self.path(key).parent for key in keys}, reverse=True):
            with contextlib.suppress(OSError):  # not empty, or already gone
                folder.rmdir()

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix.rstrip("/")), ignore_errors=True)

    def list(self, prefix: str) -> Iterator[tuple[str, float]]:
        """(key, modification time) of every file under ``prefix``, temporary files left out."""
        top = self.path(prefix.rstrip("/"))
        for folder, _dirs, names in os.walk(top):
            for name in names:
                if name.startswith("."):
                    continue
                path = Path(folder) / name
                with contextlib.suppress(FileNotFoundError):
                    yield path.relative_to(self.root).as_posix(), path.stat().st_mtime

    def free_bytes(self) -> tuple[int, int] | None:
        """(free, total) bytes on the volume holding ``root``."""
        usage = shutil.disk_usage(self.root if self.root.exists() else self.root.parent)
        return usage.free, usage.total

    def presigned_url(self, key: str, expires_s: int, download_name: str, content_type: str) -> str | None:
        return None  # the API streams the file itself

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"backend": self.backend, "path": str(self.root)}
        try:
            free, total = self.free_bytes()
        except OSError as exc:
            return {**info, "error": str(exc)}
        return {**info, "freeBytes": free, "totalBytes": total}


# -- S3-compatible object storage ----------------------------------------------------------------

# A PUT of a 4 MB stage file takes a few ms on a LAN; these bound a server that stopped answering.
S3_CONNECT_TIMEOUT_S = 2.0
S3_READ_TIMEOUT_S = 15.0
# The health check must answer within a second even when the storage is away.
S3_PROBE_TIMEOUT_S = 0.4
# Photo writers (up to 12 in an API process), a threads-pool worker's tasks, the sweep.
S3_MAX_CONNECTIONS = 32


class S3Storage:
    """Objects in ``bucket`` under ``prefix``, through boto3 (AWS S3, MinIO, Ceph, moto, ...).

    PUT makes an object visible whole or not at all, and is acknowledged once stored: every write
    is atomic and durable on return, so ``durable=False`` and ``sync`` cost nothing here. Nothing is
    written to the local disk: downloads stream from the object (or are redirected to a presigned
    URL), uploads go from memory.
    """

    backend = "s3"

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 public_endpoint_url: str | None = None):
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        # Presigned URLs are for clients outside the cluster, which may reach the storage by another
        # name than the workers do (MinIO as http://minio:9000 inside, https://files.example.com out).
        self.public_endpoint_url = public_endpoint_url or endpoint_url
        self.location = f"s3://{bucket}/{self.prefix}"
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Storage(s3://{self.bucket}/{self.prefix})"

    # boto3 is imported and its clients built on first use, in the process that uses them (after
    # gunicorn's or Celery's fork): a client holds a connection pool that must not cross a fork.
    def _client(self, role: str = "main") -> Any:
        client = self._clients.get(role)
        if client is None:
            with self._lock:
                client = self._clients.get(role)
                if client is None:
                    client = self._clients[role] = self._make_client(role)
        return client

    def _make_client(self, role: str) -> Any:
        import boto3
        from botocore.config import Config

        if role == "probe":
            config = Config(connect_timeout=S3_PROBE_TIMEOUT_S, read_timeout=S3_PROBE_TIMEOUT_S,
                            retries={"max_attempts": 1, "mode": "standard"})
        else:
            config = Config(connect_timeout=S3_CONNECT_TIMEOUT_S, read_timeout=S3_READ_TIMEOUT_S,
                            max_pool_connections=S3_MAX_CONNECTIONS,
                            retries={"max_attempts": 4, "mode": "standard"},
                            signature_version="s3v4",
                            # Checksums only where the S3 API requires them: not every
                            # S3-compatible server accepts the newer default ones.
                            request_checksum_calculation="when_required",
                            response_checksum_validation="when_required")
        endpoint = self.public_endpoint_url if role == "presign" else self.endpoint_url
        return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def prepare(self) -> None:
        pass  # the bucket is the operator's (compose's minio-init, Terraform, ...); health checks it

    def put(self, key: str, data: bytes, durable: bool = True) -> None:
        with _s3_errors(self):
            self._client().put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def sync(self, key: str) -> None:
        pass  # a PUT is durable once acknowledged

    def get(self, key: str) -> bytes:
        body = self._get_object(key)["Body"]
        with _s3_errors(self):
            try:
                return body.read()
            finally:
                body.close()

    def open(self, key: str) -> StoredObject:
        response = self._get_object(key)
        return StoredObject(response["Body"], int(response["ContentLength"]),
                            response["ETag"].strip('"'), response["LastModified"].timestamp())

    def _get_object(self, key: str) -> dict[str, Any]:
        client = self._client()
        with _s3_errors(self):
            try:
                return client.get_object(Bucket=self.bucket, Key=self._key(key))
            except client.exceptions.NoSuchKey:
                raise FileNotFoundError(f"s3://{self.bucket}/{self._key(key)}") from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        with _s3_errors(self):
            try:
                self._client().head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return True

    def delete(self, key: str) -> None:
        with _s3_errors(self):
            self._client().delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_many(self, keys: list[str]) -> None:
        """One DeleteObjects request (missing keys are fine): what a job's end costs on S3."""
        with _s3_errors(self):
            for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
                batch = [{"Key": self._key(key)} for key in keys[start:start + 1000]]
                self._client().delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def delete_prefix(self, prefix: str) -> None:
        """Every object under ``prefix``: a listing, then DeleteObjects."""
        self.delete_many([key for key, _ in self.list(prefix)])

    def list(self, prefix: str) -> Iterator[tuple[str, float]]:
        with _s3_errors(self):
            paginator = self._client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", ()):
                    yield item["Key"][len(self.prefix):], item["LastModified"].timestamp()

    def free_bytes(self) -> tuple[int, int] | None:
        return None  # object storage has no volume to fill; nothing is written under DATA_DIR

    def presigned_url(self, key: str, expires_s: int, download_name: str, content_type: str) -> str | None:
        """A GET URL valid for ``expires_s`` seconds that answers with our file name and type
        (computed locally: no request to the storage)."""
        return self._client("presign").generate_presigned_url(
            "get_object", ExpiresIn=int(expires_s),
            Params={"Bucket": self.bucket, "Key": self._key(key), "ResponseContentType": content_type,
                    "ResponseContentDisposition": f'attachment; filename="{download_name}"'})

    def describe(self) -> dict[str, Any]:
        """What health shows: where the objects go, and whether the bucket answers (one HEAD)."""
        info: dict[str, Any] = {"backend": self.backend, "bucket": self.bucket, "prefix": self.prefix,
                                "endpoint": self.endpoint_url or "AWS S3",
                                "note": "object storage: nothing is written under DATA_DIR"}
        started = time.perf_counter()
        try:
            self._client("probe").head_bucket(Bucket=self.bucket)
        except Exception as exc:
            return {**info, "reachable": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        return {**info, "reachable": True, "latencyMs": round((time.perf_counter() - started) * 1000, 2)}


@contextlib.contextmanager
def _s3_errors(storage: S3Storage) -> Iterator[None]:
    """botocore's errors as ``StorageUnavailable`` (``FileNotFoundError`` passes through)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnavailable(f"object storage s3://{storage.bucket}/{storage.prefix}: "
                                 f"{type(exc).__name__}: {exc}") from exc
