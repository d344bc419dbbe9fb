"""Photos to avatar, as plain functions over bytes and numpy arrays.

No Flask, Celery or pymongo here. The three stages the worker chains are also callable alone:

    prepared  = prepare_views({"front": b, "left": b, "right": b}, models)   # decode, detect, crop
    landmarks = infer_landmarks(prepared, models)                            # one batched ONNX run
    result    = build_avatar(prepared, landmarks)                            # fuse, texture, features, GLB

``run_pipeline`` does all three in one process (the CLI and the benchmark use it).
"""
from pipeline.errors import PipelineError

VIEWS = ("front", "left", "right")

__all__ = ["PipelineError", "VIEWS"]
