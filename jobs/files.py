"""Files on the shared volume (DATA_DIR), laid out by job id.

    uploads/<id>/<view>        the photos, metadata stripped, AES-GCM encrypted (biometric data:
                               deleted when the job ends, whatever the outcome)
    work/<id>/<name>.npz       what one stage hands to the next (decoded photos, crops, landmarks):
                               encrypted the same way, deleted with the photos
    results/<id>.glb           the avatar (kept RESULT_RETENTION_DAYS; see jobs.retention)

Every write goes to a temporary file in the same directory and is then renamed over the final name,
so a reader on another machine sees either the whole file or none of it. File names are ours (the
job's random UUID and the view); a client's file name is never used as a path.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from jobs.encryption import EncryptionKeyError, FileCipher
from jobs.settings import Settings


def result_filename(job_id: str, finished_at: datetime) -> str:
    """The download name the API contract uses: ``avatar_<id>_<unix ms>.glb``."""
    return f"avatar_{job_id}_{int(finished_at.timestamp() * 1000)}.glb"


class FileStore:
    """Paths and atomic writes under ``root`` (the shared DATA_DIR)."""

    def __init__(self, root: str | os.PathLike, cipher: FileCipher | None = None):
        # Absolute: Flask's send_file resolves a relative path against the app's package, not the
        # working directory (a relative DATA_DIR such as `make run`'s var/data made downloads 500).
        self.root = Path(root).absolute()
        # None: paths and cleanup only (tests, the sweep); reading or writing photos needs the key.
        self.cipher = cipher

    @classmethod
    def from_settings(cls, settings: Settings) -> "FileStore":
        """The store with the encryption key of ``settings`` (``EncryptionKeyError`` if it has none)."""
        return cls(settings.data_dir, FileCipher.from_encoded(settings.upload_encryption_key))

    def ensure_dirs(self) -> None:
        for name in ("uploads", "work", "results"):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------------------------

    def upload_dir(self, job_id: str) -> Path:
        return self.root / "uploads" / job_id

    def work_dir(self, job_id: str) -> Path:
        return self.root / "work" / job_id

    def work_path(self, job_id: str, name: str) -> Path:
        return self.work_dir(job_id) / f"{name}.npz"

    def result_path(self, job_id: str) -> Path:
        return self.root / "results" / f"{job_id}.glb"

    # -- writes ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self, final: Path) -> Iterator[Path]:
        """Yield a temporary path next to ``final``; rename it over ``final`` if the block succeeds.

        The temporary name keeps ``final``'s suffix because some writers (``numpy.savez``) append
        their own suffix to any other name.
        """
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.stem}.{uuid.uuid4().hex}.tmp{final.suffix}")
        try:
            yield temp
            os.replace(temp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def write_bytes(self, final: Path, data: bytes, fsync: bool = True) -> Path:
        with self.writing(final) as temp:
            with open(temp, "wb") as fh:
                fh.write(data)
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
        return final

    def save_upload(self, job_id: str, view: str, data: bytes, sync: bool = True) -> None:
        """Encrypt and store one photo; the associated data binds the file to its job and view.
        ``sync=False`` leaves the fsync to a later ``sync_upload``."""
        self.write_bytes(self.upload_dir(job_id) / view, self._sealer().seal(data, f"{job_id}/{view}"),
                         fsync=sync)

    def sync_upload(self, job_id: str, view: str) -> None:
        """fsync a photo saved with ``sync=False``. Reopened by name: the writer closed it before
        the job was queued, which is what makes it whole for a reader on another host (NFS). A photo
        its preprocess has already read and deleted needs nothing more."""
        try:
            fd = os.open(self.upload_dir(job_id) / view, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_uploads(self, job_id: str, views: tuple[str, ...]) -> dict[str, bytes]:
        """The uploaded photos, decrypted in memory; ``FileNotFoundError`` if they are gone (job ended
        or purged), ``SealedFileError`` if a file was altered or belongs to another job."""
        return {view: self._sealer().open((self.upload_dir(job_id) / view).read_bytes(), f"{job_id}/{view}")
                for view in views}

    def save_stage(self, job_id: str, name: str, data: bytes) -> Path:
        """Encrypt and store one stage's output (it holds decoded face pixels: biometric too)."""
        # No fsync, as before encryption: stage files are short-lived and rewritten on a retry.
        return self.write_bytes(self.work_path(job_id, name), self._sealer().seal(data, f"{job_id}/work/{name}"),
                                fsync=False)

    def load_stage(self, job_id: str, name: str) -> bytes:
        return self._sealer().open(self.work_path(job_id, name).read_bytes(), f"{job_id}/work/{name}")

    def _sealer(self) -> FileCipher:
        if self.cipher is None:
            raise EncryptionKeyError("this FileStore has no encryption key; build it with "
                                     "FileStore.from_settings(settings)")
        return self.cipher

    def save_result(self, job_id: str, glb: bytes) -> Path:
        return self.write_bytes(self.result_path(job_id), glb)

    # -- cleanup -----------------------------------------------------------------------------

    def discard_inputs(self, job_id: str) -> None:
        """Delete the photos and intermediate files of a job that has ended (whatever the outcome)."""
        self.discard_uploads(job_id)
        shutil.rmtree(self.work_dir(job_id), ignore_errors=True)

    def discard_uploads(self, job_id: str) -> None:
        """Delete the photos (a job's preprocess is done with them once it has handed over)."""
        shutil.rmtree(self.upload_dir(job_id), ignore_errors=True)

    def discard_all(self, job_id: str) -> None:
        """Delete everything a job left on disk, the avatar included."""
        self.discard_inputs(job_id)
        with contextlib.suppress(FileNotFoundError):
            self.result_path(job_id).unlink()

    def free_bytes(self) -> tuple[int, int]:
        """(free, total) bytes on the volume holding ``root``."""
        usage = shutil.disk_usage(self.root if self.root.exists() else self.root.parent)
        return usage.free, usage.total

