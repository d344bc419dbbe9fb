"""Strip an accepted photo's metadata at the byte level, keeping its pixels bit for bit.

Face photos arrive with EXIF (camera, time, often GPS), XMP, IPTC, ICC profiles, comments, embedded
thumbnails (a second copy of the face) and, after the image, whatever else was appended (a second
picture, a ZIP: "polyglot" files). None of it is needed to make an avatar and all of it would be kept
on our disk. So the stored file is rebuilt from only the structures the decoder needs:

JPEG  SOF, DQT, DHT, DRI, DAC, SOS and the entropy-coded scans, plus the Adobe APP14 marker (it says
      how CMYK/RGB samples are coded, so dropping it would change colours). Dropped: every other
      APPn (JFIF, EXIF, XMP, ICC, IPTC, MPF), COM, and everything after the first real EOI.
PNG   IHDR, PLTE, tRNS, IDAT, IEND. Dropped: tEXt/zTXt/iTXt, eXIf, iCCP, tIME, pHYs, ..., and
      everything after IEND.
WebP  VP8X (its ICC/EXIF/XMP flags cleared), ALPH, VP8/VP8L. Dropped: ICCP, EXIF, XMP, unknown
      chunks, and everything after the RIFF size.

The EXIF orientation is the one piece of metadata that changes what the photo shows; it was read
by ``read_header`` before stripping and is written back as a minimal EXIF block holding only the
Orientation tag, so the stored file still decodes upright with no other metadata in it.

No pixels are decoded (re-encoding would cost 30-400 ms per photo and change the image). The walk
jumps from segment to segment; inside JPEG scans one regular-expression search finds each marker,
so a 10 MB file takes a few milliseconds. A file whose structure ends early (a truncated upload) or
does not hold together is refused here, before anything is stored or queued.

The walk also bounds what decoding the photo will cost. A progressive JPEG's decoder passes over
every block of the image once per scan, however few bytes the scan has: 10 MB of 16-byte scans is
~650,000 scans, ~0.3 ms each at 4096² (3.6 s for 10,000 measured here), minutes of both cores for
one upload. Ordinary progressive photos have about 10 scans, so more than ``MAX_JPEG_SCANS`` is
refused, which bounds a photo's decode at ~30 ms more than a normal one's. Tables between scans, PNG
chunks and WebP chunks are capped likewise (``MAX_*``): each costs this walk a Python step, and
700,000 empty PNG chunks also doubled the decoder's time. EXIF, ICC and XMP never reach the decoder
(they are dropped here), so their size costs nothing after this walk.
"""
from __future__ import annotations

import re
import struct
import zlib

from pipeline import PipelineError
from pipeline.decode import ImageHeader

TRUNCATED_MESSAGE = "image data is truncated: the file ends before the image does"
CORRUPT_MESSAGE = "image data is corrupt: the file does not hold together as a {fmt} image"

# -- JPEG ---------------------------------------------------------------------------------------

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Tables the decoder needs, before or between scans: DHT, DAC, DQT, DRI.
_JPEG_TABLES = frozenset({0xC4, 0xCC, 0xDB, 0xDD})
_APP14 = 0xEE
# A marker inside entropy-coded data: 0xFF followed by anything but 0x00 (a stuffed data byte),
# 0xD0-0xD7 (restart markers, part of the scan) or 0xFF (fill).
_SCAN_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")

_ORIENTATION_TAG = 0x0112

# Structure a real photo stays far below (see the module's docstring for what each costs).
MAX_JPEG_SCANS = 100
MAX_JPEG_SEGMENTS = 1000
MAX_PNG_CHUNKS = 10_000
MAX_WEBP_CHUNKS = 100


def strip_metadata(data: bytes, header: ImageHeader) -> bytes:
    """``data`` rebuilt without metadata or trailing bytes; ``header`` is ``read_header(data)``.

    Raises
    ------
    PipelineError
        ``invalid_image`` when the file is truncated or its structure is inconsistent.
    """
    strip = {"jpeg": _strip_jpeg, "png": _strip_png, "webp": _strip_webp}[header.format]
    try:
        return strip(data, header)
    except struct.error:
        raise PipelineError("invalid_image", TRUNCATED_MESSAGE) from None


