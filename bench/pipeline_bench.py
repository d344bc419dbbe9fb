"""In-process pipeline timings: our path against a naive one, on the same inputs, in one run."""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Mapping

import cv2
import numpy as np

from bench.photos import avatar_views
from pipeline import VIEWS
from pipeline.align import crop_points_to_image, crop_transform, extract_crop
from pipeline.detect import detect_faces
from pipeline.mesh import estimate_pose, to_canonical_frame
from pipeline.models import FaceModels
from pipeline.stages import run_pipeline
from pipeline.texture import bake_texture


NAIVE_TEXTURE_SIZE = 1024


def naive_pipeline(images: Mapping[str, bytes], models: FaceModels) -> bytes:
    """What a straightforward implementation does, the baseline our path is measured against:
    decode every photo at full resolution and work on the full-size images, run the detector and
    the landmark model once per view, bake a fixed 1024² texture, and let trimesh write the GLB
    (which re-encodes the texture as PNG). Same detector, crops and mesh code as ours."""
    import trimesh  # imported by the caller already: only the export is timed here

    from models import load_topology

    decoded = [cv2.cvtColor(cv2.imdecode(np.frombuffer(images[v], np.uint8), cv2.IMREAD_COLOR),
                            cv2.COLOR_BGR2RGB) for v in VIEWS]
    found = [detect_faces(models, [image])[0] for image in decoded]
    points = []
    for image, faces in zip(decoded, found):
        m = crop_transform(faces[0])
        crop = extract_crop(image, m).transpose(2, 0, 1)[None].astype(np.float32) / 255
        pts, _ = models.predict_landmarks(np.ascontiguousarray(crop))
        points.append(crop_points_to_image(pts[0], m))
    topo = load_topology()
    pose = estimate_pose(points[0], topo)
    vertices = to_canonical_frame(points[0], pose) / 100.0
    texture = bake_texture(decoded[0], points[0][:, :2], NAIVE_TEXTURE_SIZE)
    from PIL import Image

    material = trimesh.visual.texture.SimpleMaterial(image=Image.fromarray(texture))
    visual = trimesh.visual.TextureVisuals(uv=topo.uvs * [1, -1] + [0, 1], material=material)
    mesh = trimesh.Trimesh(vertices, topo.triangles, visual=visual, process=False)
    return mesh.export(file_type="glb")


