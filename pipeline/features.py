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
  (oblong, round, square, heart, else oval), measured on the face posed in the canonical frame;
  a face whose deciding ratio is within 0.3 ``SHAPE_MARGIN`` of a rule's line is reported
  "oval" and uncertain.
- ``skinTone``: median RGB of cheek and forehead patches, white-balanced by the whites of the
  eyes (the brightest part of each eye's outline in the front photo, taken as neutral; grey-world
  over the face when the eyes are too small, dark or tinted), a correction capped at 25%; confidence is the share of those texels
  that fall in a YCrCb skin range, reduced by the patches' colour spread. A black-and-white photo
  has no skin colour to measure: confidence 0 and a ``reason``.
- ``glasses``: horizontal-edge strength on the nose bridge and under the eyes against the cheeks'
  (frames draw strong edges where skin is smooth).
- ``earrings``: a small, compact highlight below an ear lobe in the photos (side views where
  given, which show the lobes best).
- ``hat``: a brim: one strong horizontal edge in a mostly non-skin band just above the forehead,
  read in the eye-level face crop. A straight-cut dark fringe can look like one.

Scores are in [0,1]. A feature is reported present when its score exceeds 0.5 by more than
``UNCERTAIN_MARGIN``; within that margin of 0.5 it is reported absent and listed in ``uncertain``
(a score on the line would otherwise flip with noise). Each feature also gets a ``confidence`` in
[0,1]: for the yes/no ones how far the score is from 0.5; for ``faceShape`` how far the deciding
ratios are from the rules' thresholds; for ``skinTone`` its own confidence.
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


UNCERTAIN_MARGIN = 0.1
# A face-shape ratio this far past its rule's threshold gives full confidence; under
# SHAPE_UNCERTAIN of it the shape is uncertain (measured: the sample faces' jaw ratios sit 0.002-0.012
# from its line, and their shapes flipped between round, square and oval with the photo's scale).
SHAPE_MARGIN = 0.05
SHAPE_UNCERTAIN = 0.3


def face_shape(points: np.ndarray) -> str:
    """One of oval, round, square, heart, oblong, by ratios relative to the canonical face."""
    return face_shape_with_confidence(points)[0]


def face_shape_with_confidence(points: np.ndarray) -> tuple[str, float]:
    """``face_shape`` and how sure: the smallest distance of a ratio the decision read from its
    threshold, over ``SHAPE_MARGIN`` (capped at 1). The ratios are of the face posed in the
    canonical frame, so the photo's scale does not enter them."""
    m, n = _measures(points), _neutral()
    length = m["length_ratio"] / n["length_ratio"]
    jaw = m["jaw_ratio"] / n["jaw_ratio"]
    taper = m["forehead_jaw"] / n["forehead_jaw"]
    read: list[tuple[float, float]] = []  # (ratio, threshold) of every comparison made

    def above(value: float, threshold: float) -> bool:
        read.append((value, threshold))
        return value > threshold

    if above(length, 1.08):
        shape = "oblong"
    elif above(taper, 1.08):
        shape = "heart"
    elif above(jaw, 1.05):
        shape = "square" if above(length, 0.96) else "round"
    elif not above(length, 0.94):
        shape = "round"
    else:
        shape = "oval"
    margin = min(abs(value - threshold) for value, threshold in read)
    return shape, round(min(1.0, margin / SHAPE_MARGIN), 3)


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


# Outline of each eye (MediaPipe Face Mesh), inside which the whites of the eyes are read.
EYE_OUTLINES = ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
                (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398))
# The brightest share of an eye's pixels is its white; at least this many pixels of it are needed,
# and it must be this bright and this near grey (max/min channel) to be taken for white: at photo
# resolution the eye's outline also holds lid, lashes and glints.
SCLERA_SHARE, MIN_SCLERA_PIXELS = 0.1, 8
MIN_SCLERA_BRIGHTNESS, MAX_SCLERA_TINT = 110.0, 1.35
# A cast is corrected, not recoloured: measured on the sample photos the whites of the eyes carry
# the scene's light and some of the skin around them, so the correction is capped.
MAX_BALANCE_GAIN = 1.25
# Mean |R-G| + |G-B| of the face below this (grey levels): the photo has no colour.
GREY_CHROMA = 3.0
GREYSCALE_REASON = "the photos are black and white, so the skin's colour cannot be measured"


def white_balance_gains(image: np.ndarray, image_xy: np.ndarray) -> np.ndarray:
    """[3] per-channel gains that make the whites of the eyes neutral in ``image`` (RGB): the
    brightest ``SCLERA_SHARE`` of the pixels inside both eyes' outlines, when there are enough of
    them and they look white (else grey-world over the face: the area inside the landmarks' hull).
    Normalised to keep the brightness, capped at ``MAX_BALANCE_GAIN`` either way."""
    eyes = _pixels_inside(image, [np.rint(image_xy[list(outline)]).astype(np.int32) for outline in EYE_OUTLINES])
    reference = None
    if len(eyes) * SCLERA_SHARE >= MIN_SCLERA_PIXELS:
        brightness = eyes.sum(1)
        white = eyes[brightness >= np.quantile(brightness, 1 - SCLERA_SHARE)].mean(0)
        if white.mean() >= MIN_SCLERA_BRIGHTNESS and white.max() / max(white.min(), 1.0) <= MAX_SCLERA_TINT:
            reference = white
    if reference is None:
        reference = _pixels_inside(image, [cv2.convexHull(np.rint(image_xy).astype(np.int32))]).mean(0)
    gains = reference.mean() / np.maximum(reference, 1.0)
    return np.clip(gains, 1 / MAX_BALANCE_GAIN, MAX_BALANCE_GAIN)


