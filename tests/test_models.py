"""The committed face models: contracts, agreement with the original TFLite, topology.

The original TFLite models (models/source/, copied there by models/build.py from the mediapipe
wheel) run live with ai-edge-litert on the same inputs as the ONNX models: face crops from real
photos that ship with scikit-image / matplotlib, and a crop without a face. So these tests need
neither the mediapipe package nor the network, only the dev extra.
"""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

import onnx

import numpy as np
import onnxruntime as ort
import pytest

import models
from models import verify as V
from models.build import proto_fields, repeated
from models.tflite_to_onnx import same_pads

# Conversion agrees to ~2e-4 px; allow for float differences across CPUs / onnxruntime builds.
LANDMARK_TOL_PX = 1e-2
DETECTOR_TOL = 1e-2
FACE_SCORE_TOL = 1e-3


def _session(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def landmark_session() -> ort.InferenceSession:
    return _session(models.LANDMARK_MODEL_PATH)


@pytest.fixture(scope="module")
def detector_session() -> ort.InferenceSession:
    return _session(models.DETECTOR_MODEL_PATH)


@pytest.fixture(scope="module")
def landmark_samples() -> tuple[list[str], list[np.ndarray]]:
    names, crops = zip(*V.landmark_samples())
    return list(names), list(crops)


@pytest.fixture(scope="module")
def tflite_landmarks(landmark_samples) -> tuple[np.ndarray, np.ndarray]:
    """The original face_landmark.tflite, live: landmarks [3,468,3] (224-px units), logits [3]."""
    return V.tflite_landmarks(V.tflite_runner(V.LANDMARK_TFLITE_PATH), landmark_samples[1])


@pytest.fixture(scope="module")
def landmark_outputs(landmark_session, landmark_samples) -> tuple[list[str], np.ndarray, np.ndarray]:
    names, crops = landmark_samples
    mesh, score = landmark_session.run(None, {"input": V.to_nchw(crops)})
    return names, mesh, score


def _io(session: ort.InferenceSession) -> tuple[list, list]:
    return (
        [(i.name, i.shape, i.type) for i in session.get_inputs()],
        [(o.name, o.shape, o.type) for o in session.get_outputs()],
    )


def test_models_load_without_warnings(capfd) -> None:
    capfd.readouterr()
    for path in (models.LANDMARK_MODEL_PATH, models.DETECTOR_MODEL_PATH):
        opts = ort.SessionOptions()
        opts.log_severity_level = 1  # info and up, so that warnings would show
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    err = capfd.readouterr().err
    assert "[W:" not in err and "[E:" not in err, err


def test_contracts(landmark_session, detector_session) -> None:
    assert _io(landmark_session) == (
        [("input", ["N", 3, 224, 224], "tensor(float)")],
        [("landmarks", ["N", 468, 3], "tensor(float)"), ("face_score", ["N", 1], "tensor(float)")],
    )
    assert _io(detector_session) == (
        [("input", ["N", 3, 128, 128], "tensor(float)")],
        [("regressors", ["N", 896, 16], "tensor(float)"), ("scores", ["N", 896, 1], "tensor(float)")],
    )
    total = models.LANDMARK_MODEL_PATH.stat().st_size + models.DETECTOR_MODEL_PATH.stat().st_size
    assert 1e6 < total < 10e6


def test_landmarks_match_tflite(landmark_outputs, tflite_landmarks) -> None:
    names, mesh, score = landmark_outputs
    ref_mesh, ref_logit = tflite_landmarks
    assert names == [*V.FACE_CROPS, V.NON_FACE_CROP[0]] and mesh.shape == ref_mesh.shape
    diff = np.abs(mesh - ref_mesh).max()
    assert diff < LANDMARK_TOL_PX, f"landmarks differ from TFLite by {diff:.3g} px"
    ref_score = 1.0 / (1.0 + np.exp(-ref_logit))
    assert np.abs(score[:, 0] - ref_score).max() < FACE_SCORE_TOL, (score[:, 0], ref_score)
    # The comparison is not vacuous: the two faces give different meshes, well beyond the tolerance.
    assert np.abs(ref_mesh[0] - ref_mesh[1]).max() > 100 * LANDMARK_TOL_PX


def test_wrong_conversion_fails_the_tflite_check(landmark_samples, tflite_landmarks) -> None:
    # Negative control: the shipped landmark model with a plausible conversion slip (the
    # 224 -> 192 Resize sampling with align-corners instead of half-pixel centres) must fall
    # outside the tolerance the real model is held to.
    model = onnx.load(str(models.LANDMARK_MODEL_PATH))
    (resize,) = [n for n in model.graph.node if n.op_type == "Resize"]
    for attr in resize.attribute:
        if attr.name == "coordinate_transformation_mode":
            attr.s = b"align_corners"
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    mesh = session.run(None, {"input": V.to_nchw(landmark_samples[1][:2])})[0]
    assert np.abs(mesh - tflite_landmarks[0][:2]).max() > 10 * LANDMARK_TOL_PX


def test_face_score_separates_faces(landmark_session, landmark_outputs) -> None:
    names, mesh, score = landmark_outputs
    scores = dict(zip(names, score[:, 0]))
    for face in V.FACE_CROPS:
        assert scores[face] > 0.9, scores
        # Landmarks of a real face lie inside the crop.
        assert mesh[names.index(face), :, :2].min() > 0 and mesh[names.index(face), :, :2].max() < 224
    assert scores[V.NON_FACE_CROP[0]] < 0.5, scores
    gray = np.full((1, 3, 224, 224), 0.5, np.float32)
    assert landmark_session.run(None, {"input": gray})[1][0, 0] < 0.5


def test_landmark_batch_matches_single(landmark_session, landmark_outputs) -> None:
    names, mesh, _ = landmark_outputs
    crop = V.to_nchw([V.landmark_samples()[1][1]])
    single = landmark_session.run(None, {"input": crop})[0]
    np.testing.assert_allclose(single[0], mesh[1], atol=1e-4)


@pytest.mark.parametrize("full_range", [False, True], ids=["short_range", "full_range"])
def test_detector_matches_tflite_and_finds_faces(full_range: bool) -> None:
    onnx_path, tflite_path, size, threshold = (
        (models.FULL_RANGE_DETECTOR_MODEL_PATH, V.FULL_RANGE_TFLITE_PATH, V.FULL_RANGE_INPUT, 0.6) if full_range
        else (models.DETECTOR_MODEL_PATH, V.DETECTOR_TFLITE_PATH, V.DETECTOR_INPUT, 0.5))
    names, imgs = zip(*V.detector_samples(size))
    ref_reg, ref_cls = V.tflite_detector(V.tflite_runner(tflite_path), list(imgs))
    reg, cls = _session(onnx_path).run(None, {"input": V.to_nchw(list(imgs))})
    assert reg.shape == ref_reg.shape and cls.shape == ref_cls.shape
    reg_diff, cls_diff = np.abs(reg - ref_reg).max(), np.abs(cls - ref_cls).max()
    assert reg_diff < DETECTOR_TOL, f"regressors differ from TFLite by {reg_diff:.3g} ({size}-px units)"
    assert cls_diff < DETECTOR_TOL, f"score logits differ from TFLite by {cls_diff:.3g}"
    for i, name in enumerate(names):
        prob, box = V.best_face_box(reg[i], cls[i], full_range=full_range)
        if name not in V.FACE_CROPS:
            assert prob < threshold, (name, prob)
            continue
        assert prob > 0.8, (name, prob)
        # The decoded box centre (in photo pixels) lies in the middle of the known face crop.
        _, scale, pad_x, pad_y = V.letterbox(V.sample_image(name), size)
        cx, cy = box[0] * scale - pad_x, box[1] * scale - pad_y
        x0, y0, side = V.FACE_CROPS[name]
        assert abs(cx - (x0 + side / 2)) < side / 6 and abs(cy - (y0 + side / 2)) < side / 6, (name, cx, cy)


def test_sparse_weights_expand_like_tflite_would() -> None:
    """A CSR tensor written by hand: the dense rows come back with their values in place."""
    import flatbuffers
    import tflite

    from models.tflite_to_onnx import densify

    dense = np.array([[0, 2, 0, 3], [0, 0, 0, 0], [5, 0, 0, 7]], np.float32)
    b = flatbuffers.Builder(256)
    def vector(start, values, add):  # noqa: E306
        start(b, len(values))
        for v in reversed(values):
            add(v)
        return b.EndVector()
    segments = vector(tflite.Int32VectorStartValuesVector, [0, 2, 2, 4], b.PrependInt32)
    tflite.Int32VectorStart(b)
    tflite.Int32VectorAddValues(b, segments)
    segments = tflite.Int32VectorEnd(b)
    indices = vector(tflite.Int32VectorStartValuesVector, [1, 3, 0, 3], b.PrependInt32)
    tflite.Int32VectorStart(b)
    tflite.Int32VectorAddValues(b, indices)
    indices = tflite.Int32VectorEnd(b)
    tflite.DimensionMetadataStart(b)
    tflite.DimensionMetadataAddFormat(b, 0)
    tflite.DimensionMetadataAddDenseSize(b, 3)
    rows = tflite.DimensionMetadataEnd(b)
    tflite.DimensionMetadataStart(b)
    tflite.DimensionMetadataAddFormat(b, 1)
    tflite.DimensionMetadataAddArraySegmentsType(b, 1)
    tflite.DimensionMetadataAddArraySegments(b, segments)
    tflite.DimensionMetadataAddArrayIndicesType(b, 1)
    tflite.DimensionMetadataAddArrayIndices(b, indices)
    columns = tflite.DimensionMetadataEnd(b)
    metadata = vector(tflite.SparsityParametersStartDimMetadataVector, [rows, columns], b.PrependUOffsetTRelative)
    order = vector(tflite.SparsityParametersStartTraversalOrderVector, [0, 1], b.PrependInt32)
    tflite.SparsityParametersStart(b)
    tflite.SparsityParametersAddTraversalOrder(b, order)
    tflite.SparsityParametersAddDimMetadata(b, metadata)
    b.Finish(tflite.SparsityParametersEnd(b))
    sparsity = tflite.SparsityParameters.GetRootAs(b.Output(), 0)
    values = np.array([2, 3, 5, 7], np.float32)
    np.testing.assert_array_equal(densify(values, sparsity, [3, 4]), dense)


def test_anchor_layout() -> None:
    anchors = V.anchor_centres()
    assert anchors.shape == (896, 2)
    np.testing.assert_allclose(anchors[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(anchors[1], anchors[0])  # 2 anchors per cell on the 16x16 grid
    np.testing.assert_allclose(anchors[512], [0.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_topology() -> None:
    topo = models.load_topology()
    assert topo is models.load_topology()  # cached
    assert topo.vertices.shape == (468, 3) and topo.vertices.dtype == np.float32
    assert topo.uvs.shape == (468, 2) and topo.uvs.dtype == np.float32
    assert topo.triangles.shape == (898, 3) and topo.triangles.dtype == np.int32
    assert topo.triangles.min() == 0 and topo.triangles.max() == 467
    assert len(np.unique(topo.triangles)) == 468  # every vertex is used
    assert topo.uvs.min() >= 0 and topo.uvs.max() <= 1
    assert topo.uvs[10, 1] < topo.uvs[152, 1]  # V points down: forehead above chin
    assert topo.procrustes_ids.shape == topo.procrustes_weights.shape and topo.procrustes_ids.max() < 468
    assert np.all(topo.procrustes_weights > 0)
    with pytest.raises(ValueError):
        topo.vertices[0, 0] = 1.0  # shared arrays are read-only
    # Triangles face the viewer (+z) in the canonical y-up frame: counter-clockwise from the front.
    v = topo.vertices
    normals = np.cross(v[topo.triangles[:, 1]] - v[topo.triangles[:, 0]], v[topo.triangles[:, 2]] - v[topo.triangles[:, 0]])
    assert (normals[:, 2] > 0).mean() > 0.95


def test_topology_vertex_order_matches_landmarks(landmark_outputs) -> None:
    # Landmarks of a frontal face resemble the canonical mesh seen from the front
    # (image y down = canonical -y), which only holds if the vertex orders agree.
    _, mesh, _ = landmark_outputs
    canon = models.load_topology().vertices
    assert np.corrcoef(mesh[0, :, 0], canon[:, 0])[0, 1] > 0.95
    assert np.corrcoef(mesh[0, :, 1], -canon[:, 1])[0, 1] > 0.95


def test_model_card_hashes_match_files() -> None:
    card = (models.MODELS_DIR / "MODEL_CARD.md").read_text()
    for path in (models.LANDMARK_MODEL_PATH, models.DETECTOR_MODEL_PATH, models.FULL_RANGE_DETECTOR_MODEL_PATH,
                 models.TOPOLOGY_PATH):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert re.search(rf"`{re.escape(path.name)}` \|[^\n]*`{digest}`", card), f"stale hash for {path.name}"
    # The committed originals are the files the card says were extracted from the wheel.
    readme = (V.SOURCE_DIR / "README.md").read_text()
    for path in (V.LANDMARK_TFLITE_PATH, V.DETECTOR_TFLITE_PATH, V.FULL_RANGE_TFLITE_PATH, V.SOURCE_DIR / "LICENSE"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert re.search(rf"/{re.escape(path.name)}`[^\n]*`{digest}`", card), f"{path.name} differs from the card"
        assert f"`{path.name}` |" in readme and f"`{digest}`" in readme, f"{path.name} differs from source/README.md"


def test_runtime_never_imports_build_tools() -> None:
    # The service runs on onnxruntime + numpy only; TFLite, mediapipe and the converter's
    # dependencies are for models/build.py and the tests.
    banned = ("ai_edge_litert", "tflite", "tflite_runtime", "mediapipe", "tensorflow", "onnx",
              "models.build", "models.verify", "models.tflite_to_onnx")
    repo = Path(models.MODELS_DIR).parent
    files = [p for d in ("pipeline", "worker", "api") for p in sorted((repo / d).rglob("*.py"))]
    files.append(models.MODELS_DIR / "__init__.py")
    assert len(files) > 10
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                assert not any(name == b or name.startswith(b + ".") for b in banned), f"{path}: imports {name}"


def test_same_padding_matches_tensorflow() -> None:
    assert same_pads(128, 5, 2) == (1, 2)  # odd total: the extra pixel goes after
    assert same_pads(64, 3, 2) == (0, 1)
    assert same_pads(96, 3, 1) == (1, 1)
    assert same_pads(3, 3, 1) == (1, 1)


def test_protobuf_reader_packed_and_unpacked() -> None:
    # field 3 as unpacked fixed32 floats, field 4 as a packed varint list [1, 300]
    msg = bytes([0x1D]) + np.float32(1.5).tobytes() + bytes([0x1D]) + np.float32(-2.0).tobytes()
    msg += bytes([0x22, 3, 0x01, 0xAC, 0x02])
    fields = proto_fields(msg)
    assert repeated(fields[3], "float") == [1.5, -2.0]
    assert repeated(fields[4], "varint") == [1, 300]
    packed_floats = bytes([0x1A, 8]) + np.array([0.25, 4.0], "<f4").tobytes()
    assert repeated(proto_fields(packed_floats)[3], "float") == [0.25, 4.0]


# This onnxruntime has no CUDA: asking for it warns, as onnxruntime-gpu without its libraries would.
_NO_CUDA_HERE = pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")


def _fake_gpu_build(monkeypatch, preload) -> list[str]:
    """This onnxruntime as if it were onnxruntime-gpu: CUDA listed, ``preload`` as preload_dlls."""
    from pipeline import models as face_models

    calls: list[str] = []
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "preload_dlls", lambda: (calls.append("preload"), preload())[1], raising=False)
    face_models.load_cuda_libraries.cache_clear()
    return calls


@_NO_CUDA_HERE
def test_cuda_libraries_are_loaded_once_before_the_first_cuda_session(monkeypatch) -> None:
    from pipeline.models import FaceModels, load_cuda_libraries

    calls = _fake_gpu_build(monkeypatch, lambda: None)
    try:
        FaceModels.load(providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        FaceModels.load(providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        assert calls == ["preload"]
    finally:
        load_cuda_libraries.cache_clear()


@_NO_CUDA_HERE
def test_cpu_sessions_do_not_load_cuda_and_a_failed_preload_is_only_logged(monkeypatch, caplog) -> None:
    from pipeline.models import FaceModels, load_cuda_libraries

    def broken() -> None:
        raise OSError("libcublas.so.13: cannot open shared object file")

    calls = _fake_gpu_build(monkeypatch, broken)
    try:
        FaceModels.load(providers=["CPUExecutionProvider"])
        assert calls == []
        models_ = FaceModels.load(providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        assert calls == ["preload"]
        assert "libcublas.so.13" in caplog.text
        assert models_.providers[0] == "CPUExecutionProvider"  # this build has no CUDA: it fell back
    finally:
        load_cuda_libraries.cache_clear()


@_NO_CUDA_HERE
def test_a_gpu_build_running_on_the_cpu_is_reported_as_a_fallback(monkeypatch) -> None:
    from pipeline.models import FaceModels, load_cuda_libraries

    on_this_build = FaceModels.load(providers=["CPUExecutionProvider"])
    assert on_this_build.describe()["cudaFallback"] is False  # plain onnxruntime: CPU is all it has
    _fake_gpu_build(monkeypatch, lambda: None)
    try:
        fell_back = FaceModels.load(providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        assert fell_back.providers[0] == "CPUExecutionProvider"
        assert fell_back.describe()["cudaFallback"] is True
    finally:
        load_cuda_libraries.cache_clear()
