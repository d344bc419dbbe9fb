"""From landmarks in image pixels to a metric head mesh (metres, +Y up, face toward +Z)."""
from __future__ import annotations

from dataclasses import dataclass

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

# How much a side view's depth counts against the front's own depth guess, for a landmark that
# faces the side camera squarely (weights fall with the cosine).
SIDE_DEPTH_WEIGHT = 1.0


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


def _surface_normals(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    from pipeline.glb import vertex_normals  # one implementation of smooth normals

    return vertex_normals(points, triangles).astype(np.float64)


def surface_normals(topology: Topology | None = None) -> np.ndarray:
    """[468,3] unit normals of the canonical face (canonical frame)."""
    topo = topology or load_topology()
    return _surface_normals(topo.vertices.astype(np.float64), topo.triangles)


def visibility(fits: list[ViewFit], normals: np.ndarray) -> np.ndarray:
    """[views,468] in [0,1]: the cosine between each landmark's normal and the direction to each camera."""
    directions = np.stack([f.direction_to_camera() for f in fits])  # [views,3]
    return np.clip(normals @ directions.T, 0.0, 1.0).T


def fuse_views(landmarks_image: dict[str, np.ndarray], topology: Topology | None = None) -> FusedShape:
    """One face shape from the front view's landmarks and any side views' (image px).

    Measured on rendered heads of known shape (bench/synthetic.py), the landmark model places
    points in a side view 1.5x less precisely than in the front view, and the head pose it implies
    can be a few degrees off in pitch, which turns height into false depth. So:

    1. every view is posed against the canonical face (its head pose, reported in the GLB);
    2. the front view gives x and y: it measures them best;
    3. each side view is re-posed onto the front view's own shape, using the landmarks both see
       squarely, so the two agree on what "forward" is;
    4. depth is blended per landmark: the front's guess with weight 1 and each side view's with
       ``SIDE_DEPTH_WEIGHT`` times how squarely that landmark faces its camera.
    """
    topo = topology or load_topology()
    fits = [fit_view(v, pts, topo) for v, pts in landmarks_image.items()]
    front = next(f for f in fits if f.view == "front")
    seen = visibility(fits, _surface_normals(topo.vertices.astype(np.float64), topo.triangles))
    seen_front = seen[fits.index(front)]
    depth = front.canonical_cm[:, 2].copy()
    depth_weight = np.ones(len(depth))
    for fit, seen_here in zip(fits, seen):
        if fit is front:
            continue
        points = image_to_camera(landmarks_image[fit.view]).astype(np.float64)
        onto_front = fit_similarity(front.canonical_cm, points, seen_here * seen_front + 1e-3)
        side = to_canonical_frame(landmarks_image[fit.view], onto_front)
        weight = SIDE_DEPTH_WEIGHT * seen_here
        depth += weight * side[:, 2]
        depth_weight += weight
    fused = front.canonical_cm.copy()
    fused[:, 2] = depth / depth_weight
    return FusedShape(fused, fits, seen)
