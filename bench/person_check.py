"""How well landmark shape tells one person's side photo from another person's.

``pipeline.view_checks`` drops a side photo whose face shape is too far from the front's
(``person_distance_cm``). This measures that distance, and one alternative, on:

- **one person's views**: each synthetic subject of ``bench.synthetic.SUBJECTS`` (a known head
  rendered with a real face's texture) from the front and turned 30-45° each way, and the
  astronaut's photo with her own rebuilt head turned 30° (``bench.photos.avatar_views``);
- **other people**: the faces of the group photo (real people, four of them turned 14-43°) as side
  views against the astronaut's, Grace Hopper's and the two frontal group faces' photos, and
  those frontal faces against the astronaut's turned head.

The alternative, ``vertical_profile_cm``, compares only heights: a turn about the vertical axis
leaves every landmark's height in the picture unchanged, so it needs no depth, which is what the
landmark model guesses worst in a side view.

No package ships real photos of one person from the front and the side, so "one person" is
rendered and "other people" are real photos: a measure that tells renders from photos would also
look good here. A third set takes that confound away: **other subjects**, each synthetic subject's
front render against another subject's side renders (all renders, the same skin texture, shapes
that differ by a few millimetres). Measured: both measures rank them barely better than chance
(person_distance_cm 0.65, vertical_profile_cm 0.66), so neither is preferred on this evidence.

``python -m bench.person_check`` prints the report as JSON.
"""
from __future__ import annotations

import json
import sys

import numpy as np

from bench.photos import astronaut_rgb, avatar_views, encode_jpeg, grace_hopper_rgb, group_photo_rgb
from pipeline.mesh import fit_view, surface_normals, visibility
from pipeline.view_checks import SEEN_SQUARELY, person_distance_cm

SIDE_YAWS_DEG = (30.0, 35.0, 40.0, 45.0)


def vertical_profile_cm(front_points: np.ndarray, side_points: np.ndarray) -> float:
    """RMS difference (canonical cm) between the heights of the landmarks the side photo sees
    squarely, each view posed frontally, after a 1-D scale and offset fit of one onto the other."""
    front, side = fit_view("front", front_points), fit_view("side", side_points)
    seen = visibility([side], surface_normals())[0]
    weights = np.where(seen > SEEN_SQUARELY, seen, 0.0) + 1e-6
    y_front, y_side = front.canonical_cm[:, 1], side.canonical_cm[:, 1]
    root = np.sqrt(weights)
    design = np.column_stack([y_side, np.ones_like(y_side)]) * root[:, None]
    scale, offset = np.linalg.lstsq(design, y_front * root, rcond=None)[0]
    miss = y_front - (scale * y_side + offset)
    return float(np.sqrt((weights * miss ** 2).sum() / weights.sum()))


MEASURES = {"person_distance_cm": person_distance_cm, "vertical_profile_cm": vertical_profile_cm}


def _landmarks(models, photos: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each photo's landmarks (its own face region's pixels), every photo fitted as a front."""
    from pipeline.stages import infer_landmarks, prepare_views

    out = {}
    for name, rgb in photos.items():
        data = encode_jpeg(rgb)
        found = infer_landmarks(prepare_views({"front": data, "left": data, "right": data}, models), models)
        out[name] = found.by_view()["front"]
    return out


def _real_faces(models) -> dict[str, np.ndarray]:
    """The group photo's faces (each cut out generously), the astronaut and Grace Hopper."""
    from pipeline.detect import detect_faces

    group = group_photo_rgb()
    photos = {"astronaut": astronaut_rgb(), "grace_hopper": grace_hopper_rgb()}
    for i, face in enumerate(detect_faces(models, [group])[0]):
        x0, y0, x1, y1 = face.box
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 1.8 * max(x1 - x0, y1 - y0)
        photos[f"group{i}"] = np.ascontiguousarray(group[int(max(cy - half, 0)):int(cy + half),
                                                         int(max(cx - half, 0)):int(cx + half)])
    return _landmarks(models, photos)


def person_check_report(models) -> dict:
    """Both measures over the pairs of the module docstring: their spread for one person and for
    other people, and how often another person measures above every one-person pair."""
    from bench.synthetic import make_synthetic_subject, real_face_texture, subject_face_cm
    from pipeline.stages import infer_landmarks, prepare_views

    pairs: list[tuple[str, str, np.ndarray, np.ndarray]] = []  # (kind, label, front, side)
    texture = real_face_texture(models)
    subject_views: dict[tuple[str, float], dict[str, np.ndarray]] = {}  # (subject, yaw) -> its views' landmarks
    for name in ("base", "wide", "narrow", "deep-set eyes", "strong chin"):
        subject = make_synthetic_subject(texture, subject_face_cm(name))
        front = encode_jpeg(subject.render(0.0))
        for yaw in SIDE_YAWS_DEG:
            views = {"front": front, "left": encode_jpeg(subject.render(-yaw)), "right": encode_jpeg(subject.render(yaw))}
            points = infer_landmarks(prepare_views(views, models), models).by_view()
            pairs += [("one person", f"{name} {side} {yaw:.0f}°", points["front"], points[side]) for side in ("left", "right")]
            subject_views[name, yaw] = points
    fronts_by_subject = {name: subject_views[name, SIDE_YAWS_DEG[0]]["front"] for name, _ in subject_views}
    pairs += [("other subjects", f"{other} / {name} {side} {yaw:.0f}°", fronts_by_subject[other], points[side])
              for (name, yaw), points in subject_views.items() for other in fronts_by_subject if other != name
              for side in ("left", "right")]
    astronaut = infer_landmarks(prepare_views(avatar_views(512), models), models).by_view()
    pairs += [("one person", f"astronaut {side} 30°", astronaut["front"], astronaut[side]) for side in ("left", "right")]
    real = _real_faces(models)
    yaws = {name: fit_view(name, points).pose.yaw_pitch_roll_degrees()[0] for name, points in real.items()}
    turned = [n for n in real if n.startswith("group") and abs(yaws[n]) >= 12.0]
    fronts = [n for n in real if abs(yaws[n]) < 12.0]
    pairs += [("other people", f"{f} / {s}", real[f], real[s]) for f in fronts for s in turned]
    pairs += [("other people", f"{f} / astronaut {side}", real[f], astronaut[side])
              for f in fronts if f != "astronaut" for side in ("left", "right")]
    kinds = ("one person", "other people", "other subjects")
    report: dict = {"pairs": {kind: sum(p[0] == kind for p in pairs) for kind in kinds},
                    "turned_group_faces_yaw_deg": {n: round(yaws[n], 1) for n in turned}}
    for measure_name, measure in MEASURES.items():
        values = {kind: np.array([measure(f, s) for k, _, f, s in pairs if k == kind]) for kind in kinds}
        same = values["one person"]
        report[measure_name] = {
            **{kind: {"min": round(float(v.min()), 3), "median": round(float(np.median(v)), 3),
                      "max": round(float(v.max()), 3)} for kind, v in values.items()},
            # P(another person measures farther than one person's views): 1 separates, 0.5 is chance.
            **{f"ranking_auc_{kind.replace(' ', '_')}": round(float((values[kind][None, :] > same[:, None]).mean()), 3)
               for kind in kinds[1:]},
            "others_above_every_one_person_pair": round(float((values["other people"] > same.max()).mean()), 3),
        }
    return report


def main() -> int:
    from pipeline.models import FaceModels

    json.dump(person_check_report(FaceModels.load()), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
