"""Committed face models (see MODEL_CARD.md) and the canonical face mesh topology.

Built by models/build.py (`make models`); at run time only these files are needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
LANDMARK_MODEL_PATH = MODELS_DIR / "face_landmark.onnx"  # [N,3,224,224] -> landmarks [N,468,3], face_score [N,1]
DETECTOR_MODEL_PATH = MODELS_DIR / "face_detector.onnx"  # [N,3,128,128] -> regressors [N,896,16], scores [N,896,1]
# BlazeFace full range, for small faces: [N,3,192,192] -> regressors [N,2304,16], scores [N,2304,1]
FULL_RANGE_DETECTOR_MODEL_PATH = MODELS_DIR / "face_detector_full_range.onnx"
TOPOLOGY_PATH = MODELS_DIR / "face_mesh_topology.npz"
HEAD_TEMPLATE_PATH = MODELS_DIR / "head_template.npz"  # the whole-head template (models/head_build.py)

__all__ = ["LANDMARK_MODEL_PATH", "DETECTOR_MODEL_PATH", "FULL_RANGE_DETECTOR_MODEL_PATH", "TOPOLOGY_PATH",
           "HEAD_TEMPLATE_PATH", "Topology", "load_topology", "load_head_template"]


@dataclass(frozen=True)
class Topology:
    """MediaPipe canonical face mesh, in the same vertex order as the landmark model output."""

    vertices: np.ndarray  # float32 [468, 3], centimetres, y up
    uvs: np.ndarray  # float32 [468, 2], origin top-left (glTF convention, no flip needed)
    triangles: np.ndarray  # int32 [898, 3], counter-clockwise seen from the front
    procrustes_ids: np.ndarray  # int32 [K], landmarks used to fit the canonical model
    procrustes_weights: np.ndarray  # float32 [K]


@lru_cache(maxsize=1)
def load_topology() -> Topology:
    """Load the topology once; the arrays are read-only because they are shared."""
    with np.load(TOPOLOGY_PATH) as data:
        arrays = {name: data[name] for name in ("vertices", "uvs", "triangles", "procrustes_ids", "procrustes_weights")}
    for array in arrays.values():
        array.setflags(write=False)
    return Topology(**arrays)


@lru_cache(maxsize=1)
def load_head_template() -> dict[str, np.ndarray]:
    """The head template's arrays by name (see MODEL_CARD.md, ``head_template.npz``), read-only."""
    with np.load(HEAD_TEMPLATE_PATH) as data:
        arrays = {name: data[name] for name in data.files}
    for array in arrays.values():
        array.setflags(write=False)
    return arrays
