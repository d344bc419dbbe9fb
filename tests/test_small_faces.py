"""Small faces among others: found by the full-range search, cropped from enough pixels.

The full table (5-40% of the height, two photo sizes, two faces, three places) is ``python -m
bench.recall``; here a few cells of it, which the short-range detector alone fails.
"""
from __future__ import annotations

import pytest

from bench.photos import composite_photo, encode_jpeg, group_photo_jpeg
from bench.recall import DETECT_SIDE, found
from pipeline.decode import decode_image
from pipeline.detect import detect_faces
from pipeline.models import FaceModels
from pipeline.stages import infer_landmarks, prepare_views


@pytest.fixture(scope="module")
def models() -> FaceModels:
    return FaceModels.load()


@pytest.mark.parametrize("size", [(1600, 1200), (4000, 3000)])
@pytest.mark.parametrize("share, subject", [(0.06, "astronaut"), (0.10, "grace_hopper")])
def test_a_small_face_in_a_crowd_is_found(models, size, share, subject):
    image, box = composite_photo(size, share, (0.3, 0.65), subject)
    decoded = decode_image(encode_jpeg(image), max_side=DETECT_SIDE)
    scale = decoded.shape[1] / size[0]
    assert not found(detect_faces(models, [decoded], small_faces=False)[0], box, scale)
    faces = detect_faces(models, [decoded])[0]
    assert found(faces, box, scale)
    assert len(faces) >= 6  # the crowd around it is found too


def test_the_group_photo_uses_its_largest_face_cropped_from_the_full_photo(models):
    group = group_photo_jpeg()  # 1280x886, six faces of 11-15% of its height
    prepared = prepare_views({"front": group, "left": group, "right": group}, models)
    assert prepared.warnings[-1] == "front: 6 faces found; the largest was used"
    # The largest face's crop square is ~200 photo pixels: fewer than the crop's 224, so it is cut
    # from the whole photo (a front whose texture size is automatic is decoded whole at once).
    assert prepared.photo_scales.tolist() == [1.0]
    assert infer_landmarks(prepared, models).face_scores[0] > 0.9
