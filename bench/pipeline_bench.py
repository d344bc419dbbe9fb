"""In-process pipeline timings: our path against a naive one, on the same inputs, in one run."""
from __future__ import annotations

import io
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
from pipeline.texture import bake_texture, texture_size_for


def naive_pipeline(images: Mapping[str, bytes], models: FaceModels) -> bytes:
    """What a straightforward implementation does: decode every photo at full resolution, work
    on the full-size images, run the model once per view, and let trimesh write the GLB (which
    re-encodes the texture as PNG). Same detector, crops and mesh as ours."""
    import trimesh  # imported by the caller already: only the export is timed here

    from models import load_topology

    decoded = [cv2.cvtColor(cv2.imdecode(np.frombuffer(images[v], np.uint8), cv2.IMREAD_COLOR),
                            cv2.COLOR_BGR2RGB) for v in VIEWS]
    found = detect_faces(models, decoded)
    points = []
    for image, faces in zip(decoded, found):
        m = crop_transform(faces[0])
        crop = extract_crop(image, m).transpose(2, 0, 1)[None].astype(np.float32) / 255
        pts, _ = models.predict_landmarks(np.ascontiguousarray(crop))
        points.append(crop_points_to_image(pts[0], m))
    topo = load_topology()
    pose = estimate_pose(points[0], topo)
    vertices = to_canonical_frame(points[0], pose) / 100.0
    texture = bake_texture(decoded[0], points[0][:, :2], texture_size_for(points[0][:, :2]))
    from PIL import Image

    material = trimesh.visual.texture.SimpleMaterial(image=Image.fromarray(texture))
    visual = trimesh.visual.TextureVisuals(uv=topo.uvs * [1, -1] + [0, 1], material=material)
    mesh = trimesh.Trimesh(vertices, topo.triangles, visual=visual, process=False)
    return mesh.export(file_type="glb")


def _median_ms(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up: first-call allocations, lazy caches
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), 2), samples


def run_pipeline_bench(sizes: tuple[int, ...] = (1024, 4096), repeats: int = 15) -> dict:
    """Per-stage and whole-avatar medians for our path, and the naive path's median, per size."""
    import trimesh  # noqa: F401  (import cost is per process, not per avatar)

    models = FaceModels.load(threads=1)
    out: dict = {"threads": 1, "providers": models.providers, "inputs": "3 JPEG q90 from real photos"}
    for side in sizes:
        views = avatar_views(side)
        n = repeats if side <= 1024 else max(5, repeats // 2)
        stage_samples: dict[str, list[float]] = {}

        def ours() -> None:
            result = run_pipeline(views, models)
            for stage, ms in result.timings_ms.items():
                stage_samples.setdefault(stage, []).append(ms)

        whole, _ = _median_ms(ours, n)
        naive, _ = _median_ms(lambda: naive_pipeline(views, models), max(3, n // 3))
        out[f"{side}x{side}"] = {
            "avatar_ms_median": whole,
            "stages_ms_median": {k: round(statistics.median(v), 2) for k, v in stage_samples.items()},
            "naive_avatar_ms_median": naive,
            "speedup_vs_naive": round(naive / whole, 2),
            "repeats": n,
            "input_bytes": sum(len(b) for b in views.values()),
        }
    return out
