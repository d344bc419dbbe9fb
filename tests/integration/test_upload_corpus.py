"""Hostile and careless uploads against the real stack: each gets its exact status and message,
none gets a 5xx, and the worker is still there (and still makes avatars) afterwards."""
from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import requests
from hostile_inputs import (HEIC_LIKE, JPEG_MAGIC_THEN_ZEROS, PDF, SVG, TEXT, animated_png, animated_webp,
                            cmyk_jpeg, encode, exif_rotated_jpeg, grey_jpeg, many_chunk_png, png_bomb,
                            polyglot_jpeg_zip, scan_bomb_jpeg, sixteen_bit_png, webp_with_lying_canvas)
from service_stack import LocalStack

BOUNDARY = "c0rpusB0undary"
UNSUPPORTED = (400, "Unsupported file type: only JPEG, PNG and WebP images are accepted.")
TOO_SMALL = (400, "Image too small. Minimum size is 224x224 pixels.")
TRUNCATED = (400, "Image data is truncated: the file ends before the image does")
ANIMATED = (400, "Animated images are not accepted: send a single still photo.")
MALFORMED = ("Malformed multipart/form-data body: {what}. Send the photos as form fields front, left and "
             "right (for example curl -F \"front=@front.jpg\" ...).")


def form_part(name: str, data: bytes, filename: str | bytes | None = "photo.jpg",
              content_type: str = "image/jpeg") -> bytes:
    disposition = f'form-data; name="{name}"'.encode()
    if filename is not None:
        raw = filename if isinstance(filename, bytes) else filename.encode()
        disposition += b'; filename="' + raw + b'"'
    return (f"--{BOUNDARY}\r\n".encode() + b"Content-Disposition: " + disposition
            + f"\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n")


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@dataclass
class Photos:
    array: np.ndarray  # the astronaut, RGB
    jpeg: bytes

    def with_front(self, front: bytes, filename: str | bytes = "front.jpg") -> bytes:
        return form(form_part("front", front, filename), form_part("left", self.jpeg, "left.jpg"),
                    form_part("right", self.jpeg, "right.jpg"))


@dataclass
class Case:
    body: Callable[[Photos], bytes]
    status: int
    front_error: str | None = None  # the front file's verdict in details[]
    error: str = "Image validation failed"  # the envelope's error
    details: list[dict[str, Any]] | None = None  # the whole details[], where it says more
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}"
    then: Callable[[LocalStack, requests.Response], None] | None = None


def _front(build: Callable[[Photos], bytes], expected: tuple[int, str], **kw) -> Case:
    return Case(lambda p: p.with_front(build(p)), expected[0], expected[1], **kw)


def _accepted(build: Callable[[Photos], bytes], filename: str | bytes = "front.jpg",
              then: Callable[[LocalStack, requests.Response], None] | None = None) -> Case:
    return Case(lambda p: p.with_front(build(p), filename), 202, then=then)


def _completes(stack: LocalStack, response: requests.Response) -> None:
    status = stack.wait_for_end(response.json()["data"]["avatarId"])
    assert status["status"] == "completed", status


def _recorded_filename(expected: str) -> Callable[[LocalStack, requests.Response], None]:
    def check(stack: LocalStack, response: requests.Response) -> None:
        avatar_id = response.json()["data"]["avatarId"]
        uploads = stack.store.get(avatar_id).doc["uploads"]
        assert uploads["front"]["filename"] == expected
        # Stored under our own names only, whatever the client called the file.
        stored = {key.rpartition("/")[2] for key, _ in stack.files.storage.list(f"uploads/{avatar_id}/")}
        assert stored <= {"front", "left", "right"}
    return check


def _missing(view: str, description: str) -> dict[str, Any]:
    return {"filename": None, "valid": False,
            "error": f"Missing file: '{view}' is required (a {description} face photo)."}


LONG_NAME = "a" * 100_000 + ".jpg"

