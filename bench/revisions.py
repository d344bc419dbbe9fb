"""The in-process avatar of this checkout against another checkout's, on the same photos, in one run.

    python -m bench.revisions --baseline DIR [--rounds 5] [--sizes 1024 4096]

``DIR`` holds another revision of the project (``git worktree add DIR main``, or
``git archive main | tar -x -C DIR``). The photos (``bench.photos.avatar_views``) are written once;
then a child process per revision and round, alternating, imports *its* revision's pipeline and
models, makes a few warm-up avatars and times ``run_pipeline`` on them (ONNX Runtime and OpenCV on
one thread, the three photos decoded on three threads, as ``bench.pipeline_bench`` runs). The
machine's speed drifts within minutes, so the report gives each revision's median over the rounds
and the per-round differences, and compares only within this one run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

# Run in the child with its revision first on sys.path: prints {side: {"wall": [...], "stages": {...}}}.
CHILD = r"""
import json, os, statistics, sys, time
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"
root, photo_dir, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, root)
import cv2
cv2.setNumThreads(1)
import trimesh  # noqa: F401  (imported once per process, as the workers do)
from pipeline.models import FaceModels
from pipeline.stages import run_pipeline
models = FaceModels.load(threads=1)
out = {}
for name in sorted(os.listdir(photo_dir)):
    folder = os.path.join(photo_dir, name)
    views = {v: open(os.path.join(folder, v + ".jpg"), "rb").read() for v in ("front", "left", "right")}
    for _ in range(2):
        result = run_pipeline(views, models)
    wall, cpu, stages = [], [], {}
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = run_pipeline(views, models)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        for stage, ms in result.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    out[name] = {"avatar_ms": statistics.median(wall), "avatar_cpu_ms": statistics.median(cpu),
                 "avatar_ms_min": min(wall),
                 "stages_ms": {k: statistics.median(v) for k, v in stages.items()},
                 "texture": result.texture.shape[0], "views": len(views) - len(result.warnings),
                 "warnings": result.warnings}
print(json.dumps(out))
"""


def _child(root: Path, photo_dir: str, repeats: int) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, str(root), photo_dir, str(repeats)], cwd=root,
                         capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        raise RuntimeError(f"{root}: {run.stderr.strip()[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def compare_revisions(baseline: Path, sizes: tuple[int, ...] = (1024, 4096), rounds: int = 5,
                      repeats: int = 9) -> dict:
    """Alternating rounds of this checkout and ``baseline`` on the same ``avatar_views`` photos."""
    from bench.photos import avatar_views

    with tempfile.TemporaryDirectory() as photo_dir:
        for side in sizes:
            folder = Path(photo_dir) / f"3x{side}"
            folder.mkdir()
            for view, data in avatar_views(side).items():
                (folder / f"{view}.jpg").write_bytes(data)
        runs: dict[str, list[dict]] = {"baseline": [], "this": []}
        for _ in range(rounds):
            runs["baseline"].append(_child(baseline, photo_dir, repeats))
            runs["this"].append(_child(HERE, photo_dir, repeats))
    report: dict = {"baseline": str(baseline), "rounds": rounds, "repeats_per_round": repeats,
                    "threads": 1, "decodeThreads": 3}
    for name in runs["this"][0]:
        entry = {}
        for who in ("baseline", "this"):
            per_round = [r[name] for r in runs[who]]
            entry[who] = {
                "avatar_ms_median": round(statistics.median(r["avatar_ms"] for r in per_round), 2),
                # Every thread's CPU time (the decoder threads' too): less sensitive than the wall
                # time to what else the machine runs.
                "avatar_cpu_ms_median": round(statistics.median(r["avatar_cpu_ms"] for r in per_round), 2),
                # The fastest avatar of all rounds: what the machine does when nothing else runs.
                "avatar_ms_min": round(min(r["avatar_ms_min"] for r in per_round), 2),
                "stages_ms_median": {k: round(statistics.median(r["stages_ms"][k] for r in per_round), 2)
                                     for k in per_round[0]["stages_ms"]},
                "texture": per_round[0]["texture"], "warnings": per_round[0]["warnings"],
            }
        deltas = [t[name]["avatar_ms"] - b[name]["avatar_ms"] for b, t in zip(runs["baseline"], runs["this"])]
        entry["added_ms_per_round"] = [round(d, 2) for d in deltas]
        entry["added_ms_median"] = round(statistics.median(deltas), 2)
        cpu_deltas = [t[name]["avatar_cpu_ms"] - b[name]["avatar_cpu_ms"] for b, t in zip(runs["baseline"], runs["this"])]
        entry["added_cpu_ms_median"] = round(statistics.median(cpu_deltas), 2)
        report[name] = entry
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.revisions")
    parser.add_argument("--baseline", required=True, type=Path, help="another checkout of the project")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    args = parser.parse_args(argv)
    json.dump(compare_revisions(args.baseline.resolve(), tuple(args.sizes), args.rounds, args.repeats),
              sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
