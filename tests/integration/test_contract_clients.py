"""Clients written to the original API document work unchanged, and downloads behave as HTTP
clients expect (HEAD, ETag/304, Range/206/416, what counts as a download), against the live stack."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from service_stack import LocalStack, multipart, on_each_storage

EXAMPLE = Path(__file__).resolve().parents[1] / "contract" / "original_python_example.py"


def test_the_original_documents_python_example_gets_a_valid_glb(stack: LocalStack, astronaut_jpeg: bytes,
                                                               tmp_path: Path, validate_gltf) -> None:
    """POST, then an immediate GET of the download URL (no polling): the download waits for the
    job instead of answering 409, so the example writes a GLB, not an error body."""
    source = EXAMPLE.read_text()
    assert source.count("localhost:3000") == 2
    script = tmp_path / "example.py"
    script.write_text(source.replace("localhost:3000", f"127.0.0.1:{stack.settings.port}"))
    for name in ("front.jpg", "left.jpg", "right.jpg"):
        (tmp_path / name).write_bytes(astronaut_jpeg)

    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    avatar_id = run.stdout.strip().removeprefix("Avatar generated: ")
    glb = (tmp_path / "avatar.glb").read_bytes()
    assert glb[:4] == b"glTF", glb[:200]
    report = validate_gltf(glb)
    assert report["issues"]["numErrors"] == 0 and report["issues"]["numWarnings"] == 0, report["issues"]
    info = requests.get(stack.url(f"/api/avatar/info/{avatar_id}"), timeout=5).json()["data"]
    assert info["status"] == "completed" and info["downloadCount"] == 1
    # The contract writes milliseconds as integers.
    assert isinstance(info["metadata"]["generationTime"], int)
    assert isinstance(info["metadata"]["inferenceTime"], int)


def test_status_long_poll_answers_once_the_job_ends(stack: LocalStack, astronaut_jpeg: bytes) -> None:
    posted = requests.post(stack.url("/api/avatar/generate"), files=multipart(astronaut_jpeg, astronaut_jpeg,
                                                                               astronaut_jpeg), timeout=30)
    avatar_id = posted.json()["data"]["avatarId"]
    response = requests.get(stack.url(f"/api/avatar/jobs/{avatar_id}"), headers={"Prefer": "wait=30"}, timeout=40)
    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "wait=30"
    assert response.json()["data"]["status"] == "completed"


def test_status_long_poll_gives_up_after_the_wait(stack: LocalStack) -> None:
    avatar_id = str(uuid.uuid4())
    stack.store.create(avatar_id, owner=None, uploads={})  # recorded, never queued: it stays queued
    started = time.monotonic()
    response = requests.get(stack.url(f"/api/avatar/jobs/{avatar_id}"), headers={"Prefer": "wait=1"}, timeout=10)
    assert 1.0 <= time.monotonic() - started < 3.0
    assert response.status_code == 200 and response.json()["data"]["status"] == "queued"


@pytest.fixture(scope="module")
def finished_avatar(stack: LocalStack, astronaut_jpeg: bytes) -> tuple[str, bytes]:
    """A completed avatar and its GLB, downloaded once (downloadCount 1)."""
    posted = requests.post(stack.url("/api/avatar/generate"), headers={"Prefer": "wait=30"},
                           files=multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg), timeout=40)
    assert posted.status_code == 200, posted.text
    avatar_id = posted.json()["data"]["avatarId"]
    glb = requests.get(stack.url(f"/api/avatar/download/{avatar_id}"), timeout=10).content
    return avatar_id, glb


def download_count(stack: LocalStack, avatar_id: str) -> int:
    # The count is recorded once the server has sent the last byte: after the client has read it.
    time.sleep(0.2)
    return requests.get(stack.url(f"/api/avatar/info/{avatar_id}"), timeout=5).json()["data"]["downloadCount"]


@on_each_storage
def test_head_is_not_a_download(stack: LocalStack, finished_avatar: tuple[str, bytes]) -> None:
    avatar_id, glb = finished_avatar
    before = download_count(stack, avatar_id)
    head = requests.head(stack.url(f"/api/avatar/download/{avatar_id}"), timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == len(glb)
    assert head.headers["Accept-Ranges"] == "bytes" and head.headers["ETag"]
    assert download_count(stack, avatar_id) == before


@on_each_storage
def test_a_matching_etag_is_304_and_not_a_download(stack: LocalStack, finished_avatar: tuple[str, bytes]) -> None:
    avatar_id, _glb = finished_avatar
    url = stack.url(f"/api/avatar/download/{avatar_id}")
    etag = requests.head(url, timeout=5).headers["ETag"]
    before = download_count(stack, avatar_id)
    response = requests.get(url, headers={"If-None-Match": etag}, timeout=5)
    assert response.status_code == 304 and response.content == b""
    assert response.headers["ETag"] == etag
    assert download_count(stack, avatar_id) == before
    # Any other tag gets the file.
    assert requests.get(url, headers={"If-None-Match": '"other"'}, timeout=5).status_code == 200
    assert download_count(stack, avatar_id) == before + 1


@on_each_storage
def test_ranges_resume_a_download_and_count_it_when_the_last_byte_is_sent(
        stack: LocalStack, finished_avatar: tuple[str, bytes]) -> None:
    avatar_id, glb = finished_avatar
    url = stack.url(f"/api/avatar/download/{avatar_id}")
    before = download_count(stack, avatar_id)
    first = requests.get(url, headers={"Range": "bytes=0-99"}, timeout=5)
    assert first.status_code == 206
    assert first.headers["Content-Range"] == f"bytes 0-99/{len(glb)}"
    assert first.content == glb[:100]
    assert download_count(stack, avatar_id) == before  # a part is not a download

    etag = first.headers["ETag"]
    rest = requests.get(url, headers={"Range": "bytes=100-", "If-Range": etag}, timeout=5)
    assert rest.status_code == 206 and first.content + rest.content == glb
    assert download_count(stack, avatar_id) == before + 1

    # If-Range with a tag that no longer matches: the whole file, as RFC 9110 says.
    changed = requests.get(url, headers={"Range": "bytes=100-", "If-Range": '"stale"'}, timeout=5)
    assert changed.status_code == 200 and changed.content == glb


@on_each_storage
def test_a_range_outside_the_file_is_416_in_the_envelope(stack: LocalStack,
                                                         finished_avatar: tuple[str, bytes]) -> None:
    avatar_id, glb = finished_avatar
    response = requests.get(stack.url(f"/api/avatar/download/{avatar_id}"),
                            headers={"Range": f"bytes={len(glb) + 10}-"}, timeout=5)
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(glb)}"
    body = response.json()
    assert body["success"] is False and str(len(glb)) in body["error"] and body["details"] == {"size": len(glb)}


def test_with_object_storage_a_download_can_redirect_to_a_short_lived_presigned_url(
        s3_stack: LocalStack, astronaut_jpeg: bytes) -> None:
    """DOWNLOAD_PRESIGN_S: the bytes go from the storage to the client, under our file name and type;
    HEAD is still answered by the API, and the download is counted when its URL is handed out."""
    from api import create_app

    posted = requests.post(s3_stack.url("/api/avatar/generate"), headers={"Prefer": "wait=30"},
                           files=multipart(astronaut_jpeg, astronaut_jpeg, astronaut_jpeg), timeout=40)
    assert posted.status_code == 200, posted.text
    avatar_id = posted.json()["data"]["avatarId"]
    streamed = requests.get(s3_stack.url(f"/api/avatar/download/{avatar_id}"), timeout=10)
    assert streamed.status_code == 200 and streamed.content[:4] == b"glTF"

    client = create_app(s3_stack.settings.replace(download_presign_s=60)).test_client()
    head = client.head(f"/api/avatar/download/{avatar_id}")
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(streamed.content)
    redirect = client.get(f"/api/avatar/download/{avatar_id}")
    assert redirect.status_code == 302, redirect.get_data(as_text=True)
    url = redirect.headers["Location"]
    assert url.startswith(s3_stack.settings.s3_endpoint_url) and "X-Amz-Expires=60" in url
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200 and fetched.content == streamed.content
    assert fetched.headers["Content-Type"] == "model/gltf-binary"
    assert fetched.headers["Content-Disposition"] == streamed.headers["Content-Disposition"]
    assert download_count(s3_stack, avatar_id) == 2
    # The redirect is in the API's own description of itself.
    from openapi_spec_validator import validate

    documented = client.get("/api/openapi.json").get_json()
    validate(documented)
    assert "302" in documented["paths"]["/api/avatar/download/{avatar_id}"]["get"]["responses"]
    # The web page's own fetch() gets the bytes here: its CSP allows this origin only.
    from_page = client.get(f"/api/avatar/download/{avatar_id}", headers={"Sec-Fetch-Mode": "cors",
                                                                         "Sec-Fetch-Site": "same-origin"})
    assert from_page.status_code == 200 and from_page.data == streamed.content
