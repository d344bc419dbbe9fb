"""Face-detection recall on crowd photos: how small a face the pipeline still finds.

A known face (the astronaut's, Grace Hopper's) is pasted among the group photo's faces, scaled so
that all faces are ``share`` of the frame's height (``bench.photos.composite_photo``), at three
places, in 1600x1200 and 4000x3000 JPEGs. A face counts as found when a detection is centred
within a third of its height of it and is half to 1.6 times as tall. "before" is the short-range
detector over the 512-px decode alone (what the pipeline ran before the full-range search);
"after" is ``pipeline.detect.detect_faces`` as ``prepare_views`` runs it on a front photo (whose
texture size is automatic): over the whole photo's decode shrunk by a whole factor to about 512 px.

``python -m bench.recall [--out DIR]`` prints the table as JSON and saves a crop of a found 6% face.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from bench.photos import composite_photo, encode_jpeg
from pipeline.decode import decode_image, read_header
from pipeline.stages import Photo

SIZES = ((1600, 1200), (4000, 3000))
SHARES = (0.05, 0.06, 0.08, 0.10, 0.15, 0.20, 0.30, 0.40)
PLACES = ((0.72, 0.4), (0.3, 0.65), (0.5, 0.5))
SUBJECTS = ("astronaut", "grace_hopper")
DETECT_SIDE = 512


def found(faces, box: np.ndarray, scale: float) -> bool:
    """Some detection (in a decode ``scale`` times the photo) is the face boxed by ``box``."""
    centre, height = (box[:2] + box[2:]) / 2 * scale, (box[3] - box[1]) * scale
    return any(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre) < height / 3 and 0.5 * height < f.height < 1.6 * height
               for f in faces)


def recall_table(models, sizes=SIZES, shares=SHARES, out_dir: str | Path | None = None) -> dict:
    """{"before"|"after": {"WxH": {share: "found/tried"}}}, plus the detections per photo after."""
    from pipeline.detect import detect_faces

    table: dict = {"before": {}, "after": {}, "tried_per_cell": len(PLACES) * len(SUBJECTS)}
    for width, height in sizes:
        key = f"{width}x{height}"
        for when in ("before", "after"):
            table[when][key] = {}
        for share in shares:
            hits = {"before": 0, "after": 0}
            for subject in SUBJECTS:
                for place in PLACES:
                    image, box = composite_photo((width, height), share, place, subject)
                    data = encode_jpeg(image)
                    decoded = decode_image(data, max_side=DETECT_SIDE)
                    scale = decoded.shape[1] / width
                    hits["before"] += found(detect_faces(models, [decoded], small_faces=False)[0], box, scale)
                    whole, small, factor = Photo("front", data, read_header(data)).decode_for_detection(whole=True)
                    scale = whole.shape[1] / width / factor
                    faces = detect_faces(models, [small])[0]
                    hits["after"] += found(faces, box, scale)
                    if out_dir is not None and share == 0.06 and (width, place, subject) == (4000, PLACES[0], SUBJECTS[0]):
                        table["crop_of_a_6_percent_face"] = str(_save_crop(image, box, faces, scale, out_dir))
            for when in ("before", "after"):
                table[when][key][f"{share:.2f}"] = f"{hits[when]}/{table['tried_per_cell']}"
    return table


def _save_crop(image: np.ndarray, box: np.ndarray, faces, scale: float, out_dir: str | Path) -> Path:
    """The photo around the pasted face with every detection drawn (green) and the truth (red)."""
    height = box[3] - box[1]
    x0, y0 = np.maximum(((box[:2] + box[2:]) / 2 - 4 * height).astype(int), 0)
    x1, y1 = (box[:2] + box[2:]) / 2 + 4 * height
    crop = np.ascontiguousarray(image[y0:int(y1), x0:int(x1)])
    cv2.rectangle(crop, tuple(int(v) for v in box[:2] - (x0, y0)), tuple(int(v) for v in box[2:] - (x0, y0)), (255, 0, 0), 3)
    for face in faces:
        a, b = face.box[:2] / scale - (x0, y0), face.box[2:] / scale - (x0, y0)
        cv2.rectangle(crop, tuple(int(v) for v in a), tuple(int(v) for v in b), (0, 255, 0), 2)
    path = Path(out_dir) / "recall_6_percent_face.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    from pipeline.models import FaceModels

    parser = argparse.ArgumentParser(prog="python -m bench.recall")
    parser.add_argument("--out", default="bench/out", help="where the crop PNG goes")
    args = parser.parse_args(argv)
    json.dump(recall_table(FaceModels.load(threads=1), out_dir=args.out), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
