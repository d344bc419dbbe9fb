"""The service's files by job id, sealed where they hold biometric data, in a ``jobs.storage`` backend.

    uploads/<id>/<view>        the photos, metadata stripped, AES-GCM encrypted (biometric data:
                               deleted when the job ends, whatever the outcome)
    work/<id>/<name>.npz       what one stage hands to the next (decoded photos, crops, landmarks):
                               encrypted the same way, deleted with the photos
    results/<id>.glb           the avatar (kept RESULT_RETENTION_DAYS; see jobs.retention)

The keys are the same on every backend: folders under DATA_DIR on the shared volume, object keys
under STORAGE_URL's prefix in S3. Every write is atomic (a reader sees the whole file or none of it).
Names are ours (the job's random UUID and the view); a client's file name is never used as a key.
"""
from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from jobs.encryption import EncryptionKeyError, FileCipher
from pipeline import VIEWS
from jobs.settings import Settings
from jobs.storage import Storage, StoredObject, VolumeStorage, storage_from_settings

UPLOADS = "uploads"
WORK = "work"
RESULTS = "results"
# The stage files worker.tasks saves (its PREPARED and LANDMARKS): a job's end deletes them by name,
# one request on object storage, where listing a folder first would cost one more each.
STAGE_NAMES = ("prepared", "landmarks")


def result_filename(job_id: str, finished_at: datetime) -> str:
    """The download name the API contract uses: ``avatar_<id>_<unix ms>.glb``."""
    return f"avatar_{job_id}_{int(finished_at.timestamp() * 1000)}.glb"


