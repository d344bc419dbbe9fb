"""``client.AvatarClient`` against the real local stack: submit, wait, download, info, health, errors."""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from service_stack import LocalStack, encode_jpeg

from bench.photos import avatar_views
from client import AvatarClient, InvalidRequest, JobFailed, NotFound

GLB_MAGIC = b"glTF"


@pytest.fixture(scope="module")
def views() -> dict[str, bytes]:
    return avatar_views(512)


@pytest.fixture()
def client(stack: LocalStack):
    with AvatarClient(stack.base_url, timeout=10) as c:
        yield c


def test_submit_wait_download_info(client: AvatarClient, views: dict[str, bytes], tmp_path: Path,
                                   stack: LocalStack) -> None:
    submission = client.submit(views["front"], views["left"], views["right"])
    assert submission.status == "queued" and not submission.completed
    uuid.UUID(submission.idempotency_key)  # a UUID was generated and sent
    final = client.wait(submission.avatar_id, timeout=30)
    assert final.status == "completed" and final.progress == 1.0

    target = tmp_path / "nested" / "me.glb"
    assert client.download(submission.avatar_id, target) == target
    data = target.read_bytes()
    assert data[:4] == GLB_MAGIC
    assert [p.name for p in target.parent.iterdir()] == ["me.glb"]  # no temporary file left behind

    info = client.info(submission.avatar_id)
    assert info["downloadCount"] == 1 and info["metadata"]["glbSize"] == len(data)
    assert client.health()["status"] == "healthy"


def test_prefer_wait_returns_the_finished_avatar(client: AvatarClient, views: dict[str, bytes]) -> None:
    submission = client.submit(views["front"], views["left"], views["right"], wait_s=30)
    assert submission.completed
    assert submission.data["meshInfo"]["type"] == "head"


def test_a_photo_without_a_face_raises_job_failed_with_the_view(client: AvatarClient,
                                                                 views: dict[str, bytes]) -> None:
    from skimage import data

    cat = encode_jpeg(data.chelsea())
    submission = client.submit(cat, views["left"], views["right"])
    with pytest.raises(JobFailed) as failed:
        client.wait(submission.avatar_id, timeout=30)
    assert failed.value.code == "no_face"
    assert failed.value.message == "front: no face found"
    assert failed.value.avatar_id == submission.avatar_id
    # With Prefer: wait the failure comes back on the POST itself, as the same error.
    with pytest.raises(JobFailed) as failed_now:
        client.submit(cat, views["left"], views["right"], wait_s=30)
    assert failed_now.value.message == "front: no face found"


def test_refused_photos_carry_the_envelope(client: AvatarClient, views: dict[str, bytes]) -> None:
    tiny = encode_jpeg(np.full((100, 300, 3), 128, np.uint8))
    with pytest.raises(InvalidRequest) as refused:
        client.submit(tiny, views["left"], views["right"])
    assert refused.value.status == 400
    assert refused.value.message == "Image validation failed"
    assert refused.value.details[0]["error"] == "Image too small. Minimum size is 224x224 pixels."
    # What was refused, by view, also in the exception's own message.
    assert refused.value.refusals() == {"front": "Image too small. Minimum size is 224x224 pixels."}
    assert "front: Image too small" in str(refused.value)
    with pytest.raises(NotFound) as missing:
        client.status(str(uuid.uuid4()))
    assert missing.value.message == "Avatar not found"
