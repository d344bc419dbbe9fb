"""Do the side photos show the front photo's person, from the side, on the side they claim?

Run on the fitted landmarks of every view (image pixels), before fusion. Each side view is:

- **dropped** if it shows the face from the front (|yaw| under ``FRONTAL_YAW_DEG``: the front photo
  again, its mirror image, or another frontal shot adds no depth and would pull the shape flat);
- **dropped** if its person is not the front's: the front's face, posed onto the side photo's
  landmarks, misses them by more than one person's views do (``person_distance_cm``);
- **used as the other side** if its head is turned the other way (the "left" photo shows the
  subject's left cheek, so the head turns to its right: negative yaw). Both swapped: they swap,
  with a warning. One on the wrong side, the other slot free: it moves there. Both on the same side:
  the one in the wrong slot is dropped.

Every drop or move becomes a warning naming the view and the reason.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models import Topology, load_topology
from pipeline.mesh import fit_similarity, fit_view, image_to_camera, surface_normals, visibility

FRONTAL_YAW_DEG = 12.0
# Landmarks that face the side camera at least this squarely are compared (the rest are seen too
# obliquely to be placed well).
SEEN_SQUARELY = 0.3
# The person check's threshold, in canonical-face centimetres of image-plane miss (RMS), growing
# with the yaw beyond 25°. Measured with a photo in front and that person's head rebuilt from it
# rendered as the sides (and the synthetic subject's own renders): 0.24-0.42 at 24-30°, up to
# 0.48 at 38-42°; how the front photo is framed moves it by up to 0.1. The synthetic subjects of
# bench.synthetic.SUBJECTS measure 0.23-0.39 at 30° and up to 0.54 at 40°, 0.58 at 45° (the narrow
# face, whose 45° view the model reads as turned 42°: the side views' own distortion grows with the
# yaw). The group photo's people measure 0.24-0.49 against the astronaut (0.26-0.66 against four
# frontal faces, ``python -m bench.person_check``): the landmarks' shape alone cannot tell such
# faces apart, and the threshold sits above one person's spread, so only a markedly different
# face shape is caught (0.68 at 30° for a face 15% wider and 10% shorter). Comparing heights
# alone (bench.person_check's vertical_profile_cm) ranks the real other people better (AUC 0.89
# against 0.77) but the synthetic subjects against each other no better (0.66 against 0.65), and
# no real photo pair of one person exists here to show what it would drop wrongly: not adopted.
SAME_PERSON_CM = 0.46
SAME_PERSON_CM_PER_DEG = 0.009

SIDES = ("left", "right")


@dataclass(frozen=True)
class SideViewCheck:
    """Which photo each view label ends up using (label -> the view the photo was given as), and
    the warnings about the ones dropped or moved."""

    photos: dict[str, str]
    warnings: list[str]


def dropped(view: str, why: str) -> str:
    """The warning for a side view left out of the avatar."""
    return f"{view}: {why}; the avatar was built without this view"


def person_distance_cm(front_points: np.ndarray, side_points: np.ndarray, topology: Topology | None = None) -> float:
    """How far the front's face shape is from explaining a side photo: the front's landmarks posed
    in the canonical frame, fitted (similarity) onto the side photo's landmarks where that photo
    sees them squarely, then the RMS miss in the image plane, in canonical centimetres."""
    topo = topology or load_topology()
    front = fit_view("front", front_points, topo)
    side = fit_view("side", side_points, topo)
    seen = visibility([side], surface_normals(topo))[0]
    weights = np.where(seen > SEEN_SQUARELY, seen, 0.0) + 1e-6
    camera = image_to_camera(side_points).astype(np.float64)
    pose = fit_similarity(front.canonical_cm, camera, weights)
    predicted = pose.scale * front.canonical_cm @ pose.rotation.T + pose.translation
    miss = np.linalg.norm((predicted - camera)[:, :2], axis=1) / pose.scale
    return float(np.sqrt((weights * miss ** 2).sum() / weights.sum()))


def same_person_limit_cm(yaw_deg: float) -> float:
    return SAME_PERSON_CM + SAME_PERSON_CM_PER_DEG * max(0.0, abs(yaw_deg) - 25.0)


def check_side_views(points: dict[str, np.ndarray], topology: Topology | None = None) -> SideViewCheck:
    """Check each side view of ``points`` (view -> [468,3] landmarks in image pixels) against the
    front (see the module docstring)."""
    topo = topology or load_topology()
    warnings: list[str] = []
    turned: dict[str, str] = {}  # view -> the side its photo shows
    for view in SIDES:
        if view not in points:
            continue
        yaw = fit_view(view, points[view], topo).pose.yaw_pitch_roll_degrees()[0]
        if abs(yaw) < FRONTAL_YAW_DEG:
            warnings.append(dropped(view, f"it shows the face from the front (turned {abs(yaw):.0f}°), "
                                          "not from the side"))
            continue
        distance = person_distance_cm(points["front"], points[view], topo)
        if distance > same_person_limit_cm(yaw):
            warnings.append(dropped(view, "it does not seem to show the same person as the front photo "
                                          f"(face shape {distance:.2f} cm from the front's after posing)"))
            continue
        turned[view] = "left" if yaw < 0 else "right"
    photos = {"front": "front"}
    wrong = [v for v, side in turned.items() if side != v]
    if len(wrong) == 2:
        warnings.append("left and right: the photos were swapped (the left photo shows the subject's right "
                        "side); they were used the right way round")
    for view, side in turned.items():
        if side == view:
            photos[view] = view
        elif side in turned and turned[side] == side:
            warnings.append(dropped(view, f"it shows the subject's {side} side, as the {side} photo does"))
        else:
            if len(wrong) == 1:
                warnings.append(f"{view}: it shows the subject's {side} side; it was used as the {side} view")
            photos[side] = view
    return SideViewCheck(photos, warnings)
