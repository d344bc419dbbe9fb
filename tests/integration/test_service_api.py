"""The service end to end over HTTP: gunicorn → Redis → a real Celery worker → the real pipeline."""
from __future__ import annotations

import io
import re
import time
import uuid

import numpy as np
import pytest
import redis
import requests
from service_stack import LocalStack, encode_jpeg, multipart, on_each_storage

from jobs.store import JobStatus

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def post(stack: LocalStack, files, headers=None, data=None) -> requests.Response:
    return requests.post(stack.url("/api/avatar/generate"), files=files, data=data, headers=headers or {},
                         timeout=70)


@on_each_storage
def test_generate_poll_download_a_valid_glb(stack: LocalStack, astronaut_jpeg: bytes, validate_gltf) -> None:
    response = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg))
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    avatar_id = data["avatarId"]
    assert UUID4.match(avatar_id)
    assert data["status"] == "queued"
    assert response.headers["Location"] == data["statusUrl"] == f"/api/avatar/jobs/{avatar_id}"
    assert data["downloadUrl"] == f"/api/avatar/download/{avatar_id}"

    status = stack.wait_for_end(avatar_id)
    assert status["status"] == "completed", status
    assert status["progress"] == 1.0 and status["error"] is None
    for step in ("preprocessStage", "inferenceStage", "exportStage", "landmarks", "fitting", "glb", "total"):
        assert step in status["timings"]

    glb = requests.get(stack.url(data["downloadUrl"]), timeout=10)
    assert glb.status_code == 200
    assert glb.headers["Content-Type"] == "model/gltf-binary"
    assert re.fullmatch(rf'attachment; filename="avatar_{avatar_id}_\d{{13}}\.glb"',
                        glb.headers["Content-Disposition"])
    report = validate_gltf(glb.content)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]
    assert report["issues"]["numWarnings"] == 0, report["issues"]["messages"][:5]

    info = requests.get(stack.url(f"/api/avatar/info/{avatar_id}"), timeout=5).json()["data"]
    assert info["id"] == avatar_id and info["method"] == "image_upload" and info["status"] == "completed"
    assert info["downloadCount"] == 1
    assert info["metadata"]["glbSize"] == len(glb.content)
    from pipeline.head import head_template

    head = head_template()
    assert info["meshInfo"]["type"] == "head" and info["meshInfo"]["morphTargets"] == 52
    assert (info["meshInfo"]["vertexCount"], info["meshInfo"]["faceCount"]) == (len(head.positions), len(head.triangles))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", info["createdAt"])

    # The photos and crops are gone once the job has ended; only the GLB stays.
    assert not stack.files.has_inputs(avatar_id)
    assert stack.files.has_result(avatar_id)


def test_prefer_wait_returns_the_completed_body(stack: LocalStack, grace_hopper_jpeg: bytes) -> None:
    response = post(stack, multipart(grace_hopper_jpeg, grace_hopper_jpeg, grace_hopper_jpeg),
                    {"Prefer": "wait=30"})
    assert response.status_code == 200, response.text
    assert response.headers["Preference-Applied"] == "wait=30"
    data = response.json()["data"]
    assert data["status"] == "completed"
    assert set(data) >= {"avatarId", "generationTime", "inferenceTime", "facialFeatures", "meshInfo",
                         "glbInfo", "downloadUrl"}
    assert data["glbInfo"]["size"] > 1000
    assert data["glbInfo"]["filename"].startswith(f"avatar_{data['avatarId']}_")
    assert data["facialFeatures"]["faceShape"]
    assert requests.get(stack.url(data["downloadUrl"]), timeout=10).status_code == 200


def test_mesh_face_gives_the_468_vertex_mask(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    response = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg), {"Prefer": "wait=30"},
                    data={"mesh": "face"})
    assert response.status_code == 200, response.text
    info = response.json()["data"]["meshInfo"]
    assert (info["type"], info["vertexCount"], info["faceCount"]) == ("face", 468, 898)
    glb = requests.get(stack.url(response.json()["data"]["downloadUrl"]), timeout=10).content
    from pipeline.glb import read_glb_json

    gltf = read_glb_json(glb)
    assert gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]["count"] == 468


