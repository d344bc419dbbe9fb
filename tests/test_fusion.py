"""Multi-view fusion and morph targets, on exactly known geometry."""
from __future__ import annotations

import numpy as np
import pytest

from models import load_topology
from pipeline.mesh import fit_similarity, fuse_views
from pipeline.morphs import build_morph_targets


def _rotation_y(degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def _photograph(shape_cm: np.ndarray, yaw: float, depth_noise: float, rng) -> np.ndarray:
    """Landmarks as the model reports them for an orthographic photo of ``shape_cm`` turned by ``yaw``:
    image pixels (y down, z away from the camera), with x/y exact and z noisy (a learned guess)."""
    camera = shape_cm @ _rotation_y(yaw).T * 20.0 + np.array([500.0, 400.0, 0.0])
    image = camera * np.array([1.0, -1.0, -1.0]) + np.array([0.0, 800.0, 0.0])
    image[:, 2] += rng.normal(0.0, depth_noise * 20.0, len(image))
    return image


def _aligned_rms(estimate: np.ndarray, truth: np.ndarray) -> float:
    pose = fit_similarity(estimate, truth, np.ones(len(truth)))
    moved = pose.scale * estimate @ pose.rotation.T + pose.translation
    return float(np.sqrt(((moved - truth) ** 2).sum(1).mean()))


@pytest.fixture(scope="module")
def subject() -> np.ndarray:
    """The canonical face with a longer nose and deeper eyes: a shape that differs in depth."""
    v = load_topology().vertices.astype(np.float64).copy()
    nose = np.exp(-((v - v[1]) ** 2).sum(1) / (2 * 1.5 ** 2))
    eyes = sum(np.exp(-((v - v[i]) ** 2).sum(1) / (2 * 1.2 ** 2)) for i in (159, 386))
    v[:, 2] += 1.2 * nose - 0.6 * eyes
    return v


def test_side_views_fix_the_depth_a_front_view_only_guesses(subject):
    # Depth noise at the spread the landmark model's side views show against its front view on
    # rendered heads (SIDE_DEPTH_SPREAD_CM); these landmarks carry none of its depth exaggeration.
    rng = np.random.default_rng(7)
    views = {"front": _photograph(subject, 0, 0.15, rng), "left": _photograph(subject, 40, 0.15, rng),
             "right": _photograph(subject, -40, 0.15, rng)}
    front_only = fuse_views({"front": views["front"]}).canonical_cm
    fused = fuse_views(views, side_depth_exaggeration=1.0)
    assert _aligned_rms(fused.canonical_cm, subject) < 0.8 * _aligned_rms(front_only, subject)
    yaws = {fit.view: fit.pose.yaw_pitch_roll_degrees()[0] for fit in fused.fits}
    assert abs(yaws["front"]) < 3 and abs(abs(yaws["left"]) - 40) < 3 and abs(abs(yaws["right"]) - 40) < 3
    # A view sees the side of the face turned toward it best: positive yaw turns the nose to the
    # image's right, showing the subject's right cheek.
    left_cheek, right_cheek = 280, 50
    left_view = [f.view for f in fused.fits].index("left")
    sees = fused.visibility[left_view]
    assert (sees[right_cheek] > sees[left_cheek]) == (yaws["left"] > 0)


def test_fusing_exact_views_recovers_the_shape(subject):
    rng = np.random.default_rng(0)
    views = {v: _photograph(subject, yaw, 0.0, rng) for v, yaw in (("front", 0), ("left", 35), ("right", -35))}
    # Exact landmarks: none of the landmark model's depth exaggeration to take out.
    assert _aligned_rms(fuse_views(views, side_depth_exaggeration=1.0).canonical_cm, subject) < 0.02  # cm


def test_a_side_view_that_fails_locally_does_not_drag_the_shape(subject):
    # The right view's landmark fit fails on the right cheek (hair, a hand): its depth there is off
    # by 1.5 cm. The fused cheek moves by 1.7 mm (a plain weighted mean, without
    # agreement_weights: 4.7 mm).
    rng = np.random.default_rng(5)
    views = {"front": _photograph(subject, 0, 0.15, rng), "left": _photograph(subject, 40, 0.15, rng),
             "right": _photograph(subject, -40, 0.15, rng)}
    right_cheek = np.linalg.norm(subject - subject[50], axis=1) < 2.0
    broken = views["right"].copy()
    broken[right_cheek, 2] -= 1.5 * 20.0  # image px: 20 per cm, toward the camera
    clean = fuse_views(views, side_depth_exaggeration=1.0).canonical_cm
    fused = fuse_views({**views, "right": broken}, side_depth_exaggeration=1.0).canonical_cm
    assert np.abs(fused[right_cheek, 2] - clean[right_cheek, 2]).max() < 0.25


def test_a_side_view_changes_depth_only():
    rng = np.random.default_rng(3)
    face = load_topology().vertices.astype(np.float64)
    front = _photograph(face, 0, 0.3, rng)
    fused = fuse_views({"front": front, "left": _photograph(face, 30, 0.3, rng)}).canonical_cm
    alone = fuse_views({"front": front}).canonical_cm
    assert np.allclose(fused[:, :2], alone[:, :2]) and not np.allclose(fused[:, 2], alone[:, 2])


@pytest.fixture(scope="module")
def face_m() -> np.ndarray:
    return load_topology().vertices / 100.0


def test_at_least_eight_arkit_morph_targets(face_m):
    targets = build_morph_targets(face_m)
    assert {"jawOpen", "mouthSmileLeft", "mouthSmileRight", "eyeBlinkLeft", "eyeBlinkRight",
            "browInnerUp", "browDownLeft", "browDownRight"} <= set(targets)
    assert all(t.shape == face_m.shape and t.dtype == np.float32 for t in targets.values())


def test_blink_closes_only_its_own_eye(face_m):
    closed = face_m + build_morph_targets(face_m)["eyeBlinkLeft"]
    # +X is the subject's left: landmark 386/374 are the left eye's upper/lower lid.
    assert abs(closed[386, 1] - closed[374, 1]) < 0.1 * abs(face_m[386, 1] - face_m[374, 1])
    assert np.allclose(closed[159], face_m[159]) and np.allclose(closed[145], face_m[145])


def test_jaw_opens_down_and_smile_lifts_its_own_corner(face_m):
    targets = build_morph_targets(face_m)
    jaw = face_m + targets["jawOpen"]
    assert face_m[152, 1] - jaw[152, 1] > 0.01  # chin drops more than a centimetre
    assert np.allclose(jaw[10], face_m[10])  # forehead stays
    smile = targets["mouthSmileLeft"]
    assert smile[291, 1] > 0.004 and abs(smile[61, 1]) < 0.1 * smile[291, 1]
