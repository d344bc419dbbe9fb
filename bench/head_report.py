"""Measurements of a head avatar that the tests assert and the benchmark reports.

``morph_target_report`` says, for each ARKit target on a fitted head, how far it moves the mesh
at weight 1 and where (which side, which part of the face), so a broken transfer (a smile on the
forehead, a left blink on the right eye, a jaw that does not open) shows as numbers.
"""
from __future__ import annotations

import numpy as np

from pipeline.head import FittedHead, head_template

# MediaPipe landmarks the regions are named after.
EYE_CENTRES = {"Right": (33, 133, 159, 145), "Left": (263, 362, 386, 374)}
MOUTH = (13, 14, 61, 291)
NOSE = (4, 5, 45, 275)
CHIN = 152
CHEEKS = {"Right": 50, "Left": 280}


def _centre(landmarks: np.ndarray, ids) -> np.ndarray:
    return landmarks[list(ids)].mean(0)


def morph_target_report(fitted: FittedHead) -> dict[str, dict]:
    """Per target: ``maxMm`` (largest vertex displacement at weight 1), ``centre`` (the
    displacement-weighted centre of what moves, canonical frame, metres), ``side`` (+1 subject's
    left, -1 right, 0 both), ``region`` (the nearest of eyes/brows/nose/cheeks/mouth/jaw by that
    centre), ``parts`` (the vertex parts it moves by over 0.5 mm)."""
    head = head_template()
    rest = fitted.rest_positions.astype(np.float64)
    landmarks = head.landmarks_of(rest)
    midline = float(landmarks[[1, 4, 152]].mean(0)[0])
    eye_y = float(_centre(landmarks, EYE_CENTRES["Right"] + EYE_CENTRES["Left"])[1])
    regions = {
        "eyes": [_centre(landmarks, ids) for ids in EYE_CENTRES.values()],
        "brows": [_centre(landmarks, ids) + [0.0, 0.018, 0.0] for ids in EYE_CENTRES.values()],
        "nose": [_centre(landmarks, NOSE)],
        "cheeks": [landmarks[v] for v in CHEEKS.values()],
        "mouth": [_centre(landmarks, MOUTH)],
        "jaw": [landmarks[CHIN]],
    }
    out = {}
    for index, name in enumerate(fitted.morph_names):
        vertices, offsets = fitted.morph(index)
        size = np.linalg.norm(offsets, axis=1).astype(np.float64)
        centre = (rest[vertices] * size[:, None]).sum(0) / max(size.sum(), 1e-12)
        left = size[rest[vertices, 0] > midline].sum()
        right = size[rest[vertices, 0] < midline].sum()
        side = 1 if left > 2 * right else -1 if right > 2 * left else 0
        region = min(regions, key=lambda r: min(np.linalg.norm(centre - p) for p in regions[r]))
        parts = sorted({("skin", "eyeRight", "eyeLeft", "teethUpper", "teethLower", "tongue")[p]
                        for p in np.unique(head.part[vertices[size > 5e-4]])})
        out[name] = {"maxMm": round(float(size.max()) * 1000, 2), "centre": [round(float(c), 4) for c in centre],
                     "side": side, "region": region, "parts": parts,
                     "aboveEyes": bool(centre[1] > eye_y)}
    return out