@pytest.mark.parametrize("value", ["body", "HEAD", ""])
def test_a_bad_mesh_field_is_a_400_naming_it(stack: LocalStack, astronaut_jpeg: bytes, value: str) -> None:
    response = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg), data={"mesh": value})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False and "mesh field must be 'head' or 'face'" in body["error"]
    assert body["details"] == {"field": "mesh", "allowed": ["head", "face"]}


@on_each_storage
def test_a_photo_without_a_face_fails_the_job_with_the_view(stack: LocalStack, astronaut_jpeg: bytes,
                                                            coffee_jpeg: bytes) -> None:
    response = post(stack, multipart(coffee_jpeg, astronaut_jpeg, astronaut_jpeg), {"Prefer": "wait=30"})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"] == "front: no face found"
    avatar_id = body["details"]["avatarId"]
    assert body["details"]["code"] == "no_face"

    status = stack.wait_for_end(avatar_id)
    assert status["status"] == "failed"
    assert status["error"] == {"code": "no_face", "message": "front: no face found", "view": "front"}
    assert not stack.files.has_inputs(avatar_id)

    download = requests.get(stack.url(f"/api/avatar/download/{avatar_id}"), timeout=5)
    assert download.status_code == 422
    assert "front: no face found" in download.json()["error"]


def test_download_of_a_job_that_does_not_end_in_time_is_409_with_the_status(stack: LocalStack) -> None:
    # Recorded but never queued, so it stays queued for as long as the test needs.
    avatar_id = str(uuid.uuid4())
    stack.store.create(avatar_id, owner=None, uploads={})

    started = time.monotonic()
    response = requests.get(stack.url(f"/api/avatar/download/{avatar_id}"), timeout=10)
    waited = time.monotonic() - started
    assert response.status_code == 409
    assert stack.settings.download_wait_s <= waited < stack.settings.download_wait_s + 2
    body = response.json()
    assert body["success"] is False and "not ready" in body["error"]
    assert f"after waiting {stack.settings.download_wait_s:g} s" in body["error"]
    assert body["details"]["status"] == "queued"

    canceled = requests.post(stack.url(f"/api/avatar/jobs/{avatar_id}/cancel"), timeout=5)
    assert canceled.status_code == 200 and canceled.json()["data"]["status"] == "canceled"
    again = requests.post(stack.url(f"/api/avatar/jobs/{avatar_id}/cancel"), timeout=5)
    assert again.status_code == 409 and again.json()["details"]["status"] == "canceled"
    assert requests.get(stack.url(f"/api/avatar/download/{avatar_id}"), timeout=5).status_code == 410


@on_each_storage
def test_cancel_right_after_submit_leaves_no_files(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    avatar_id = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg)).json()["data"]["avatarId"]
    response = requests.post(stack.url(f"/api/avatar/jobs/{avatar_id}/cancel"), timeout=5)
    if response.status_code == 409:  # the worker was faster than the cancel: that is allowed
        assert response.json()["details"]["status"] == "completed"
        return
    assert response.status_code == 200
    assert stack.wait_for_end(avatar_id)["status"] == "canceled"
    # Give a stage that was already running the time to notice the cancel and clean up after itself.
    time.sleep(0.5)
    assert stack.store.get(avatar_id).status is JobStatus.CANCELED
    assert not stack.files.has_inputs(avatar_id)
    assert not stack.files.has_result(avatar_id)


@on_each_storage
def test_delete_removes_record_and_files(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    response = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg), {"Prefer": "wait=30"})
    avatar_id = response.json()["data"]["avatarId"]
    deleted = requests.delete(stack.url(f"/api/avatar/{avatar_id}"), timeout=5)
    assert deleted.status_code == 200 and deleted.json()["data"] == {"avatarId": avatar_id, "deleted": True}
    assert not stack.files.has_result(avatar_id)
    assert requests.get(stack.url(f"/api/avatar/info/{avatar_id}"), timeout=5).status_code == 404


