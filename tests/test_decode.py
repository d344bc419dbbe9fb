"""pipeline.decode on real photos encoded every way an upload can arrive."""
from __future__ import annotations

import io
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from bench.photos import encode_with_pil as encode
from pipeline.decode import ImageHeader, check_dimensions, decode_image, read_header
from pipeline.errors import PipelineError




def exif_with_orientation(orientation: int, big_endian: bool = False) -> bytes:
    """A minimal EXIF block holding only the orientation tag, as Pillow's ``exif=`` takes it."""
    e = ">" if big_endian else "<"
    return (b"Exif\x00\x00" + (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(e + "I", 8)
            + struct.pack(e + "H", 1) + struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0)
            + struct.pack(e + "I", 0))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def expect_error(code: str, function, *args, **kwargs) -> PipelineError:
    with pytest.raises(PipelineError) as caught:
        function(*args, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value


@pytest.fixture(scope="module")
def hopper(grace_hopper_jpeg) -> np.ndarray:
    """Grace Hopper as RGB, 600 high x 512 wide: not square, so a rotation shows."""
    return np.asarray(Image.open(io.BytesIO(grace_hopper_jpeg)).convert("RGB"))


@pytest.fixture(scope="module")
def astronaut_4096(astronaut) -> np.ndarray:
    return cv2.resize(astronaut, (4096, 4096), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def jpeg_4096(astronaut_4096) -> bytes:
    return encode(astronaut_4096, "JPEG", quality=90)


# --------------------------------------------------------------------------------------------
# Headers


def test_header_of_each_format(astronaut, camera_grey, grace_hopper_jpeg):
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 200, np.uint8)])
    cases = {
        "jpeg": (grace_hopper_jpeg, ImageHeader("jpeg", 512, 600, channels=3)),
        "grey jpeg": (encode(camera_grey, "JPEG"), ImageHeader("jpeg", 512, 512, channels=1)),
        "progressive": (encode(astronaut, "JPEG", progressive=True),
                        ImageHeader("jpeg", 512, 512, progressive=True)),
        "cmyk": (encode(Image.fromarray(astronaut).convert("CMYK"), "JPEG"),
                 ImageHeader("jpeg", 512, 512, channels=4)),
        "png": (encode(astronaut[:300], "PNG"), ImageHeader("png", 512, 300)),
        "png rgba": (encode(rgba, "PNG"), ImageHeader("png", 512, 512, channels=4,
                                                      has_alpha=True)),
        "png grey": (encode(camera_grey, "PNG"), ImageHeader("png", 512, 512, channels=1)),
        "webp lossy": (encode(astronaut[:, :400], "WEBP"), ImageHeader("webp", 400, 512)),
        "webp lossless alpha": (encode(rgba, "WEBP", lossless=True),
                                ImageHeader("webp", 512, 512, channels=4, has_alpha=True)),
        "webp lossy alpha": (encode(rgba, "WEBP", quality=80),
                             ImageHeader("webp", 512, 512, channels=4, has_alpha=True)),
    }
    for name, (data, expected) in cases.items():
        assert read_header(data) == expected, name


def test_header_of_16_bit_png(astronaut):
    ok, data = cv2.imencode(".png", astronaut.astype(np.uint16) * 257)
    header = read_header(data.tobytes())
    assert (header.format, header.bit_depth, header.channels) == ("png", 16, 3)


def test_header_detects_animation(astronaut):
    frames = [Image.fromarray(astronaut), Image.fromarray(astronaut[::-1].copy())]
    webp = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)
    apng = encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)
    for data in (webp, apng):
        header = read_header(data)
        assert header.frames == 2 and header.animated
        assert (header.width, header.height) == (512, 512)
        # The first frame decodes; rejecting animations is the caller's decision.
        assert decode_image(data, header=header).shape == (512, 512, 3)
    assert not read_header(encode(astronaut, "PNG")).animated


def test_header_only_bytes_of_a_huge_png():
    """50000x50000 from its first 33 bytes: nothing is allocated for the pixels."""
    ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))
    header = read_header(data)
    assert (header.width, header.height) == (50000, 50000)
    expect_error("image_too_large", check_dimensions, header)


def test_header_parse_is_fast(jpeg_4096, grace_hopper_jpeg):
    for data in (jpeg_4096, grace_hopper_jpeg):
        read_header(data)
        runs = []
        for _ in range(50):
            start = time.perf_counter()
            read_header(data)
            runs.append(time.perf_counter() - start)
        assert np.median(runs) < 1e-3  # measured 0.01-0.03 ms; generous for a busy CI box


def test_exif_orientation_both_byte_orders(hopper):
    for big_endian in (False, True):
        data = encode(hopper, "JPEG", exif=exif_with_orientation(6, big_endian))
        header = read_header(data)
        assert header.orientation == 6
        assert header.upright_size == (600, 512)


