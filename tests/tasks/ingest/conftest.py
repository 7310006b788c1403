"""Small image sources built from the procedural demo faces (no third-party images)."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tasks.demo.faces import draw_face


def png_bytes(bgr: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", bgr)
    assert ok
    return buffer.tobytes()


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92, **options)
    return out.getvalue()


def face_pil(identity: int, photo: int = 0) -> Image.Image:
    return Image.fromarray(draw_face(identity, photo)[:, :, ::-1].copy())


@pytest.fixture
def good_source(tmp_path: Path) -> Path:
    """Three identities with two photos each, as a folder source."""
    root = tmp_path / "good"
    for identity in range(3):
        folder = root / f"person-{identity}"
        folder.mkdir(parents=True)
        for photo in range(2):
            (folder / f"{photo}.png").write_bytes(png_bytes(draw_face(identity, photo)))
    return root
