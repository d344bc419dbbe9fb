"""The landmark micro-batcher (worker/batching.py) with the real model on real face crops."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from pipeline.models import FaceModels
from pipeline.stages import infer_landmarks, prepare_views
from worker.batching import BatchedModels, LandmarkBatcher


@pytest.fixture(scope="module")
def models() -> FaceModels:
    return FaceModels.load()


@pytest.fixture(scope="module")
def crop_batches(models: FaceModels, astronaut: np.ndarray, grace_hopper_jpeg: bytes) -> list[np.ndarray]:
    """Model inputs of two real subjects' three views, and a one-view batch."""
    import cv2

    astronaut_jpeg = cv2.imencode(".jpg", cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))[1].tobytes()
    batches = []
    for photo in (astronaut_jpeg, grace_hopper_jpeg):
        prepared = prepare_views({"front": photo, "left": photo, "right": photo}, models)
        batches.append(np.ascontiguousarray(prepared.crops.transpose(0, 3, 1, 2).astype(np.float32) / 255))
    batches.append(batches[1][:1].copy())
    return batches


def test_concurrent_callers_share_runs_and_get_their_own_rows(models: FaceModels,
                                                              crop_batches: list[np.ndarray]) -> None:
    expected = [models.predict_landmarks(batch) for batch in crop_batches]
    # A long window, so the callers below surely meet in one run.
    batcher = LandmarkBatcher(models.predict_landmarks, max_jobs=8, window_s=0.5)
    calls = [crop_batches[i % len(crop_batches)] for i in range(6)]
    results: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def call(i: int) -> None:
        start.wait()
        results[i] = batcher.predict_landmarks(calls[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for i, (points, scores) in enumerate(results):
        want_points, want_scores = expected[i % len(crop_batches)]
        assert points.shape == want_points.shape
        np.testing.assert_allclose(points, want_points, atol=1e-3)
        np.testing.assert_allclose(scores, want_scores, atol=1e-4)
    assert sum(batcher.batch_sizes) == len(calls)
    assert max(batcher.batch_sizes) > 1  # they were batched


def test_a_lone_caller_does_not_wait_for_the_window(models: FaceModels, crop_batches: list[np.ndarray]) -> None:
    import time

    batcher = LandmarkBatcher(models.predict_landmarks, max_jobs=8, window_s=2.0)
    batcher.predict_landmarks(crop_batches[0])  # starts the runner thread
    start = time.perf_counter()
    batcher.predict_landmarks(crop_batches[0])
    assert time.perf_counter() - start < 1.0
    assert batcher.batch_sizes == [1, 1]


def test_the_pipeline_step_runs_through_the_batcher(models: FaceModels, astronaut: np.ndarray) -> None:
    import cv2

    photo = cv2.imencode(".jpg", cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))[1].tobytes()
    prepared = prepare_views({"front": photo, "left": photo, "right": photo}, models)
    batcher = LandmarkBatcher(models.predict_landmarks, max_jobs=4, window_s=0.01)
    direct = infer_landmarks(prepared, models)
    batched = infer_landmarks(prepared, BatchedModels(models, batcher))
    np.testing.assert_allclose(batched.points, direct.points, atol=1e-3)
    assert batcher.batch_sizes == [1]


def test_an_error_reaches_every_caller_of_the_run() -> None:
    def broken(_batch: np.ndarray):
        raise RuntimeError("model exploded")

    batcher = LandmarkBatcher(broken, max_jobs=4, window_s=0.01)
    with pytest.raises(RuntimeError, match="exploded"):
        batcher.predict_landmarks(np.zeros((3, 3, 224, 224), np.float32))
