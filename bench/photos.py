"""Benchmark and test inputs made from real photos that ship inside packages (no downloads)."""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=None)
def astronaut_rgb() -> np.ndarray:
    """Eileen Collins, frontal, 512x512 RGB (scikit-image's sample data)."""
    from skimage import data

    return data.astronaut()


@lru_cache(maxsize=None)
def grace_hopper_rgb() -> np.ndarray:
    """Grace Hopper, frontal, 600x512 RGB (matplotlib's sample data)."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        buf = np.frombuffer(fh.read(), np.uint8)
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def encode_with_pil(image, fmt: str, **options) -> bytes:
    """``image`` (an RGB array or a PIL image) encoded by Pillow as ``fmt`` with its ``options``."""
    import io

    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def encode_jpeg(rgb: np.ndarray, side: int | None = None, quality: int = 90) -> bytes:
    """JPEG bytes of ``rgb``, optionally resized to a ``side`` x ``side`` square first."""
    if side is not None:
        rgb = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def avatar_views(side: int) -> dict[str, bytes]:
    """Front, left and right JPEGs of ``side`` px, all of the astronaut (the sides are her photo
    and its mirror image: the same work for the pipeline as turned views, one person's texture)."""
    face = astronaut_rgb()
    return {
        "front": encode_jpeg(face, side),
        "left": encode_jpeg(face, side),
        "right": encode_jpeg(np.ascontiguousarray(face[:, ::-1]), side),
    }
