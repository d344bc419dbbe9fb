"""GPU check: is the CUDA execution provider really used, does it agree with the CPU, and what does
it buy? ``python -m bench.gpu_check`` prints one JSON and exits 1 when CUDA is not what runs.

Needs onnxruntime-gpu (the ``gpu`` extra) and a CUDA device; nothing of the service (no Redis,
store or Celery), so it runs on a bare GPU machine with the pipeline's own packages. Everything is
measured on the machine it runs on, CPU and CUDA in the same run, so the ratios are the result:

- ``parity``: landmarks and detector outputs, CUDA against CPU, on the crops of real photos;
- ``landmarks`` / ``detector``: median ms per run and faces/s per batch size, CPU (one thread, as a
  worker process runs) against CUDA; decides ``INFERENCE_BATCH_MAX`` for GPU workers;
- ``inferenceBatching``: ms per job (3 crops) with 1..N jobs per run, as ``worker/batching.py``
  batches them;
- ``pipeline``: the whole in-process avatar (``bench.pipeline_bench``) on CPU and on CUDA.
"""
from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from bench.photos import astronaut_rgb, avatar_views  # noqa: E402
from bench.pipeline_bench import measure_inference_batching, median_ms, run_pipeline_bench  # noqa: E402
from pipeline.detect import letterbox  # noqa: E402
from pipeline.models import FaceModels  # noqa: E402
from pipeline.stages import prepare_views  # noqa: E402

CPU = ["CPUExecutionProvider"]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
LANDMARK_BATCHES = (1, 3, 12, 48, 192, 768)
DETECTOR_BATCHES = (1, 3, 48, 384)


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def per_batch(run, batches: tuple[int, ...], make_input, repeats: int) -> dict:
    """Median ms per run and inputs/s for each batch size."""
    out = {}
    for n in batches:
        batch = make_input(n)
        ms = median_ms(lambda: run(batch), repeats, digits=3)
        out[str(n)] = {"ms": ms, "facesPerSecond": round(n / ms * 1000, 1)}
    return out


def real_inputs(models: FaceModels) -> tuple[np.ndarray, np.ndarray]:
    """Landmark-model crops [3,3,224,224] and detector inputs [3,3,128,128] of real 1024² photos."""
    prepared = prepare_views(avatar_views(1024), models)
    crops = np.ascontiguousarray(prepared.crops.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    face = astronaut_rgb()
    detector_in = np.stack([letterbox(img)[0] for img in (face, face, np.ascontiguousarray(face[:, ::-1]))])
    return crops, detector_in


def tile(array: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.resize(array, (n, *array.shape[1:])))


def main() -> int:
    report: dict = {"onnxruntime": ort.__version__, "available": ort.get_available_providers(),
                    "gpu": gpu_name(), "cpus": os.cpu_count()}
    cpu = FaceModels.load(threads=1, providers=CPU)
    cuda = FaceModels.load(threads=1, providers=CUDA)
    report["cudaSessionProviders"] = {"landmarks": cuda.landmarks.get_providers(),
                                      "detector": cuda.detector.get_providers()}
    on_cuda = all(s.get_providers()[0] == "CUDAExecutionProvider" for s in (cuda.landmarks, cuda.detector))
    report["cudaInUse"] = on_cuda
    if not on_cuda:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 1

    crops, detector_in = real_inputs(cpu)
    cpu_points, cpu_scores = cpu.predict_landmarks(crops)
    gpu_points, gpu_scores = cuda.predict_landmarks(crops)
    cpu_reg, cpu_logits = cpu.detect(detector_in)
    gpu_reg, gpu_logits = cuda.detect(detector_in)
    report["parity"] = {
        "landmarks_max_abs_px": float(np.abs(cpu_points - gpu_points).max()),
        "face_score_max_abs": float(np.abs(cpu_scores - gpu_scores).max()),
        "detector_regressors_max_abs": float(np.abs(cpu_reg - gpu_reg).max()),
        "detector_logits_max_abs": float(np.abs(cpu_logits - gpu_logits).max()),
    }

    report["landmarks"] = {
        "cpu_1thread": per_batch(cpu.predict_landmarks, LANDMARK_BATCHES[:3], lambda n: tile(crops, n), 30),
        "cuda": per_batch(cuda.predict_landmarks, LANDMARK_BATCHES, lambda n: tile(crops, n), 50),
    }
    report["detector"] = {
        "cpu_1thread": per_batch(cpu.detect, DETECTOR_BATCHES[:2], lambda n: tile(detector_in, n), 30),
        "cuda": per_batch(cuda.detect, DETECTOR_BATCHES, lambda n: tile(detector_in, n), 50),
    }
    report["inferenceBatching"] = {
        "cpu_1thread": measure_inference_batching((1, 2, 4, 8), providers=CPU),
        "cuda": measure_inference_batching((1, 2, 4, 8, 16, 32, 64), providers=CUDA),
    }
    report["pipeline"] = {"cpu": run_pipeline_bench(repeats=15, providers=CPU),
                          "cuda": run_pipeline_bench(repeats=15, providers=CUDA)}
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
