"""Face crops for the landmark model: 1.5x the detected box, rotated so the eyes are level."""
from __future__ import annotations

import math

import cv2
import numpy as np

from pipeline.detect import Detection
from pipeline.models import LANDMARK_INPUT_SIZE

ROI_SCALE = 1.5


def crop_transform(detection: Detection, size: int = LANDMARK_INPUT_SIZE) -> np.ndarray:
    """The 2x3 affine that maps crop pixels to image pixels for ``detection``.

    The crop is square, ``ROI_SCALE`` times the longer side of the box, centred on the box and
    rotated by the angle of the line from the right eye to the left eye.
    """
    x0, y0, x1, y1 = detection.box
    right_eye, left_eye = detection.keypoints[0], detection.keypoints[1]
    angle = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])
    side = ROI_SCALE * max(x1 - x0, y1 - y0)
    k = side / size
    cos, sin = math.cos(angle) * k, math.sin(angle) * k
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    half = size / 2
    # image = centre + k * R(angle) @ (crop - half)
    return np.array([
        [cos, -sin, centre[0] - cos * half + sin * half],
        [sin, cos, centre[1] - sin * half - cos * half],
    ], np.float64)


def extract_crop(image: np.ndarray, crop_to_image: np.ndarray, size: int = LANDMARK_INPUT_SIZE) -> np.ndarray:
    """Sample the crop as [size,size,3] uint8 RGB (the model's input layout is made per batch).

    warpAffine samples bilinearly, which aliases when the face is much larger than the crop, so
    the region is first shrunk with INTER_AREA by the whole number of times the crop fits in it
    (what is left, under 2x, warpAffine does): OpenCV's INTER_AREA is a plain box average, 3.5 ms
    for a 2300 px face region, when the size is an exact multiple, and 18 ms otherwise.
    """
    scale = math.hypot(crop_to_image[0, 0], crop_to_image[1, 0])
    affine = crop_to_image.copy()
    source = image
    factor = int(scale)
    if factor >= 2:
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ affine.T
        h, w = image.shape[:2]
        x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, [w, h])
        x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int), 0, [w, h])
        # Whole multiples of the factor: the part cut off (under ``factor`` pixels) is outside
        # the crop or replicated border.
        x1, y1 = x0 + (x1 - x0) // factor * factor, y0 + (y1 - y0) // factor * factor
        if x1 - x0 >= factor and y1 - y0 >= factor:
            source = cv2.resize(image[y0:y1, x0:x1], ((x1 - x0) // factor, (y1 - y0) // factor),
                                interpolation=cv2.INTER_AREA)
            affine[:, 2] -= (x0 + 0.5 * (factor - 1), y0 + 0.5 * (factor - 1))
            affine = affine / factor
    crop = cv2.warpAffine(source, affine, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    return crop


def crop_points_to_image(points: np.ndarray, crop_to_image: np.ndarray) -> np.ndarray:
    """Landmarks [...,468,3] from crop pixels to image pixels; z is scaled like x and y."""
    scale = math.hypot(crop_to_image[0, 0], crop_to_image[1, 0])
    xy = points[..., :2] @ crop_to_image[:, :2].T + crop_to_image[:, 2]
    return np.concatenate([xy, points[..., 2:3] * scale], axis=-1).astype(np.float32)


# Beyond the crop's own square, so texture padding and accessory checks near its edge still read
# real pixels.
REGION_MARGIN = 0.15


def face_region(image: np.ndarray, crop_to_image: np.ndarray,
                size: int = LANDMARK_INPUT_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The part of ``image`` around the face (the crop's square plus a margin), the crop transform
    re-expressed in that part's pixels, and the part's top-left corner [x, y] in ``image``.

    Everything after landmark fitting reads only this part; keeping just it makes the stage file
    a job hands from one worker to the next several times smaller than the whole photo.
    """
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ crop_to_image.T
    lo, hi = corners.min(0), corners.max(0)
    pad = REGION_MARGIN * (hi - lo).max()
    h, w = image.shape[:2]
    x0, y0 = np.clip(np.floor(lo - pad).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(hi + pad).astype(int), 0, [w, h])
    moved = crop_to_image.copy()
    moved[:, 2] -= (x0, y0)
    return np.ascontiguousarray(image[y0:y1, x0:x1]), moved, np.array([x0, y0])
