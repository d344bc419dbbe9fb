"""Shared fixtures: real face photos from installed packages, and the Khronos glTF validator."""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GLTF_VALIDATE_SCRIPT = REPO_ROOT / "tests" / "gltf_validate.mjs"


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A frontal face photo, RGB uint8 512x512 (scikit-image)."""
    from skimage import data
    return data.astronaut()


@pytest.fixture(scope="session")
def camera_grey() -> np.ndarray:
    """A grey near-profile photo, uint8 512x512 (scikit-image)."""
    from skimage import data
    return data.camera()


@pytest.fixture(scope="session")
def grace_hopper_jpeg() -> bytes:
    """A frontal face photo as the JPEG file matplotlib ships (512x600)."""
    from matplotlib import cbook
    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return handle.read()


@pytest.fixture(scope="session")
def validate_gltf() -> Callable[[bytes], dict[str, Any]]:
    """A function that runs the Khronos glTF validator (node) on GLB bytes and returns its report.

    Fails (not skips) when node or the npm package is missing: the GLB contract is not
    checked otherwise.
    """
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the glTF validator needs it. Install Node.js, then "
                    "run `make install`.")
    if not (REPO_ROOT / "node_modules" / "gltf-validator").is_dir():
        pytest.fail("the npm package gltf-validator is missing: run `make install`.")

    def validate(glb: bytes) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.glb"
            path.write_bytes(glb)
            result = subprocess.run([node, str(GLTF_VALIDATE_SCRIPT), str(path)],
                                    cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            pytest.fail(f"glTF validator did not run: {result.stderr.strip()}")
        return json.loads(result.stdout)

    return validate


def glb_texture_side(glb: bytes) -> int:
    """The side in pixels of the (first) texture embedded in a GLB."""
    import cv2

    from pipeline.glb import read_glb

    gltf, binary = read_glb(glb)
    view = gltf["bufferViews"][gltf["images"][0]["bufferView"]]
    start = view.get("byteOffset", 0)
    image = cv2.imdecode(np.frombuffer(binary[start:start + view["byteLength"]], np.uint8), cv2.IMREAD_COLOR)
    return image.shape[0]
