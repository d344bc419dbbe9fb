"""Facial features of the original contract, each by a simple documented measurement.

Geometric features compare the subject's face, posed frontally in the canonical frame, with the
canonical (neutral, average) MediaPipe face: a ratio far from the canonical one means the
expression is present. Appearance features read the baked UV texture, where every region of the
face sits at a fixed place whatever the photo's framing.

- ``smile``: mouth-corner lift above the lip centre plus mouth widening, both relative to the
  inter-ocular distance and to the canonical face.
- ``frown``: mouth corners below the lip centre (the opposite of the lift above).
- ``raisedEyebrows``: brow-to-eye distance over inter-ocular distance, above the canonical ratio.
- ``squint``: eyelid opening over eye width, below the canonical ratio.
- ``faceShape``: rules over length/cheekbone-width, jaw/cheekbone and forehead/jaw ratios
  (oblong, round, square, heart, else oval).
- ``skinTone``: median RGB of cheek and forehead patches; confidence is the share of those texels
  that fall in a YCrCb skin range, reduced by the patches' colour spread.
- ``glasses``: edge density on the nose bridge and under the eyes against the cheeks' (frames draw
  strong edges where skin is smooth).
- ``earrings``: small bright, high-contrast blobs below the ear lobes in the photos (side views
  where given, which show the lobes best).
- ``hat``: the top band of the forehead differs strongly in colour from the cheeks and has few
  skin-coloured texels (a brim or crown covers it). Heavy fringes can trigger it too.

Scores are in [0,1]; a feature is reported present when its score exceeds 0.5.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from models import load_topology

# MediaPipe Face Mesh landmark ids (subject's right/left).
MOUTH_RIGHT, MOUTH_LEFT, LIP_UPPER_INNER, LIP_LOWER_INNER = 61, 291, 13, 14
EYE_RIGHT_OUTER, EYE_RIGHT_INNER, EYE_LEFT_INNER, EYE_LEFT_OUTER = 33, 133, 362, 263
EYELID_RIGHT_UPPER, EYELID_RIGHT_LOWER, EYELID_LEFT_UPPER, EYELID_LEFT_LOWER = 159, 145, 386, 374
BROW_RIGHT, BROW_LEFT = 105, 334
FOREHEAD_TOP, CHIN = 10, 152
CHEEK_RIGHT, CHEEK_LEFT = 234, 454
JAW_RIGHT, JAW_LEFT = 172, 397
FOREHEAD_RIGHT, FOREHEAD_LEFT = 54, 284
CHEEK_PATCH_RIGHT, CHEEK_PATCH_LEFT, FOREHEAD_PATCH = 50, 280, 151
NOSE_BRIDGE, UNDER_EYE_RIGHT, UNDER_EYE_LEFT = 168, 230, 450
FOREHEAD_BAND = (10, 109, 338, 67, 297)
EAR_LOBE_RIGHT, EAR_LOBE_LEFT = 177, 401


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def _measures(points: np.ndarray) -> dict[str, float]:
    """Scale-free shape measures of a face in the canonical frame (+Y up)."""
    d = lambda a, b: float(np.linalg.norm(points[a] - points[b]))  # noqa: E731
    iod = d(EYE_RIGHT_OUTER, EYE_LEFT_OUTER)
    lip_centre_y = (points[LIP_UPPER_INNER, 1] + points[LIP_LOWER_INNER, 1]) / 2
    corner_y = (points[MOUTH_RIGHT, 1] + points[MOUTH_LEFT, 1]) / 2
    eye_w = (d(EYE_RIGHT_OUTER, EYE_RIGHT_INNER) + d(EYE_LEFT_OUTER, EYE_LEFT_INNER)) / 2
    eye_open = (d(EYELID_RIGHT_UPPER, EYELID_RIGHT_LOWER) + d(EYELID_LEFT_UPPER, EYELID_LEFT_LOWER)) / 2
    brow = (d(BROW_RIGHT, EYELID_RIGHT_UPPER) + d(BROW_LEFT, EYELID_LEFT_UPPER)) / 2
    width = d(CHEEK_RIGHT, CHEEK_LEFT)
    return {
        "corner_lift": (corner_y - lip_centre_y) / iod,
        "mouth_width": d(MOUTH_RIGHT, MOUTH_LEFT) / iod,
        "eye_open": eye_open / eye_w,
        "brow_height": brow / iod,
        "length_ratio": d(FOREHEAD_TOP, CHIN) / width,
        "jaw_ratio": d(JAW_RIGHT, JAW_LEFT) / width,
        "forehead_jaw": d(FOREHEAD_RIGHT, FOREHEAD_LEFT) / d(JAW_RIGHT, JAW_LEFT),
    }


@lru_cache(maxsize=1)
def _neutral() -> dict[str, float]:
    return _measures(load_topology().vertices.astype(np.float64))


def expression_scores(points: np.ndarray) -> dict[str, float]:
    """Scores in [0,1] for smile, frown, raisedEyebrows and squint (canonical-frame landmarks)."""
    m, n = _measures(points), _neutral()
    lift = m["corner_lift"] - n["corner_lift"]
    widen = m["mouth_width"] / n["mouth_width"] - 1
    return {
        "smile": _sigmoid((lift * 20 + widen * 8) - 1.0),
        "frown": _sigmoid(-lift * 30 - 1.5),
        "raisedEyebrows": _sigmoid((m["brow_height"] / n["brow_height"] - 1) * 12 - 1.5),
        "squint": _sigmoid((1 - m["eye_open"] / n["eye_open"]) * 8 - 2.5),
    }


def face_shape(points: np.ndarray) -> str:
    """One of oval, round, square, heart, oblong, by ratios relative to the canonical face."""
    m, n = _measures(points), _neutral()
    length = m["length_ratio"] / n["length_ratio"]
    jaw = m["jaw_ratio"] / n["jaw_ratio"]
    taper = m["forehead_jaw"] / n["forehead_jaw"]
    if length > 1.08:
        return "oblong"
    if taper > 1.08:
        return "heart"
    if jaw > 1.05:
        return "square" if length > 0.96 else "round"
    if length < 0.94:
        return "round"
    return "oval"


def _uv_patch(texture: np.ndarray, vertex: int, radius_frac: float) -> np.ndarray:
    """Texels [K,3] in a square patch around a vertex's UV position."""
    size = texture.shape[0]
    u, v = load_topology().uvs[vertex] * size
    r = max(2, int(radius_frac * size))
    x, y = int(u), int(v)
    return texture[max(0, y - r):y + r, max(0, x - r):x + r].reshape(-1, 3)


