"""``avatar batch`` against the real local stack, run as its own process (``python -m client.batch_cli``).

POSTs are counted through the service itself: every batch here runs with a token of its own, so
``GET /api/avatar`` lists exactly the jobs that batch created.
"""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from service_stack import LocalStack

from bench.photos import astronaut_rgb, avatar_views, encode_jpeg, grace_hopper_rgb
from jobs.localstack import REPO_ROOT

GLB_MAGIC = b"glTF"


def make_token(stack: LocalStack) -> str:
    from flask_jwt_extended import create_access_token

    from api import create_app

    with create_app(stack.settings).app_context():
        return create_access_token(identity=f"batch-{uuid.uuid4()}")


def jobs_created(stack: LocalStack, token: str) -> int:
    response = requests.get(stack.url("/api/avatar?limit=100"), headers={"Authorization": f"Bearer {token}"},
                            timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["data"]["total"]


def run_batch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client.batch_cli", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def encode(rgb: np.ndarray, suffix: str, side: int) -> bytes:
    rgb = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def subjects_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven subject folders: five good ones (odd names, cases and formats), a cat, one missing a view."""
    from skimage import data

    root = tmp_path_factory.mktemp("batch") / "photos"
    face, mirrored, grace = astronaut_rgb(), np.ascontiguousarray(astronaut_rgb()[:, ::-1]), grace_hopper_rgb()

    def subject(name: str, files: dict[str, bytes]) -> None:
        (root / name).mkdir(parents=True)
        for filename, content in files.items():
            (root / name / filename).write_bytes(content)

    for name, side in (("alice", 480), ("Bob Smith", 512)):
        views = avatar_views(side)
        subject(name, {f"{view}.jpg": views[view] for view in views})
    subject("zoë", {"Front.JPEG": encode_jpeg(face, 544), "LEFT.jpg": encode_jpeg(mirrored, 544),
                    "right.Jpg": encode_jpeg(grace, 544), "notes.txt": b"not a photo"})
    subject("png-person", {"front.png": encode(face, ".png", 400), "left.png": encode(mirrored, ".png", 400),
                           "right.png": encode(grace, ".png", 400)})
    subject("webp.person", {"front.webp": encode(face, ".webp", 448), "left.webp": encode(mirrored, ".webp", 448),
                            "right.webp": encode(grace, ".webp", 448)})
    views = avatar_views(512)
    subject("chelsea-the-cat", {"front.jpg": encode_jpeg(data.chelsea()), "left.jpg": views["left"],
                                "right.jpg": views["right"]})
    subject("no-right-photo", {"front.jpg": views["front"], "left.jpg": views["left"]})
    (root / ".hidden").mkdir()  # skipped
    return root


GOOD = {"alice", "Bob Smith", "zoë", "png-person", "webp.person"}


def test_batch_makes_every_avatar_and_a_rerun_submits_nothing(stack: LocalStack, subjects_dir: Path,
                                                               validate_gltf) -> None:
    token = make_token(stack)
    out = subjects_dir.parent / "photos-avatars"
    args = [str(subjects_dir), "--server", stack.base_url, "--token", token, "--concurrency", "3"]

    first = run_batch(*args)
    assert first.returncode == 1, first.stderr  # two subjects failed
    assert jobs_created(stack, token) == 6  # the subject missing a view was never sent

    summary = {line["subject"]: line for line in read_jsonl(out / "batch-summary.jsonl")}
    assert set(summary) == GOOD | {"chelsea-the-cat", "no-right-photo"}
    for name in GOOD:
        line = summary[name]
        assert line["status"] == "completed" and line["run"] == "this" and line["submissions"] == 1, line
        glb = Path(line["glb"])
        assert glb == out / f"{name}.glb" and glb.read_bytes()[:4] == GLB_MAGIC
        assert line["glbBytes"] == glb.stat().st_size
        assert {"submitMs", "waitMs", "downloadMs", "totalMs"} <= set(line["timings"])
    report = validate_gltf((out / "zoë.glb").read_bytes())
    assert report["issues"]["numErrors"] == 0

    cat = summary["chelsea-the-cat"]
    assert (cat["status"], cat["errorCode"], cat["errorMessage"], cat["permanent"]) == \
        ("failed", "no_face", "front: no face found", True)
    assert cat["avatarId"] and not (out / "chelsea-the-cat.glb").exists()
    missing = summary["no-right-photo"]
    assert missing["status"] == "failed" and missing["errorCode"] == "invalid_subject"
    assert "missing right photo" in missing["errorMessage"] and missing["submissions"] == 0
    assert "front: no face found" in first.stderr and "missing right photo" in first.stderr

    # Rerun: every finished subject is skipped, nothing is posted.
    glb_times = {name: (out / f"{name}.glb").stat().st_mtime_ns for name in GOOD}
    second = run_batch(*args)
    assert second.returncode == 1, second.stderr
    assert jobs_created(stack, token) == 6
    assert "0 submitted" in second.stderr
    again = {line["subject"]: line for line in read_jsonl(out / "batch-summary.jsonl")}
    assert {name for name, line in again.items() if line["run"] == "earlier"} == GOOD | {"chelsea-the-cat"}
    assert again["chelsea-the-cat"]["errorMessage"] == "front: no face found"
    assert {name: (out / f"{name}.glb").stat().st_mtime_ns for name in GOOD} == glb_times

    # A deleted GLB is downloaded again from the same avatar, not generated again.
    (out / "alice.glb").unlink()
    third = run_batch(*args)
    assert third.returncode == 1, third.stderr
    assert jobs_created(stack, token) == 6
    assert (out / "alice.glb").read_bytes()[:4] == GLB_MAGIC
    alice = next(line for line in read_jsonl(out / "batch-summary.jsonl") if line["subject"] == "alice")
    assert alice["avatarId"] == summary["alice"]["avatarId"] and alice["submissions"] == 0


def test_an_interrupted_batch_resumes_without_submitting_anything_twice(stack: LocalStack,
                                                                         tmp_path: Path) -> None:
    """Manifest input; SIGINT once two subjects are done; the rerun finishes the rest."""
    token = make_token(stack)
    photos = tmp_path / "shoot"
    photos.mkdir()
    rows = []
    for i in range(8):
        views = avatar_views(700 + 8 * i)  # distinct photos per subject
        for view, content in views.items():
            (photos / f"p{i}-{view}.jpg").write_bytes(content)
        rows.append({"subject": f"person {i}", **{view: f"shoot/p{i}-{view}.jpg" for view in views}})
    manifest = tmp_path / "people.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["subject", "front", "left", "right"])
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "people-avatars"
    state = out / ".avatar-batch-state.jsonl"
    args = ["--manifest", str(manifest), "--server", stack.base_url, "--token", token,
            "--concurrency", "1", "--summary", str(tmp_path / "summary.csv")]

    process = subprocess.Popen([sys.executable, "-m", "client.batch_cli", *args], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        events = read_jsonl(state) if state.exists() else []
        if sum(1 for e in events if e["event"] == "completed") >= 2:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130, stderr
    assert "resume with:" in stderr and "--manifest" in stderr and token not in stderr

    events = read_jsonl(state)
    finished = {e["subject"] for e in events if e["event"] == "completed"}
    assert 2 <= len(finished) < 8
    posted_before = jobs_created(stack, token)
    # A key is recorded before its POST, so the POST may or may not have been made when Ctrl-C came.
    assert len(finished) <= posted_before <= len({e["subject"] for e in events if e["event"] == "submitting"})
    with open(tmp_path / "summary.csv", newline="", encoding="utf-8") as handle:
        statuses = {row["subject"]: row["status"] for row in csv.DictReader(handle)}
    assert {s for s, status in statuses.items() if status == "completed"} == finished
    assert "interrupted" in statuses.values()
    assert "failed" not in statuses.values()  # a subject cut short by Ctrl-C is resumed, not failed

    rerun = run_batch(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert jobs_created(stack, token) == 8  # each subject posted exactly once over both runs
    assert sorted(p.name for p in out.glob("*.glb")) == sorted(f"person {i}.glb" for i in range(8))
    with open(tmp_path / "summary.csv", newline="", encoding="utf-8") as handle:
        rows_after = list(csv.DictReader(handle))
    assert all(row["status"] == "completed" for row in rows_after)
    assert {row["subject"] for row in rows_after if row["run"] == "earlier"} == finished
    assert not any(row["submissions"] != "0" for row in rows_after if row["subject"] in finished)


def test_a_refused_photo_is_named_by_its_view_and_file(stack: LocalStack, tmp_path: Path) -> None:
    views = avatar_views(480)
    person = tmp_path / "photos" / "dana"
    person.mkdir(parents=True)
    (person / "front.jpg").write_bytes(views["front"])
    (person / "left.jpg").write_bytes(encode_jpeg(np.full((100, 300, 3), 128, np.uint8)))
    (person / "right.jpg").write_bytes(views["right"])

    run = run_batch(str(tmp_path / "photos"), "--server", stack.base_url, "--token", make_token(stack))
    assert run.returncode == 1, run.stderr
    (line,) = read_jsonl(tmp_path / "photos-avatars" / "batch-summary.jsonl")
    assert line["errorCode"] == "invalid_photos" and line["permanent"] is True
    assert line["errorMessage"] == (f"Image validation failed: left photo {person / 'left.jpg'}: "
                                    "Image too small. Minimum size is 224x224 pixels.")
    assert f"left photo {person / 'left.jpg'}" in run.stderr
