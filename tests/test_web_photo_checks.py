"""The web page checks a photo in the browser before sending it (web/src/photos.js, run here in
node): it must agree with the service's own header check on every kind of file."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import PipelineError
from pipeline.decode import check_dimensions, read_header

REPO_ROOT = Path(__file__).resolve().parents[1]


def _image(size: tuple[int, int], fmt: str, mode: str = "RGB", **options) -> bytes:
    rng = np.random.default_rng(sum(size))
    pixels = rng.integers(0, 255, (size[1], size[0], len(mode)), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(), mode).save(buffer, fmt, **options)
    return buffer.getvalue()


def _with_big_exif(jpeg: bytes) -> bytes:
    """The frame header pushed far back by a 60 KB APP1 segment, as phone photos have."""
    payload = b"Exif\x00\x00" + bytes(60_000)
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


CASES = {
    "baseline.jpg": lambda: _image((640, 480), "JPEG"),
    "progressive.jpg": lambda: _image((300, 500), "JPEG", progressive=True),
    "exif.jpg": lambda: _with_big_exif(_image((512, 512), "JPEG")),
    "grey.png": lambda: _image((224, 224), "PNG", "L"),
    "rgba.png": lambda: _image((800, 300), "PNG", "RGBA"),
    "lossy.webp": lambda: _image((400, 300), "WEBP", quality=80),
    "lossless.webp": lambda: _image((333, 444), "WEBP", lossless=True),
    "alpha.webp": lambda: _image((500, 260), "WEBP", "RGBA", quality=80),  # VP8X
    "narrow.png": lambda: _image((223, 600), "PNG", "L"),
    "wide.png": lambda: _image((4097, 224), "PNG", "L"),
    "small.webp": lambda: _image((200, 200), "WEBP", lossless=True),
    "photo.gif": lambda: _image((300, 300), "GIF", "L"),
    "photo.bmp": lambda: _image((300, 300), "BMP"),
    "notes.jpg": lambda: b"not an image at all",
    "cut-header.jpg": lambda: _image((640, 480), "JPEG")[:40],
}


def test_the_page_and_the_service_agree_on_every_photo(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the web page's checks need it. Install Node.js.")
    paths = []
    for name, make in CASES.items():
        path = tmp_path / name
        path.write_bytes(make())
        paths.append(str(path))
    run = subprocess.run([node, str(REPO_ROOT / "tests" / "web_photo_check.mjs"), *paths],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    page = json.loads(run.stdout)
    for name in CASES:
        data = (tmp_path / name).read_bytes()
        try:
            header = read_header(data)
            check_dimensions(header)
            service = {"ok": True, "size": (header.width, header.height), "format": header.format}
        except PipelineError as exc:
            service = {"ok": False, "code": exc.code}
        verdict = page[name]
        assert verdict["ok"] == service["ok"], (name, verdict, service)
        if service["ok"]:
            assert (verdict["width"], verdict["height"]) == service["size"], name
            assert verdict["format"] == service["format"], name
    assert page["narrow.png"]["message"] == \
        "Image too small. Minimum size is 224x224 pixels (this one is 223x600)."
    assert page["wide.png"]["message"] == \
        "Image too large. Maximum size is 4096x4096 pixels (this one is 4097x224)."
    assert page["photo.gif"]["message"] == page["notes.jpg"]["message"] == \
        "Unsupported file type: only JPEG, PNG and WebP images are accepted."
    assert "looks damaged" in page["cut-header.jpg"]["message"]