class FileStore:
    """A job's photos, stage files and GLB, by key, in ``storage`` (a path means the volume there)."""

    def __init__(self, storage: Storage | str | os.PathLike, cipher: FileCipher | None = None):
        self.storage: Storage = storage if hasattr(storage, "put") else VolumeStorage(storage)
        # None: keys and cleanup only (the reconciler, the sweep); reading or writing photos needs the key.
        self.cipher = cipher

    @classmethod
    def from_settings(cls, settings: Settings, keyed: bool = True) -> "FileStore":
        """The store STORAGE_URL names, with the encryption key of ``settings`` (``EncryptionKeyError``
        if it has none) unless ``keyed`` is False."""
        cipher = FileCipher.from_encoded(settings.upload_encryption_key) if keyed else None
        return cls(storage_from_settings(settings), cipher)

    def ensure_dirs(self) -> None:
        self.storage.prepare()

    # -- keys --------------------------------------------------------------------------------

    @staticmethod
    def upload_key(job_id: str, view: str) -> str:
        return f"{UPLOADS}/{job_id}/{view}"

    @staticmethod
    def stage_key(job_id: str, name: str) -> str:
        return f"{WORK}/{job_id}/{name}.npz"

    @staticmethod
    def result_key(job_id: str) -> str:
        return f"{RESULTS}/{job_id}.glb"

    # -- photos and stage files (sealed) ------------------------------------------------------

    def save_upload(self, job_id: str, view: str, data: bytes, sync: bool = True) -> None:
        """Encrypt and store one photo; the associated data binds the file to its job and view.
        ``sync=False`` leaves the fsync to a later ``sync_upload`` (object storage needs none)."""
        self.storage.put(self.upload_key(job_id, view), self._sealer().seal(data, f"{job_id}/{view}"),
                         durable=sync)

    def sync_upload(self, job_id: str, view: str) -> None:
        """Make a photo saved with ``sync=False`` durable (a photo already read and deleted needs nothing)."""
        self.storage.sync(self.upload_key(job_id, view))

    def read_uploads(self, job_id: str, views: tuple[str, ...]) -> dict[str, bytes]:
        """The uploaded photos, decrypted in memory; ``FileNotFoundError`` if they are gone (job ended
        or purged), ``SealedFileError`` if a file was altered or belongs to another job."""
        return {view: self._sealer().open(self.storage.get(self.upload_key(job_id, view)), f"{job_id}/{view}")
                for view in views}

    def save_stage(self, job_id: str, name: str, data: bytes) -> None:
        """Encrypt and store one stage's output (it holds decoded face pixels: biometric too)."""
        # Not synced: stage files are short-lived and rewritten on a retry.
        self.storage.put(self.stage_key(job_id, name), self._sealer().seal(data, f"{job_id}/work/{name}"),
                         durable=False)

    def load_stage(self, job_id: str, name: str) -> bytes:
        return self._sealer().open(self.storage.get(self.stage_key(job_id, name)), f"{job_id}/work/{name}")

    def _sealer(self) -> FileCipher:
        if self.cipher is None:
            raise EncryptionKeyError("this FileStore has no encryption key; build it with "
                                     "FileStore.from_settings(settings)")
        return self.cipher

    # -- the avatar --------------------------------------------------------------------------

    def save_result(self, job_id: str, glb: bytes) -> None:
        self.storage.put(self.result_key(job_id), glb)

    def open_result(self, job_id: str) -> StoredObject:
        """The GLB as a stream with its size and ETag; ``FileNotFoundError`` if it is not stored."""
        return self.storage.open(self.result_key(job_id))

    def read_result(self, job_id: str) -> bytes:
        return self.storage.get(self.result_key(job_id))

    def has_result(self, job_id: str) -> bool:
        return self.storage.exists(self.result_key(job_id))

    def result_url(self, job_id: str, download_name: str, expires_s: int) -> str | None:
        """A short-lived URL the client can fetch the GLB from directly (object storage only), or None."""
        return self.storage.presigned_url(self.result_key(job_id), expires_s, download_name, "model/gltf-binary")

    # -- what is stored (jobs.retention) -------------------------------------------------------

    def has_inputs(self, job_id: str) -> bool:
        """Whether any photo or stage file of ``job_id`` is still stored."""
        return any(True for _ in self.storage.list(f"{UPLOADS}/{job_id}/")) or \
            any(True for _ in self.storage.list(f"{WORK}/{job_id}/"))

    def result_ages(self) -> dict[str, float]:
        """{job id: modification time} of every stored GLB."""
        ages = {}
        for key, modified in self.storage.list(f"{RESULTS}/"):
            name = key.rpartition("/")[2]
            if name.endswith(".glb"):
                ages[name.removesuffix(".glb")] = modified
        return ages

    def input_ages(self) -> dict[str, float]:
        """{job id: newest modification time} of the jobs that have photos or stage files stored."""
        ages: dict[str, float] = {}
        for folder in (UPLOADS, WORK):
            for key, modified in self.storage.list(f"{folder}/"):
                parts = key.split("/")
                if len(parts) >= 3:
                    ages[parts[1]] = max(modified, ages.get(parts[1], 0.0))
        return ages

    # -- cleanup -----------------------------------------------------------------------------
    # A job's own end deletes its files by name (one request on object storage). The retention
    # sweep, which cleans up after crashes, lists the job's folders instead (``purge_*``), so that
    # nothing stays behind whatever its name.

    def _input_keys(self, job_id: str) -> list[str]:
        return [*(self.upload_key(job_id, view) for view in VIEWS),
                *(self.stage_key(job_id, name) for name in STAGE_NAMES)]

    def discard_inputs(self, job_id: str) -> None:
        """Delete the photos and intermediate files of a job that has ended (whatever the outcome)."""
        self.storage.delete_many(self._input_keys(job_id))

    def discard_uploads(self, job_id: str) -> None:
        """Delete the photos (a job's preprocess is done with them once it has handed over)."""
        self.storage.delete_many([self.upload_key(job_id, view) for view in VIEWS])

    def discard_all(self, job_id: str) -> None:
        """Delete everything a job left in storage, the avatar included."""
        self.storage.delete_many([*self._input_keys(job_id), self.result_key(job_id)])

    def purge_inputs(self, job_id: str) -> None:
        """Delete every file under the job's upload and work folders, named by us or not."""
        self.storage.delete_prefix(f"{UPLOADS}/{job_id}/")
        self.storage.delete_prefix(f"{WORK}/{job_id}/")

    def purge_all(self, job_id: str) -> None:
        """``purge_inputs`` and the avatar."""
        self.purge_inputs(job_id)
        self.storage.delete(self.result_key(job_id))

    # -- the storage itself --------------------------------------------------------------------

    @property
    def location(self) -> str:
        """Where the files are, for messages: the volume's path or ``s3://bucket/prefix``."""
        return self.storage.location

    def free_bytes(self) -> tuple[int, int] | None:
        """(free, total) bytes where files are written, or None where no local volume is used (S3)."""
        return self.storage.free_bytes()

    def describe(self) -> dict[str, Any]:
        """Health's ``disk`` section: the backend, where it writes, its free space or reachability."""
        return self.storage.describe()
