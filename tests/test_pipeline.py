"""The offline pipeline on real photos: landmarks on the face, a valid GLB, clear errors."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest

from bench.photos import astronaut_rgb, avatar_views, encode_jpeg, encode_with_pil, grace_hopper_rgb
from pipeline import PipelineError
from pipeline.detect import detect_faces
from pipeline.features import (EYE_LEFT_INNER, EYE_LEFT_OUTER, EYE_RIGHT_INNER, EYE_RIGHT_OUTER,
                               MOUTH_LEFT, MOUTH_RIGHT)
from pipeline.glb import read_glb_json
from pipeline.models import FaceModels
from pipeline.stages import build_avatar, infer_landmarks, prepare_views, run_pipeline

NOSE_TIP = 1


@pytest.fixture(scope="module")
def models() -> FaceModels:
    return FaceModels.load()


@pytest.fixture(scope="module")
def result(models):
    """The default avatar: the whole head."""
    return run_pipeline(avatar_views(1024), models)


@pytest.fixture(scope="module")
def face_result(models):
    """The face-mask avatar (``mesh="face"``)."""
    return run_pipeline(avatar_views(1024), models, mesh="face")


def head_size() -> tuple[int, int]:
    from pipeline.head import head_template

    head = head_template()
    return len(head.positions), len(head.triangles)


@pytest.mark.parametrize("photo", [astronaut_rgb, grace_hopper_rgb])
def test_landmarks_land_on_the_face_in_anatomical_order(models, photo):
    image = photo()
    views = {v: encode_jpeg(image) for v in ("front", "left", "right")}
    prepared = prepare_views(views, models)
    points = infer_landmarks(prepared, models).points[0]
    face = detect_faces(models, [prepared.images[0]])[0][0]
    x0, y0, x1, y1 = face.box
    key = points[[EYE_RIGHT_OUTER, EYE_RIGHT_INNER, EYE_LEFT_INNER, EYE_LEFT_OUTER,
                  NOSE_TIP, MOUTH_RIGHT, MOUTH_LEFT]]
    assert ((key[:, 0] > x0) & (key[:, 0] < x1) & (key[:, 1] > y0) & (key[:, 1] < y1)).all(), key
    # The subject's right eye is on the image's left; corners run outer, inner, inner, outer.
    assert np.all(np.diff(key[:4, 0]) > 0)
    eye_y = key[:4, 1].mean()
    assert eye_y < key[4, 1] < key[5:, 1].min()  # eyes above the nose tip, above the mouth
    assert key[5, 0] < key[4, 0] < key[6, 0]  # nose tip between the mouth corners


@pytest.mark.parametrize("kind", ["head", "face"])
def test_glb_passes_the_khronos_validator_and_reloads(kind, result, face_result, validate_gltf):
    avatar = result if kind == "head" else face_result
    report = validate_gltf(avatar.glb)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]
    assert report["issues"]["numWarnings"] == 0, report["issues"]["messages"]
    import trimesh

    scene = trimesh.load(io.BytesIO(avatar.glb), file_type="glb")
    mesh = next(iter(scene.geometry.values()))
    expected = head_size() if kind == "head" else (468, 898)
    assert (len(mesh.vertices), len(mesh.faces)) == expected
    assert mesh.visual.material.baseColorTexture is not None
    gltf = read_glb_json(avatar.glb)
    assert [img["mimeType"] for img in gltf["images"]] == ["image/jpeg"]
    assert gltf["scenes"][0]["extras"]["mesh"] == kind


def test_face_mesh_is_metric_upright_and_faces_plus_z(face_result):
    import trimesh

    mesh = next(iter(trimesh.load(io.BytesIO(face_result.glb), file_type="glb").geometry.values()))
    v = mesh.vertices
    width = v[:, 0].max() - v[:, 0].min()
    assert 0.10 < width < 0.20  # an adult face is 12-16 cm wide
    assert v[NOSE_TIP, 2] > np.median(v[:, 2])  # the nose points toward +Z
    assert v[10, 1] > v[152, 1]  # forehead above chin: +Y is up


def test_head_is_metric_upright_faces_plus_z_and_wraps_the_face(result, face_result):
    from pipeline.head import head_template

    v = result.vertices.astype(np.float64)
    width, height, depth = np.ptp(v, axis=0)
    assert 0.13 < width < 0.20 and 0.20 < height < 0.33 and 0.17 < depth < 0.26  # ears to ears, crown to neck
    head = head_template()
    nose, top, chin = head.landmarks_of(result.posed().astype(np.float64))[[NOSE_TIP, 10, 152]]
    assert nose[2] > np.percentile(v[:, 2], 95)  # the nose points toward +Z
    assert top[1] > chin[1] and v[:, 1].max() > top[1] + 0.03  # +Y up, a skull above the forehead
    # The head's face is where the face mask is (both in the fused landmarks' frame).
    assert np.abs(head.landmarks_of(result.posed().astype(np.float64)) - face_result.vertices).max() < 0.012


def test_result_reports_contract_fields_and_stage_timings(result, face_result):
    body = result.to_response_dict("avatar.glb")
    vertices, faces = head_size()
    info = body["meshInfo"]
    assert (info["type"], info["vertexCount"], info["faceCount"], info["morphTargets"]) == ("head", vertices, faces, 52)
    assert info["textureSize"] == result.texture.shape[0] and info["units"] == "metres"
    assert face_result.mesh_info["vertexCount"] == 468 and face_result.mesh_info["faceCount"] == 898
    assert face_result.mesh_info["type"] == "face"
    assert body["glbInfo"]["size"] == len(result.glb) > 20_000
    features = body["facialFeatures"]
    assert set(features["expressions"]) == {"smile", "frown", "raisedEyebrows", "squint"}
    assert features["faceShape"] in {"oval", "round", "square", "heart", "oblong"}
    assert set(features["accessories"]) == {"glasses", "earrings", "hat"}
    for stage in ("decode", "detect", "crop", "landmarks", "mesh", "fitting", "texture", "features", "glb"):
        assert result.timings_ms[stage] >= 0
    assert "fitting" not in face_result.timings_ms
    assert body["inferenceTime"] == result.timings_ms["landmarks"] > 0


def test_astronaut_smiles_and_skin_tone_is_plausible(models):
    photo = encode_jpeg(astronaut_rgb(), 1024)  # her photo alone: the side slots repeat it and are dropped
    features = run_pipeline({"front": photo, "left": photo, "right": photo}, models).facial_features
    assert features["expressions"]["smile"] is True
    assert features["expressions"]["frown"] is False
    tone = features["skinTone"]
    assert tone["r"] > tone["g"] > tone["b"] and tone["confidence"] > 0.5


def test_stage_files_round_trip(models, tmp_path):
    prepared = prepare_views(avatar_views(512), models)
    prepared.save(tmp_path / "prepared.npz")
    landmarks = infer_landmarks(prepared, models)
    landmarks.save(tmp_path / "landmarks.npz")
    from pipeline.stages import PreparedViews, ViewLandmarks

    again = build_avatar(PreparedViews.load(tmp_path / "prepared.npz"), ViewLandmarks.load(tmp_path / "landmarks.npz"))
    direct = build_avatar(prepared, landmarks)
    assert again.mesh_info == direct.mesh_info and len(again.glb) == len(direct.glb)


def _with_view(view: str, data: bytes) -> dict[str, bytes]:
    views = avatar_views(512)
    views[view] = data
    return views


@pytest.mark.parametrize("name, image", [
    ("cat", lambda: __import__("skimage.data", fromlist=["chelsea"]).chelsea()),
    ("wall", lambda: np.full((600, 800, 3), (180, 170, 160), np.uint8)),
    ("coffee", lambda: __import__("skimage.data", fromlist=["coffee"]).coffee()),
])
def test_front_photo_without_a_face_fails_naming_the_view(models, name, image):
    with pytest.raises(PipelineError) as err:
        run_pipeline(_with_view("front", encode_jpeg(image())), models)
    assert err.value.code == "no_face"
    assert err.value.message == "front: no face found"


@pytest.mark.parametrize("view", ["left", "right"])
def test_side_photo_without_a_face_is_dropped_with_a_warning(models, view):
    from skimage import data

    result = run_pipeline(_with_view(view, encode_jpeg(data.chelsea())), models)
    # The detector takes the cat for a face in one photo; the landmark model's face score refuses it.
    assert result.warnings in ([f"{view}: no face found; the avatar was built without this view"],
                               [f"{view}: the face could not be fitted; the avatar was built without this view"])
    assert view not in read_glb_json(result.glb)["scenes"][0]["extras"]["views"]
    assert result.mesh_info["vertexCount"] == head_size()[0]


def test_on_decoded_is_called_once_when_the_photos_are_decoded_and_never_for_a_bad_one(models):
    calls = []
    prepare_views(_with_view("front", encode_jpeg(astronaut_rgb())), models, on_decoded=lambda: calls.append(1))
    assert calls == [1]
    with pytest.raises(PipelineError):
        prepare_views(_with_view("left", b"not a photo"), models, on_decoded=lambda: calls.append(2))
    assert calls == [1]


@pytest.mark.parametrize("data, code", [
    (b"this is a text file, not a photo", "unsupported_format"),
    (encode_jpeg(astronaut_rgb())[:4000], "invalid_image"),
    (encode_jpeg(cv2.resize(astronaut_rgb(), (200, 200))), "image_too_small"),
])
def test_bad_image_bytes_give_a_clear_error(models, data, code):
    with pytest.raises(PipelineError) as err:
        run_pipeline(_with_view("right", data), models)
    assert err.value.code == code and err.value.message.startswith("right: ")


def test_awkward_but_valid_photos_still_make_an_avatar(models):
    from PIL import Image

    from tests.test_decode import exif_with_orientation

    rgb = astronaut_rgb()
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cmyk = encode_with_pil(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=90)
    png16 = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)[1].tobytes()
    alpha = cv2.imencode(".png", np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                           np.full(rgb.shape[:2], 255, np.uint8)]))[1].tobytes()
    # Stored lying on its side with EXIF orientation 6 ("rotate 90° clockwise to view").
    sideways = np.ascontiguousarray(np.rot90(rgb, 1))
    rotated = encode_with_pil(Image.fromarray(sideways), "JPEG", exif=exif_with_orientation(6))

    def eyes_above_mouth(front: bytes) -> bool:
        views = {"front": front, "left": cmyk, "right": cmyk}
        points = infer_landmarks(prepare_views(views, models), models).points[0]
        return points[[EYE_RIGHT_OUTER, EYE_LEFT_OUTER], 1].max() < points[[MOUTH_RIGHT, MOUTH_LEFT], 1].min()

    assert not eyes_above_mouth(encode_jpeg(sideways))  # the same pixels with no orientation tag
    assert eyes_above_mouth(rotated)
    views = {"front": rotated, "left": encode_jpeg(grey[..., None].repeat(3, 2)), "right": cmyk}
    assert run_pipeline(views, models).mesh_info["vertexCount"] == head_size()[0]
    views = {"front": png16, "left": alpha,
             "right": cv2.imencode(".jpg", grey)[1].tobytes()}
    assert run_pipeline(views, models, mesh="face").mesh_info["vertexCount"] == 468


def test_several_faces_use_the_largest_with_a_warning(models):
    big = cv2.resize(astronaut_rgb(), (600, 600))
    small = cv2.resize(grace_hopper_rgb(), (256, 300))
    canvas = np.full((700, 1000, 3), 90, np.uint8)
    canvas[50:650, 0:600] = big
    canvas[200:500, 700:956] = small
    result = run_pipeline(_with_view("front", encode_jpeg(canvas)), models)
    assert result.warnings == ["front: 2 faces found; the largest was used"]


@pytest.mark.parametrize("photo, wears", [(grace_hopper_rgb, True), (astronaut_rgb, False)])
def test_glasses_and_hat_are_seen_on_grace_hopper_only(models, photo, wears):
    views = {v: encode_jpeg(photo()) for v in ("front", "left", "right")}
    accessories = run_pipeline(views, models).facial_features["accessories"]
    assert accessories["glasses"] is wears and accessories["hat"] is wears
    assert accessories["earrings"] is False


@pytest.mark.parametrize("face_px, size", [(150, 256), (400, 512), (600, 1024), (1200, 2048), (5000, 2048)])
def test_texture_has_as_many_texels_as_the_photo_has_face_pixels(face_px, size):
    from pipeline.texture import texture_size_for

    assert texture_size_for(np.array([[10.0, 20.0], [30.0, 20.0 + face_px]])) == size
    # A size asked for wins, whatever the photo has.
    assert texture_size_for(np.array([[10.0, 20.0], [30.0, 20.0 + face_px]]), 512) == 512


def _load_with_three_js(glb: bytes, tmp_path) -> dict:
    import json
    import subprocess

    from tests.conftest import REPO_ROOT

    path = tmp_path / "avatar.glb"
    path.write_bytes(glb)
    run = subprocess.run(["node", str(REPO_ROOT / "tests" / "threejs_load.mjs"), str(path)],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_three_js_loads_the_head_and_its_52_arkit_morph_targets(result, tmp_path):
    from models.head_build import ARKIT_NAMES

    loaded = _load_with_three_js(result.glb, tmp_path)
    assert (loaded["meshes"], loaded["vertices"], loaded["triangles"]) == (1, *head_size())
    assert loaded["hasUv"] and loaded["material"] == "MeshStandardMaterial"
    assert loaded["morphTargets"] == list(ARKIT_NAMES) and loaded["morphTargetCount"] == 52
    assert 0.01 < loaded["largestOffset"] < 0.06  # metres: jawOpen moves the chin a few cm


def test_three_js_loads_the_face_mask_and_its_arkit_morph_targets(face_result, tmp_path):
    loaded = _load_with_three_js(face_result.glb, tmp_path)
    assert (loaded["meshes"], loaded["vertices"], loaded["triangles"]) == (1, 468, 898)
    assert loaded["hasUv"] and loaded["material"] == "MeshStandardMaterial"
    assert {"jawOpen", "mouthSmileLeft", "mouthSmileRight", "eyeBlinkLeft", "eyeBlinkRight",
            "browInnerUp", "browDownLeft", "browDownRight"} <= set(loaded["morphTargets"])
    assert loaded["morphTargetCount"] == len(loaded["morphTargets"]) >= 8
    assert 0.005 < loaded["largestOffset"] < 0.05  # metres: visible, not absurd


def test_stage_file_refuses_what_it_did_not_write(tmp_path):
    from pipeline.stages import PreparedViews, pack_arrays, unpack_arrays

    arrays, meta = unpack_arrays(b"".join(pack_arrays({"a": np.arange(5, dtype=np.int16)}, {"k": 1})))
    assert arrays["a"].tolist() == [0, 1, 2, 3, 4] and meta == {"k": 1}
    (tmp_path / "x").write_bytes(b"PK\x03\x04 a zip, or anything else")
    with pytest.raises(ValueError, match="not a stage file"):
        PreparedViews.load(tmp_path / "x")


def test_photos_up_to_1024_px_are_decoded_once_and_whole(models):
    prepared = prepare_views(avatar_views(1024), models)
    assert prepared.photo_scales.tolist() == [1.0, 1.0, 1.0]


@pytest.fixture(scope="module")
def close_up_4096() -> dict[str, bytes]:
    """A 4096² front photo whose face is ~2,100 px tall; the side views at 1024 px."""
    sides = avatar_views(1024)
    return {"front": encode_jpeg(astronaut_rgb()[30:230, 120:320], 4096), "left": sides["left"], "right": sides["right"]}


def test_a_close_up_4096_photo_gets_a_2048_texture_from_its_full_detail(models, close_up_4096):
    prepared = prepare_views(close_up_4096, models)
    # Half resolution would leave the face ~1,050 px, fewer than the 1,740 a 2048² texture holds.
    assert prepared.photo_scales[0] == 1.0
    result = build_avatar(prepared, infer_landmarks(prepared, models))
    assert result.texture.shape == (2048, 2048, 3)
    assert read_glb_json(result.glb)["images"][0]["mimeType"] == "image/jpeg"


def test_a_texture_size_asked_for_is_baked_and_decoded_for(models, close_up_4096):
    prepared = prepare_views(close_up_4096, models, texture_size=512)
    # A quarter of the photo still gives the face more pixels than a 512² texture holds.
    assert prepared.photo_scales[0] == 0.25 and prepared.texture_size == 512
    assert build_avatar(prepared, infer_landmarks(prepared, models)).texture.shape == (512, 512, 3)
    small = run_pipeline(avatar_views(512), models, texture_size="2048")
    assert small.texture.shape == (2048, 2048, 3)


@pytest.mark.parametrize("bad", ["768", "big", 4096, "0"])
def test_a_bad_texture_size_is_refused_with_the_choices(models, bad):
    with pytest.raises(PipelineError) as err:
        prepare_views(avatar_views(512), models, texture_size=bad)
    assert err.value.code == "invalid_option"
    assert "512, 1024, 2048 or auto" in err.value.message
