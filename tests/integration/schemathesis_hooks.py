"""Schemathesis hooks for tests/integration/test_fuzzing.py (loaded through SCHEMATHESIS_HOOKS).

Random bytes are never a face photo, so on their own the fuzzer would only ever see generate refuse
its uploads. Most generated uploads are given real photos instead (the astronaut, read from
SCHEMATHESIS_PHOTO), so jobs are created, run by the real workers and followed by the stateful
links (status, info, download) to their end. Most list requests carry a valid token
(SCHEMATHESIS_TOKEN), so the list is not only ever 401.
"""
from __future__ import annotations

import dataclasses
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
    if operation is None or operation.path != "/api/avatar/generate":
        return st.just(body)
    photos = with_photos(body)
    return st.just(body) if photos is None else st.sampled_from([photos, body])


def with_photos(body):
    """The generated form with real photos as front, left and right and its textureSize (always a
    valid choice), without a callbackUrl (a random one is refused, and the upload with it). The
    form comes as a dict, or as schemathesis's form with a content type per part."""
    fields = body if isinstance(body, dict) else getattr(body, "body", None)
    if not isinstance(fields, dict):
        return None  # not a form at all (negative data): left as generated
    photos = {view: PHOTO for view in VIEWS}
    if "textureSize" in fields:
        photos["textureSize"] = fields["textureSize"]
    if isinstance(body, dict):
        return photos
    content_types = {name: kind for name, kind in body.content_types.items() if name in photos}
    return dataclasses.replace(body, body=photos, content_types={**content_types, **{view: "image/jpeg" for view in VIEWS}})


@schemathesis.hook
def flatmap_headers(context, headers):
    operation = context.operation
    if operation is None or (operation.method.upper(), operation.path) != ("GET", "/api/avatar"):
        return st.just(headers)
    headers = dict(headers or {})
    return st.sampled_from([{**headers, "Authorization": f"Bearer {TOKEN}"}, headers])