def median_ms(fn: Callable[[], object], repeats: int, digits: int = 2) -> float:
    """Median wall time of ``repeats`` calls of ``fn``, after one warm-up call (first-call
    allocations, lazy caches; on a GPU, the shape's kernel choice)."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), digits)


# The whole head's own stages, by what they do: fitting the template, baking its atlas (and the
# small face-mask atlas the features read), writing the GLB.
HEAD_STAGES = {"fitting": "fitting", "baking": "texture", "writing": "glb"}


def run_pipeline_bench(sizes: tuple[int, ...] = (1024, 4096), repeats: int = 15,
                       providers: list[str] | None = None) -> dict:
    """Per-stage and whole-avatar medians for our path (the whole head, as the service makes it),
    the face mask's in the same rounds, and the naive path's median, per size."""
    import trimesh  # noqa: F401  (import cost is per process, not per avatar)

    cv2.setNumThreads(1)  # one thread per library call (ONNX Runtime: threads=1; BLAS: bench/__main__)
    models = FaceModels.load(threads=1, providers=providers)
    # The three photos are decoded at the same time, one thread each (pipeline.stages._decode_all),
    # as the workers do; everything else runs on one thread.
    out: dict = {"threads": 1, "decodeThreads": len(VIEWS), "providers": models.providers,
                 "inputs": "3 JPEG q90 from real photos"}
    for side in sizes:
        views = avatar_views(side)
        n = repeats if side <= 1024 else max(5, repeats // 2)
        stage_samples: dict[str, list[float]] = {}
        front_only: dict[str, list[float]] = {}
        wall: list[float] = []
        mask_wall: list[float] = []
        glb_bytes: list[int] = []

        def ours() -> None:
            start = time.perf_counter()
            result = run_pipeline(views, models)
            wall.append((time.perf_counter() - start) * 1000)
            glb_bytes.append(len(result.glb))
            for stage, ms in result.timings_ms.items():
                stage_samples.setdefault(stage, []).append(ms)
            # The face mask in the same round, so the two are compared on the same machine state.
            start = time.perf_counter()
            alone = run_pipeline(views, models, mesh="face")
            mask_wall.append((time.perf_counter() - start) * 1000)
            # What fusing three views and baking their atlas add over the front alone (face mask).
            mask = run_pipeline(views, models, fusion_views=("front",), mesh="face")
            for stage in ("mesh", "texture"):
                front_only.setdefault(stage, []).append(mask.timings_ms[stage])
                stage_samples.setdefault(f"mask_{stage}", []).append(alone.timings_ms[stage])

        ours()  # warm-up: first-call allocations, lazy caches
        wall.clear()
        mask_wall.clear()
        for _ in range(n):
            ours()
        whole = round(statistics.median(wall), 2)
        mask_whole = round(statistics.median(mask_wall), 2)
        fused = sum(statistics.median(stage_samples[f"mask_{s}"][1:]) for s in ("mesh", "texture"))
        alone = sum(statistics.median(front_only[s][1:]) for s in ("mesh", "texture"))
        naive = median_ms(lambda: naive_pipeline(views, models), max(3, n // 3))
        stages = {k: round(statistics.median(v[1:]), 2) for k, v in stage_samples.items() if not k.startswith("mask_")}
        out[f"{side}x{side}"] = {
            "avatar_ms_median": whole,
            "stages_ms_median": stages,
            "head_stages_ms_median": {name: stages.get(key, 0.0) for name, key in HEAD_STAGES.items()},
            "face_mask_avatar_ms_median": mask_whole,
            "head_added_ms": round(whole - mask_whole, 2),
            "glb_bytes": int(statistics.median(glb_bytes)),
            "naive_avatar_ms_median": naive,
            "speedup_vs_naive": round(naive / whole, 2),
            "fusion_and_texture_added_ms": round(fused - alone, 2),
            "repeats": n,
            "input_bytes": sum(len(b) for b in views.values()),
        }
    return out


def measure_inference_batching(jobs_per_run: tuple[int, ...] = (1, 2, 4, 8), repeats: int = 30,
                               providers: list[str] | None = None) -> dict:
    """The landmark model over 3 crops per job, ``jobs_per_run`` jobs per run, one thread (as a
    worker process runs): ms per job. Decides INFERENCE_BATCH_MAX (batching only pays if this drops)."""
    models = FaceModels.load(detector=False, threads=1, providers=providers)
    rng = np.random.default_rng(0)
    out: dict = {"provider": models.providers[0], "threads": 1, "msPerJob": {}}
    for jobs in jobs_per_run:
        batch = rng.random((3 * jobs, 3, 224, 224), dtype=np.float32)
        per_run = median_ms(lambda: models.predict_landmarks(batch), repeats, digits=6)
        out["msPerJob"][str(jobs)] = round(per_run / jobs, 2)
    base = out["msPerJob"]["1"]
    out["bestSpeedup"] = round(base / min(out["msPerJob"].values()), 2)
    return out


def _throughput_worker(side: int, count: int, barrier, results) -> None:
    """One process of the in-process throughput run: load, warm up, wait for the others, make ``count``."""
    import trimesh  # noqa: F401  (as the worker processes do: imported once, before the first job)

    from pipeline.stages import warm_up

    cv2.setNumThreads(1)

    models = FaceModels.load(threads=1)
    warm_up()
    views = avatar_views(side)
    run_pipeline(views, models)
    barrier.wait()
    start = time.perf_counter()
    for _ in range(count):
        run_pipeline(views, models)
    results.put((start, time.perf_counter()))


def run_pipeline_throughput(processes: int = 2, side: int = 1024, per_process: int = 40) -> dict:
    """Avatars/s with ``processes`` processes each running the whole pipeline back to back, the
    ceiling the service's throughput is compared with (same processes, same inputs, no service)."""
    import multiprocessing

    # The same one-thread-per-process limits the worker processes run with (worker/__init__.py).
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    # spawn: the processes must not inherit this process's ONNX sessions across a fork.
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_throughput_worker, args=(side, per_process, barrier, results))
             for _ in range(processes)]
    for proc in procs:
        proc.start()
    spans = [results.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join()
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    total = processes * per_process
    return {"photos": f"3x{side}", "processes": processes, "avatars": total,
            "avatarsPerSecond": round(total / elapsed, 2)}
