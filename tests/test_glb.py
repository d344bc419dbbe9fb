"""pipeline.glb: write, run the Khronos validator, reload with trimesh, compare."""
from __future__ import annotations

import io
import json
import struct

import cv2
import numpy as np
import pytest

from pipeline.glb import GlbMesh, read_glb, read_glb_json, vertex_normals, write_glb


def uv_sphere(rows: int = 16, columns: int = 32, radius: float = 0.1):
    """A sphere with a UV seam: positions, counter-clockwise-from-outside triangles, uvs.

    Latitude ``theta`` runs from the top (+Y) down; longitude starts at +Z (the face).
    """
    theta, phi = np.meshgrid(np.linspace(0.0, np.pi, rows + 1),
                             np.linspace(0.0, 2.0 * np.pi, columns + 1), indexing="ij")
    # Pull the pole rings in a little so no triangle is degenerate (the validator notes those).
    theta = np.clip(theta, 1e-3, np.pi - 1e-3)
    positions = radius * np.stack([np.sin(theta) * np.sin(phi), np.cos(theta),
                                   np.sin(theta) * np.cos(phi)], axis=-1).reshape(-1, 3)
    uvs = np.stack([phi / (2.0 * np.pi), theta / np.pi], axis=-1).reshape(-1, 2)
    grid = np.arange((rows + 1) * (columns + 1)).reshape(rows + 1, columns + 1)
    top_left, bottom_left = grid[:-1, :-1], grid[1:, :-1]
    top_right, bottom_right = grid[:-1, 1:], grid[1:, 1:]
    triangles = np.concatenate([
        np.stack([top_left, bottom_left, bottom_right], axis=-1).reshape(-1, 3),
        np.stack([top_left, bottom_right, top_right], axis=-1).reshape(-1, 3)])
    return positions.astype(np.float32), triangles, uvs.astype(np.float32)


