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

# How much a view's depth (its z, a learned guess) counts against its x and y (measured), as
# the ratio of their precisions: a side view's x fixes the depth the front view only guesses.
DEPTH_PRECISION = 0.1
# A landmark facing away from every view still gets a value, mostly from the front view.
MIN_VISIBILITY = 0.05
REFINE_ITERATIONS = 2


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


def view_weights(fits: list[ViewFit], normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per view and landmark: the blending weight and the visibility [views,468] in [0,1].

    Visibility is the cosine between the landmark's surface normal and the direction to the
    view's camera: a landmark counts in a view by how squarely it faces that camera.
    """
    directions = np.stack([f.direction_to_camera() for f in fits])  # [views,3]
    visibility = np.clip(normals @ directions.T, 0.0, 1.0).T  # [views,468]
    return visibility ** 2 + MIN_VISIBILITY, visibility


def _blend(fits: list[ViewFit], weights: np.ndarray) -> np.ndarray:
    """Per landmark, the point that best explains every view's measurement (weighted least squares).

    In its own camera frame a view measures x and y with full precision and z with
    ``DEPTH_PRECISION``; ``R.T @ diag(1, 1, DEPTH_PRECISION) @ R`` is that precision turned into the
    canonical frame. Summing them over the views gives a 3x3 system per landmark.
    """
    precision = np.diag([1.0, 1.0, DEPTH_PRECISION])
    per_view = np.stack([f.pose.rotation.T @ precision @ f.pose.rotation for f in fits])  # [views,3,3]
    points = np.stack([f.canonical_cm for f in fits])  # [views,468,3]
    lhs = np.einsum("vl,vij->lij", weights, per_view)
    rhs = np.einsum("vl,vij,vlj->li", weights, per_view, points)
    return np.linalg.solve(lhs, rhs[..., None])[..., 0]


def fuse_views(landmarks_image: dict[str, np.ndarray], topology: Topology | None = None) -> FusedShape:
    """One face shape from several views' landmarks (image px), front first.

    Each view is posed into the canonical frame and the views are blended landmark by landmark,
    weighted by how squarely each view sees the landmark (``view_weights``) and by how precisely it
    measures each direction (``_blend``). Then every view is re-posed against the fused shape
    itself, on all landmarks it sees well, and blended again: the first poses were fitted to the
    average face.
    """
    topo = topology or load_topology()
    fits = [fit_view(v, pts, topo) for v, pts in landmarks_image.items()]
    normals = _surface_normals(topo.vertices.astype(np.float64), topo.triangles)
    for iteration in range(REFINE_ITERATIONS + 1):
        weights, visibility = view_weights(fits, normals)
        fused = _blend(fits, weights)
        if iteration == REFINE_ITERATIONS or len(fits) == 1:
            break
        refitted = []
        for fit, seen in zip(fits, visibility):
            points = image_to_camera(landmarks_image[fit.view]).astype(np.float64)
            pose = fit_similarity(fused, points, seen ** 2 + MIN_VISIBILITY)
            refitted.append(ViewFit(fit.view, pose, to_canonical_frame(landmarks_image[fit.view], pose)))
        fits = refitted
        normals = _surface_normals(fused, topo.triangles)
    return FusedShape(fused, fits, visibility)
