"""Photos at rest: encrypted and metadata-free while queued, gone when the job ends; retention."""
from __future__ import annotations

import io
import time
import uuid
from datetime import timedelta

import cv2
import numpy as np
import pytest
import requests
from hostile_inputs import exif_rotated_jpeg
from PIL import Image, UnidentifiedImageError
from service_stack import LocalStack, multipart, on_each_storage

from api import create_app
from jobs.encryption import SealedFileError
from jobs.files import FileStore
from jobs.retention import sweep
from jobs.store import utcnow
from pipeline import VIEWS
from pipeline.decode import decode_image, read_header


@on_each_storage
def test_a_queued_photo_is_ciphertext_at_rest_and_metadata_free_inside(stack: LocalStack,
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
            raw = stack.files.storage.get(stack.files.upload_key(avatar_id, view))
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
        storage, key = stack.files.storage, stack.files.upload_key
        storage.put(key(avatar_id, "left"), storage.get(key(avatar_id, "front")))
        with pytest.raises(SealedFileError):
            FileStore.from_settings(stack.settings).read_uploads(avatar_id, ("left",))
    finally:
        stack.store.delete(avatar_id)
        stack.files.discard_all(avatar_id)


@on_each_storage
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
        while stack.files.has_inputs(avatar_id):
            assert time.monotonic() < deadline, f"photos of {avatar_id} still stored after the job ended"
            time.sleep(0.01)
        assert stack.files.has_result(avatar_id) == (outcome == 200)


@on_each_storage
def test_the_sweep_deletes_expired_avatars_and_leftovers_but_not_running_jobs(stack: LocalStack) -> None:
    files = stack.files

    def leftover(key: str) -> str:
        files.storage.put(key, b"x")
        return key

    expired = str(uuid.uuid4())
    stack.store.create(expired, owner=None, uploads={})
    stack.store.fail(expired, "test", "ended")
    stack.store.jobs.update_one({"_id": expired}, {"$set": {"expiresAt": utcnow() - timedelta(seconds=1)}})
    leftover(files.result_key(expired))
    orphan_glb = str(uuid.uuid4())
    leftover(files.result_key(orphan_glb))
    orphan_upload = str(uuid.uuid4())
    leftover(files.upload_key(orphan_upload, "front"))
    running = str(uuid.uuid4())
    stack.store.create(running, owner=None, uploads={})
    leftover(files.upload_key(running, "front"))
    # Object storage keeps modification times in whole seconds: the leftovers are made old by
    # waiting, and the grace set between them and the fresh file, counted from when it was written.
    time.sleep(3.0)
    fresh = str(uuid.uuid4())
    leftover(files.upload_key(fresh, "front"))  # a POST between storing photos and recording the job
    written = utcnow()

    report = sweep(stack.store, FileStore.from_settings(stack.settings, keyed=False), now=written, grace_s=1.5)
    # (The workers' reconciler may delete the orphaned upload first: what counts is that it is gone.)
    assert report.expired_records >= 1 and report.orphan_results >= 1
    assert stack.store.find(expired) is None and not files.has_result(expired)
    assert not files.has_result(orphan_glb) and not files.has_inputs(orphan_upload)
    assert files.has_inputs(running) and files.has_inputs(fresh)
    assert stack.store.get(running).doc["expiresAt"] > utcnow() + timedelta(days=29)
    indexes = stack.store.jobs.index_information()
    assert indexes["expiresAt_ttl"]["expireAfterSeconds"] == 0
    stack.store.cancel(running)
    files.discard_all(running)
    files.discard_inputs(fresh)


@on_each_storage
def test_photos_of_a_job_that_ended_without_deleting_them_go_at_once(stack: LocalStack) -> None:
    """A worker killed between recording a job's end and deleting its photos (and whose message was
    lost with a Redis restart) leaves them behind; they must not wait for the hourly sweep."""
    from jobs.retention import discard_ended_inputs

    ended = str(uuid.uuid4())
    stack.store.create(ended, owner=None, uploads={})
    stack.store.fail(ended, "test", "ended")
    stack.files.storage.put(stack.files.upload_key(ended, "front"), b"sealed photo bytes")
    fresh = str(uuid.uuid4())  # a POST that has not recorded yet
    stack.files.storage.put(stack.files.upload_key(fresh, "front"), b"x")
    discard_ended_inputs(stack.store, stack.files)
    assert not stack.files.has_inputs(ended) and stack.files.has_inputs(fresh)
    stack.files.discard_inputs(fresh)


def test_each_process_asks_for_the_sweep_lock_at_most_once_per_interval(stack: LocalStack, monkeypatch) -> None:
    """Every job's end calls sweep_if_due; only the first call per interval may cost a Redis round trip."""
    import redis

    from jobs import retention

    monkeypatch.setattr(retention, "_next_lock_try", 0.0)
    # Redis database 2: the stack's workers take the same lock key in database 0.
    client = redis.Redis.from_url(stack.settings.redis_url.rsplit("/", 1)[0] + "/2")
    client.delete(retention.SWEEP_LOCK_KEY)
    files = FileStore.from_settings(stack.settings, keyed=False)
    assert retention.sweep_if_due(stack.store, files, client, interval_s=60) is not None
    assert client.ttl(retention.SWEEP_LOCK_KEY) > 0
    client.delete(retention.SWEEP_LOCK_KEY)  # as if another process's lock had just expired
    assert retention.sweep_if_due(stack.store, files, client, interval_s=60) is None
    assert not client.exists(retention.SWEEP_LOCK_KEY), "it asked Redis again within the interval"
    monkeypatch.setattr(retention, "_next_lock_try", 0.0)  # the interval has passed
    assert retention.sweep_if_due(stack.store, files, client, interval_s=60) is not None
    client.delete(retention.SWEEP_LOCK_KEY)
