"""Sending a stored file as HTTP clients expect: ETag and ``If-None-Match`` (304), ``Range`` (206,
or 416 with ``Content-Range: bytes */size``), ``If-Range``, and HEAD without a body.

Werkzeug's ``Response.make_conditional`` applies those rules; this module adds the one thing it
cannot know: whether the file's last byte was actually sent, which is when a download counts.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from flask import Response, request
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.wsgi import wrap_file

from api.errors import RangeNotSatisfiable

log = logging.getLogger(__name__)


def send_stored_file(stream: BinaryIO, size: int, etag: str, mimetype: str, download_name: str,
                     on_sent: Callable[[], None] | None = None) -> Response:
    """A response for ``stream`` (``size`` bytes, identified by the strong ``etag``) that honours the
    request's conditional and range headers. ``on_sent`` runs once the file's last byte has been
    handed to the server: after a full GET, or a range that reaches the end; never for HEAD, a 304,
    or a transfer the client broke off. It runs after the request, so it gets no app context."""
    response = Response(wrap_file(request.environ, stream), mimetype=mimetype, direct_passthrough=True)
    response.content_length = size  # a range sets its own below
    response.set_etag(etag)
    response.headers["Content-Disposition"] = f'attachment; filename="{download_name}"'
    # Revalidate each time: the ETag makes that a 304 without the body.
    response.cache_control.no_cache = True
    response.cache_control.private = True
    try:
        response.make_conditional(request, accept_ranges=True, complete_length=size)
    except RequestedRangeNotSatisfiable:
        stream.close()
        raise RangeNotSatisfiable(f"The requested range is outside the file, which has {size} bytes.",
                                  {"size": size}, {"Content-Range": f"bytes */{size}"}) from None
    reaches_end = response.status_code == 200 or (
        response.status_code == 206 and response.content_range is not None
        and response.content_range.stop == size)
    if on_sent is not None and reaches_end and request.method == "GET":
        response.response = _calling_when_drained(response.response, response.content_length, on_sent)
    return response


def _calling_when_drained(body: Iterable[bytes], expected: int | None,
                          on_sent: Callable[[], None]) -> Iterator[bytes]:
    """``body``, then ``on_sent()`` once all ``expected`` bytes were taken by the server (it asks
    for the next chunk only after writing the last one). A client that hangs up makes the server
    close this generator early, and ``on_sent`` does not run."""
    sent = 0
    try:
        for chunk in body:
            yield chunk
            sent += len(chunk)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    if expected is None or sent == expected:
        try:
            on_sent()
        except Exception:  # the file was delivered; a lost count must not turn that into an error
            log.exception("could not record a completed download")
