"""Identity hygiene: which drawn faces may become people in the dataset.

A generator does not know who it has drawn. Three failures would quietly poison a
recognizer's training data, so each is a refusal with a reason, like ingestion's
quarantine:
- ``no_face``: YuNet finds no face (ingestion would quarantine it anyway);
- ``bad_alignment``: the five landmarks fit the ArcFace template badly, so the crop every
  identity encoder sees is not the frontal face it was trained on;
- ``low_detection_score``: optional, a broken face YuNet barely recognises;
- ``duplicate_identity``: SFace says the face is someone already drawn or stored, so two
  "people" would be one (decided in ``tasks.synthesize.source``, in candidate order).

Detection and alignment are ingestion's own functions with ingestion's threshold, run on the
exact pixels that are saved, so what passes here is what ``ingest`` will store.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np

from schemas.synthesize import HygieneThresholds, SynthRefusal
from tasks.encoders.sface import SFaceEncoder
from tasks.ingest.align import TEMPLATE, align_face, detect_faces, similarity_transform


@dataclass(frozen=True)
class FaceCheck:
    """What the detector made of one drawn image; ``crop`` is the aligned 112x112 face."""

    reason: SynthRefusal | None
    detail: str
    score: float | None = None
    alignment_error: float | None = None
    n_faces: int = 0
    crop: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def alignment_error(landmarks: np.ndarray) -> float:
    """RMS distance, in pixels of the 112x112 crop, between the landmarks mapped by the
    best similarity transform and the template: 0 for a face that fits exactly. Drawn
    frontal faces measure 1.5-6; a turned or melted face much more."""
    points = np.asarray(landmarks, dtype=np.float64)
    matrix = similarity_transform(points)
    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    return float(np.sqrt(((mapped - TEMPLATE) ** 2).sum(axis=1).mean()))


def check_face(bgr: np.ndarray, hygiene: HygieneThresholds, detection_threshold: float = 0.6,
               max_side: int = 1024) -> FaceCheck:
    """Detect, score and align one image; refuse it with a reason or return its crop."""
    found = detect_faces(bgr, detection_threshold, max_side)
    if not found:
        return FaceCheck("no_face", f"YuNet found no face at threshold {detection_threshold}")
    face = found[0]
    error = alignment_error(face.landmarks)
    common = {"score": face.score, "alignment_error": error, "n_faces": len(found)}
    if face.score < hygiene.min_detection_score:
        return FaceCheck("low_detection_score",
                         f"detection score {face.score:.3f} < {hygiene.min_detection_score}",
                         **common)
    if error > hygiene.max_alignment_error:
        return FaceCheck("bad_alignment",
                         f"landmarks off the template by {error:.1f} px RMS > "
                         f"{hygiene.max_alignment_error}", **common)
    return FaceCheck(None, "", crop=align_face(bgr, face.landmarks), **common)


_ENCODER_LOCK = threading.Lock()


@functools.lru_cache(maxsize=2)
def _sface(threads: int):
    return SFaceEncoder(threads=threads, batch_size=16)


def identity_vectors(crops: list[np.ndarray], threads: int = 1) -> tuple[np.ndarray, str]:
    """SFace vectors (L2-normalised, float32) of aligned crops, and the encoder version.

    The same encoder and version as the workspace's default identity table, so vectors of
    stored photos compare with these directly.
    """
    with _ENCODER_LOCK:
        encoder = _sface(threads)
    if not crops:
        return np.zeros((0, encoder.dim), np.float32), encoder.version
    return encoder.encode(np.stack(crops)).astype(np.float32), encoder.version


def nearest(vector: np.ndarray, others: np.ndarray) -> tuple[int, float]:
    """Index and cosine of the closest row of ``others`` (-1, -1.0 when there is none)."""
    if len(others) == 0:
        return -1, -1.0
    scores = others @ vector
    best = int(np.argmax(scores))
    return best, float(scores[best])


def pair_similarities(vectors: np.ndarray) -> np.ndarray:
    """Cosines of every unordered pair of rows (the impostor distribution of identities)."""
    if len(vectors) < 2:
        return np.zeros(0, np.float32)
    scores = vectors @ vectors.T
    return scores[np.triu_indices(len(vectors), k=1)]
