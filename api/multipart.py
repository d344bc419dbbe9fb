"""A strict, streaming ``multipart/form-data`` reader for the generate endpoint.

Werkzeug's parser is general (any number of fields, spooling big files to temporary files) and pure
Python over 64 KiB chunks: 4-20 ms for three 1-4 MB photos, on the request's critical path. This
endpoint takes a handful of parts, so it reads the body in large chunks and cuts them at the
boundaries with ``bytearray.find`` (C speed), keeping in memory only:

- the parts it is still reading, each up to ``max_part_bytes``: a part that grows past it stops being
  kept at once (only its size is counted), so an oversize photo is never buffered whole;
- a part's headers up to ``MAX_HEADER_BYTES`` (a 100 KB file name fits; 1 MB of headers does not).

The rest of an oversize request is still read (and dropped) up to the request-size limit that
Werkzeug enforces from Content-Length before anything is read: that way the client receives the 413
with every file's verdict instead of a connection reset while it is still sending.

Anything malformed (no boundary, a part without a name, no closing delimiter, too many parts) is a
``BadRequest`` with a message saying what to send instead.
"""
from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from werkzeug.http import parse_options_header

from api.errors import BadRequest, UnsupportedMediaType

MALFORMED = ("Malformed multipart/form-data body: {what}. Send the photos as form fields "
             "front, left and right (for example curl -F \"front=@front.jpg\" ...).")
NOT_MULTIPART = ("Send the photos as multipart/form-data with the file fields front, left and right "
                 "(got Content-Type {got!r}).")

CHUNK_BYTES = 512 * 1024
MAX_HEADER_BYTES = 128 * 1024
# The form has three fields; a few more are allowed so that the error can name the extra ones.
MAX_PARTS = 16


@dataclass(frozen=True)
class FormPart:
    """One part of the form: a file field (``filename`` set) or a plain field.

    ``size`` is how many bytes the part had; when it was over the limit ``oversize`` is true and
    ``data`` is empty (the bytes were not kept).
    """

    name: str
    filename: str | None
    data: bytes
    size: int = 0
    oversize: bool = False


class FormData(Mapping[str, FormPart]):
    """The parts by field name (the first of duplicates), with every part in order in ``all`` (so
    that validation can refuse duplicates)."""

    def __init__(self, parts: list[FormPart]):
        self.all: tuple[FormPart, ...] = tuple(parts)
        self._first: dict[str, FormPart] = {}
        for part in parts:
            self._first.setdefault(part.name, part)

    def __getitem__(self, name: str) -> FormPart:
        return self._first[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)


def read_form(stream: IO[bytes], content_type: str | None, max_part_bytes: int) -> FormData:
    """The parts of a ``multipart/form-data`` body; a part over ``max_part_bytes`` is not kept.

    ``stream`` must already be bounded by the request-size limit (Flask's ``request.stream`` is).
    A body that is not ``multipart/form-data`` is a 415.
    """
    mimetype, options = parse_options_header(content_type or "")
    if mimetype != "multipart/form-data":
        raise UnsupportedMediaType(NOT_MULTIPART.format(got=content_type or ""))
    boundary = options.get("boundary", "").encode("latin-1", "replace")
    if not boundary or len(boundary) > 200:
        raise BadRequest(MALFORMED.format(what="the Content-Type has no usable boundary"))
    return FormData(_FormReader(stream, boundary, max_part_bytes).parts())


@contextlib.contextmanager
def upload_deadline(environ: Mapping[str, Any], seconds: float) -> Iterator[Callable[[], bool]]:
    """Bound how long the request's body may take to arrive: once ``seconds`` have passed, the
    connection is shut for reading, so the read in progress ends at once (as a body cut short).
    Yields a function that says whether that happened, to answer 408 rather than 400.

    A client that trickles its upload would otherwise hold its connection for as long as it likes.
    Only under gunicorn (which puts the socket in ``gunicorn.socket``); elsewhere, nothing is bounded.
    """
    sock = environ.get("gunicorn.socket")
    if sock is None or seconds <= 0:
        yield lambda: False
        return
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield expired.is_set
    finally:
        timer.cancel()


def split_parts(body: bytes, boundary: bytes, max_part_bytes: int = 1 << 62) -> FormData:
    """The parts of a whole body already in memory (tests and tools)."""
    import io
    return FormData(_FormReader(io.BytesIO(body), boundary, max_part_bytes).parts())


