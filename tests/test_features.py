"""Honest features: a confidence for each, uncertain near the line, independent of the photo's
scale, skin tone white-balanced, none from a black-and-white photo."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from bench.photos import astronaut_rgb, encode_jpeg, grace_hopper_rgb
from pipeline.features import GREYSCALE_REASON, yes_no
from pipeline.models import FaceModels
from pipeline.stages import run_pipeline


@pytest.fixture(scope="module")
def models() -> FaceModels:
    return FaceModels.load()


def _features(models, rgb: np.ndarray) -> dict:
    photo = encode_jpeg(rgb)
    return run_pipeline({"front": photo, "left": photo, "right": photo}, models).facial_features


@pytest.mark.parametrize("photo", [astronaut_rgb, grace_hopper_rgb])
def test_features_do_not_change_with_the_photos_scale(models, photo):
    image = photo()
    seen = []
    for scale in (0.75, 1.0, 2.0, 4.0, 6.8):  # 384 to ~4000 px on the longer side, aspect kept
        resized = cv2.resize(image, None, fx=scale, fy=scale,
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        features = _features(models, resized)
        seen.append((features["faceShape"], features["expressions"], features["accessories"]))
    assert all(s == seen[0] for s in seen), seen


def test_every_feature_has_a_confidence(models):
    features = _features(models, astronaut_rgb())
    assert set(features["confidence"]) == {"smile", "frown", "raisedEyebrows", "squint", "faceShape", "skinTone",
                                           "glasses", "earrings", "hat"}
    assert all(0.0 <= c <= 1.0 for c in features["confidence"].values())
    assert features["expressions"]["smile"] is True and features["confidence"]["smile"] > 0.8
    assert isinstance(features["uncertain"], list)


def test_a_score_near_the_line_is_uncertain_and_does_not_flip():
    present, confidence, uncertain = yes_no({"a": 0.49, "b": 0.51, "c": 0.65, "d": 0.2})
    assert present == {"a": False, "b": False, "c": True, "d": False}
    assert uncertain == ["a", "b"]
    assert confidence["a"] == confidence["b"] == 0.02 and confidence["c"] == 0.3 and confidence["d"] == 0.6


def test_a_black_and_white_photo_gives_no_skin_tone(models):
    grey = cv2.cvtColor(cv2.cvtColor(astronaut_rgb(), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    tone = _features(models, grey)["skinTone"]
    assert tone["confidence"] == 0.0 and tone["reason"] == GREYSCALE_REASON
    assert tone["r"] == tone["g"] == tone["b"]
    assert "reason" not in _features(models, astronaut_rgb())["skinTone"]


def test_skin_tone_is_white_balanced(models):
    # The same photo under a warmer light: the skin tone reported moves less than the light did.
    plain = _features(models, astronaut_rgb())["skinTone"]
    cast = np.clip(astronaut_rgb() * np.array([1.08, 1.0, 0.9]), 0, 255).astype(np.uint8)
    warm = _features(models, cast)["skinTone"]
    raw_shift = abs(plain["r"] * 1.08 - plain["r"]) + abs(plain["b"] * 0.9 - plain["b"])
    reported_shift = abs(warm["r"] - plain["r"]) + abs(warm["b"] - plain["b"])
    assert reported_shift < 0.6 * raw_shift, (plain, warm)
