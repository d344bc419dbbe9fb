"""Photos at rest: encrypted and metadata-free while queued, gone when the job ends; retention."""
from __future__ import annotations

import io
import os
import time
import uuid
from datetime import timedelta

import cv2
import numpy as np
import pytest
import requests
from hostile_inputs import exif_rotated_jpeg
from PIL import Image, UnidentifiedImageError
from service_stack import LocalStack, multipart

from api import create_app
from jobs.encryption import SealedFileError
from jobs.files import FileStore
from jobs.retention import sweep
from jobs.store import utcnow
from pipeline import VIEWS
from pipeline.decode import decode_image, read_header


def test_a_queued_photo_is_ciphertext_on_disk_and_metadata_free_inside(stack: LocalStack,
                                                                       astronaut: np.ndarray) -> None:
    # An API whose queue (Redis database 1) no worker reads: the job stays queued while we look.
    redis_db1 = stack.settings.redis_url.rsplit("/", 1)[0] + "/1"
    client = create_app(stack.settings.replace(redis_url=redis_db1)).test_client()
    photo = exif_rotated_jpeg(astronaut)
    data = {view: (io.BytesIO(photo), f"{view}.jpg") for view in VIEWS}
    response = client.post("/api/avatar/generate", data=data, content_type="multipart/form-data", buffered=True)
    assert response.status_code == 202, response.get_json()
    avatar_id = response.get_json()["data"]["avatarId"]
    try:
        assert stack.store.get(avatar_id).status.value == "queued"
        for view in VIEWS:
            raw = (stack.files.upload_dir(avatar_id) / view).read_bytes()
            assert cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR) is None
            with pytest.raises(UnidentifiedImageError):
                Image.open(io.BytesIO(raw))
            assert b"SecretCam" not in raw and b"Exif" not in raw

        # With the key: the photo minus its metadata, the orientation kept, the pixels unchanged.
        stored = FileStore.from_settings(stack.settings).read_uploads(avatar_id, VIEWS)
        front = stored["front"]
        assert b"SecretCam" not in front and read_header(front).orientation == 6
        assert np.array_equal(decode_image(front, max_side=None), decode_image(photo, max_side=None))
        assert stack.store.get(avatar_id).doc["uploads"]["front"]["orientation"] == 6

        # Each file is bound to its job and view: moved to another view, it no longer opens.
        folder = stack.files.upload_dir(avatar_id)
        (folder / "left").write_bytes((folder / "front").read_bytes())
        with pytest.raises(SealedFileError):
            FileStore.from_settings(stack.settings).read_uploads(avatar_id, ("left",))
    finally:
        stack.store.delete(avatar_id)
        stack.files.discard_all(avatar_id)


def test_photos_and_stage_files_are_gone_after_completion_and_after_failure(
        stack: LocalStack, astronaut_jpeg: bytes, coffee_jpeg: bytes) -> None:
    for front, outcome in ((astronaut_jpeg, 200), (coffee_jpeg, 422)):
        response = requests.post(stack.url("/api/avatar/generate"), files=multipart(front, astronaut_jpeg,
                                                                                     astronaut_jpeg),
                                 headers={"Prefer": "wait=30"}, timeout=60)
        assert response.status_code == outcome, response.text
        body = response.json()
        avatar_id = body["data"]["avatarId"] if outcome == 200 else body["details"]["avatarId"]
        # The worker tells waiters first and deletes right after: allow it a moment.
        deadline = time.monotonic() + 3
        while stack.files.upload_dir(avatar_id).exists() or stack.files.work_dir(avatar_id).exists():
            assert time.monotonic() < deadline, f"photos of {avatar_id} still on disk after the job ended"
            time.sleep(0.01)
        assert stack.files.result_path(avatar_id).exists() == (outcome == 200)


