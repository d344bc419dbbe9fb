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
- ``glasses``: horizontal-edge strength on the nose bridge and under the eyes against the cheeks'
  (frames draw strong edges where skin is smooth).
- ``earrings``: a small, compact highlight below an ear lobe in the photos (side views where
  given, which show the lobes best).
- ``hat``: a brim: one strong horizontal edge in a mostly non-skin band just above the forehead,
  read in the eye-level face crop. A straight-cut dark fringe can look like one.

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


APPEARANCE_SIZE = 256  # appearance features read a fixed-size copy of the texture


def _uv_patch(texture: np.ndarray, vertex: int, radius: int) -> np.ndarray:
    """Texels [K,C] in a square patch of ``radius`` texels around a vertex's UV position."""
    x, y = (load_topology().uvs[vertex] * texture.shape[0]).astype(int)
    patch = texture[max(0, y - radius):y + radius, max(0, x - radius):x + radius]
    return patch.reshape(-1, *texture.shape[2:])


def _skin_fraction(rgb: np.ndarray) -> float:
    ycrcb = cv2.cvtColor(rgb.reshape(-1, 1, 3).astype(np.uint8), cv2.COLOR_RGB2YCrCb).reshape(-1, 3)
    cr, cb = ycrcb[:, 1].astype(int), ycrcb[:, 2].astype(int)
    return float(np.mean((cr >= 133) & (cr <= 180) & (cb >= 70) & (cb <= 130)))


def skin_tone(appearance: np.ndarray) -> dict:
    """Median cheek/forehead colour with a confidence in [0,1]."""
    texels = np.concatenate([_uv_patch(appearance, v, 5)
                             for v in (CHEEK_PATCH_RIGHT, CHEEK_PATCH_LEFT, FOREHEAD_PATCH)])
    median = np.median(texels, axis=0)
    spread = float(np.median(np.abs(texels - median)) / 64.0)
    confidence = _skin_fraction(texels) * max(0.0, 1.0 - spread)
    r, g, b = (int(round(c)) for c in median)
    return {"r": r, "g": g, "b": b, "confidence": round(confidence, 3)}


def glasses_score(appearance: np.ndarray) -> float:
    """Horizontal edges where frames cross the nose bridge and under the eyes, against the cheeks'."""
    gray = cv2.cvtColor(appearance, cv2.COLOR_RGB2GRAY).astype(np.float32)
    horizontal_edges = np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))
    level = lambda ids: float(np.mean([_uv_patch(horizontal_edges, v, 6).mean() for v in ids]))  # noqa: E731
    frame = level((NOSE_BRIDGE, UNDER_EYE_RIGHT, UNDER_EYE_LEFT))
    cheeks = level((CHEEK_PATCH_RIGHT, CHEEK_PATCH_LEFT))
    return _sigmoid((frame - 2 * cheeks) / 12 - 2.0)


def hat_score(crop: np.ndarray, crop_xy: np.ndarray) -> float:
    """A brim: a strong horizontal edge in a mostly non-skin band just above the forehead.

    Read in the eye-level face crop, so "above" is up the face whatever the head's roll.
    """
    top, chin = crop_xy[FOREHEAD_TOP], crop_xy[CHIN]
    face_h = float(np.linalg.norm(chin - top))
    x0, x1 = sorted((int(crop_xy[FOREHEAD_RIGHT, 0]), int(crop_xy[FOREHEAD_LEFT, 0])))
    y1 = int(top[1] + 0.05 * face_h)
    y0 = max(0, int(top[1] - 0.3 * face_h))
    band = crop[y0:y1, max(0, x0):x1]
    if band.shape[0] < 4 or band.shape[1] < 4:
        return 0.0
    gray = cv2.cvtColor(band, cv2.COLOR_RGB2GRAY).astype(np.float32)
    rows = np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)).mean(axis=1)[1:-1]
    brim = float(rows.max() / max(rows.mean(), 1e-3))
    return _sigmoid((brim - 2.5) * 3 + (0.5 - _skin_fraction(band)) * 4)


def earring_score(image: np.ndarray, image_xy: np.ndarray, lobes: tuple[int, ...]) -> float:
    """A small, compact highlight (metal or stone) just below an ear lobe of one photo.

    A collar or a lit background is bright too, but large and touching the patch border, so only
    blobs inside the patch and smaller than a fifth of it count.
    """
    face_w = float(np.linalg.norm(image_xy[CHEEK_RIGHT] - image_xy[CHEEK_LEFT]))
    r = max(4, int(face_w * 0.06))
    h, w = image.shape[:2]
    best = 0.0
    for lobe in lobes:
        x, y = image_xy[lobe].astype(int)
        y += r  # earrings hang below the lobe
        patch = image[max(0, y - r):min(h, y + r), max(0, x - r):min(w, x + r)]
        if min(patch.shape[:2], default=0) < 4:
            continue
        gray = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)
        bright = (gray > np.median(gray) + 60).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(bright)
        ph, pw = gray.shape
        for x0, y0, bw, bh, area in stats[1:]:
            inside = x0 > 0 and y0 > 0 and x0 + bw < pw and y0 + bh < ph
            if inside and 3 <= area <= 0.2 * ph * pw:
                best = max(best, area / (bw * bh))  # compact blobs fill their box
    return _sigmoid(best * 8 - 5.0)


def facial_features(points_canonical: np.ndarray, texture: np.ndarray, front_crop: np.ndarray,
                    front_crop_xy: np.ndarray,
                    photos: list[tuple[np.ndarray, np.ndarray, tuple[int, ...]]]) -> dict:
    """The contract's ``facialFeatures`` plus a ``scores`` map with each feature's score.

    ``front_crop_xy`` are the front landmarks in the crop's pixels; ``photos`` lists (image,
    landmarks in image px, ear-lobe landmark ids visible in it).
    """
    appearance = cv2.resize(texture, (APPEARANCE_SIZE, APPEARANCE_SIZE), interpolation=cv2.INTER_AREA)
    scores = expression_scores(points_canonical)
    accessories = {
        "glasses": glasses_score(appearance),
        "earrings": max((earring_score(img, xy, lobes) for img, xy, lobes in photos), default=0.0),
        "hat": hat_score(front_crop, front_crop_xy),
    }
    return {
        "expressions": {k: v > 0.5 for k, v in scores.items()},
        "faceShape": face_shape(points_canonical),
        "skinTone": skin_tone(appearance),
        "accessories": {k: v > 0.5 for k, v in accessories.items()},
        "scores": {k: round(v, 3) for k, v in {**scores, **accessories}.items()},
    }
