"""The ``textureSize`` form field, through the real stack: recorded on the job, used by the export."""
from __future__ import annotations

import requests
from service_stack import LocalStack, multipart

from bench.photos import avatar_views
from tests.conftest import glb_texture_side


def test_a_texture_size_asked_for_reaches_the_glb(stack: LocalStack) -> None:
    views = avatar_views(512)
    response = requests.post(stack.url("/api/avatar/generate"), files=multipart(views["front"], views["left"], views["right"]),
                             data={"textureSize": "1024"}, headers={"Prefer": "wait=30"}, timeout=60)
    assert response.status_code == 200, response.text
    avatar_id = response.json()["data"]["avatarId"]
    assert stack.store.get(avatar_id).options == {"mesh": "head", "textureSize": 1024}
    glb = requests.get(stack.url(f"/api/avatar/download/{avatar_id}"), timeout=30)
    assert glb.status_code == 200
    # Her face is ~100 px tall in a 512 px photo: left to itself the texture would be 256².
    assert glb_texture_side(glb.content) == 1024


def test_a_bad_texture_size_is_a_400_naming_the_choices(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    response = requests.post(stack.url("/api/avatar/generate"),
                             files=multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg),
                             data={"textureSize": "4096"}, timeout=30)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False
    assert "textureSize must be one of 512, 1024, 2048 or auto" in body["error"]
    assert body["details"] == {"field": "textureSize"}
