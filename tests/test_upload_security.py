"""Upload hygiene without a stack: metadata stripping, the streaming form reader, file encryption."""
from __future__ import annotations

import io
import os
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from api.metadata import strip_metadata
from api.multipart import FormData, split_parts
from jobs.encryption import EncryptionKeyError, FileCipher, SealedFileError, ensure_local_key, generate_key
from pipeline import PipelineError
from pipeline.decode import decode_image, read_header

SECRET = "SecretCam-GPS-51.5N"


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tagged(astronaut: np.ndarray) -> dict[str, bytes]:
    """The astronaut in every accepted format with EXIF (orientation 6 + a maker tag), an ICC
    profile where the format has one, and a comment."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = SECRET
    exif_bytes = exif.tobytes()
    icc = b"\x00" * 128 + SECRET.encode()
    rgb = Image.fromarray(astronaut)
    rgba = Image.fromarray(np.dstack([astronaut, np.full(astronaut.shape[:2], 128, np.uint8)]))
    return {
        "jpeg": _encode(rgb, "JPEG", exif=exif_bytes, icc_profile=icc, comment=SECRET.encode()),
        "progressive-jpeg": _encode(rgb, "JPEG", exif=exif_bytes, progressive=True),
        "cmyk-jpeg": _encode(rgb.convert("CMYK"), "JPEG", exif=exif_bytes),
        "png": _encode(rgb, "PNG", exif=exif_bytes, icc_profile=icc),
        "rgba-png": _encode(rgba, "PNG", exif=exif_bytes),
        "webp": _encode(rgb, "WEBP", exif=exif_bytes, icc_profile=icc),
        "lossless-rgba-webp": _encode(rgba, "WEBP", lossless=True, exif=exif_bytes),
    }


@pytest.mark.parametrize("kind", ["jpeg", "progressive-jpeg", "cmyk-jpeg", "png", "rgba-png", "webp",
                                  "lossless-rgba-webp"])
def test_stripping_keeps_pixels_and_orientation_and_drops_the_rest(tagged: dict[str, bytes], kind: str) -> None:
    original = tagged[kind]
    assert SECRET.encode() in original
    stripped = strip_metadata(original, read_header(original))
    assert SECRET.encode() not in stripped
    assert read_header(stripped).orientation == 6
    assert np.array_equal(decode_image(stripped, max_side=None), decode_image(original, max_side=None))


def test_bytes_after_the_image_are_dropped(astronaut_jpeg_bytes: bytes) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("x.txt", "payload\xff\xd9")
    polyglot = astronaut_jpeg_bytes + archive.getvalue()
    assert strip_metadata(polyglot, read_header(polyglot)) == strip_metadata(
        astronaut_jpeg_bytes, read_header(astronaut_jpeg_bytes))


def test_a_truncated_file_is_refused(astronaut_jpeg_bytes: bytes) -> None:
    cut = astronaut_jpeg_bytes[:len(astronaut_jpeg_bytes) // 2]
    with pytest.raises(PipelineError, match="truncated"):
        strip_metadata(cut, read_header(cut))


@pytest.fixture(scope="module")
def astronaut_jpeg_bytes(astronaut: np.ndarray) -> bytes:
    return _encode(Image.fromarray(astronaut), "JPEG", quality=90)


def _body(parts: list[tuple[str, str | None, bytes]], boundary: bytes = b"XyZ") -> bytes:
    out = b"preamble\r\n"
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += b"--" + boundary + f"\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def test_the_streaming_reader_cuts_parts_across_chunk_boundaries(monkeypatch) -> None:
    import api.multipart as multipart
    monkeypatch.setattr(multipart, "CHUNK_BYTES", 7)  # every delimiter straddles a chunk
    payloads = [os.urandom(1000) + b"\r\n--Xy" + os.urandom(500), b"", b"\r\n"]  # a delimiter prefix inside
    form = split_parts(_body([("front", "a.jpg", payloads[0]), ("left", "b.jpg", payloads[1]),
                              ("right", None, payloads[2]), ("front", "c.jpg", b"dup")]), b"XyZ")
    assert isinstance(form, FormData)
    assert [p.data for p in form.all] == [*payloads, b"dup"]
    assert form["front"].filename == "a.jpg" and form["right"].filename is None and len(form) == 3


def test_an_oversize_part_is_counted_not_kept() -> None:
    form = split_parts(_body([("front", "big.jpg", b"x" * 5000), ("left", "l.jpg", b"small")]), b"XyZ",
                       max_part_bytes=4096)
    assert form["front"].oversize and form["front"].size == 5000 and form["front"].data == b""
    assert form["left"].data == b"small" and not form["left"].oversize


def test_sealed_files_open_only_with_their_key_and_context() -> None:
    cipher = FileCipher.from_encoded(generate_key())
    sealed = cipher.seal(b"face pixels", "job-1/front")
    assert b"face pixels" not in sealed and cipher.open(sealed, "job-1/front") == b"face pixels"
    assert cipher.seal(b"face pixels", "job-1/front") != sealed  # a fresh nonce every time
    for wrong in (lambda: cipher.open(sealed, "job-2/front"),
                  lambda: FileCipher.from_encoded(generate_key()).open(sealed, "job-1/front"),
                  lambda: cipher.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), "job-1/front")):
        with pytest.raises(SealedFileError):
            wrong()
    assert "face" not in repr(cipher)
    with pytest.raises(EncryptionKeyError, match="not set"):
        FileCipher.from_encoded("")
    with pytest.raises(EncryptionKeyError, match="32 bytes"):
        FileCipher.from_encoded("c2hvcnQ=")


def test_the_local_key_file_is_created_private_and_reused(tmp_path) -> None:
    path = tmp_path / "var" / "upload-encryption.key"
    key = ensure_local_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_local_key(path) == key
    path.chmod(0o644)
    assert ensure_local_key(path) == key and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_anonymous_refusals_are_sampled_and_counted_not_all_written() -> None:
    """A flood of anonymous 4xx writes at most N records a window, then one summary of the rest."""
    import time
    from datetime import datetime, timezone

    from api.audit import AnonymousFailureSampler

    sampler = AnonymousFailureSampler(per_minute=3, retention_days=30, window_s=0.5)

    def entry(status: int, ip: str = "198.51.100.9", user: str | None = None) -> dict:
        return {"time": datetime.now(timezone.utc), "status": status, "ip": ip, "userId": user}

    time.sleep(0.5 - time.time() % 0.5 + 0.01)  # the start of a window
    written = [record for _ in range(10) for record in sampler.admit(entry(404))]
    assert len(written) == 3 and all("expiresAt" in r for r in written)
    # A user's failures and any success are always written, and are not sampled.
    assert len(sampler.admit(entry(403, user="ann"))) == 1 and len(sampler.admit(entry(200))) == 1
    time.sleep(0.6)
    (summary, first) = sampler.admit(entry(429, "203.0.113.4"))
    assert summary["operation"] == "sampled_out" and summary["dropped"] == 7
    assert summary["droppedByStatus"] == {"404": 7} and summary["droppedByIp"] == {"198.51.100.9": 7}
    assert first["status"] == 429
