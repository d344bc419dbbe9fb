"""ONNX sessions for the face detector and the landmark model, created once per process."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models import DETECTOR_MODEL_PATH, FULL_RANGE_DETECTOR_MODEL_PATH, LANDMARK_MODEL_PATH

LANDMARK_INPUT_SIZE = 224
CUDA = "CUDAExecutionProvider"

log = logging.getLogger(__name__)


def _session(path: Path, providers: list[str] | None, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One thread per session: the fleet scales by processes, and threads fight over 2 cores.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    wanted = providers or default_providers()
    if CUDA in wanted:
        load_cuda_libraries()
    return ort.InferenceSession(str(path), sess_options=options, providers=wanted)


def default_providers() -> list[str]:
    """CUDA first where this onnxruntime build has it, CPU always as the fallback."""
    available = ort.get_available_providers()
    return [p for p in (CUDA, "CPUExecutionProvider") if p in available]


@lru_cache(maxsize=1)
def load_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries of the ``nvidia-*`` wheels (the ``gpu`` extra installs them
    with onnxruntime-gpu) before the first CUDA session: they live in site-packages, not on the
    library path, and without them onnxruntime-gpu silently runs on the CPU. Libraries already on
    the path (a CUDA base image) are used as they are."""
    if CUDA not in ort.get_available_providers() or not hasattr(ort, "preload_dlls"):
        return
    try:
        ort.preload_dlls()
    except Exception as exc:  # noqa: BLE001 - the session reports what it really got
        log.warning("could not preload the CUDA libraries: %s", exc)


@dataclass
class FaceModels:
    """The detectors and/or the landmark model; either may be absent in a worker that needs only one.

    ``detector`` is BlazeFace short range, ``far_detector`` BlazeFace full range (small faces).
    """

    detector: ort.InferenceSession | None
    landmarks: ort.InferenceSession | None
    landmark_path: Path
    far_detector: ort.InferenceSession | None = None

    @classmethod
    def load(
        cls,
        detector: bool = True,
        landmarks: bool = True,
        providers: list[str] | None = None,
        threads: int = 1,
        landmark_path: str | Path | None = None,
    ) -> "FaceModels":
        path = Path(landmark_path or os.environ.get("ONNX_MODEL_PATH") or LANDMARK_MODEL_PATH)
        return cls(
            detector=_session(DETECTOR_MODEL_PATH, providers, threads) if detector else None,
            landmarks=_session(path, providers, threads) if landmarks else None,
            landmark_path=path,
            far_detector=_session(FULL_RANGE_DETECTOR_MODEL_PATH, providers, threads) if detector else None,
        )

    @property
    def providers(self) -> list[str]:
        """Execution providers actually in use (onnxruntime-gpu silently falls back to CPU)."""
        session = self.landmarks or self.detector
        return session.get_providers() if session else []

    def detect(self, batch: np.ndarray, full_range: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Raw detector outputs for ``batch``: [N,3,128,128] float32 RGB in [0,1] for the
        short-range model, [N,3,192,192] for the full-range one."""
        session = self.far_detector if full_range else self.detector
        if session is None:
            raise RuntimeError("this process did not load the face detector")
        regressors, scores = session.run(["regressors", "scores"], {"input": batch})
        return regressors, scores

    def predict_landmarks(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``landmarks`` [N,468,3] in 224-px crop units and ``face_score`` [N] for [N,3,224,224] crops."""
        if self.landmarks is None:
            raise RuntimeError("this process did not load the landmark model")
        points, score = self.landmarks.run(["landmarks", "face_score"], {"input": batch})
        return points, score.reshape(-1)

    @property
    def cuda_fallback(self) -> bool:
        """This is onnxruntime-gpu, yet the sessions run on the CPU (CUDA or cuDNN missing or of
        the wrong version: onnxruntime-gpu only logs a warning and carries on, many times slower)."""
        providers = self.providers
        return CUDA in ort.get_available_providers() and bool(providers) and providers[0] != CUDA

    def describe(self) -> dict:
        """What health reports about the model."""
        info: dict = {"initialized": self.landmarks is not None, "path": str(self.landmark_path),
                      "providers": self.providers, "cudaFallback": self.cuda_fallback}
        if self.landmarks is not None:
            inp, out = self.landmarks.get_inputs()[0], self.landmarks.get_outputs()[0]
            info["inputShape"] = [d if isinstance(d, int) else 1 for d in inp.shape]
            info["outputShape"] = [d if isinstance(d, int) else 1 for d in out.shape]
        return info
