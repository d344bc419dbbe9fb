"""Schemathesis hooks for tests/integration/test_fuzzing.py (loaded through SCHEMATHESIS_HOOKS).

Random bytes are never a face photo, so on their own the fuzzer would only ever see generate refuse
its uploads. Most generated uploads are given real photos instead (the astronaut, read from
SCHEMATHESIS_PHOTO), so jobs are created, run by the real workers and followed by the stateful
links (status, info, download) to their end. Most list requests carry a valid token
(SCHEMATHESIS_TOKEN), so the list is not only ever 401.
"""
from __future__ import annotations

import os
from pathlib import Path

import schemathesis
from hypothesis import strategies as st

PHOTO = Path(os.environ["SCHEMATHESIS_PHOTO"]).read_bytes()
TOKEN = os.environ["SCHEMATHESIS_TOKEN"]
VIEWS = ("front", "left", "right")


@schemathesis.hook
def flatmap_body(context, body):
    operation = context.operation
    if operation is None or operation.path != "/api/avatar/generate" or not isinstance(body, dict):
        return st.just(body)
    # The photos with the generated textureSize (always a valid choice), without a callbackUrl:
    # a random one is refused (400) and the upload with it.
    with_photos = {view: PHOTO for view in VIEWS}
    if "textureSize" in body:
        with_photos["textureSize"] = body["textureSize"]
    return st.sampled_from([with_photos, body])


@schemathesis.hook
def flatmap_headers(context, headers):
    operation = context.operation
    if operation is None or (operation.method.upper(), operation.path) != ("GET", "/api/avatar"):
        return st.just(headers)
    headers = dict(headers or {})
    return st.sampled_from([{**headers, "Authorization": f"Bearer {TOKEN}"}, headers])
