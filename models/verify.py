"""Shared helpers for checking the converted models (used by models/build.py and the tests).

The inputs are plain numpy so that they are reproducible bit for bit enough (float64
resampling) on any machine: the sample photos ship with scikit-image and matplotlib. The
original TFLite models (committed in models/source/) run with ai-edge-litert, imported only
when a TFLite runner is made: build and test code only, never the service at run time.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

SOURCE_DIR = Path(__file__).resolve().parent / "source"
LANDMARK_TFLITE_PATH = SOURCE_DIR / "face_landmark.tflite"  # [1,192,192,3] RGB [0,1]
DETECTOR_TFLITE_PATH = SOURCE_DIR / "face_detection_short_range.tflite"  # [1,128,128,3] RGB [-1,1]
FULL_RANGE_TFLITE_PATH = SOURCE_DIR / "face_detection_full_range_sparse.tflite"  # [1,192,192,3] RGB [-1,1]

LANDMARK_INPUT = 224  # contract crop size
LANDMARK_NATIVE = 192  # what face_landmark.tflite takes
DETECTOR_INPUT = 128
FULL_RANGE_INPUT = 192

# Square face crops (x0, y0, size) in the sample photos, found once with the ONNX detector
# (box centre, 1.5x the larger box side, as mediapipe does before the landmark model) and
# checked by eye. No rotation: both faces are close to upright.
FACE_CROPS: dict[str, tuple[int, int, int]] = {
    "astronaut": (156, 59, 139),
    "grace_hopper": (123, 97, 289),
}
# A crop with no face in it (coffee cup and saucer).
NON_FACE_CROP: tuple[str, tuple[int, int, int]] = ("coffee", (180, 40, 300))

# BlazeFace short-range anchors (mediapipe SsdAnchorsCalculator options for
# face_detection_short_range): 4 layers, strides [8, 16, 16, 16], anchor offset 0.5, fixed
# anchor size 1.0, 2 anchors per cell and layer; layers with the same stride share a grid,
# so 16x16 cells x 2 anchors (512) followed by 8x8 cells x 6 anchors (384).
ANCHOR_GRIDS: tuple[tuple[int, int], ...] = ((16, 2), (8, 6))
# BlazeFace full range (face_detection_full_range options): one layer of stride 4 on a 192 px input,
# no interpolated scale, so one anchor per cell of a 48x48 grid (2304).
FULL_RANGE_ANCHOR_GRIDS: tuple[tuple[int, int], ...] = ((48, 1),)


@lru_cache(maxsize=None)
def sample_image(name: str) -> np.ndarray:
    """An RGB uint8 photo that ships with scikit-image or matplotlib."""
    if name == "grace_hopper":
        import matplotlib.cbook
        import matplotlib.image

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            img = matplotlib.image.imread(f, format="jpg")
    else:
        import skimage.data

        img = getattr(skimage.data, name)()
    img = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
    img.setflags(write=False)
    return img


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of an HxWxC image, half-pixel centres, no antialiasing (as ONNX Resize linear)."""
    img = np.asarray(img, np.float64)
    in_h, in_w = img.shape[:2]

    def taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, wy = taps(out_h, in_h)
    x0, x1, wx = taps(out_w, in_w)
    rows = img[y0] * (1 - wy)[:, None, None] + img[y1] * wy[:, None, None]
    return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def square_crop(img: np.ndarray, x0: int, y0: int, size: int, out: int) -> np.ndarray:
    """Crop a square (zero padding outside the image) and resize it to out x out, as float [0, 1] HWC."""
    h, w = img.shape[:2]
    canvas = np.zeros((size, size, img.shape[2]), np.float64)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + size, w), min(y0 + size, h)
    canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return resize_bilinear(canvas / 255.0, out, out)


def letterbox(img: np.ndarray, out: int) -> tuple[np.ndarray, float, int, int]:
    """Pad to a centred square, resize to out x out; returns (float [0, 1] HWC, scale, pad_x, pad_y)."""
    h, w = img.shape[:2]
    side = max(h, w)
    pad_x, pad_y = (side - w) // 2, (side - h) // 2
    return square_crop(img, -pad_x, -pad_y, side, out), side / out, pad_x, pad_y


def to_nchw(batch_hwc: list[np.ndarray]) -> np.ndarray:
    return np.stack(batch_hwc).transpose(0, 3, 1, 2).astype(np.float32)


