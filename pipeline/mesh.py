"""From landmarks in image pixels to a metric head mesh (metres, +Y up, face toward +Z)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from models import Topology, load_topology


@dataclass(frozen=True)
class Pose:
    """Similarity that maps the canonical face (cm) into a view's camera frame: p = s R c + t."""

    scale: float
    rotation: np.ndarray  # [3,3]
    translation: np.ndarray  # [3]

    def yaw_pitch_roll_degrees(self) -> tuple[float, float, float]:
        """Head yaw, pitch (nod) and roll (tilt) in degrees.

        Positive yaw turns the nose toward the image's right (the subject turned to their own
        left), showing the subject's right cheek.
        """
        r = self.rotation
        yaw = np.degrees(np.arcsin(np.clip(r[0, 2], -1, 1)))
        pitch = np.degrees(np.arctan2(-r[1, 2], r[2, 2]))
        roll = np.degrees(np.arctan2(-r[0, 1], r[0, 0]))
        return float(yaw), float(pitch), float(roll)


def image_to_camera(points: np.ndarray) -> np.ndarray:
    """Image pixels (x right, y down, z away from the camera) to a right-handed +Y up, +Z toward camera frame."""
    return points * np.array([1.0, -1.0, -1.0], np.float32)


def fit_similarity(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> Pose:
    """Weighted least-squares similarity (Umeyama) with ``target ≈ s R source + t``."""
    w = weights / weights.sum()
    mu_s, mu_t = w @ source, w @ target
    cs, ct = source - mu_s, target - mu_t
    cov = (ct * w[:, None]).T @ cs
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    sign[2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rotation = (u * sign) @ vt
    scale = float((d * sign).sum() / (w @ (cs ** 2).sum(1)))
    return Pose(scale, rotation, mu_t - scale * rotation @ mu_s)


def estimate_pose(landmarks_image: np.ndarray, topology: Topology | None = None) -> Pose:
    """Head pose of one view from its landmarks, fitted on the rigid (Procrustes) landmarks."""
    topo = topology or load_topology()
    points = image_to_camera(landmarks_image)
    ids = topo.procrustes_ids
    return fit_similarity(topo.vertices[ids].astype(np.float64), points[ids].astype(np.float64),
                          topo.procrustes_weights.astype(np.float64))


def to_canonical_frame(landmarks_image: np.ndarray, pose: Pose) -> np.ndarray:
    """Undo the view's pose: landmarks in the canonical frame, in centimetres."""
    points = image_to_camera(landmarks_image).astype(np.float64)
    return ((points - pose.translation) @ pose.rotation) / pose.scale


def metric_vertices(landmarks_image: np.ndarray, topology: Topology | None = None) -> np.ndarray:
    """The subject's face from one view, posed frontally, in metres.

    A single photo has no absolute scale, so the size is the canonical face's (an average adult);
    the shape (proportions, depth profile) is the subject's.
    """
    pose = estimate_pose(landmarks_image, topology)
    return (to_canonical_frame(landmarks_image, pose) / 100.0).astype(np.float32)


# -- multi-view fusion ---------------------------------------------------------------------------

# How much the front view's own depth guess counts, on top of what its image measures (see
# ``depth_weights``). Measured on rendered heads of known shape (bench/synthetic.py; the bench's
# five subjects, side views at 30° and 45°): with 0.5-1.5 three views beat the front alone on
# every subject; 0.5 / 1.0 / 1.5 leave the worst face region 2.5 / 1.7 / 1.3% worse than
# front-only (on the random faces of ``--holdout``: 6.0 / 4.5 / 3.7%) and gain 4.7 / 3.9 / 3.3% on
# the nose: less gives the side views more say where they are right and where they are not.
FRONT_PRIOR_WEIGHT = 1.0

# The landmark model sees a turned face deeper than a frontal one: a side view's depth, fitted
# onto the front view's shape, is (1 + 0.06) times the front's depth where the true face has the
# front's depth profile (regression over 12 random face shapes rendered at 30-45°, ``python -m
# bench.synthetic --holdout``: 1.065; 1.055 at 30°, 1.07 at 37-45°; 1.06 on the bench's five
# subjects). Left in, it pushes every nose ~1.5 mm forward, whatever the face.
SIDE_DEPTH_EXAGGERATION = 1.06
# How far a side view's (corrected) depth usually lies from the front's: RMS 0.15 cm over the same
# random faces (0.125 at 30°, 0.18 at 45°). A side view's landmark that departs from the front by
# much more than that is more likely misplaced than measured (``agreement_weights``).
SIDE_DEPTH_SPREAD_CM = 0.15
# The Cauchy weight's scale in units of that spread: the textbook constant that keeps 95% of the
# efficiency of a plain mean when the disagreements are Gaussian.
CAUCHY_SCALE = 2.385


@dataclass(frozen=True)
class ViewFit:
    """One view's landmarks, posed into the canonical frame."""

    view: str
    pose: Pose
    canonical_cm: np.ndarray  # [468,3]

    def direction_to_camera(self) -> np.ndarray:
        """Unit vector, in the canonical frame, from the face toward this view's camera."""
        return self.pose.rotation.T @ np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class FusedShape:
    """The fused face (canonical frame, cm) and how much each view contributed to each landmark."""

    canonical_cm: np.ndarray  # [468,3]
    fits: list[ViewFit]
    visibility: np.ndarray  # [views,468] in [0,1]: cosine between normal and direction to camera


def fit_view(view: str, landmarks_image: np.ndarray, topology: Topology | None = None) -> ViewFit:
    pose = estimate_pose(landmarks_image, topology)
    return ViewFit(view, pose, to_canonical_frame(landmarks_image, pose))


def surface_normals(topology: Topology | None = None) -> np.ndarray:
    """[468,3] unit normals of the canonical face (canonical frame); read-only."""
    topo = topology or load_topology()
    return _shared_normals() if topo is load_topology() else _normals(topo)


@lru_cache(maxsize=1)
def _shared_normals() -> np.ndarray:
    normals = _normals(load_topology())
    normals.setflags(write=False)
    return normals


def _normals(topology: Topology) -> np.ndarray:
    from pipeline.glb import vertex_normals  # one implementation of smooth normals

    return vertex_normals(topology.vertices.astype(np.float64), topology.triangles).astype(np.float64)


def facing(fits: list[ViewFit], normals: np.ndarray) -> np.ndarray:
    """[views,468] in [-1,1]: the cosine between each landmark's normal and the direction to each
    camera (negative where the landmark faces away from that camera)."""
    directions = np.stack([f.direction_to_camera() for f in fits])  # [views,3]
    return (normals @ directions.T).T


def visibility(fits: list[ViewFit], normals: np.ndarray) -> np.ndarray:
    """[views,468] in [0,1]: the cosine between each landmark's normal and the direction to each camera."""
    return np.clip(facing(fits, normals), 0.0, 1.0)


def depth_weights(cosines: np.ndarray, is_front: bool) -> np.ndarray:
    """How much one view's depth of each landmark counts in the fused shape, from the cosine
    between the landmark's normal and the direction to that view's camera.

    The landmark model measures where a point lies in the image plane and guesses how far it is
    from the camera (its z is a learned prior). Where a view sees the surface edge-on (a side
    photo's profile of the nose, brow, lips and chin) the surface normal lies in the image plane,
    so the photo shows where the surface is; where it sees the surface face-on the normal points
    along the line of sight, and the view's depth is the prior again (measured: a side view's
    depth error there is 0.6-0.8 correlated with the front's, and larger). A view's weight is the
    share of the normal that lies in its image plane, sin² = 1 - cos², and nothing where the
    landmark faces away from a side camera. The front adds ``FRONT_PRIOR_WEIGHT`` for its own
    guess, which is all a front-only reconstruction has.
    """
    measured = 1.0 - np.clip(cosines, -1.0, 1.0) ** 2
    if is_front:
        return FRONT_PRIOR_WEIGHT + measured
    return np.where(cosines > 0.0, measured, 0.0)


def agreement_weights(side_depth_cm: np.ndarray, front_depth_cm: np.ndarray) -> np.ndarray:
    """[468] in (0,1]: how much a side view's depth of each landmark is trusted, from how far it
    lies from the front view's (canonical frame, cm): a Cauchy weight on the difference, scaled by
    the difference side views usually show (``SIDE_DEPTH_SPREAD_CM``). A landmark that departs by
    the usual spread keeps 85% of its weight, one that departs by 1.5 cm keeps 5%: a locally failed
    fit (hair over a cheek, a hand) does not drag the shape, while the few millimetres a side view
    really measures (a nose's projection) count.

    Measured on the rendered heads: the disagreement does not tell which view is right (over face
    regions, its rank correlation with how much worse the side view is there is -0.03 to -0.13:
    where a side view departs most it is, if anything, the nearer one), so the weight only tempers
    the tail; it is not a test that drops whatever disagrees.
    """
    scale = CAUCHY_SCALE * SIDE_DEPTH_SPREAD_CM
    return 1.0 / (1.0 + ((side_depth_cm - front_depth_cm) / scale) ** 2)


def side_view_depth(landmarks_image: np.ndarray, front_cm: np.ndarray,
                    exaggeration: float = SIDE_DEPTH_EXAGGERATION) -> np.ndarray:
    """[468] depth (canonical frame, cm) of a side view's landmarks (image px), re-posed onto the
    front view's shape ``front_cm`` by a similarity over all landmarks (so the two agree on what
    "forward" is), with the landmark model's depth exaggeration for turned faces taken out
    (``SIDE_DEPTH_EXAGGERATION``; 1.0 for landmarks that carry no model bias)."""
    points = image_to_camera(landmarks_image).astype(np.float64)
    onto_front = fit_similarity(front_cm, points, np.ones(len(points)))
    depth = to_canonical_frame(landmarks_image, onto_front)[:, 2]
    return depth.mean() + (depth - depth.mean()) / exaggeration


def fuse_views(landmarks_image: dict[str, np.ndarray], topology: Topology | None = None,
               side_depth_exaggeration: float = SIDE_DEPTH_EXAGGERATION) -> FusedShape:
    """One face shape (canonical frame, cm) from the front view's landmarks and any side views'
    (image px).

    1. every view is posed against the canonical face (its head pose, reported in the GLB);
    2. the front view gives x and y: it measures them best (in a side photo the landmark model
       places points 1.5-2x less precisely and draws the lower face up by 1-3% of its height);
    3. each side view is re-posed onto the front view's own shape and its depth corrected for the
       landmark model's bias (``side_view_depth``);
    4. depth is a weighted mean per landmark over the views: by the angle each view sees the
       surface at (``depth_weights``), a side view's landmark tempered where it departs far from
       the front's (``agreement_weights``).
    """
    topo = topology or load_topology()
    fits = [fit_view(v, pts, topo) for v, pts in landmarks_image.items()]
    front = next(f for f in fits if f.view == "front")
    front_depth = front.canonical_cm[:, 2]
    cosines = facing(fits, surface_normals(topo))
    depth = np.zeros(len(front_depth))
    depth_weight = np.zeros(len(depth))
    for fit, cosines_here in zip(fits, cosines):
        if fit is front:
            view_depth, weight = front_depth, depth_weights(cosines_here, True)
        else:
            view_depth = side_view_depth(landmarks_image[fit.view], front.canonical_cm, side_depth_exaggeration)
            weight = depth_weights(cosines_here, False) * agreement_weights(view_depth, front_depth)
        depth += weight * view_depth
        depth_weight += weight
    fused = front.canonical_cm.copy()
    fused[:, 2] = depth / depth_weight
    return FusedShape(fused, fits, np.clip(cosines, 0.0, 1.0))
