"""Decoding: every pixel format a mugshot archive holds becomes 8-bit BGR, or a reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from schemas.records import QuarantineReason
from tasks.ingest.decode import ImageRejected, decode_image

from .conftest import face_pil, jpeg_bytes

LIMITS = {"max_pixels": 64_000_000, "min_side": 32}


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _reason(data: bytes) -> QuarantineReason:
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, **LIMITS)
    return caught.value.reason


def png_with_declared_size(width: int, height: int) -> bytes:
    """A valid PNG header declaring a huge image, with almost no pixel data behind it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_rgb_jpeg_becomes_bgr():
    image = face_pil(0)
    decoded = decode_image(jpeg_bytes(image), **LIMITS)
    assert decoded.bgr.dtype == np.uint8 and decoded.bgr.shape == (image.height, image.width, 3)
    rgb = np.asarray(image).astype(int)
    assert np.abs(decoded.bgr[:, :, ::-1].astype(int) - rgb).mean() < 4  # JPEG noise only
    assert decoded.image_format == "JPEG" and not decoded.exif_transposed


def test_exif_orientation_is_applied():
    image = face_pil(1)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    decoded = decode_image(jpeg_bytes(image, exif=exif.tobytes()), **LIMITS)
    assert decoded.exif_transposed
    assert decoded.bgr.shape[:2] == (image.width, image.height)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16"])
def test_pixel_modes(mode: str):
    image = face_pil(2)
    if mode == "I;16":
        grey = np.asarray(image.convert("L")).astype(np.uint16) * 257
        converted = Image.fromarray(grey)
        data = _save(converted, "PNG")
    elif mode == "CMYK":
        data = _save(image.convert("CMYK"), "JPEG", quality=95)
    else:
        data = _save(image.convert(mode), "PNG" if mode != "L" else "BMP")
    decoded = decode_image(data, **LIMITS)
    assert decoded.bgr.dtype == np.uint8 and decoded.bgr.shape == (image.height, image.width, 3)
    grey = np.asarray(image.convert("L")).astype(float)
    ours = decoded.bgr.astype(float).mean(axis=2)
    assert np.corrcoef(grey.ravel(), ours.ravel())[0, 1] > 0.95, mode


def test_transparent_pixels_become_white_paper():
    rgba = np.zeros((64, 64, 4), np.uint8)
    decoded = decode_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"), **LIMITS)
    assert (decoded.bgr == 255).all()


def test_zero_bytes():
    assert _reason(b"") is QuarantineReason.EMPTY_FILE


def test_truncated_jpeg():
    data = jpeg_bytes(face_pil(0))
    assert _reason(data[: len(data) // 2]) is QuarantineReason.TRUNCATED_IMAGE


def test_truncated_header():
    assert _reason(jpeg_bytes(face_pil(0))[:40]) is QuarantineReason.TRUNCATED_IMAGE


def test_text_with_an_image_extension():
    assert _reason(b"identity,photo\nthis is not a picture\n" * 10) is QuarantineReason.NOT_AN_IMAGE


@pytest.mark.parametrize("data", [
    lambda: _save(face_pil(0), "GIF"),
    lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"></svg>',
])
def test_unsupported_formats(data):
    assert _reason(data()) is QuarantineReason.UNSUPPORTED_FORMAT


def test_too_small_for_a_face():
    tiny = Image.fromarray(np.full((20, 24, 3), 128, np.uint8))
    assert _reason(_save(tiny, "PNG")) is QuarantineReason.IMAGE_TOO_SMALL


@pytest.mark.parametrize("side", [10_000, 30_000])
def test_decompression_bomb_is_refused_from_the_header(side: int):
    # 10k² passes Pillow's own guard but not ours; 30k² trips Pillow's error first.
    assert _reason(png_with_declared_size(side, side)) is QuarantineReason.DECOMPRESSION_BOMB