def landmark_samples() -> list[tuple[str, np.ndarray]]:
    """The reference 224-px crops (HWC float [0, 1]): the two faces, then one non-face."""
    crops = [(name, square_crop(sample_image(name), *box, LANDMARK_INPUT)) for name, box in FACE_CROPS.items()]
    name, box = NON_FACE_CROP
    crops.append((name, square_crop(sample_image(name), *box, LANDMARK_INPUT)))
    return crops


def detector_samples(size: int = DETECTOR_INPUT) -> list[tuple[str, np.ndarray]]:
    """The reference detector inputs: whole photos letterboxed to ``size`` px (HWC float [0, 1])."""
    return [(name, letterbox(sample_image(name), size)[0]) for name in ("astronaut", "grace_hopper", "coffee")]


def anchor_centres(grids: tuple[tuple[int, int], ...] = ANCHOR_GRIDS) -> np.ndarray:
    """Anchor centres (x, y) in [0, 1] in output order: [896, 2] for BlazeFace short range (the
    default), [2304, 2] for ``FULL_RANGE_ANCHOR_GRIDS``."""
    centres = []
    for grid, per_cell in grids:
        ys, xs = np.meshgrid((np.arange(grid) + 0.5) / grid, (np.arange(grid) + 0.5) / grid, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def best_face_box(regressors: np.ndarray, scores: np.ndarray, full_range: bool = False) -> tuple[float, np.ndarray]:
    """Highest-scoring detection of one image: (probability, [cx, cy, w, h] in input pixels)."""
    k = int(np.argmax(scores[:, 0]))
    grids, size = (FULL_RANGE_ANCHOR_GRIDS, FULL_RANGE_INPUT) if full_range else (ANCHOR_GRIDS, DETECTOR_INPUT)
    centre = anchor_centres(grids)[k] * size
    box = regressors[k, :4].astype(np.float64).copy()
    box[:2] += centre
    prob = 1.0 / (1.0 + np.exp(-float(np.clip(scores[k, 0], -100, 100))))
    return prob, box


# ---- the original TFLite models (ai-edge-litert) ------------------------------------------------


def tflite_runner(model: bytes | Path, threads: int = 1) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A function running one HWC float image through a TFLite model: {output name: array}."""
    from ai_edge_litert.interpreter import Interpreter

    src = {"model_path": str(model)} if isinstance(model, Path) else {"model_content": model}
    interp = Interpreter(**src, num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    outs = {d["name"]: d["index"] for d in interp.get_output_details()}

    def run(x_hwc: np.ndarray) -> dict[str, np.ndarray]:
        interp.set_tensor(inp, x_hwc[None].astype(np.float32))
        interp.invoke()
        return {name: interp.get_tensor(i)[0].copy() for name, i in outs.items()}

    return run


def tflite_landmarks(run, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """TFLite face_landmark on 224-px crops (HWC [0, 1]), in the ONNX contract's terms.

    The crops get the 224 -> 192 bilinear resize the ONNX graph does (here in float64).
    Returns landmarks [N, 468, 3] in 224-px units (float32) and face-presence logits [N] (float64).
    """
    scale = LANDMARK_INPUT / LANDMARK_NATIVE
    mesh, logits = [], []
    for crop in crops:
        out = run(resize_bilinear(crop, LANDMARK_NATIVE, LANDMARK_NATIVE))
        mesh.append(out["conv2d_21"].reshape(-1, 3) * scale)
        logits.append(float(out["conv2d_31"].ravel()[0]))
    return np.stack(mesh).astype(np.float32), np.array(logits, np.float64)


def tflite_detector(run, imgs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """TFLite BlazeFace on letterboxed images (HWC [0, 1]): regressors [N, A, 16], score logits
    [N, A, 1] (short range: 128 px, 896 anchors; full range: 192 px, 2304 anchors)."""
    outs = [run(img * 2.0 - 1.0) for img in imgs]  # the model takes [-1, 1]
    # The short-range file names its outputs; the full-range one calls them Identity, Identity_1.
    regressors = [o.get("regressors", o.get("Identity")) for o in outs]
    scores = [o.get("classificators", o.get("Identity_1")) for o in outs]
    return np.stack(regressors), np.stack(scores)