def _skin_fraction(rgb: np.ndarray) -> float:
    ycrcb = cv2.cvtColor(rgb.reshape(-1, 1, 3).astype(np.uint8), cv2.COLOR_RGB2YCrCb).reshape(-1, 3)
    cr, cb = ycrcb[:, 1].astype(int), ycrcb[:, 2].astype(int)
    return float(np.mean((cr >= 133) & (cr <= 180) & (cb >= 70) & (cb <= 130)))


def skin_tone(texture: np.ndarray) -> dict:
    """Median cheek/forehead colour with a confidence in [0,1]."""
    texels = np.concatenate([_uv_patch(texture, v, 0.02)
                             for v in (CHEEK_PATCH_RIGHT, CHEEK_PATCH_LEFT, FOREHEAD_PATCH)])
    median = np.median(texels, axis=0)
    spread = float(np.median(np.abs(texels - median)) / 64.0)
    confidence = _skin_fraction(texels) * max(0.0, 1.0 - spread)
    r, g, b = (int(round(c)) for c in median)
    return {"r": r, "g": g, "b": b, "confidence": round(confidence, 3)}


def _edge_density(gray: np.ndarray, vertex: int, radius_frac: float) -> float:
    patch = _uv_patch(np.repeat(gray[..., None], 3, axis=2), vertex, radius_frac)[:, 0]
    return float(np.mean(patch > 40))


def glasses_score(texture: np.ndarray) -> float:
    gray = cv2.cvtColor(texture, cv2.COLOR_RGB2GRAY)
    edges = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3),
                          cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))
    edges = np.clip(edges / 4, 0, 255).astype(np.uint8)
    frame = np.mean([_edge_density(edges, v, 0.025) for v in (NOSE_BRIDGE, UNDER_EYE_RIGHT, UNDER_EYE_LEFT)])
    skin = np.mean([_edge_density(edges, v, 0.025) for v in (CHEEK_PATCH_RIGHT, CHEEK_PATCH_LEFT)])
    return _sigmoid((frame - skin) * 12 - 2.0)


def hat_score(texture: np.ndarray) -> float:
    band = np.concatenate([_uv_patch(texture, v, 0.015) for v in FOREHEAD_BAND]).astype(np.float32)
    cheeks = np.concatenate([_uv_patch(texture, v, 0.02) for v in (CHEEK_PATCH_RIGHT, CHEEK_PATCH_LEFT)])
    distance = float(np.linalg.norm(np.median(band, 0) - np.median(cheeks, 0).astype(np.float32)))
    return _sigmoid((distance / 255) * 10 + (0.5 - _skin_fraction(band)) * 6 - 3.0)


def earring_score(image: np.ndarray, image_xy: np.ndarray, lobes: tuple[int, ...]) -> float:
    """Bright, contrasting small blobs just below the given ear-lobe landmarks of one photo."""
    face_w = float(np.linalg.norm(image_xy[CHEEK_RIGHT] - image_xy[CHEEK_LEFT]))
    r = max(4, int(face_w * 0.08))
    h, w = image.shape[:2]
    best = 0.0
    for lobe in lobes:
        x, y = image_xy[lobe].astype(int)
        y += r  # earrings hang below the lobe
        patch = image[max(0, y - r):min(h, y + r), max(0, x - r):min(w, x + r)]
        if patch.size == 0:
            continue
        gray = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY).astype(np.float32)
        hsv = cv2.cvtColor(patch, cv2.COLOR_RGB2HSV)
        highlight = (gray > np.percentile(gray, 50) + 70) | ((hsv[..., 1] > 150) & (hsv[..., 2] > 150))
        frac = float(highlight.mean())
        # Small but present: a lit background fills the whole patch, an earring only a spot of it.
        best = max(best, frac if frac < 0.25 else 0.0)
    return _sigmoid(best * 80 - 3.0)


def facial_features(points_canonical: np.ndarray, texture: np.ndarray,
                    photos: list[tuple[np.ndarray, np.ndarray, tuple[int, ...]]]) -> dict:
    """The contract's ``facialFeatures`` plus a ``scores`` map with each feature's score.

    ``photos`` lists (image, landmarks in image px, ear-lobe landmark ids visible in it).
    """
    scores = expression_scores(points_canonical)
    accessories = {
        "glasses": glasses_score(texture),
        "earrings": max((earring_score(img, xy, lobes) for img, xy, lobes in photos), default=0.0),
        "hat": hat_score(texture),
    }
    return {
        "expressions": {k: v > 0.5 for k, v in scores.items()},
        "faceShape": face_shape(points_canonical),
        "skinTone": skin_tone(texture),
        "accessories": {k: v > 0.5 for k, v in accessories.items()},
        "scores": {k: round(v, 3) for k, v in {**scores, **accessories}.items()},
    }
