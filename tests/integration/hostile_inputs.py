"""Hostile and careless uploads for the corpus test: each builds its bytes from real photos."""
from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib

import cv2
import numpy as np
from PIL import Image

from bench.photos import encode_with_pil as encode



def grey_jpeg(width: int, height: int) -> bytes:
    return encode(np.full((height, width, 3), 128, np.uint8), "JPEG")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int = 50000) -> bytes:
    """A PNG whose header says side x side (7.5 GB of RGB) in a few KB: all-zero rows compress
    about 1000:1, so the first rows are enough to look real."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress((b"\x00" + b"\x00" * side * 3) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")


def scan_bomb_jpeg(photo: np.ndarray, scans: int) -> bytes:
    """A valid progressive JPEG of ``photo`` whose smallest scan is repeated until the file has
    ``scans`` scans: a few bytes each, but the decoder passes over every block once per scan."""
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "JPEG", quality=85, progressive=True)
    data = buffer.getvalue()
    markers = [m.start() for m in re.finditer(rb"\xff\xda", data)]
    bounds = markers + [len(data) - 2]
    sos = [data[bounds[i]:bounds[i + 1]] for i in range(len(markers))]
    smallest = min(sos, key=len)
    return data[:-2] + smallest * (scans - len(sos)) + b"\xff\xd9"


def many_chunk_png(photo: np.ndarray, chunks: int) -> bytes:
    """A valid PNG of ``photo`` followed, before IEND, by ``chunks`` empty IDAT chunks."""
    data = encode(photo, "PNG")
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + png_chunk(b"IDAT", b"") * chunks + data[iend:]


def animated_webp(photo: np.ndarray) -> bytes:
    frames = [Image.fromarray(photo), Image.fromarray(photo[:, ::-1].copy())]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0)


def animated_png(photo: np.ndarray) -> bytes:
    frames = [Image.fromarray(photo), Image.fromarray(photo[::-1].copy())]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)


def cmyk_jpeg(photo: np.ndarray) -> bytes:
    return encode(Image.fromarray(photo).convert("CMYK"), "JPEG", quality=90)


def sixteen_bit_png(photo: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    assert ok
    return data.tobytes()


def exif_rotated_jpeg(photo: np.ndarray) -> bytes:
    """Stored turned 90° counter-clockwise with EXIF orientation 6 (turn it clockwise to show), and
    camera metadata that must not be stored."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "SecretCam"
    return encode(np.rot90(photo).copy(), "JPEG", quality=90, exif=exif.tobytes())


def polyglot_jpeg_zip(jpeg: bytes) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.txt", "not a photo " * 50)
    return jpeg + archive.getvalue()


def webp_with_lying_canvas(photo: np.ndarray) -> bytes:
    """A VP8X container that says 300x300 around a 512x512 bitstream."""
    simple = encode(photo, "WEBP", quality=80)
    vp8 = simple[12:]  # the "VP8 " chunk of the simple format
    vp8x = struct.pack("<B3x", 0) + (299).to_bytes(3, "little") + (299).to_bytes(3, "little")
    body = b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x + vp8
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


HEIC_LIKE = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 2000
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="512" height="512">'
       b'<circle cx="256" cy="256" r="200"/></svg>')
TEXT = b"This is a text file, not a photo.\n" * 20
JPEG_MAGIC_THEN_ZEROS = b"\xff\xd8\xff" + b"\x00" * 500