def _pixels_inside(image: np.ndarray, polygons: list[np.ndarray]) -> np.ndarray:
    """[K,3] float32: the pixels of ``image`` inside any of ``polygons`` (int32 [N,2] each), read
    within the polygons' bounding box only (a full-size mask of a 4096 px photo costs ~10 ms)."""
    h, w = image.shape[:2]
    points = np.concatenate(polygons).reshape(-1, 2)
    x0, y0 = np.clip(points.min(0), 0, [w, h])
    x1, y1 = np.clip(points.max(0) + 1, 0, [w, h])
    mask = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.uint8)
    if mask.size:
        cv2.fillPoly(mask, [p.reshape(-1, 2) - (x0, y0) for p in polygons], 1)
    return image[y0:y1, x0:x1][mask.astype(bool)].astype(np.float32)


def is_greyscale(image: np.ndarray, image_xy: np.ndarray) -> bool:
    """The face in ``image`` has no colour (a black-and-white photo, stored as RGB)."""
    x0, y0 = np.maximum(image_xy.min(0).astype(int), 0)
    x1, y1 = image_xy.max(0).astype(int)
    # A grid of about 256x256 of the face's pixels is as good a sample as all of them.
    step = max(1, int(max(x1 - x0, y1 - y0)) // 256)
    face = image[y0:y1 + 1:step, x0:x1 + 1:step].reshape(-1, 3).astype(np.int16)
    if len(face) == 0:
        return False
    chroma = np.abs(face[:, 0] - face[:, 1]) + np.abs(face[:, 1] - face[:, 2])
    return float(chroma.mean()) < GREY_CHROMA


def skin_tone(appearance: np.ndarray, gains: np.ndarray | None = None, greyscale: bool = False) -> dict:
    """Median cheek/forehead colour, white-balanced by ``gains``, with a confidence in [0,1]."""
    texels = np.concatenate([_uv_patch(appearance, v, 5)
                             for v in (CHEEK_PATCH_RIGHT, CHEEK_PATCH_LEFT, FOREHEAD_PATCH)]).astype(np.float32)
    if gains is not None:
        texels = np.clip(texels * gains, 0, 255)
    median = np.median(texels, axis=0)
    r, g, b = (int(round(c)) for c in median)
    if greyscale:
        return {"r": r, "g": g, "b": b, "confidence": 0.0, "reason": GREYSCALE_REASON}
    spread = float(np.median(np.abs(texels - median)) / 64.0)
    confidence = _skin_fraction(texels) * max(0.0, 1.0 - spread)
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
    """The contract's ``facialFeatures`` plus ``scores``, ``confidence`` and ``uncertain``.

    ``front_crop_xy`` are the front landmarks in the crop's pixels; ``photos`` lists (image,
    landmarks in image px, ear-lobe landmark ids visible in it), the front first.
    """
    appearance = cv2.resize(texture, (APPEARANCE_SIZE, APPEARANCE_SIZE), interpolation=cv2.INTER_AREA)
    scores = expression_scores(points_canonical)
    accessories = {
        "glasses": glasses_score(appearance),
        "earrings": max((earring_score(img, xy, lobes) for img, xy, lobes in photos), default=0.0),
        "hat": hat_score(front_crop, front_crop_xy),
    }
    front_image, front_xy, _ = photos[0]
    greyscale = all(is_greyscale(img, xy) for img, xy, _ in photos)
    tone = skin_tone(appearance, None if greyscale else white_balance_gains(front_image, front_xy), greyscale)
    shape, shape_confidence = face_shape_with_confidence(points_canonical)
    present, confidence, uncertain = yes_no({**scores, **accessories})
    confidence.update(faceShape=shape_confidence, skinTone=tone["confidence"])
    if shape_confidence < SHAPE_UNCERTAIN:
        # On a rule's line the class would flip with the photo's scale or noise: report the
        # catch-all "oval" and say it is uncertain.
        shape = "oval"
        uncertain.append("faceShape")
    return {
        "expressions": {k: present[k] for k in scores},
        "faceShape": shape,
        "skinTone": tone,
        "accessories": {k: present[k] for k in accessories},
        "scores": {k: round(v, 3) for k, v in {**scores, **accessories}.items()},
        "confidence": confidence,
        "uncertain": uncertain,
    }


def yes_no(scores: dict[str, float]) -> tuple[dict[str, bool], dict[str, float], list[str]]:
    """Scores in [0,1] to (present, confidence, the uncertain ones): present above 0.5 by more than
    ``UNCERTAIN_MARGIN``; uncertain (and reported absent) within it of 0.5."""
    present = {k: v > 0.5 + UNCERTAIN_MARGIN for k, v in scores.items()}
    confidence = {k: round(min(1.0, abs(v - 0.5) * 2), 3) for k, v in scores.items()}
    return present, confidence, [k for k, v in scores.items() if abs(v - 0.5) <= UNCERTAIN_MARGIN]
