"""Landmark-model micro-batching: several jobs' crops in one ONNX run.

On a GPU one run over 12 crops costs about what one run over 3 does, so a gpu worker that runs
inference tasks concurrently (``--pool threads``) can hand their crops to one ``LandmarkBatcher``: the
first caller's crops are run together with whatever other callers arrive within a few milliseconds
(at most ``max_jobs`` callers), and each caller gets its own rows back. Each task keeps its own
message, acknowledgement and state transition; only the model call is shared.

The batcher never waits when no other caller is inside it, so a lone job pays nothing. On CPU one
thread already runs the model at nearly the same cost per image batched or not (measured by
``python -m bench --only batch``), so ``INFERENCE_BATCH_MAX`` defaults to 1 (no batcher).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class _Request:
    crops: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    points: np.ndarray | None = None
    scores: np.ndarray | None = None
    error: BaseException | None = None


class LandmarkBatcher:
    """Collects concurrent ``predict_landmarks`` calls into shared model runs (one runner thread)."""

    def __init__(self, predict: Predict, max_jobs: int, window_s: float):
        self.predict = predict
        self.max_jobs = max(1, max_jobs)
        self.window_s = max(0.0, window_s)
        self.batch_sizes: list[int] = []  # callers per run, the last 1000 (tests, logs)
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._inside = 0  # callers waiting for a result
        self._lock = threading.Lock()
        self._runner: threading.Thread | None = None

    def predict_landmarks(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Same contract as ``FaceModels.predict_landmarks``: [N,3,224,224] → ([N,468,3], [N])."""
        if self.max_jobs == 1:
            return self.predict(crops)
        request = _Request(crops)
        with self._lock:
            self._inside += 1
            if self._runner is None:
                self._runner = threading.Thread(target=self._run_forever, name="landmark-batcher",
                                                daemon=True)
                self._runner.start()
        try:
            self._requests.put(request)
            request.done.wait()
        finally:
            with self._lock:
                self._inside -= 1
        if request.error is not None:
            raise request.error
        return request.points, request.scores

    def _run_forever(self) -> None:
        while True:
            batch = [self._requests.get()]
            deadline = time.monotonic() + self.window_s
            while len(batch) < self.max_jobs:
                with self._lock:
                    everyone_here = len(batch) >= self._inside
                if everyone_here and self._requests.empty():
                    break  # nobody else is on the way: do not wait for the window
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._requests.get(timeout=remaining))
                except queue.Empty:
                    break
            self._run(batch)

    def _run(self, batch: list[_Request]) -> None:
        try:
            crops = batch[0].crops if len(batch) == 1 else np.concatenate([r.crops for r in batch])
            points, scores = self.predict(np.ascontiguousarray(crops))
            start = 0
            for request in batch:
                end = start + len(request.crops)
                request.points, request.scores = points[start:end], scores[start:end]
                start = end
        except BaseException as exc:  # every caller in the batch gets the error
            for request in batch:
                request.error = exc
        finally:
            self.batch_sizes = (self.batch_sizes + [len(batch)])[-1000:]
            for request in batch:
                request.done.set()


class BatchedModels:
    """``FaceModels`` with ``predict_landmarks`` going through a batcher (what ``infer_landmarks`` calls)."""

    def __init__(self, models, batcher: LandmarkBatcher):
        self._models = models
        self._batcher = batcher

    def predict_landmarks(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._batcher.predict_landmarks(batch)

    def __getattr__(self, name: str):
        return getattr(self._models, name)
