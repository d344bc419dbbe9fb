"""Photos to avatar, as plain functions over bytes and numpy arrays.

No Flask, Celery or pymongo here. The three stages the worker chains (``pipeline.stages``) are
also callable alone:

    prepared  = prepare_views({"front": b, "left": b, "right": b}, models)   # decode, detect, crop
    landmarks = infer_landmarks(prepared, models)                            # one batched ONNX run
    result    = build_avatar(prepared, landmarks)                            # fuse, texture, features, GLB

``run_pipeline`` does all three in one process (the CLI and the benchmark use it).

Modules, in the order a job meets them: ``decode`` (header check, reduced decode), ``detect``
(BlazeFace), ``align`` (eye-level crops), ``models`` (the ONNX sessions), ``mesh`` (poses and
multi-view fusion), ``head`` (the head template fitted to the fused face, its blend shapes),
``head_texture`` (the head's atlas), ``texture`` (the face mask's atlas), ``features`` (the
contract's facial features), ``morphs`` (the face mask's blend shapes), ``glb`` (the writer);
``preview`` renders avatars to PNG.
"""
from pipeline.errors import PipelineError

VIEWS = ("front", "left", "right")
# What an avatar's GLB holds: the whole head fitted to the face (the default), or the 468-vertex
# face mask in the landmark model's vertex order.
MESH_KINDS = ("head", "face")
DEFAULT_MESH = MESH_KINDS[0]

__all__ = ["PipelineError", "VIEWS", "MESH_KINDS", "DEFAULT_MESH"]