def test_check_dimensions_messages():
    check_dimensions(ImageHeader("jpeg", 224, 4096))
    error = expect_error("image_too_small", check_dimensions, ImageHeader("jpeg", 223, 1000))
    assert error.message == "Image too small. Minimum size is 224x224 pixels."
    error = expect_error("image_too_large", check_dimensions, ImageHeader("png", 300, 4097))
    assert error.message == "Image too large. Maximum size is 4096x4096 pixels."


# --------------------------------------------------------------------------------------------
# Refusals


def test_unsupported_formats_are_refused_by_content(astronaut):
    others = [encode(astronaut, fmt) for fmt in ("GIF", "BMP", "TIFF")]
    others.append(b"name,photo\nalice,not really a photo\n")
    others.append(b"%PDF-1.7\n" + bytes(100))
    for data in others:
        error = expect_error("unsupported_format", read_header, data)
        assert error.message == "unsupported file type: expected a JPEG, PNG or WebP image"
        expect_error("unsupported_format", decode_image, data)


def test_empty_file_is_invalid():
    expect_error("invalid_image", read_header, b"")


def test_truncated_headers_never_raise_anything_else(astronaut, grace_hopper_jpeg):
    """Every prefix of a file's first kilobyte either parses or is a PipelineError."""
    files = [grace_hopper_jpeg, encode(astronaut, "PNG"), encode(astronaut, "WEBP"),
             encode(astronaut, "WEBP", lossless=True),
             encode(astronaut, "JPEG", exif=exif_with_orientation(8))]
    for data in files:
        for end in range(0, 1024):
            try:
                read_header(data[:end])
            except PipelineError as error:
                assert error.code in ("invalid_image", "unsupported_format")


def test_jpeg_cut_before_its_frame_header(grace_hopper_jpeg):
    error = expect_error("invalid_image", read_header, grace_hopper_jpeg[:200])
    assert "truncated" in error.message


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_image_data(astronaut, fmt):
    data = encode(astronaut, fmt)
    for keep in (0.5, 0.9):
        cut = data[:int(len(data) * keep)]
        read_header(cut)  # the header is intact...
        error = expect_error("invalid_image", decode_image, cut)  # ...the pixels are not
        assert error.message == "image data is corrupt or truncated"


# --------------------------------------------------------------------------------------------
# Decoding


def test_png_round_trip_is_exact(astronaut):
    decoded = decode_image(encode(astronaut, "PNG"))
    assert decoded.dtype == np.uint8 and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, astronaut)


def test_jpeg_colours_are_rgb(grace_hopper_jpeg, hopper):
    decoded = decode_image(grace_hopper_jpeg)
    assert decoded.shape == (600, 512, 3)
    assert np.abs(decoded.astype(int) - hopper).mean() < 1.0  # same image, maybe another IDCT


def test_jpeg_reduced_decode_matches_full_decode(jpeg_4096):
    reduced = decode_image(jpeg_4096, max_side=1024)
    full = decode_image(jpeg_4096, max_side=None)
    assert full.shape == (4096, 4096, 3)
    assert reduced.shape == (1024, 1024, 3)
    resized = cv2.resize(full, (1024, 1024), interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.astype(int) - resized).mean() < 2.0


def test_jpeg_reduced_decode_of_non_square_photo(astronaut):
    photo = cv2.resize(astronaut, (3000, 4000), interpolation=cv2.INTER_LINEAR)
    decoded = decode_image(encode(photo, "JPEG"), max_side=1024)
    assert decoded.shape == (1024, 768, 3)
    expected = cv2.resize(photo, (768, 1024), interpolation=cv2.INTER_AREA)
    assert np.abs(decoded.astype(int) - expected).mean() < 3.0


def test_small_images_are_not_enlarged(astronaut):
    assert decode_image(encode(astronaut, "JPEG"), max_side=1024).shape == (512, 512, 3)
    assert decode_image(encode(astronaut, "PNG"), max_side=256).shape == (256, 256, 3)


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_jpeg_comes_back_upright(hopper, orientation):
    # A camera held sideways stores the pixels turned and says how to turn them back.
    stored = np.rot90(hopper, 1 if orientation == 6 else -1).copy()
    data = encode(stored, "JPEG", quality=95, exif=exif_with_orientation(orientation))
    decoded = decode_image(data)
    assert decoded.shape == hopper.shape
    assert correlation(decoded, hopper) > 0.99
    # Rotated exactly once: a second rotation would be anti-correlated or the wrong shape.
    assert decode_image(data, max_side=300).shape == (300, 256, 3)


