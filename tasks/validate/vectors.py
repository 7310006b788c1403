"""Sketch pixels and sketch vectors for validation, encoded once and stored.

A sketch is compared with the stored face vectors of its mugshot, so it must be encoded by the
very encoder version that produced them: the version is read from the face table, and an
encoder that loads as something else is refused rather than silently compared across
versions. Sketch vectors go to their own table per encoder (``sketch_emb_<role>_<name>_<dim>``)
keyed by sketch id and checked against the PNG's sha256, so a re-validation, a threshold change
or a new gallery face never re-encodes a sketch; only new or redrawn PNGs are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from schemas.encoders import EncoderSpec
from schemas.validation import Reason
from schemas.vectors import VectorTable, table_dim, table_prefix
from tasks import storage
from tasks.digests import FileDigests
from tasks.embed import stored_versions, vector_matrix
from tasks.encoders import load
from tasks.storage import Workspace


class StaleVectorsError(LookupError):
    """The workspace's face vectors do not come from the encoder validation would use."""


def resolve_source(workspace: Workspace, spec: EncoderSpec) -> VectorTable:
    """The face table of ``spec``'s encoder and its version, without loading the model when
    the workspace leaves no doubt (one table, one version): loading costs seconds, and an
    unchanged dataset should re-validate in well under that."""
    prefix = table_prefix(spec.role, spec.name)
    tables = sorted(t for t in storage.table_names(workspace)
                    if t.startswith(prefix) and t[len(prefix):].isdigit())
    if len(tables) == 1:
        versions = stored_versions(workspace, tables[0])
        if len(versions) == 1 and not spec.options():
            (version,) = versions
            return VectorTable(role=spec.role, table=tables[0], version=version,
                               dim=table_dim(tables[0]), spec=spec)

    encoder = load(spec)
    source = VectorTable.of(spec.role, encoder, spec)
    if source.table not in tables or not stored_versions(workspace, source.table)[source.version]:
        raise StaleVectorsError(
            f"no {spec.role} vectors from {encoder.version} in {workspace.root}: run "
            f"`clip4sketch embed` with this encoder before validating"
        )
    return source


def gallery(workspace: Workspace, source: VectorTable
            ) -> tuple[list[str], list[str], np.ndarray]:
    """Every mugshot's (face ids, identity ids, vectors): who a sketch must not look like."""
    rows = storage.read(workspace, source.table, columns=["face_id", "identity_id", "vector"],
                        where=f"kind = 'photo' AND encoder_version = "
                              f"{storage.quote(source.version)}")
    rows = rows.sort_by("face_id")  # a stable order makes the fingerprint stable
    return (rows.column("face_id").to_pylist(), rows.column("identity_id").to_pylist(),
            vector_matrix(rows.column("vector"), source.dim))


def gallery_fingerprint(face_ids: Sequence[str], identity_ids: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for face, identity in zip(face_ids, identity_ids, strict=True):
        digest.update(f"{face}\t{identity}\n".encode())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- pixels


def check_png(png_path: str | None, sha: str | None,
              digests: FileDigests) -> tuple[str | None, str | None]:
    """(problem, sha256 of the file): problem is None when the PNG is there with the bytes
    the row recorded, else a Reason. A row that recorded no sha gets the file's.
    ``digests`` (tasks/digests.py) hashes the files under the workspace, or remembers."""
    actual = digests.sha256(png_path) if png_path is not None else None
    if actual is None:
        return Reason.MISSING_PNG.value, sha
    if sha is not None and actual != sha:
        return Reason.CHECKSUM_MISMATCH.value, sha
    return None, actual


def read_image(root: Path, png_path: str) -> np.ndarray | None:
    """uint8 grey (H, W) or BGR (H, W, 3) as stored; None if it does not decode."""
    data = np.frombuffer((root / png_path).read_bytes(), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        image = np.rint(image[:, :, :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image if image.dtype == np.uint8 else None


# --------------------------------------------------------------------------- sketch vectors


def _schema(dim: int) -> pa.Schema:
    return pa.schema([
        pa.field("sketch_id", pa.string(), nullable=False),
        pa.field("png_sha256", pa.string(), nullable=False),
        pa.field("encoder_version", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ])


def _cached(workspace: Workspace, source: VectorTable,
            items: Sequence[tuple[str, str]]) -> dict[str, np.ndarray]:
    wanted = dict(items)
    rows = storage.read_ids(workspace, source.sketch_table, "sketch_id", wanted,
                            columns=["sketch_id", "png_sha256", "vector"],
                            where=f"encoder_version = {storage.quote(source.version)}",
                            schema=_schema(source.dim))
    matrix = vector_matrix(rows.column("vector"), source.dim)
    return {sid: vector for sid, sha, vector in zip(rows.column("sketch_id").to_pylist(),
                                                    rows.column("png_sha256").to_pylist(),
                                                    matrix, strict=True)
            if wanted.get(sid) == sha}


def checked_encoder(source: VectorTable):
    """The encoder ``source.spec`` loads, refused unless it writes vectors like the table's."""
    if source.spec is None:
        raise ValueError(f"{source.table}: no encoder spec to encode more vectors with")
    encoder = load(source.spec)
    if encoder.version != source.version or encoder.dim != source.dim:
        raise StaleVectorsError(
            f"{source.table} holds vectors from {source.version} but {source.spec.label()} "
            f"loads as {encoder.version}: run `clip4sketch embed` with it first"
        )
    return encoder


def sketch_vectors(workspace: Workspace, source: VectorTable,
                   items: Sequence[tuple[str, str]],
                   crops: Callable[[Sequence[str]], np.ndarray],
                   run_id: str = "local") -> tuple[np.ndarray, int]:
    """Vectors of ``items`` ((sketch_id, png_sha256)) in order, and how many were encoded.

    ``crops(ids)`` returns aligned crops of the sketches that need encoding; it is only
    called for those, so a fully cached call decodes nothing.
    """
    found = _cached(workspace, source, items)
    todo = [(sid, sha) for sid, sha in items if sid not in found]
    if todo:
        encoder = checked_encoder(source)
        ids = [sid for sid, _ in todo]
        vectors = np.asarray(encoder.encode(crops(ids)), np.float32)
        if vectors.shape != (len(ids), source.dim) or not np.isfinite(vectors).all():
            raise ValueError(f"{source.spec.label()} returned unusable vectors {vectors.shape}")
        storage.ensure_table(workspace, source.sketch_table, _schema(source.dim))
        storage.upsert(workspace, source.sketch_table, pa.table({
            "sketch_id": ids,
            "png_sha256": [sha for _, sha in todo],
            "encoder_version": [source.version] * len(ids),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)),
                                                        source.dim),
            "run_id": [run_id] * len(ids),
        }, schema=_schema(source.dim)), "sketch_id")
        found.update(zip(ids, vectors, strict=True))
    matrix = np.stack([found[sid] for sid, _ in items]) if items else np.zeros(
        (0, source.dim), np.float32)
    return matrix, len(todo)


def stored_sketch_vectors(workspace: Workspace, source: VectorTable,
                          items: Sequence[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Already-stored sketch vectors (for dataset-level metrics: never encodes)."""
    return _cached(workspace, source, items)
