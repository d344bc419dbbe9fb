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
        """Head yaw (turn, + toward the camera's left), pitch (nod), roll (tilt)."""
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