CASES: dict[str, Case] = {
    "empty-part": _front(lambda p: b"", (400, "File is empty: attach the photo itself, not just its name.")),
    "wrong-field-names": Case(
        lambda p: form(*(form_part(f"photo{i}", p.jpeg, f"{i}.jpg") for i in (1, 2, 3))), 400, details=[
            _missing("front", "front-facing"), _missing("left", "left profile"), _missing("right", "right profile"),
            *({"filename": f"{i}.jpg", "valid": False,
               "error": f"Unexpected field 'photo{i}': send only front, left and right."} for i in (1, 2, 3))]),
    "duplicate-field": Case(
        lambda p: form(form_part("front", p.jpeg, "a.jpg"), form_part("front", p.jpeg, "b.jpg"),
                       form_part("left", p.jpeg), form_part("right", p.jpeg)), 400, details=[
            {"filename": "a.jpg", "valid": True, "error": None},
            {"filename": "photo.jpg", "valid": True, "error": None},
            {"filename": "photo.jpg", "valid": True, "error": None},
            {"filename": "b.jpg", "valid": False, "error": "Duplicate field 'front': send it once."}]),
    "text-named-jpg": _front(lambda p: TEXT, UNSUPPORTED),
    "pdf": _front(lambda p: PDF, UNSUPPORTED),
    "svg": _front(lambda p: SVG, UNSUPPORTED),
    "gif": _front(lambda p: encode(p.array, "GIF"), UNSUPPORTED),
    "bmp": _front(lambda p: encode(p.array, "BMP"), UNSUPPORTED),
    "tiff": _front(lambda p: encode(p.array, "TIFF"), UNSUPPORTED),
    "heic-like": _front(lambda p: HEIC_LIKE, UNSUPPORTED),
    "jpeg-magic-then-zeros": _front(lambda p: JPEG_MAGIC_THEN_ZEROS, (400, "File is not a readable image")),
    "truncated-jpeg": _front(lambda p: p.jpeg[:len(p.jpeg) // 2], TRUNCATED),
    "truncated-png": _front(lambda p: (lambda d: d[:len(d) // 2])(encode(p.array, "PNG")), TRUNCATED),
    # Accepted: everything after the end-of-image marker is dropped before storing.
    "jpeg-trailing-garbage": _accepted(lambda p: p.jpeg + b"trailing garbage " * 64, then=_completes),
    "polyglot-jpeg-zip": _accepted(lambda p: polyglot_jpeg_zip(p.jpeg)),
    "1x1": _front(lambda p: grey_jpeg(1, 1), TOO_SMALL),
    "223x223": _front(lambda p: grey_jpeg(223, 223), TOO_SMALL),
    "4097x10": _front(lambda p: grey_jpeg(4097, 10), TOO_SMALL),
    "4097x300": _front(lambda p: grey_jpeg(4097, 300), (400, "Image too large. Maximum size is 4096x4096 pixels.")),
    "10MB-plus-1": _front(lambda p: b"\xff\xd8\xff" + b"\x00" * (10 * 1024 * 1024 - 2),
                          (400, "File too large. Maximum size is 10MB per image.")),
    "png-bomb-50000x50000": _front(lambda p: png_bomb(),
                                   (400, "Image too large. Maximum size is 4096x4096 pixels.")),
    "webp-lying-canvas": _front(lambda p: webp_with_lying_canvas(p.array),
                                (400, "Image data is corrupt: the file does not hold together as a WebP image")),
    # Decoder work bombs: valid files whose structure would make decoding cost minutes.
    "progressive-jpeg-10000-scans": _front(lambda p: scan_bomb_jpeg(p.array, 10_000), (
        400, "Image has more than 100 progressive scans, which no ordinary photo has; save it again as "
             "an ordinary (baseline) JPEG")),
    "progressive-jpeg-100-scans": _accepted(lambda p: scan_bomb_jpeg(p.array, 100), then=_completes),
    "png-20000-chunks": _front(lambda p: many_chunk_png(p.array, 20_000), (
        400, "Image has more than 10000 PNG chunks, which no ordinary photo has; save it again as an "
             "ordinary PNG or JPEG")),
    "animated-webp": _front(lambda p: animated_webp(p.array), ANIMATED),
    "animated-png": _front(lambda p: animated_png(p.array), ANIMATED),
    "cmyk-jpeg": _accepted(lambda p: cmyk_jpeg(p.array), then=_completes),
    "16-bit-png": _accepted(lambda p: sixteen_bit_png(p.array)),
    "alpha-png": _accepted(lambda p: encode(np.dstack([p.array, np.full(p.array.shape[:2], 200, np.uint8)]),
                                            "PNG")),
    "exif-rotated": _accepted(lambda p: exif_rotated_jpeg(p.array), then=_completes),
    "path-traversal-filename": _accepted(lambda p: p.jpeg, "../../etc/passwd",
                                         then=_recorded_filename("../../etc/passwd")),
    "100KB-filename": _accepted(lambda p: p.jpeg, LONG_NAME, then=_recorded_filename(LONG_NAME[:254] + "…")),
    "non-utf8-filename": _accepted(lambda p: p.jpeg, b"\xff\xfephoto\xe9.jpg",
                                   then=_recorded_filename("\ufffd\ufffdphoto\ufffd.jpg")),
    "body-cut-short": Case(lambda p: p.with_front(p.jpeg)[:-3000], 400,
                           error=MALFORMED.format(what="the closing boundary is missing (truncated upload?)")),
    "no-content-disposition": Case(
        lambda p: f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\n".encode() + p.jpeg + b"\r\n"
        + form(form_part("left", p.jpeg), form_part("right", p.jpeg)), 400,
        error=MALFORMED.format(what="a part has no Content-Disposition header")),
    "too-many-parts": Case(lambda p: form(*(form_part(f"f{i}", b"x", None) for i in range(40))), 400,
                           error=MALFORMED.format(what="it has more than 16 parts")),
    "json-instead-of-form": Case(lambda p: b'{"front": "..."}', 415, content_type="application/json",
                                 error="Send the photos as multipart/form-data with the file fields front, "
                                       "left and right (got Content-Type 'application/json')."),
}


@pytest.fixture(scope="module")
def photos(astronaut: np.ndarray, astronaut_jpeg: bytes) -> Photos:
    return Photos(astronaut, astronaut_jpeg)


@pytest.fixture(scope="module")
def workers_before(stack: LocalStack) -> set[int]:
    return _worker_pids(stack)


def _worker_pids(stack: LocalStack) -> set[int]:
    health = requests.get(stack.url("/api/avatar/health"), timeout=5).json()["data"]
    return {w["pid"] for w in health["workers"]["processes"]}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_upload(stack: LocalStack, photos: Photos, workers_before: set[int], name: str) -> None:
    case = CASES[name]
    response = requests.post(stack.url("/api/avatar/generate"), data=case.body(photos), timeout=60,
                             headers={"Content-Type": case.content_type})
    assert response.status_code < 500, response.text
    assert response.status_code == case.status, response.text
    body = response.json()
    if case.status == 202:
        assert body["success"] is True and body["data"]["status"] == "queued"
    else:
        assert body["success"] is False
        assert body["error"] == case.error
    if case.front_error is not None:
        assert body["details"][0] == {"filename": "front.jpg", "valid": False, "error": case.front_error}
        assert [d["valid"] for d in body["details"]] == [False, True, True]
    if case.details is not None:
        assert body["details"] == case.details
    if case.then is not None:
        case.then(stack, response)


def test_a_body_declared_too_large_is_refused_before_it_is_read(stack: LocalStack) -> None:
    """Content-Length over the request limit: 413 at once, with no body sent at all."""
    host, port = stack.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /api/avatar/generate HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                     f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                     f"Content-Length: {200 * 1024 * 1024}\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b'"error":"Upload too large: send three JPEG, PNG or WebP images of at most 10 MB each."' in payload


def test_after_the_corpus_the_same_workers_still_make_avatars(stack: LocalStack, photos: Photos,
                                                              workers_before: set[int]) -> None:
    assert _worker_pids(stack) == workers_before
    response = requests.post(stack.url("/api/avatar/generate"), data=photos.with_front(photos.jpeg),
                             headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                                      "Prefer": "wait=30"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["status"] == "completed"