def _exif_after_frame_header(jpeg: bytes, exif: bytes) -> bytes:
    """``jpeg`` with an APP1 EXIF segment moved behind its frame header (SOF0), as some writers do."""
    sof = jpeg.index(b"\xff\xc0")
    end = sof + 2 + struct.unpack_from(">H", jpeg, sof + 2)[0]
    return jpeg[:end] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[end:]


def test_exif_orientation_after_the_frame_header_is_read(hopper):
    stored = np.rot90(hopper, 1).copy()
    data = _exif_after_frame_header(encode(stored, "JPEG", quality=95), exif_with_orientation(6))
    assert data.index(b"\xff\xc0") < data.index(b"Exif")
    header = read_header(data)
    assert header.orientation == 6 and header.upright_size == (512, 600)
    assert correlation(decode_image(data), hopper) > 0.99
    # A file cut right after its frame header still has a size to check.
    cut = data[:data.index(b"\xff\xc0") + 19]
    assert (read_header(cut).width, read_header(cut).height) == (600, 512)


def test_all_eight_orientations_match_pillow(hopper):
    for orientation in range(1, 9):
        data = encode(hopper, "JPEG", exif=exif_with_orientation(orientation))
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
        np.testing.assert_array_equal(decode_image(data, max_side=None), expected,
                                      err_msg=f"orientation {orientation}")


def test_exif_orientation_in_png_and_webp(hopper):
    stored = np.rot90(hopper, 1).copy()
    for fmt in ("PNG", "WEBP"):
        data = encode(stored, fmt, exif=exif_with_orientation(6))
        assert read_header(data).orientation == 6
        assert correlation(decode_image(data), hopper) > 0.99


def test_grey_jpeg_becomes_three_equal_channels(camera_grey):
    decoded = decode_image(encode(camera_grey, "JPEG", quality=95))
    assert decoded.shape == (512, 512, 3)
    assert (decoded[..., 0] == decoded[..., 1]).all() and (decoded[..., 1] == decoded[..., 2]).all()
    assert np.abs(decoded[..., 0].astype(int) - camera_grey).mean() < 2.0


def test_cmyk_jpeg_colours_are_sane(astronaut):
    data = encode(Image.fromarray(astronaut).convert("CMYK"), "JPEG", quality=95)
    decoded = decode_image(data)
    assert np.abs(decoded.astype(int) - astronaut).mean() < 4.0
    reduced = decode_image(data, max_side=256)
    assert reduced.shape == (256, 256, 3)


def test_16_bit_png_scales_to_8_bits(astronaut):
    wide = astronaut.astype(np.uint16) * 257  # 0..255 -> 0..65535
    wide[0, 0] = (1000, 30000, 65535)
    ok, data = cv2.imencode(".png", wide[..., ::-1])  # cv2 writes BGR
    decoded = decode_image(data.tobytes())
    expected = astronaut.copy()
    expected[0, 0] = (4, 117, 255)  # round(v / 257)
    np.testing.assert_array_equal(decoded, expected)


def test_alpha_is_composited_over_white(astronaut):
    alpha = np.full(astronaut.shape[:2], 255, np.uint8)
    alpha[:, :128] = 0      # fully transparent: white whatever the stored colour
    alpha[:, 128:256] = 128  # half: halfway to white
    rgba = np.dstack([astronaut, alpha])
    decoded = decode_image(encode(rgba, "PNG"))
    assert (decoded[:, :128] == 255).all()
    half = (astronaut[:, 128:256].astype(int) * 128 + 255 * 127) / 255
    assert np.abs(decoded[:, 128:256] - half).max() <= 1
    np.testing.assert_array_equal(decoded[:, 256:], astronaut[:, 256:])
    lossless = decode_image(encode(rgba, "WEBP", lossless=True))
    assert (lossless[:, :128] == 255).all()


def test_grey_alpha_and_palette_pngs(astronaut, camera_grey):
    grey_alpha = np.dstack([camera_grey, np.full_like(camera_grey, 255)])
    decoded = decode_image(encode(Image.fromarray(grey_alpha, "LA"), "PNG"))
    np.testing.assert_array_equal(decoded[..., 1], camera_grey)

    palette = Image.fromarray(astronaut).convert("P", palette=Image.Palette.ADAPTIVE)
    decoded = decode_image(encode(palette, "PNG"))
    np.testing.assert_array_equal(decoded, np.asarray(palette.convert("RGB")))
    assert read_header(encode(palette, "PNG", transparency=0)).has_alpha


def test_webp_decodes(astronaut):
    decoded = decode_image(encode(astronaut, "WEBP", quality=90))
    assert decoded.shape == (512, 512, 3)
    assert np.abs(decoded.astype(int) - astronaut).mean() < 5.0