def test_the_sweep_deletes_expired_avatars_and_leftovers_but_not_running_jobs(stack: LocalStack) -> None:
    files = stack.files
    old = time.time() - 7200

    def leftover(path, data=b"x"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (old, old))
        if path.parent.name != "results":
            os.utime(path.parent, (old, old))
        return path

    expired = str(uuid.uuid4())
    stack.store.create(expired, owner=None, uploads={})
    stack.store.fail(expired, "test", "ended")
    stack.store.jobs.update_one({"_id": expired}, {"$set": {"expiresAt": utcnow() - timedelta(seconds=1)}})
    leftover(files.result_path(expired))
    orphan_glb = leftover(files.result_path(str(uuid.uuid4())))
    orphan_upload = leftover(files.upload_dir(str(uuid.uuid4())) / "front")
    running = str(uuid.uuid4())
    stack.store.create(running, owner=None, uploads={})
    running_upload = leftover(files.upload_dir(running) / "front")
    fresh = files.upload_dir(str(uuid.uuid4())) / "front"
    fresh.parent.mkdir(parents=True)
    fresh.write_bytes(b"x")  # a POST between storing photos and recording the job

    report = sweep(stack.store, FileStore(stack.settings.data_dir), grace_s=3600)
    # (The workers' reconciler may delete the orphaned upload first: what counts is that it is gone.)
    assert report.expired_records >= 1 and report.orphan_results >= 1
    assert stack.store.find(expired) is None and not files.result_path(expired).exists()
    assert not orphan_glb.exists() and not orphan_upload.parent.exists()
    assert running_upload.exists() and fresh.exists()
    assert stack.store.get(running).doc["expiresAt"] > utcnow() + timedelta(days=29)
    indexes = stack.store.jobs.index_information()
    assert indexes["expiresAt_ttl"]["expireAfterSeconds"] == 0
    stack.store.cancel(running)
    files.discard_all(running)
    files.discard_inputs(fresh.parent.name)


def test_photos_of_a_job_that_ended_without_deleting_them_go_at_once(stack: LocalStack) -> None:
    """A worker killed between recording a job's end and deleting its photos (and whose message was
    lost with a Redis restart) leaves them behind; they must not wait for the hourly sweep."""
    from jobs.retention import discard_ended_inputs

    ended = str(uuid.uuid4())
    stack.store.create(ended, owner=None, uploads={})
    stack.store.fail(ended, "test", "ended")
    photo = stack.files.upload_dir(ended) / "front"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"sealed photo bytes")
    fresh = stack.files.upload_dir(str(uuid.uuid4())) / "front"  # a POST that has not recorded yet
    fresh.parent.mkdir(parents=True)
    fresh.write_bytes(b"x")
    discard_ended_inputs(stack.store, stack.files)
    assert not photo.parent.exists() and fresh.exists()
    stack.files.discard_inputs(fresh.parent.name)


def test_each_process_asks_for_the_sweep_lock_at_most_once_per_interval(stack: LocalStack, monkeypatch) -> None:
    """Every job's end calls sweep_if_due; only the first call per interval may cost a Redis round trip."""
    import redis

    from jobs import retention

    monkeypatch.setattr(retention, "_next_lock_try", 0.0)
    # Redis database 2: the stack's workers take the same lock key in database 0.
    client = redis.Redis.from_url(stack.settings.redis_url.rsplit("/", 1)[0] + "/2")
    client.delete(retention.SWEEP_LOCK_KEY)
    files = FileStore(stack.settings.data_dir)
    assert retention.sweep_if_due(stack.store, files, client, interval_s=60) is not None
    assert client.ttl(retention.SWEEP_LOCK_KEY) > 0
    client.delete(retention.SWEEP_LOCK_KEY)  # as if another process's lock had just expired
    assert retention.sweep_if_due(stack.store, files, client, interval_s=60) is None
    assert not client.exists(retention.SWEEP_LOCK_KEY), "it asked Redis again within the interval"
    monkeypatch.setattr(retention, "_next_lock_try", 0.0)  # the interval has passed
    assert retention.sweep_if_due(stack.store, files, client, interval_s=60) is not None
    client.delete(retention.SWEEP_LOCK_KEY)
