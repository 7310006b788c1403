"""Reading stored faces: rows by id, aligned crops, identity-encoder vectors.

The ground floor for every stage that reads what ingest and embed stored about a face: the
generator's training set and shards, the rendered styles, the recognizer's training set and
its evaluation. Each reads crops the same way, from here, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np

from schemas.records import ALIGNED_SIZE
from tasks import storage
from tasks.embed import embed_faces_with, embedding_table
from tasks.ingest.align import decode_png
from tasks.storage import FACES, Workspace


def rows_by_id(workspace: Workspace, table: str, key: str, ids: Iterable[str],
               columns: list[str]) -> dict[str, dict[str, Any]]:
    """Rows of ``table`` whose ``key`` is in ``ids``, keyed by it.

    Small sets use IN filters in chunks, large ones one read (``storage.read_ids``).
    """
    wanted = list(dict.fromkeys(ids))
    select = list(dict.fromkeys([key, *columns]))
    rows = storage.read_ids(workspace, table, key, wanted, columns=select)
    return {row[key]: row for row in rows.to_pylist()}


def read_crops(workspace: Workspace, face_ids: Iterable[str]) -> dict[str, np.ndarray]:
    """Aligned crops (uint8 BGR, as ingestion stores them) by face id; faces that are not
    stored are absent (``crop_stack`` refuses them)."""
    found = rows_by_id(workspace, FACES, "face_id", face_ids, ["aligned_png"])
    return {face: decode_png(row["aligned_png"]) for face, row in found.items()}


def crop_stack(workspace: Workspace, face_ids: Sequence[str]) -> np.ndarray:
    """Aligned 112x112 BGR crops of stored faces, stacked in ``face_ids`` order."""
    crops = read_crops(workspace, face_ids)
    missing = [f for f in face_ids if f not in crops]
    if missing:
        raise LookupError(f"{len(missing)} faces are not in the faces table, e.g. {missing[0]}")
    if not face_ids:
        return np.zeros((0, 112, 112, 3), np.uint8)
    return np.stack([crops[f] for f in face_ids])


def encoder_vectors(workspace: Workspace, encoder: Any, face_ids: Sequence[str],
                    run_id: str = "local") -> np.ndarray:
    """Identity-encoder vectors of stored faces, computing only those missing or stale.

    Goes through ``embed_faces_with`` so vectors land in the shared embedding table and
    the next evaluation or training run reuses them.
    """
    report = embed_faces_with(workspace, "identity", encoder, run_id=run_id)
    table = embedding_table("identity", encoder)
    found = rows_by_id(workspace, table, "face_id", face_ids, ["vector", "encoder_version"])
    stale = [f for f in face_ids
             if f not in found or found[f]["encoder_version"] != encoder.version]
    if stale:
        raise LookupError(f"{len(stale)} faces have no {encoder.version} vector in {table} "
                          f"after embedding ({report.computed} computed), e.g. {stale[0]}")
    if not face_ids:
        return np.zeros((0, encoder.dim), np.float32)
    return np.asarray([found[f]["vector"] for f in face_ids], dtype=np.float32)


def to_aligned(image: np.ndarray) -> np.ndarray:
    """Any sketch drawn in the aligned frame -> uint8 (112, 112, 3) BGR, what encoders take.

    Generated sketches are drawn at the generator's resolution in the ArcFace-aligned frame,
    so resizing (never re-detecting) puts the face where the encoders expect it.
    """
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[:2] != (ALIGNED_SIZE, ALIGNED_SIZE):
        shrink = image.shape[0] > ALIGNED_SIZE
        image = cv2.resize(image, (ALIGNED_SIZE, ALIGNED_SIZE),
                           interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(image, dtype=np.uint8)
