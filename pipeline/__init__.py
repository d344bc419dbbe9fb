"""Photos to avatar, as plain functions over bytes and numpy arrays.

No Flask, Celery or pymongo here. The three stages the worker chains (``pipeline.stages``) are
also callable alone:

    prepared  = prepare_views({"front": b, "left": b, "right": b}, models)   # decode, detect, crop
    landmarks = infer_landmarks(prepared, models)                            # one batched ONNX run
    result    = build_avatar(prepared, landmarks)                            # fuse, texture, features, GLB

``run_pipeline`` does all three in one process (the CLI and the benchmark use it).

Modules, in the order a job meets them: ``decode`` (header check, reduced decode), ``detect``
(BlazeFace), ``align`` (eye-level crops), ``models`` (the ONNX sessions), ``mesh`` (poses and
multi-view fusion), ``texture`` (the UV atlas), ``features`` (the contract's facial features),
``morphs`` (ARKit blend shapes), ``glb`` (the writer); ``preview`` renders avatars to PNG.
"""
from pipeline.errors import PipelineError

VIEWS = ("front", "left", "right")

__all__ = ["PipelineError", "VIEWS"]