@pytest.fixture(scope="module")
def texture_jpeg(astronaut) -> bytes:
    texture = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    ok, data = cv2.imencode(".jpg", texture[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return data.tobytes()


@pytest.fixture(scope="module")
def sphere_mesh(texture_jpeg) -> GlbMesh:
    positions, triangles, uvs = uv_sphere()
    smile = np.zeros_like(positions)
    smile[positions[:, 1] < 0, 0] = 0.01
    return GlbMesh(positions=positions, triangles=triangles, uvs=uvs, texture_jpeg=texture_jpeg,
                   morph_targets={"smile": smile, "blink": -0.5 * smile},
                   name="test_head", extras={"avatarId": "abc123", "views": ["front"]})


@pytest.fixture(scope="module")
def sphere_glb(sphere_mesh) -> bytes:
    return write_glb(sphere_mesh)


def test_validator_finds_no_issues(sphere_glb, validate_gltf):
    report = validate_gltf(sphere_glb)
    issues = report["issues"]
    assert issues["numErrors"] == 0, issues["messages"]
    assert issues["numWarnings"] == 0, issues["messages"]
    assert issues["numInfos"] == 0, issues["messages"]
    info = report["info"]
    assert info["generator"] == "avatar-service"
    assert info["hasMorphTargets"] and info["hasTextures"]
    image = report["info"]["resources"][-1]
    assert image["mimeType"] == "image/jpeg" and image["image"]["width"] == 1024


def test_validator_catches_a_broken_file(sphere_mesh, validate_gltf):
    """The harness really checks: a POSITION max that lies about the data is an error."""
    document, binary = read_glb(write_glb(sphere_mesh))
    document["accessors"][0]["max"][0] = 123.0
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    broken = (struct.pack("<III", 0x46546C67, 2, 28 + len(text) + len(binary))
              + struct.pack("<II", len(text), 0x4E4F534A) + text
              + struct.pack("<II", len(binary), 0x004E4942) + binary)
    codes = {m["code"] for m in validate_gltf(broken)["issues"]["messages"]}
    assert "ACCESSOR_MAX_MISMATCH" in codes


def test_texture_is_embedded_unchanged(sphere_glb, texture_jpeg):
    document, binary = read_glb(sphere_glb)
    (image,) = document["images"]
    assert image["mimeType"] == "image/jpeg"
    view = document["bufferViews"][image["bufferView"]]
    assert binary[view["byteOffset"]:view["byteOffset"] + view["byteLength"]] == texture_jpeg
    pbr = document["materials"][0]["pbrMetallicRoughness"]
    assert pbr["baseColorTexture"]["index"] == 0
    assert pbr["metallicFactor"] == 0.0 and pbr["roughnessFactor"] == 0.8


def test_layout_is_aligned(sphere_glb):
    magic, version, length = struct.unpack_from("<III", sphere_glb)
    assert (magic, version, length) == (0x46546C67, 2, len(sphere_glb))
    json_length = struct.unpack_from("<I", sphere_glb, 12)[0]
    assert json_length % 4 == 0 and len(sphere_glb) % 4 == 0
    document = read_glb_json(sphere_glb)
    assert all(view["byteOffset"] % 4 == 0 for view in document["bufferViews"])


def test_trimesh_reloads_geometry_texture_and_metadata(sphere_glb, sphere_mesh):
    trimesh = pytest.importorskip("trimesh")
    scene = trimesh.load(io.BytesIO(sphere_glb), file_type="glb", process=False)
    (geometry,) = scene.geometry.values()
    assert len(geometry.vertices) == len(sphere_mesh.positions)
    assert len(geometry.faces) == len(sphere_mesh.triangles)
    np.testing.assert_allclose(geometry.vertices, sphere_mesh.positions, atol=1e-7)
    material = geometry.visual.material
    assert material.baseColorTexture is not None
    assert material.baseColorTexture.format == "JPEG"
    assert material.baseColorTexture.size == (1024, 1024)
    assert scene.metadata["avatarId"] == "abc123"


def test_morph_targets(sphere_glb, sphere_mesh):
    document = read_glb_json(sphere_glb)
    mesh = document["meshes"][0]
    assert mesh["extras"]["targetNames"] == ["smile", "blink"]
    assert mesh["weights"] == [0.0, 0.0]
    targets = mesh["primitives"][0]["targets"]
    assert len(targets) == 2
    for target, deltas in zip(targets, sphere_mesh.morph_targets.values()):
        accessor = document["accessors"][target["POSITION"]]
        assert accessor["count"] == len(sphere_mesh.positions)
        assert accessor["min"] == pytest.approx(deltas.min(axis=0).tolist())
        assert accessor["max"] == pytest.approx(deltas.max(axis=0).tolist())


def test_index_type_follows_vertex_count(validate_gltf):
    small = read_glb_json(write_glb(GlbMesh(*uv_sphere(8, 8))))
    assert small["accessors"][small["meshes"][0]["primitives"][0]["indices"]]["componentType"] \
        == 5123  # UNSIGNED_SHORT
    glb = write_glb(GlbMesh(*uv_sphere(200, 400)))  # 80601 vertices
    large = read_glb_json(glb)
    assert large["accessors"][large["meshes"][0]["primitives"][0]["indices"]]["componentType"] \
        == 5125  # UNSIGNED_INT
    assert validate_gltf(glb)["issues"]["numErrors"] == 0


def test_vertex_normals_point_outward():
    positions, triangles, _ = uv_sphere()
    normals = vertex_normals(positions, triangles)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    outward = positions / np.linalg.norm(positions, axis=1, keepdims=True)
    # Counter-clockwise winding seen from outside gives outward normals.
    assert (np.einsum("ij,ij->i", normals, outward) > 0.9).all()


def test_bad_input_is_a_value_error(texture_jpeg):
    positions, triangles, uvs = uv_sphere(4, 4)
    with pytest.raises(ValueError, match="not JPEG"):
        write_glb(GlbMesh(positions, triangles, uvs, texture_jpeg=b"\x89PNG\r\n\x1a\n"))
    with pytest.raises(ValueError, match="out of range"):
        write_glb(GlbMesh(positions, triangles + len(positions), uvs))
    broken = positions.copy()
    broken[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_glb(GlbMesh(broken, triangles, uvs))
    with pytest.raises(ValueError, match="morph target"):
        write_glb(GlbMesh(positions, triangles, uvs, morph_targets={"x": positions[:3]}))
    with pytest.raises(ValueError, match="GLB"):
        read_glb_json(texture_jpeg)