@pytest.mark.parametrize("path", ["/api/avatar/jobs/{id}", "/api/avatar/info/{id}", "/api/avatar/download/{id}"])
@pytest.mark.parametrize("avatar_id", [str(uuid.uuid4()), "not-an-id", "../../etc/passwd"])
def test_unknown_or_malformed_ids_are_404_envelopes(stack: LocalStack, path: str, avatar_id: str) -> None:
    response = requests.get(stack.url(path.format(id=avatar_id)), timeout=5)
    assert response.status_code == 404
    body = response.json()
    assert body["success"] is False and body["error"]


def test_unknown_routes_and_methods_are_envelopes(stack: LocalStack) -> None:
    missing = requests.get(stack.url("/api/avatar/nothing/here"), timeout=5)
    assert missing.status_code == 404 and missing.json()["success"] is False
    wrong_method = requests.put(stack.url("/api/avatar/generate"), timeout=5)
    assert wrong_method.status_code == 405
    assert "POST" in wrong_method.json()["error"]


def test_missing_and_invalid_files_get_per_field_details(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    response = requests.post(stack.url("/api/avatar/generate"),
                             files={"front": ("front.jpg", astronaut_jpeg, "image/jpeg")}, timeout=10)
    assert response.status_code == 400
    body = response.json()
    assert body == {"success": False, "error": "Image validation failed", "details": [
        {"filename": "front.jpg", "valid": True, "error": None},
        {"filename": None, "valid": False,
         "error": "Missing file: 'left' is required (a left profile face photo)."},
        {"filename": None, "valid": False,
         "error": "Missing file: 'right' is required (a right profile face photo)."},
    ]}


def test_small_and_foreign_images_are_rejected_before_queueing(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    tiny = encode_jpeg(np.full((100, 300, 3), 128, np.uint8))
    response = post(stack, multipart(tiny, astronaut_jpeg, astronaut_jpeg))
    assert response.status_code == 400
    assert response.json()["details"][0]["error"] == "Image too small. Minimum size is 224x224 pixels."

    gif = b"GIF89a" + b"\x00" * 100
    response = post(stack, multipart(astronaut_jpeg, gif, gif))
    assert response.status_code == 400  # the contract's status for invalid images, whatever is wrong
    assert [d["valid"] for d in response.json()["details"]] == [True, False, False]


def test_health_reports_every_piece(stack: LocalStack) -> None:
    response = requests.get(stack.url("/api/avatar/health"), timeout=2)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["status"] == "healthy" and data["warnings"] == []
    assert data["model"]["initialized"] is True
    assert data["model"]["inputShape"] == [1, 3, 224, 224]
    assert data["model"]["outputShape"] == [1, 468, 3]
    assert "CPUExecutionProvider" in data["model"]["providers"]
    assert data["model"]["path"].endswith(".onnx")
    assert data["workers"]["seen"] == 3  # two stage worker processes, one that delivers webhooks
    assert set(data["queues"]) == {"cpu", "gpu", "webhooks"}
    assert data["queues"]["gpu"]["processes"] == 2 and data["queues"]["cpu"]["depth"] is not None
    assert data["queues"]["webhooks"]["processes"] == 1
    assert data["redis"]["reachable"] and data["mongodb"]["reachable"]
    assert data["memory"]["totalBytes"] > 0 and data["disk"]["freeBytes"] > 0
    assert response.elapsed.total_seconds() < 1


def test_tokens_make_avatars_private(stack: LocalStack) -> None:
    from flask_jwt_extended import create_access_token

    from api import create_app

    with create_app(stack.settings).app_context():
        alice = {"Authorization": f"Bearer {create_access_token(identity='alice')}"}
        bob = {"Authorization": f"Bearer {create_access_token(identity='bob')}"}
    avatar_id = str(uuid.uuid4())
    stack.store.create(avatar_id, owner="alice", uploads={})

    assert requests.get(stack.url(f"/api/avatar/info/{avatar_id}"), headers=alice, timeout=5).status_code == 200
    assert requests.get(stack.url(f"/api/avatar/info/{avatar_id}"), headers=bob, timeout=5).status_code == 403
    assert requests.get(stack.url(f"/api/avatar/info/{avatar_id}"), timeout=5).status_code == 403
    bad = requests.get(stack.url(f"/api/avatar/info/{avatar_id}"), headers={"Authorization": "Bearer x.y.z"},
                       timeout=5)
    assert bad.status_code == 401 and bad.json()["success"] is False

    listing = requests.get(stack.url("/api/avatar?limit=5"), headers=alice, timeout=5).json()["data"]
    assert avatar_id in [item["avatarId"] for item in listing["avatars"]]
    assert requests.get(stack.url("/api/avatar"), timeout=5).status_code == 401
    assert requests.get(stack.url("/api/avatar?page=0"), headers=alice, timeout=5).status_code == 400


def test_health_names_a_gpu_worker_whose_models_fell_back_to_the_cpu(stack: LocalStack) -> None:
    from jobs.events import WorkerRegistry

    registry = WorkerRegistry(redis.Redis.from_url(stack.settings.redis_url), ttl_s=30)
    name = "gpu-fallback@itest:4242"
    registry.beat(name, {"hostname": "gpu-fallback@itest", "pid": 4242, "queues": ["gpu"], "concurrency": 1,
                         "model": {"initialized": True, "providers": ["CPUExecutionProvider"],
                                   "cudaFallback": True}})
    try:
        data = requests.get(stack.url("/api/avatar/health"), timeout=5).json()["data"]
        assert data["status"] == "degraded"
        assert len(data["warnings"]) == 1 and data["warnings"][0].startswith(f"{name}: onnxruntime-gpu")
        assert "CUDA or cuDNN" in data["warnings"][0]
    finally:
        registry.forget(name)
    assert requests.get(stack.url("/api/avatar/health"), timeout=5).json()["data"]["status"] == "healthy"


def test_health_405_offers_only_the_health_methods(stack: LocalStack) -> None:
    response = requests.post(stack.url("/api/avatar/health"), timeout=5)
    assert response.status_code == 405
    assert "DELETE" not in response.json()["error"] and "GET" in response.json()["error"]
    assert "DELETE" not in response.headers["Allow"]
    # DELETE still reaches avatars by id.
    assert requests.delete(stack.url(f"/api/avatar/{uuid.uuid4()}"), timeout=5).status_code == 404


def test_generate_reports_where_the_time_went(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    response = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg), {"Prefer": "wait=30"})
    assert response.status_code == 200, response.text
    steps = [entry.split(";")[0] for entry in response.headers["Server-Timing"].split(", ")]
    # The photos are written while the record is inserted ("store" is timed in its own thread), and
    # synced to disk once the job is queued.
    assert steps[:8] == ["admission", "parse", "validate", "record", "store", "enqueue", "sync", "wait"]
    avatar_id = response.json()["data"]["avatarId"]

    timings = requests.get(stack.url(f"/api/avatar/jobs/{avatar_id}"), timeout=5).json()["data"]["timings"]
    for key in ("queueWait", "inferenceQueueWait", "exportQueueWait", "preprocessLoad", "preprocessSave",
                "inferenceLoad", "inferenceSave", "exportLoad", "exportSave", "total"):
        assert timings[key] >= 0, key
    job = stack.store.get(avatar_id)
    assert set(job.doc["workers"]) == {"preprocessing", "inference", "exporting"}
    trace = job.trace
    assert trace["preprocessReceived"] <= trace["preprocessFinished"] <= trace["inferenceReceived"] \
        <= trace["inferenceFinished"] <= trace["exportReceived"] <= trace["exportFinished"]


@on_each_storage
def test_a_duplicate_stage_task_leaves_a_finished_job_alone(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    """With late acknowledgement a stage can be delivered twice (its worker died after finishing it)."""
    from worker.app import EXPORT, INFERENCE, PREPROCESS, create_celery

    response = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg), {"Prefer": "wait=30"})
    avatar_id = response.json()["data"]["avatarId"]
    glb = stack.files.read_result(avatar_id)

    celery = create_celery(stack.settings)
    for task in (PREPROCESS, INFERENCE, EXPORT):
        celery.send_task(task, args=(avatar_id,))
    worker_log = stack.logs / "worker.log"
    deadline = time.monotonic() + 10
    while worker_log.read_text(errors="replace").count(avatar_id) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # let the last duplicate finish whatever it does after logging
    job = stack.store.get(avatar_id)
    assert job.status is JobStatus.COMPLETED and job.error is None
    assert stack.files.read_result(avatar_id) == glb


