"""`python -m bench` (or `make bench`): the in-process pipeline and the service, in one run, one JSON.

``comparison`` sets the service against the pipeline as it runs here and now, in alternating rounds
on one stack (``bench/interleaved.py``): POST → completed p50 against the in-process whole-avatar
median, and service avatars/s against in-process avatars/s with the same number of processes.
``goals`` checks the service's speed goals: the absolute ones on ``service``, the ratios on ``comparison``.
``reconstruction`` renders a known head from three sides and reports how far the three-view and the
front-only avatars are from it (millimetres), per face region for five face shapes at 30° and 45°
(``subjects``), and writes preview PNGs to ``bench/out/``. ``batch``
measures jobs/s with ``avatar batch`` as the client against one worker process, two in
one worker node, and two nodes of one, plus what batching the landmark model buys on this CPU
(``bench/batch_bench.py``). Options:
``recall`` is the face-detection recall on crowd photos of 1600x1200 and 4000x3000 with faces of
5-40% of the height, before and after the full-range search (``bench/recall.py``). Options:
`--only pipeline|service|reconstruction|batch|recall` (repeatable), `--quick` (smoke run), `--out DIR`.
"""
from __future__ import annotations

import os

# One thread per process for numpy's BLAS, as the workers run (worker/__init__.py); it must be
# set before numpy is first imported.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys
from typing import Any

from bench.batch_bench import run_batch_bench
from bench.interleaved import run_interleaved
from bench.pipeline_bench import run_pipeline_bench, run_pipeline_throughput
from bench.service import run_service_bench

WORKER_PROCESSES = 2
# Issue 3: POST → completed p50 per input size, avatars/s, and the most the service may cost over
# the in-process pipeline.
LATENCY_GOAL_MS = {"3x1024": 90, "3x4096": 180}
THROUGHPUT_GOAL = 15.0
MAX_RATIO = 1.5


def goals(service: dict[str, Any], compared: dict[str, Any]) -> dict[str, Any]:
    """The absolute targets on the service's own measurement, the ratios on the interleaved
    rounds' medians (``compared``)."""
    checks: dict[str, Any] = {}
    for size, goal in LATENCY_GOAL_MS.items():
        if size in service["postToCompleted"]:
            p50 = service["postToCompleted"][size]["p50_ms"]
            checks[f"p50_{size}_le_{goal}ms"] = p50 <= goal
            checks[f"p50_{size}_within_{MAX_RATIO}x"] = compared[f"latency_{size}"]["ratio"] <= MAX_RATIO
    rate = service["throughput"]["avatarsPerSecond"]
    checks[f"throughput_ge_{THROUGHPUT_GOAL:g}_per_s"] = rate >= THROUGHPUT_GOAL
    checks[f"throughput_within_{MAX_RATIO}x"] = compared["throughput"]["ratio"] <= MAX_RATIO
    checks["all_met"] = all(checks.values())
    return checks


def run_reconstruction_bench(out_dir: str) -> dict[str, Any]:
    """Shape error against a rendered head of known shape, three views vs the front alone (on the
    face mask), and previews of real-photo avatars to look at: the face mask, and whole heads as
    they open, at rest and with single expressions (``run_head_previews``)."""
    from bench.photos import avatar_views
    from bench.synthetic import fusion_table, real_face_texture, run_synthetic_check
    from pipeline.models import FaceModels
    from pipeline.preview import write_preview_png
    from pipeline.stages import run_pipeline

    models = FaceModels.load(threads=1)
    report = run_synthetic_check(models, out_dir)
    # Every synthetic face shape at 30° and 45°, per region (the Markdown table:
    # python -m bench.synthetic --subjects).
    report["subjects"] = fusion_table(models, real_face_texture(models))
    avatar = run_pipeline(avatar_views(1024), models, mesh="face")
    report["preview_files"].append(str(write_preview_png(avatar, f"{out_dir}/face_preview.png")))
    report["heads"] = run_head_previews(models, out_dir)
    report["preview_files"] += [f for head in report["heads"].values() for f in head.pop("files")]
    return report


def run_head_previews(models, out_dir: str) -> dict[str, Any]:
    """Whole-head avatars of the sample photos: preview PNGs, what each one holds, and the colour
    step where its fill meets the photographed face (``fill_boundary_step``) and across the hair
    cap's edge (``hairline_step``)."""
    from bench.head_report import bake_head, fill_boundary_step, hairline_step, morph_target_report
    from bench.photos import avatar_views, encode_jpeg, grace_hopper_rgb
    from pipeline.preview import head_preview_sheets, write_png
    from pipeline.stages import run_pipeline

    subjects = {"astronaut": avatar_views(1024),
                "grace_hopper": {v: encode_jpeg(grace_hopper_rgb()) for v in ("front", "left", "right")}}
    out: dict[str, Any] = {}
    for name, views in subjects.items():
        avatar = run_pipeline(views, models)
        files = [str(write_png(sheet, f"{out_dir}/head_{name}_{kind}.png"))
                 for kind, sheet in head_preview_sheets(avatar).items()]
        fitted, atlas = bake_head(models, views)
        out[name] = {"meshInfo": avatar.mesh_info, "glbBytes": len(avatar.glb), "files": files,
                     "fillBoundaryStep": fill_boundary_step(atlas.texture, atlas.coverage),
                     "hairlineStep": hairline_step(atlas.texture)}
        if name == "grace_hopper":  # the ARKit targets on a neutral subject's fitted head
            report = morph_target_report(fitted)
            out[name]["morphTargets"] = {k: {"maxMm": v["maxMm"], "region": v["region"], "side": v["side"]}
                                         for k, v in report.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", choices=["pipeline", "service", "reconstruction", "batch", "recall"], action="append")
    parser.add_argument("--out", default="bench/out", help="where preview PNGs go (default: bench/out)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, under a minute)")
    args = parser.parse_args(argv)
    wanted = set(args.only or ["pipeline", "service", "reconstruction", "batch", "recall"])
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                          "python": platform.python_version()},
                              "quick": args.quick}
    if "pipeline" in wanted:
        report["pipeline"] = run_pipeline_bench(repeats=5 if args.quick else 21)
        report["pipeline"]["throughput"] = run_pipeline_throughput(
            WORKER_PROCESSES, per_process=15 if args.quick else 60)
    if "reconstruction" in wanted:
        report["reconstruction"] = run_reconstruction_bench(args.out)
    if "recall" in wanted:
        from bench.recall import recall_table
        from pipeline.models import FaceModels

        report["recall"] = recall_table(FaceModels.load(threads=1), out_dir=args.out)
    if "service" in wanted:
        report["service"] = run_service_bench(
            workers=WORKER_PROCESSES,
            requests_per_size=8 if args.quick else 40,
            throughput_requests=30 if args.quick else 240,
            warmup=3 if args.quick else 6)
    if "batch" in wanted:
        report.update(run_batch_bench(subjects=12 if args.quick else 60, side=1024,
                                      warmup=2 if args.quick else 4))
    if {"pipeline", "service"} <= wanted:
        report["comparison"] = run_interleaved(
            rounds=1 if args.quick else 3, latency_n=5 if args.quick else 15,
            throughput_requests=20 if args.quick else 80, workers=WORKER_PROCESSES)
        report["goals"] = goals(report["service"], report["comparison"]["median"])
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