def orientation_tiff(orientation: int) -> bytes:
    """A big-endian TIFF block whose only IFD entry is the EXIF Orientation (SHORT)."""
    return (b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHIH2x", _ORIENTATION_TAG, 3, 1, orientation) + struct.pack(">I", 0))


def _corrupt(fmt: str) -> PipelineError:
    return PipelineError("invalid_image", CORRUPT_MESSAGE.format(fmt=fmt))


def _too_complex(what: str, limit: int, advice: str) -> PipelineError:
    return PipelineError("image_too_complex", f"image has more than {limit} {what}, which no ordinary "
                                              f"photo has; {advice}")


_RESAVE_JPEG = "save it again as an ordinary (baseline) JPEG"


def _strip_jpeg(data: bytes, header: ImageHeader) -> bytes:
    out = [b"\xff\xd8"]
    if header.orientation != 1:
        exif = b"Exif\x00\x00" + orientation_tiff(header.orientation)
        out.append(struct.pack(">BBH", 0xFF, 0xE1, len(exif) + 2) + exif)
    n = len(data)
    pos = 2
    seen_frame = False
    segments = 0
    # Header segments up to the first scan.
    while True:
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise _too_complex("JPEG segments", MAX_JPEG_SEGMENTS, _RESAVE_JPEG)
        if pos >= n:
            raise PipelineError("invalid_image", TRUNCATED_MESSAGE)
        if data[pos] != 0xFF:
            raise _corrupt("JPEG")
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            raise PipelineError("invalid_image", TRUNCATED_MESSAGE)
        marker = data[pos]
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue  # TEM / stray restart marker: no length, nothing to keep
        if marker in (_SOI, _EOI):
            raise _corrupt("JPEG")
        (length,) = struct.unpack_from(">H", data, pos)
        end = pos + length
        if length < 2:
            raise _corrupt("JPEG")
        if end > n:
            raise PipelineError("invalid_image", TRUNCATED_MESSAGE)
        segment = data[pos - 2:end]
        if marker in _SOF_MARKERS:
            if seen_frame:
                raise _corrupt("JPEG")
            seen_frame = True
            out.append(segment)
        elif marker in _JPEG_TABLES or (marker == _APP14 and data[pos + 2:pos + 7] == b"Adobe"):
            out.append(segment)
        elif marker == _SOS:
            if not seen_frame:
                raise _corrupt("JPEG")
            out.append(segment)
            pos = end
            break
        # Anything else (APPn, COM, extensions) is metadata: dropped.
        pos = end
    # Scans: entropy-coded data, with tables and further SOS segments between progressive scans.
    scans = 1
    while True:
        match = _SCAN_MARKER.search(data, pos)
        if match is None:
            raise PipelineError("invalid_image", TRUNCATED_MESSAGE)
        start = match.start()
        out.append(data[pos:start])
        marker = data[start + 1]
        if marker == _EOI:
            out.append(b"\xff\xd9")
            return b"".join(out)  # whatever follows the image is dropped
        if marker == 0x01:
            pos = start + 2
            continue
        if marker in _SOF_MARKERS or marker == _SOI:
            raise _corrupt("JPEG")  # a second frame: hierarchical or concatenated files are not photos
        (length,) = struct.unpack_from(">H", data, start + 2)
        end = start + 2 + length
        if length < 2:
            raise _corrupt("JPEG")
        if end > n:
            raise PipelineError("invalid_image", TRUNCATED_MESSAGE)
        segments += 1
        scans += marker == _SOS
        if scans > MAX_JPEG_SCANS:
            raise _too_complex("progressive scans", MAX_JPEG_SCANS, _RESAVE_JPEG)
        if segments > MAX_JPEG_SEGMENTS:
            raise _too_complex("JPEG segments", MAX_JPEG_SEGMENTS, _RESAVE_JPEG)
        if marker == _SOS or marker in _JPEG_TABLES:
            out.append(data[start:end])
        pos = end


# -- PNG ----------------------------------------------------------------------------------------

_PNG_KEEP = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"})


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _strip_png(data: bytes, header: ImageHeader) -> bytes:
    out = [data[:8]]
    pos = 8
    n = len(data)
    has_data = False
    chunks = 0
    while True:
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise _too_complex("PNG chunks", MAX_PNG_CHUNKS, "save it again as an ordinary PNG or JPEG")
        if pos + 8 > n:
            raise PipelineError("invalid_image", TRUNCATED_MESSAGE)
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > n:
            raise PipelineError("invalid_image", TRUNCATED_MESSAGE)
        if kind in _PNG_KEEP:
            out.append(data[pos:end])
        elif not kind[:1].isalpha() or kind[:1].isupper():
            raise _corrupt("PNG")  # an unknown critical chunk: no decoder could show this image
        if kind == b"IHDR" and header.orientation != 1:
            # eXIf must come before the image data; right after IHDR is always allowed.
            out.append(_png_chunk(b"eXIf", orientation_tiff(header.orientation)))
        has_data = has_data or kind == b"IDAT"
        pos = end
        if kind == b"IEND":
            if not has_data:
                raise _corrupt("PNG")
            return b"".join(out)  # whatever follows IEND is dropped


# -- WebP ---------------------------------------------------------------------------------------

_WEBP_KEEP = frozenset({b"VP8X", b"ALPH", b"VP8 ", b"VP8L"})
_VP8X_ICC, _VP8X_EXIF, _VP8X_XMP = 0x20, 0x08, 0x04


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def _bitstream_size(kind: bytes, body: bytes) -> tuple[int, int]:
    """The size the VP8 / VP8L bitstream itself declares (the decoder allocates from this)."""
    if kind == b"VP8 ":
        width, height = struct.unpack_from("<HH", body, 6)
        return width & 0x3FFF, height & 0x3FFF
    (bits,) = struct.unpack_from("<I", body, 1)
    return (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1


def _strip_webp(data: bytes, header: ImageHeader) -> bytes:
    (riff_size,) = struct.unpack_from("<I", data, 4)
    riff_end = 8 + riff_size
    if riff_end > len(data):
        raise PipelineError("invalid_image", TRUNCATED_MESSAGE)
    chunks: list[tuple[bytes, bytes]] = []
    pos = 12
    seen = 0
    while pos + 8 <= riff_end:
        seen += 1
        if seen > MAX_WEBP_CHUNKS:
            raise _too_complex("WebP chunks", MAX_WEBP_CHUNKS, "save it again as an ordinary WebP or JPEG")
        kind, size = struct.unpack_from("<4sI", data, pos)
        body_end = pos + 8 + size
        if body_end > riff_end:
            raise PipelineError("invalid_image", TRUNCATED_MESSAGE)
        if kind in _WEBP_KEEP:
            chunks.append((kind, data[pos + 8:body_end]))
        pos = body_end + (size & 1)
    bitstreams = [(kind, body) for kind, body in chunks if kind in (b"VP8 ", b"VP8L")]
    if len(bitstreams) != 1:
        raise _corrupt("WebP")
    # A container that says 300x300 around a 16383x16383 bitstream would get past the header check.
    if _bitstream_size(*bitstreams[0]) != (header.width, header.height):
        raise _corrupt("WebP")
    if chunks[0][0] != b"VP8X":
        body = b"".join(_riff_chunk(kind, payload) for kind, payload in bitstreams)
        return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body
    vp8x = bytearray(chunks[0][1])
    vp8x[0] &= ~(_VP8X_ICC | _VP8X_EXIF | _VP8X_XMP) & 0xFF
    extra = b""
    if header.orientation != 1:
        vp8x[0] |= _VP8X_EXIF
        extra = _riff_chunk(b"EXIF", orientation_tiff(header.orientation))
    body = _riff_chunk(b"VP8X", bytes(vp8x)) + b"".join(
        _riff_chunk(kind, payload) for kind, payload in chunks[1:]) + extra
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body
