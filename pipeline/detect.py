"""Face detection with BlazeFace (short range): letterbox to 128 px, run, decode anchors, NMS."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from pipeline.models import DETECTOR_INPUT_SIZE, FaceModels

SCORE_THRESHOLD = 0.5
NMS_IOU = 0.3


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


@lru_cache(maxsize=1)
def anchor_centres() -> np.ndarray:
    """[896,2] anchor centres in [0,1]: 2 per cell on the 16x16 grid, then 6 per cell on 8x8.

    The short-range model has four SSD layers with strides 8, 16, 16, 16; layers of equal stride
    share a grid, and every anchor has the fixed size 1 (so only centres matter).
    """
    centres = []
    for grid, per_cell in ((16, 2), (8, 6)):
        ys, xs = np.mgrid[0:grid, 0:grid]
        cell = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(cell, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


def letterbox(image: np.ndarray, size: int = DETECTOR_INPUT_SIZE) -> tuple[np.ndarray, float, np.ndarray]:
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


def decode_detections(regressors: np.ndarray, logits: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """Anchor-decode one image's outputs to (box, score, keypoints) in [0,1] input units, after NMS."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -100, 100)))
    keep = np.flatnonzero(scores >= SCORE_THRESHOLD)
    if keep.size == 0:
        return []
    anchors = anchor_centres()[keep]
    raw = regressors[keep] / DETECTOR_INPUT_SIZE
    centre = raw[:, 0:2] + anchors
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
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


def detect_faces(models: FaceModels, images: list[np.ndarray]) -> list[list[Detection]]:
    """Faces in each RGB image, largest first; one detector run for the whole list."""
    if not images:
        return []
    tensors, scales, offsets = zip(*(letterbox(img) for img in images))
    regressors, logits = models.detect(np.stack(tensors))
    results = []
    for reg, logit, scale, off in zip(regressors, logits, scales, offsets):
        faces = []
        for box, score, kps in decode_detections(reg, logit):
            to_image = lambda p: (p * DETECTOR_INPUT_SIZE - off) * scale  # noqa: E731
            faces.append(Detection(
                box=to_image(box.reshape(2, 2)).reshape(4),
                score=score,
                keypoints=to_image(kps),
            ))
        results.append(sorted(faces, key=lambda d: -d.area))
    return results
