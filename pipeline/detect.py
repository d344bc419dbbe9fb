"""Face detection with BlazeFace: the short-range model first, the full-range one for small faces.

The short-range model (128 px input) sees faces down to about a sixth of the photo's longer side:
a selfie or a portrait, found in one 1-2 ms run. Where it finds no big, sure face (a half-body
shot, a group), the full-range model searches: once over the whole photo letterboxed to 192 px
(faces from ~15% of the longer side), and once over the photo itself at a scale where a face of
6% of its height covers the ~29 px that model needs, with a margin (it is fully convolutional: one run over the
whole photo, with an anchor every 4 px, does what overlapping 192-px tiles would, at a third of
the cost). Detections are anchor-decoded, merged by weighted NMS within a run and de-duplicated
across runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from pipeline.models import FaceModels


@dataclass(frozen=True)
class DetectorSpec:
    """What differs between the two BlazeFace models (MediaPipe's options for each)."""

    input_size: int
    anchor_grids: tuple[tuple[int, int], ...]  # (cells per side, anchors per cell), in output order
    score_threshold: float


SHORT_RANGE = DetectorSpec(128, ((16, 2), (8, 6)), 0.5)
FULL_RANGE = DetectorSpec(192, ((48, 1),), 0.6)
# The full-range model's anchor spacing, and the multiple its input sides must have (5 halvings).
FULL_RANGE_STRIDE, FULL_RANGE_SIDE_MULTIPLE = 4, 32
NMS_IOU = 0.3

# The short-range model's answer is kept when its largest face is at least this share of the
# photo's height and this sure. A smaller face may have neighbours it cannot see; a less sure one
# is often a far face it boxed at twice its size. Either way the full-range search runs, and its
# faces replace the short-range ones.
SMALL_FACE_SHARE = 0.15
SURE_SCORE = 0.75
# The smallest face to find, as a share of the photo's height, and the share of a 192-px input the
# full-range model finds reliably (measured on faces pasted into the group photo: 0/8 found at 6%
# of the input, 4/8 at 8-10%, 7-8/8 at 12%, 8/8 from 15%).
MIN_FACE_SHARE = 0.06
FULL_RANGE_MIN_FACE = 0.15
# For the search at the photo's own resolution, the smallest face is brought to this many pixels,
# well above the model's ~29 px limit: a face that was upsampled to get there is blurred (recall
# of 6% faces in the group composites: 4-5 of 6 at 29 px, 5-6 at 35 px, 6 of 6 at 42 px).
SEARCH_FACE_PX = 42
# Detections from different runs are one face when their boxes overlap this much.
SAME_FACE_IOU = 0.4


@dataclass(frozen=True)
class Detection:
    """One face in image pixels.

    ``keypoints`` [6,2]: right eye, left eye, nose tip, mouth centre, right ear, left ear (the
    subject's right/left, so the right eye is on the image's left in a frontal photo).
    """

    box: np.ndarray  # [4] x0, y0, x1, y1
    score: float
    keypoints: np.ndarray

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    def scaled(self, factor: float) -> "Detection":
        """The same face in an image ``factor`` times as large."""
        return Detection(self.box * factor, self.score, self.keypoints * factor)


@lru_cache(maxsize=None)
def anchor_centres(grids: tuple[tuple[int, int], ...] = SHORT_RANGE.anchor_grids) -> np.ndarray:
    """[A,2] anchor centres in [0,1], in output order: per grid, row major, ``per_cell`` per cell.

    The short-range model has four SSD layers with strides 8, 16, 16, 16 (layers of equal stride
    share a grid: 2 anchors per cell on 16x16, 6 on 8x8, 896 in all); the full-range model one
    layer of stride 4 (one anchor per cell of 48x48). Every anchor has the fixed size 1, so only
    centres matter.
    """
    centres = []
    for grid, per_cell in grids:
        ys, xs = np.mgrid[0:grid, 0:grid]
        cell = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(cell, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


def letterbox(image: np.ndarray, size: int = SHORT_RANGE.input_size) -> tuple[np.ndarray, float, np.ndarray]:
    """Fit ``image`` into a ``size`` square (aspect kept, zero padding).

    Returns the [3,size,size] float32 input, the image-px-per-input-px scale and the pad offset.
    """
    h, w = image.shape[:2]
    scale = max(h, w) / size
    new_w, new_h = max(1, round(w / scale)), max(1, round(h / scale))
    small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((size, size, 3), np.uint8)
    off = np.array([(size - new_w) // 2, (size - new_h) // 2])
    canvas[off[1]:off[1] + new_h, off[0]:off[0] + new_w] = small
    tensor = canvas.transpose(2, 0, 1).astype(np.float32) * (1.0 / 255.0)
    return tensor, scale, off


def decode_detections(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray,
                      threshold: float) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """Anchor-decode one input's outputs to (box, score, keypoints) in its pixels, after NMS.

    ``anchors`` [A,2] are the anchor centres in input pixels; the regressors are pixel offsets.
    """
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -100, 100)))
    keep = np.flatnonzero(scores >= threshold)
    if keep.size == 0:
        return []
    centre = regressors[keep, 0:2] + anchors[keep]
    half = regressors[keep, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = regressors[keep, 4:16].reshape(-1, 6, 2) + anchors[keep][:, None, :]
    return _weighted_nms(boxes, scores[keep], keypoints)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def _weighted_nms(boxes, scores, keypoints):
    """Blend overlapping detections by score (as MediaPipe does) instead of dropping them."""
    order = np.argsort(-scores)
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    remaining = np.ones(len(scores), bool)
    faces = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        group = remaining & (_iou(boxes[i], boxes) >= NMS_IOU)
        remaining &= ~group
        weights = scores[group] / scores[group].sum()
        faces.append((
            (boxes[group] * weights[:, None]).sum(0),
            float(scores[i]),
            (keypoints[group] * weights[:, None, None]).sum(0),
        ))
    return faces


def _run(models: FaceModels, spec: DetectorSpec, images: list[np.ndarray]) -> list[list[Detection]]:
    """One detector run over ``images``, each letterboxed to the model's input: their faces."""
    tensors, scales, offsets = zip(*(letterbox(image, spec.input_size) for image in images))
    regressors, logits = models.detect(np.stack(tensors), full_range=spec is FULL_RANGE)
    anchors = anchor_centres(spec.anchor_grids) * spec.input_size
    return [[Detection(((box.reshape(2, 2) - off) * scale).reshape(4), score, (kps - off) * scale)
             for box, score, kps in decode_detections(reg, logit, anchors, spec.score_threshold)]
            for reg, logit, scale, off in zip(regressors, logits, scales, offsets)]


def _search_at_scale(models: FaceModels, image: np.ndarray, zoom: float) -> list[Detection]:
    """The full-range model over all of ``image`` resized by ``zoom`` (padded to its side multiple):
    the faces of at least ~29 px there, in ``image``'s pixels."""
    h, w = image.shape[:2]
    size = (max(1, round(w * zoom)), max(1, round(h * zoom)))
    scaled = cv2.resize(image, size, interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
    padded_h, padded_w = (-(-n // FULL_RANGE_SIDE_MULTIPLE) * FULL_RANGE_SIDE_MULTIPLE for n in (size[1], size[0]))
    canvas = np.zeros((padded_h, padded_w, 3), np.uint8)
    canvas[:size[1], :size[0]] = scaled
    tensor = canvas.transpose(2, 0, 1)[None].astype(np.float32) * (1.0 / 255.0)
    regressors, logits = models.detect(tensor, full_range=True)
    grid = ((padded_h // FULL_RANGE_STRIDE, padded_w // FULL_RANGE_STRIDE),)
    anchors = _grid_anchors(grid) * FULL_RANGE_STRIDE
    return [Detection(box / zoom, score, kps / zoom)
            for box, score, kps in decode_detections(regressors[0], logits[0], anchors, FULL_RANGE.score_threshold)]


@lru_cache(maxsize=16)
def _grid_anchors(grid: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Anchor centres (x, y) in cells for one anchor per cell of a (rows, cols) grid, row major."""
    (rows, cols), = grid
    ys, xs = np.mgrid[0:rows, 0:cols]
    return np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=-1).astype(np.float32)


def _merge(faces: list[Detection]) -> list[Detection]:
    """One detection per face across runs (the best-scoring of overlapping ones), largest first."""
    kept: list[Detection] = []
    for face in sorted(faces, key=lambda d: -d.score):
        if not kept or _iou(face.box, np.stack([k.box for k in kept])).max() < SAME_FACE_IOU:
            kept.append(face)
    return sorted(kept, key=lambda d: -d.area)


def detect_faces(models: FaceModels, images: list[np.ndarray], small_faces: bool = True) -> list[list[Detection]]:
    """Faces in each RGB image, largest first.

    The short-range model runs once over every image (one batch). With ``small_faces``, an image
    where it found no face of ``SMALL_FACE_SHARE`` of the image's height with a score of at least
    ``SURE_SCORE`` is searched with the full-range model: over the whole image letterboxed (one
    batch for all such images), then, unless that found a face only it could find (at least
    ``FULL_RANGE_MIN_FACE`` of the longer side: nothing smaller could be the largest face), over
    the image at the scale where a face of ``MIN_FACE_SHARE`` of its height is as large as the
    model needs. The faces it finds replace the short-range model's (kept only if it finds none).
    """
    if not images:
        return []
    short = _run(models, SHORT_RANGE, images)
    search = [i for i, image in enumerate(images) if small_faces and not _sure(short[i], image.shape[0])]
    results = [[] if i in search else list(faces) for i, faces in enumerate(short)]
    if search:
        for i, faces in zip(search, _run(models, FULL_RANGE, [images[i] for i in search])):
            results[i] = faces
    for i in search:
        h, w = images[i].shape[:2]
        if any(f.height >= FULL_RANGE_MIN_FACE * max(h, w) for f in results[i]):
            continue
        zoom = SEARCH_FACE_PX / (MIN_FACE_SHARE * h)
        found = _search_at_scale(models, images[i], zoom)
        # Far smaller than the smallest face looked for: texture (poker chips, buttons).
        results[i] += [f for f in found if f.height >= 0.5 * MIN_FACE_SHARE * h]
    return [_merge(faces if faces else fallback) for faces, fallback in zip(results, short)]


def _sure(faces: list[Detection], height: int) -> bool:
    """The short-range model found a face big and sure enough to stop there."""
    return any(f.height >= SMALL_FACE_SHARE * height and f.score >= SURE_SCORE for f in faces)
