"""`avatar generate` as a user runs it: a real subprocess, real photos, files on disk."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from bench.photos import avatar_views, encode_jpeg


def _generate(tmp_path, views: dict[str, bytes], *options: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "avatar_cli", "generate", "-o", str(tmp_path / "out.glb"), *options]
    for view, data in views.items():
        (tmp_path / f"{view}.jpg").write_bytes(data)
        args += [f"--{view}", str(tmp_path / f"{view}.jpg")]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_generate_writes_a_valid_glb_and_prints_the_contract_body(tmp_path, validate_gltf):
    run = _generate(tmp_path, avatar_views(1024))
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    glb = (tmp_path / "out.glb").read_bytes()
    assert body["glbInfo"] == {"size": len(glb), "filename": "out.glb"}
    from pipeline.head import head_template

    head = head_template()
    assert body["meshInfo"]["type"] == "head"
    assert (body["meshInfo"]["vertexCount"], body["meshInfo"]["faceCount"]) == (len(head.positions), len(head.triangles))
    assert set(body["facialFeatures"]) >= {"expressions", "faceShape", "skinTone", "accessories"}
    assert body["timings"]["landmarks"] > 0 and body["timings"]["fitting"] > 0
    assert validate_gltf(glb)["issues"]["numErrors"] == 0


def test_generate_bakes_the_texture_size_asked_for(tmp_path):
    from tests.conftest import glb_texture_side

    run = _generate(tmp_path, avatar_views(512), "--texture-size", "2048")
    assert run.returncode == 0, run.stderr
    assert glb_texture_side((tmp_path / "out.glb").read_bytes()) == 2048
    refused = _generate(tmp_path, avatar_views(512), "--texture-size", "4096")
    assert refused.returncode == 2 and "--texture-size: invalid choice: '4096'" in refused.stderr


def test_generate_mesh_face_writes_the_468_vertex_mask(tmp_path, validate_gltf):
    from pipeline.glb import read_glb

    run = _generate(tmp_path, avatar_views(1024), "--mesh", "face")
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert (body["meshInfo"]["type"], body["meshInfo"]["vertexCount"], body["meshInfo"]["faceCount"]) == ("face", 468, 898)
    glb = (tmp_path / "out.glb").read_bytes()
    gltf, binary = read_glb(glb)
    position = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    assert position["count"] == 468
    assert validate_gltf(glb)["issues"]["numErrors"] == 0


def test_generate_refuses_an_unknown_mesh_kind(tmp_path):
    run = _generate(tmp_path, avatar_views(512), "--mesh", "body")
    assert run.returncode == 2 and "invalid choice: 'body'" in run.stderr and not (tmp_path / "out.glb").exists()


def test_generate_without_a_face_names_the_view_and_fails(tmp_path):
    from skimage import data

    views = avatar_views(512)
    views["front"] = encode_jpeg(data.chelsea())
    run = _generate(tmp_path, views)
    assert run.returncode == 1
    assert run.stderr.strip() == "avatar generate: front: no face found"
    assert not (tmp_path / "out.glb").exists()


def test_generate_with_a_missing_file_says_which(tmp_path):
    run = subprocess.run([sys.executable, "-m", "avatar_cli", "generate", "--front", str(tmp_path / "nope.jpg"),
                          "--left", "x", "--right", "y", "-o", str(tmp_path / "o.glb")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "nope.jpg" in run.stderr and "Traceback" not in run.stderr


def test_generate_warns_when_several_faces_are_in_a_photo(tmp_path):
    from bench.photos import astronaut_rgb, grace_hopper_rgb
    import cv2

    canvas = np.full((700, 1000, 3), 90, np.uint8)
    canvas[50:650, 0:600] = cv2.resize(astronaut_rgb(), (600, 600))
    canvas[200:500, 700:956] = cv2.resize(grace_hopper_rgb(), (256, 300))
    views = avatar_views(512)
    views["front"] = encode_jpeg(canvas)
    run = _generate(tmp_path, views)
    assert run.returncode == 0
    assert "warning: front: 2 faces found; the largest was used" in run.stderr
