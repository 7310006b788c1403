"""Decode image bytes into an 8-bit BGR array, refusing what cannot be trusted.

Every refusal is an ``ImageRejected`` with a stable reason, so one bad file becomes a
quarantine row instead of a crashed nightly run. Sizes are checked from the header
before pixels are decoded, so a decompression bomb never allocates its pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from schemas.records import QuarantineReason

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "PPM", "TIFF", "WEBP", "MPO"})
# Signatures of image formats we recognise but refuse, to tell "unsupported" from "garbage".
_OTHER_IMAGE_SIGNATURES = (
    (b"GIF8", "GIF"),
    (b"<svg", "SVG"),
    (b"<?xml", "SVG/XML"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)
_TRUNCATABLE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"RIFF", b"II*\x00",
                           b"MM\x00*", b"P5", b"P6")


class ImageRejected(Exception):
    def __init__(self, reason: QuarantineReason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    bgr: np.ndarray
    image_format: str
    image_mode: str
    width: int
    height: int
    exif_transposed: bool


def _other_format(data: bytes) -> str | None:
    head = data[:32].lstrip()
    for signature, name in _OTHER_IMAGE_SIGNATURES:
        if head.startswith(signature):
            return name
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"msf1"):
        return "HEIF/AVIF"
    return None


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16-bit and float images to 8 bits by their nominal range, not their content."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if finite.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(finite * scale, 0, 255).astype(np.uint8)
    top = 65535 if array.max(initial=0) > 255 else 255
    return np.clip(array.astype(np.float64) * (255.0 / top), 0, 255).round().astype(np.uint8)


def _to_bgr(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent pixels become white paper, not black, which would read as ink.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    elif mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        grey = _to_uint8(np.asarray(image))
        return np.repeat(grey[:, :, None], 3, axis=2)
    elif mode != "RGB":
        # CMYK (Adobe-inverted JPEGs included), YCbCr, LAB, P, L and 1 all convert correctly.
        image = image.convert("RGB")
    rgb = np.asarray(image)
    return np.ascontiguousarray(rgb[:, :, ::-1])


# EXIF orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8), or 1 when the EXIF block is absent, unreadable or says
    something that is not an orientation.

    EXIF is metadata beside intact pixels: a damaged block must not cost the picture, so it
    is read apart from the pixels (``ImageOps.exif_transpose`` would parse it again and raise
    on junk) and a value it cannot vouch for means "as stored".
    """
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def decode_image(data: bytes, *, max_pixels: int, min_side: int) -> DecodedImage:
    if not data:
        raise ImageRejected(QuarantineReason.EMPTY_FILE, "the file has zero bytes")
    other = _other_format(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
    except Image.DecompressionBombError as error:
        raise ImageRejected(QuarantineReason.DECOMPRESSION_BOMB, str(error)) from error
    except UnidentifiedImageError as error:
        if other:
            raise ImageRejected(QuarantineReason.UNSUPPORTED_FORMAT,
                                f"{other} images are not supported") from error
        if data.startswith(_TRUNCATABLE_SIGNATURES):
            raise ImageRejected(QuarantineReason.TRUNCATED_IMAGE,
                                "image header is cut short or corrupt") from error
        raise ImageRejected(QuarantineReason.NOT_AN_IMAGE,
                            "the bytes are not an image") from error
    except Exception as error:
        # OSError, SyntaxError and ValueError are Pillow's usual answers; a hostile header
        # can also raise struct.error, IndexError and others from its parsers.
        reason = (QuarantineReason.TRUNCATED_IMAGE if data.startswith(_TRUNCATABLE_SIGNATURES)
                  else QuarantineReason.CORRUPT_IMAGE)
        raise ImageRejected(reason, f"header cut short or corrupt: {type(error).__name__}: "
                                    f"{error}") from error
    image_format = image.format or "unknown"
    if image_format not in SUPPORTED_FORMATS:
        raise ImageRejected(
            QuarantineReason.UNSUPPORTED_FORMAT,
            f"{image_format} images are not supported (use {', '.join(sorted(SUPPORTED_FORMATS))})",
        )
    if width * height > max_pixels:
        raise ImageRejected(
            QuarantineReason.DECOMPRESSION_BOMB,
            f"declares {width}x{height} = {width * height:,} pixels, over the {max_pixels:,} limit",
        )
    if min(width, height) < min_side:
        raise ImageRejected(
            QuarantineReason.IMAGE_TOO_SMALL,
            f"{width}x{height} is smaller than {min_side} px on a side: too small for a face",
        )
    mode = image.mode
    try:
        image.load()
        orientation = _orientation(image)
        transposed = image.transpose(_TRANSPOSE[orientation]) if orientation > 1 else image
        bgr = _to_bgr(transposed)
    except OSError as error:
        message = str(error)
        reason = (QuarantineReason.TRUNCATED_IMAGE if "truncat" in message.lower()
                  else QuarantineReason.CORRUPT_IMAGE)
        raise ImageRejected(reason, f"pixel data unreadable: {message}") from error
    except Image.DecompressionBombError as error:
        raise ImageRejected(QuarantineReason.DECOMPRESSION_BOMB, str(error)) from error
    except Exception as error:
        # Pillow's decoders meet hostile bytes with whatever their parsing code raises
        # (struct.error, IndexError, TypeError, ...): any of them means "unusable file",
        # never a crashed run.
        raise ImageRejected(QuarantineReason.CORRUPT_IMAGE,
                            f"pixel data unreadable: {type(error).__name__}: {error}") from error
    return DecodedImage(
        bgr=bgr,
        image_format=image_format,
        image_mode=mode,
        width=width,
        height=height,
        exif_transposed=orientation > 1,
    )