class _FormReader:
    """RFC 7578 / RFC 2046 §5.1.1 over a stream, one chunk at a time."""

    def __init__(self, stream: IO[bytes], boundary: bytes, max_part_bytes: int):
        self.stream = stream
        self.max_part_bytes = max_part_bytes
        self.delimiter = b"\r\n--" + boundary
        # Starting with CRLF makes an opening delimiter at the very start (no preamble) look like
        # every other delimiter.
        self.buf = bytearray(b"\r\n")
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.stream.read(CHUNK_BYTES)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _find(self, needle: bytes, limit: int) -> int:
        """Index of ``needle`` in the buffer, reading more as needed; -1 at the end of the body or
        once ``limit`` bytes were searched without finding it."""
        start = 0
        while True:
            index = self.buf.find(needle, start)
            if index >= 0:
                return index
            searched = len(self.buf)
            if searched > limit or not self._fill():
                return -1
            start = max(0, searched - len(needle) + 1)  # only the new bytes (and a split needle)

    def parts(self) -> list[FormPart]:
        keep = len(self.delimiter) - 1
        # The preamble: dropped as it is read.
        while (index := self.buf.find(self.delimiter)) < 0:
            if len(self.buf) > keep:
                del self.buf[:len(self.buf) - keep]
            if not self._fill():
                raise BadRequest(MALFORMED.format(what="the boundary does not occur in the body"))
        del self.buf[:index + len(self.delimiter)]

        parts: list[FormPart] = []
        while True:
            while len(self.buf) < 2 and self._fill():
                pass
            if self.buf.startswith(b"--"):
                return parts  # the closing delimiter; anything after it is an epilogue
            line_end = self._find(b"\r\n", 1024)
            if line_end < 0:
                raise BadRequest(MALFORMED.format(what="it ends inside a delimiter line"))
            del self.buf[:line_end + 2]
            if len(parts) == MAX_PARTS:
                raise BadRequest(MALFORMED.format(what=f"it has more than {MAX_PARTS} parts"))
            parts.append(self._read_part())

    def _read_part(self) -> FormPart:
        while len(self.buf) < 2 and self._fill():
            pass
        if self.buf.startswith(b"\r\n"):
            raise BadRequest(MALFORMED.format(what="a part has no headers (no Content-Disposition)"))
        header_end = self._find(b"\r\n\r\n", MAX_HEADER_BYTES)
        if header_end < 0:
            if self.eof:
                raise BadRequest(MALFORMED.format(what="the closing boundary is missing (truncated upload?)"))
            raise BadRequest(MALFORMED.format(
                what=f"a part's headers are longer than {MAX_HEADER_BYTES // 1024} KB"))
        name, filename = _disposition(bytes(self.buf[:header_end]))
        del self.buf[:header_end + 4]

        data = bytearray()
        size = 0
        keep = len(self.delimiter) - 1
        while True:
            index = self.buf.find(self.delimiter)
            take = index if index >= 0 else max(0, len(self.buf) - keep)
            size += take
            if size <= self.max_part_bytes:
                data += memoryview(self.buf)[:take]
            elif data:
                data = bytearray()  # over the limit: let go of what was kept, count the rest
            del self.buf[:take]
            if index >= 0:
                del self.buf[:len(self.delimiter)]
                break
            if not self._fill():
                raise BadRequest(MALFORMED.format(what="the closing boundary is missing (truncated upload?)"))
        oversize = size > self.max_part_bytes
        return FormPart(name, filename, b"" if oversize else bytes(data), size, oversize)


def _disposition(headers: bytes) -> tuple[str, str | None]:
    """The form field name and file name from a part's headers (RFC 7578 §4.2)."""
    disposition = None
    for line in headers.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-disposition":
            # Browsers send file names as raw UTF-8; anything else is kept with U+FFFD in its place.
            disposition = value.strip().decode("utf-8", "replace")
    if disposition is None:
        raise BadRequest(MALFORMED.format(what="a part has no Content-Disposition header"))
    kind, options = parse_options_header(disposition)
    if kind != "form-data" or not options.get("name"):
        raise BadRequest(MALFORMED.format(what="a part's Content-Disposition is not form-data with a name"))
    return options["name"], options.get("filename")
