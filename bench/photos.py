"""Benchmark and test inputs made from real photos that ship inside packages (no downloads)."""
from __future__ import annotations

import hashlib
import math
import subprocess
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

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


# How far the astronaut's head is turned in the side views ``avatar_views`` makes.
SIDE_VIEW_YAW_DEG = 30.0


def avatar_views(side: int) -> dict[str, bytes]:
    """Front, left and right JPEGs of ``side`` px, all of the astronaut: her photo in front, and
    her head as the pipeline rebuilds it from that photo (its shape and texture, on a skull and
    neck), rendered turned 30° each way. No package ships three views of one person; these are
    the same face, so every check that side views show the front's person passes, and the
    pipeline does the work of real turned views."""
    left, right = _astronaut_turned()
    return {"front": encode_jpeg(astronaut_rgb(), side), "left": encode_jpeg(left, side),
            "right": encode_jpeg(right, side)}


@lru_cache(maxsize=1)
def _astronaut_turned() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's rebuilt head rendered from her left and her right (512 px, her face as
    large in the frame as in her photo)."""
    head = astronaut_head()
    size = astronaut_rgb().shape[0]
    # The "left" photo shows the subject's left side: the head turns to its right (negative yaw).
    return head.render(-SIDE_VIEW_YAW_DEG, size), head.render(SIDE_VIEW_YAW_DEG, size)


@lru_cache(maxsize=4)
def astronaut_head(width: float = 1.0, height: float = 1.0):
    """The astronaut's head as the pipeline rebuilds it from her photo alone (shape and texture,
    on a synthetic skull and neck: ``bench.synthetic.SyntheticSubject``), its face scaled by
    ``width`` and ``height`` (1, 1: her own; otherwise a face of another shape)."""
    from bench.synthetic import make_synthetic_subject
    from pipeline.models import FaceModels
    from pipeline.stages import run_pipeline

    photo = encode_jpeg(astronaut_rgb())
    alone = run_pipeline({"front": photo, "left": photo, "right": photo}, FaceModels.load(),
                         fusion_views=("front",), mesh="face")
    (_, _), face_height = SUBJECT_FACES["astronaut"]
    return make_synthetic_subject(alone.texture, alone.vertices * 100.0 * np.array([width, height, 1.0]),
                                  face_share=face_height / astronaut_rgb().shape[0])


# -- a group photo, and test photos with small faces among others -----------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
PHOTO_CACHE = REPO_ROOT / "build" / "test-photos"
# The insightface wheel ships a group photo (six people, several turned 3/4) as sample data. Only
# the photo is used, read from the wheel (not installed: it would pull in opencv-python beside
# opencv-python-headless); fetched with pip at install time (`make install`) or on first use.
GROUP_WHEEL = "insightface-2.1-py3-none-any.whl"
GROUP_WHEEL_SHA256 = "dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399"
GROUP_PHOTO_MEMBER = "insightface/data/images/t1.jpg"


def fetch_group_photo_wheel() -> Path:
    """The pinned insightface wheel in ``build/test-photos/`` (downloaded by pip if missing)."""
    path = PHOTO_CACHE / GROUP_WHEEL
    if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != GROUP_WHEEL_SHA256:
        PHOTO_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "insightface==2.1", "-d", str(PHOTO_CACHE)], check=True)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != GROUP_WHEEL_SHA256:
            raise RuntimeError(f"{GROUP_WHEEL}: sha256 {digest} is not the pinned {GROUP_WHEEL_SHA256}")
    return path


@lru_cache(maxsize=None)
def group_photo_jpeg() -> bytes:
    """The group photo's JPEG bytes (1280x886, six faces of 15-20% of its height)."""
    with zipfile.ZipFile(fetch_group_photo_wheel()) as wheel:
        return wheel.read(GROUP_PHOTO_MEMBER)


@lru_cache(maxsize=None)
def group_photo_rgb() -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(group_photo_jpeg(), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# Where each packaged frontal face sits in its photo: the centre of the face (x, y) and its height
# from the top of the forehead (landmark 10) to the chin (152), in the photo's pixels, as the
# landmark model fits them.
SUBJECT_FACES = {"astronaut": ((224.0, 124.0), 103.0), "grace_hopper": ((267.0, 233.0), 202.0)}


def subject_rgb(name: str) -> np.ndarray:
    return astronaut_rgb() if name == "astronaut" else grace_hopper_rgb()


# The group photo's faces are 102-136 px high as the detector boxes them (~130 px forehead to chin).
GROUP_FACE_HEIGHT = 130.0


def composite_photo(size: tuple[int, int], face_share: float, at: tuple[float, float] = (0.72, 0.4),
                    subject: str = "astronaut") -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` (w, h) photo of a crowd: the group photo, scaled so that its faces are as big as
    the subject's and repeated (mirrored) to fill the frame, with ``subject``'s head pasted in so
    that its face is ``face_share`` of the frame's height, centred at ``at`` (shares of width and
    height). Returns the RGB image and the pasted face's box [x0, y0, x1, y1] (forehead to chin
    high, as wide).

    The pasted patch (the head and some shoulders, 2.4 face heights square) is blended in with a
    soft edge, so its border draws no frame around the face for the detector.
    """
    width, height = size
    face = face_share * height
    group = group_photo_rgb()
    zoom = face / GROUP_FACE_HEIGHT
    crowd = cv2.resize(group, (max(1, round(group.shape[1] * zoom)), max(1, round(group.shape[0] * zoom))),
                       interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_CUBIC)
    reps = (math.ceil(height / crowd.shape[0]) + 1, math.ceil(width / crowd.shape[1]) + 1)
    tiled = np.concatenate([np.concatenate([crowd if (r + c) % 2 == 0 else crowd[:, ::-1] for c in range(reps[1])], 1)
                            for r in range(reps[0])], 0)
    background = np.ascontiguousarray(tiled[:height, :width])
    photo = subject_rgb(subject)
    (cx, cy), face_h = SUBJECT_FACES[subject]
    scale = face / face_h
    half = 1.2 * face_h
    src = np.array([[cx - half, cy - half], [cx + half, cy - half], [cx - half, cy + half]], np.float32)
    side = max(8, min(round(2 * half * scale), width, height))
    patch = cv2.warpAffine(photo, cv2.getAffineTransform(src, np.float32([[0, 0], [side, 0], [0, side]])),
                           (side, side), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT)
    x0, y0 = round(at[0] * width - side / 2), round(at[1] * height - side / 2)
    x0, y0 = min(max(x0, 0), width - side), min(max(y0, 0), height - side)
    ramp = np.clip(np.minimum(np.arange(side), np.arange(side)[::-1]) / (0.12 * side), 0, 1)
    alpha = np.minimum.outer(ramp, ramp)[..., None]
    region = background[y0:y0 + side, x0:x0 + side].astype(np.float32)
    background[y0:y0 + side, x0:x0 + side] = (alpha * patch + (1 - alpha) * region + 0.5).astype(np.uint8)
    centre = np.array([x0 + side / 2, y0 + side / 2])
    return background, np.array([*(centre - face / 2), *(centre + face / 2)])
