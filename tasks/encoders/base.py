"""The one interface every encoder plug-in implements.

Identity and image encoders take a batch of aligned 112x112 faces as a uint8 array
(N, 112, 112, 3) in OpenCV's BGR order, the form ingestion stores; text encoders take
a list of strings. All return L2-normalised float32 vectors (N, dim). ``version``
changes whenever the weights or the preprocessing change, so stored vectors can be
compared against it to decide what needs recomputing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, get_args, runtime_checkable

import numpy as np

from schemas.encoders import Role

ROLES: tuple[Role, ...] = get_args(Role)


@runtime_checkable
class Encoder(Protocol):
    name: str
    role: Role
    dim: int
    version: str

    def encode(self, batch: np.ndarray | Sequence[str]) -> np.ndarray: ...


class EncoderError(ValueError):
    """A misconfigured encoder: bad weight path, wrong architecture, wrong input."""


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def file_digest(path: str | Path, length: int = 12) -> str:
    """Short sha256 of a weights file; part of every encoder version string."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def check_face_batch(batch: np.ndarray, size: int = 112) -> np.ndarray:
    """Reject inputs that are not aligned BGR crops before they reach a model."""
    batch = np.asarray(batch)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[1:] != (size, size, 3) or batch.dtype != np.uint8:
        raise EncoderError(
            f"expected aligned faces as uint8 (N, {size}, {size}, 3) BGR, "
            f"got {batch.dtype} {tuple(batch.shape)}"
        )
    return batch