def raw_post(stack: LocalStack, body: bytes, boundary: str = "b0undary") -> requests.Response:
    return requests.post(stack.url("/api/avatar/generate"), data=body, timeout=30,
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


def form_part(name: str, data: bytes, filename: str | None = None, boundary: str = "b0undary") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    return (f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: image/jpeg\r\n\r\n"
            .encode() + data + b"\r\n")


def test_multipart_with_preamble_and_epilogue_is_accepted(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    body = (b"a preamble that clients may send\r\n"
            + b"".join(form_part(v, astronaut_jpeg, f"{v}.jpg") for v in ("front", "left", "right"))
            + b"--b0undary--\r\nan epilogue")
    response = raw_post(stack, body)
    assert response.status_code == 202, response.text
    assert stack.wait_for_end(response.json()["data"]["avatarId"])["status"] == "completed"


def test_malformed_multipart_is_a_400_saying_so(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    truncated = b"".join(form_part(v, astronaut_jpeg, f"{v}.jpg") for v in ("front", "left", "right"))
    response = raw_post(stack, truncated[:-5000])
    assert response.status_code == 400
    assert "closing boundary is missing" in response.json()["error"]

    no_boundary = requests.post(stack.url("/api/avatar/generate"), data=truncated, timeout=10,
                                headers={"Content-Type": "multipart/form-data"})
    assert no_boundary.status_code == 400 and "boundary" in no_boundary.json()["error"]


def test_a_text_field_is_not_a_photo(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    body = (form_part("front", b"just some text") + form_part("left", astronaut_jpeg, "l.jpg")
            + form_part("right", astronaut_jpeg, "r.jpg") + b"--b0undary--\r\n")
    response = raw_post(stack, body)
    assert response.status_code == 400
    assert response.json()["details"][0] == {
        "filename": None, "valid": False,
        "error": "Missing file: 'front' is required (a front-facing face photo)."}


def test_photos_that_cannot_be_stored_leave_no_job_behind(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    """The photos are written while the record is inserted; if writing fails, the record goes too."""
    uploads = stack.settings.data_dir / "uploads"
    moved = uploads.with_name("uploads.moved")
    jobs_before = stack.store.jobs.count_documents({})
    uploads.rename(moved)
    uploads.write_text("not a directory")  # as root, permissions would not stop the write
    try:
        response = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg))
    finally:
        uploads.unlink()
        moved.rename(uploads)
    assert response.status_code == 503, response.text
    assert response.json()["success"] is False
    assert response.json()["error"] == ("The photos could not be stored, so the avatar was not started; "
                                        "please retry in a minute.")
    assert response.headers["Retry-After"] == "30"
    assert stack.store.jobs.count_documents({}) == jobs_before
    # And the service still works.
    response = post(stack, multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg))
    assert response.status_code == 202
    assert stack.wait_for_end(response.json()["data"]["avatarId"])["status"] == "completed"


def test_photos_that_cannot_be_synced_to_disk_fail_the_job_with_a_503(
        stack: LocalStack, astronaut_jpeg: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job is queued once its photos are written and answered once they are synced; a failed
    sync fails it. A disk whose fsync fails cannot be had here, so os.fsync fails instead, in an
    API run in this process over the real stack (the job goes to the real worker)."""
    import errno

    from api import create_app

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    client = create_app(stack.settings).test_client()
    monkeypatch.setattr("jobs.storage.os.fsync", failing_fsync)
    response = client.post("/api/avatar/generate", data={
        view: (io.BytesIO(astronaut_jpeg), f"{view}.jpg") for view in ("front", "left", "right")})
    monkeypatch.undo()
    assert response.status_code == 503, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == ("The photos could not be stored, so the avatar was not started; "
                             "please retry in a minute.")
    assert response.headers["Retry-After"] == "30"
    avatar_id = body["details"]["avatarId"]
    job = stack.wait_for_end(avatar_id)
    assert job["status"] == "failed" and job["error"]["code"] == "storage_unavailable"
    # The job was queued before the sync failed, so the worker may be running its preprocess: it
    # may still write its stage file, and deletes it when it finds the job failed (within the
    # stage's time, well under a second here).
    deadline = time.monotonic() + 10
    while stack.files.has_inputs(avatar_id):
        assert time.monotonic() < deadline, "the photos or a stage file outlived the failed job"
        time.sleep(0.05)


def test_with_the_object_storage_away_no_job_is_left_and_health_says_why(s3_stack: LocalStack,
                                                                          astronaut_jpeg: bytes) -> None:
    """The photos go to a bucket that does not exist: 503 as for a failed disk, no record left behind;
    health is 503 naming the object storage, and its disk section shows the bucket unreachable."""
    from api import create_app

    settings = s3_stack.settings.replace(storage_url="s3://no-such-bucket/avatars")
    client = create_app(settings).test_client()
    jobs_before = s3_stack.store.jobs.count_documents({})
    response = client.post("/api/avatar/generate", data={
        view: (io.BytesIO(astronaut_jpeg), f"{view}.jpg") for view in ("front", "left", "right")})
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json()["error"].startswith("The photos could not be stored")
    assert response.headers["Retry-After"] == "30"
    assert s3_stack.store.jobs.count_documents({}) == jobs_before

    health = client.get("/api/avatar/health")
    assert health.status_code == 503 and "the object storage unreachable" in health.get_json()["error"]
    disk = health.get_json()["details"]["disk"]
    assert disk["backend"] == "s3" and disk["bucket"] == "no-such-bucket" and disk["reachable"] is False
    healthy = requests.get(s3_stack.url("/api/avatar/health"), timeout=5).json()["data"]
    assert healthy["disk"]["reachable"] is True and healthy["disk"]["bucket"] == "avatar-itest"
    assert "path" not in healthy["disk"] and "freeBytes" not in healthy["disk"]


def test_with_object_storage_the_disk_guard_has_no_volume_to_watch(s3_stack: LocalStack,
                                                                   astronaut_jpeg: bytes) -> None:
    """MIN_FREE_DISK_MB guards the volume files are written to; with object storage nothing is
    written under DATA_DIR, so however high it is set, jobs are taken and health has no warning."""
    from api import create_app

    client = create_app(s3_stack.settings.replace(min_free_disk_mb=10**9)).test_client()
    response = client.post("/api/avatar/generate", data={
        view: (io.BytesIO(astronaut_jpeg), f"{view}.jpg") for view in ("front", "left", "right")})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert s3_stack.wait_for_end(response.get_json()["data"]["avatarId"])["status"] == "completed"
    health = client.get("/api/avatar/health").get_json()["data"]
    assert not any("disk space" in warning for warning in health["warnings"])
    assert "minFreeBytes" not in health["disk"] and health["disk"]["backend"] == "s3"
