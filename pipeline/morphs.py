"""ARKit-named morph targets (blend shapes) for the face mesh, built from its own geometry.

Each target is a field of position offsets (metres) over the 468 vertices, made from landmark
groups of the MediaPipe topology: lids close, the jaw turns about a hinge behind the face, mouth
corners rise, brows move. Offsets scale with the face, so they fit any subject. Names follow
Apple's ARKit blend shapes, where Left and Right are the subject's own sides (+X is the subject's
left in the canonical frame), so rigs and animation data made for ARKit drive them directly.
"""
from __future__ import annotations

import numpy as np

# Eyelid contours, inner to outer, paired vertex by vertex (upper above lower).
UPPER_LID = {"Right": (173, 157, 158, 159, 160, 161, 246), "Left": (398, 384, 385, 386, 387, 388, 466)}
LOWER_LID = {"Right": (155, 154, 153, 145, 144, 163, 7), "Left": (382, 381, 380, 374, 373, 390, 249)}
LID_FOLD = {"Right": (190, 56, 28, 27, 29, 30, 247), "Left": (414, 286, 258, 257, 259, 260, 467)}
BROW = {"Right": (70, 63, 105, 66, 107, 46, 53, 52, 65, 55), "Left": (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)}
INNER_BROW = (107, 55, 66, 336, 285, 296)
MOUTH_CORNER = {"Right": 61, "Left": 291}
CHEEK = {"Right": 205, "Left": 425}
LIP_UPPER_INNER, LIP_LOWER_INNER, NOSE_BOTTOM = 13, 14, 2
FACE_EDGE = (234, 454)  # beside the ears: the jaw hinges a little in front of them
EYE_OUTER = {"Right": 33, "Left": 263}
SIDE_SIGN = {"Right": -1.0, "Left": 1.0}

JAW_OPEN_RADIANS = np.radians(18.0)


def _falloff(positions: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """[V,1] Gaussian weights around ``centre``."""
    d2 = ((positions - centre) ** 2).sum(1, keepdims=True)
    return np.exp(-d2 / (2 * radius * radius))


def _blink(p: np.ndarray, side: str) -> np.ndarray:
    delta = np.zeros_like(p)
    upper, lower, fold = (np.array(g[side]) for g in (UPPER_LID, LOWER_LID, LID_FOLD))
    closing = p[lower] - p[upper]
    delta[upper] = closing * 0.95  # the lid meets the lower lid (a hair short of crossing it)
    delta[fold] = closing * 0.45  # the skin above follows part of the way
    return delta


def _jaw_open(p: np.ndarray, face: float) -> np.ndarray:
    """Turn everything below the lips' parting about a hinge behind the face, near the ears."""
    parting = (p[LIP_UPPER_INNER, 1] + p[LIP_LOWER_INNER, 1]) / 2
    hinge = np.array([0.0, p[NOSE_BOTTOM, 1], p[list(FACE_EDGE), 2].mean() + 0.1 * face])
    weight = np.clip((parting - p[:, 1]) / (0.04 * face), 0.0, 1.0)[:, None]
    c, s = np.cos(JAW_OPEN_RADIANS), np.sin(JAW_OPEN_RADIANS)
    turn = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])  # chin moves down and back
    return weight * ((p - hinge) @ turn.T + hinge - p)


def build_morph_targets(positions: np.ndarray) -> dict[str, np.ndarray]:
    """Ten ARKit blend shapes as float32 [V,3] position offsets for ``positions`` (metres)."""
    p = np.asarray(positions, np.float64)
    face = float(np.linalg.norm(p[EYE_OUTER["Left"]] - p[EYE_OUTER["Right"]]))  # ~9 cm
    unit = face / 9.0  # one "centimetre" on this face (outer eye corners are ~9 cm apart)
    targets: dict[str, np.ndarray] = {"jawOpen": _jaw_open(p, face)}
    for side, sign in SIDE_SIGN.items():
        corner = p[MOUTH_CORNER[side]]
        targets[f"mouthSmile{side}"] = _falloff(p, corner, 1.2 * unit) * np.array([0.5 * sign, 0.8, -0.3]) * unit
        targets[f"eyeBlink{side}"] = _blink(p, side)
        brow_centre = p[list(BROW[side])].mean(0)
        targets[f"browDown{side}"] = _falloff(p, brow_centre, 1.5 * unit) * np.array([0.0, -0.5, 0.0]) * unit
    inner = p[list(INNER_BROW)].mean(0)
    targets["browInnerUp"] = _falloff(p, inner, 1.5 * unit) * np.array([0.0, 0.7, 0.0]) * unit
    puff = sum(_falloff(p, p[v], 1.8 * unit) * np.array([SIDE_SIGN[s] * 0.5, 0.0, 0.2]) * unit
               for s, v in CHEEK.items())
    targets["cheekPuff"] = puff
    mouth = (p[MOUTH_CORNER["Left"]] + p[MOUTH_CORNER["Right"]]) / 2
    near_mouth = _falloff(p, mouth, 1.6 * unit)
    targets["mouthPucker"] = near_mouth * ((mouth - p) * np.array([0.35, 0.2, 0.0]) + np.array([0, 0, 0.4 * unit]))
    return {name: delta.astype(np.float32) for name, delta in targets.items()}
