"""Compute identity and image vectors for stored faces, and text vectors for styles.

Each encoder has its own table (``emb_<role>_<name>_<dim>``) keyed by face id; a row
is recomputed only when its ``encoder_version`` differs from the loaded encoder's, so
a nightly run embeds only new faces and swapping weights re-embeds everything.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from schemas.encoders import EncoderSpec
from schemas.records import FACES_SCHEMA, embedding_schema
from schemas.vectors import VectorTable, table_name
from tasks import storage
from tasks.encoders import load
from tasks.encoders.base import Encoder
from tasks.ingest.align import decode_png
from tasks.progress import Progress
from tasks.runtime import retry_transient
from tasks.storage import FACES, Workspace

TEXT_SCHEMA_KEY = "text_id"


class TableReport(BaseModel):
    table: str
    encoder: str
    encoder_version: str
    dim: int
    computed: int
    reused: int
    rows: int
    parquet: str | None = None


class EmbedReport(BaseModel):
    run_id: str
    tables: dict[str, TableReport] = Field(default_factory=dict)  # by role
    seconds: float = 0.0


def embedding_table(role: str, encoder: Encoder) -> str:
    """The table ``encoder`` writes for ``role`` (named by ``schemas.vectors.table_name``)."""
    return table_name(role, encoder.name, encoder.dim)


def stored_versions(workspace: Workspace, table: str) -> Counter[str]:
    """How many rows of an embedding table each encoder version produced."""
    rows = storage.read(workspace, table, columns=["encoder_version"])
    if rows.num_rows == 0:
        return Counter()
    counts = pc.value_counts(rows.column("encoder_version")).to_pylist()
    return Counter({c["values"]: c["counts"] for c in counts})


def vector_matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A fixed-size-list vector column as a writable float32 (n, dim) matrix, without a row
    loop, copied once: each chunk straight into the matrix (combining the chunks first, then
    converting, copied a version's image vectors twice into fresh memory)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    matrix = np.empty((sum(len(c) for c in chunks), dim), np.float32)
    at = 0
    for chunk in chunks:
        values = chunk.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        matrix[at:at + len(values)] = values
        at += len(values)
    if at != len(matrix):
        raise ValueError(f"vector column of {len(matrix)} rows holds {at} vectors (nulls)")
    return matrix


def current_vectors(workspace: Workspace, table: VectorTable,
                    face_ids: Iterable[str]) -> dict[str, np.ndarray]:
    """The vectors of these faces from ``table``'s current encoder version; a face without
    one is simply absent (callers decide whether that is an error)."""
    rows = storage.read_ids(workspace, table.table, "face_id", face_ids,
                            columns=["face_id", "vector"],
                            where=f"encoder_version = {storage.quote(table.version)}")
    matrix = vector_matrix(rows.column("vector"), table.dim)
    return dict(zip(rows.column("face_id").to_pylist(), matrix, strict=True))


def _chunks(n: int, size: int) -> Iterable[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def checked_vectors(vectors: np.ndarray, expected: tuple[int, int],
                    encoder: Encoder) -> np.ndarray:
    if vectors.shape != expected or not np.isfinite(vectors).all():
        raise ValueError(
            f"{encoder.name} returned {vectors.shape} with "
            f"{int((~np.isfinite(vectors)).any(axis=-1).sum()) if vectors.ndim == 2 else '?'} "
            f"non-finite rows; expected finite {expected}"
        )
    return vectors.astype(np.float32, copy=False)


def faces_to_embed(workspace: Workspace, table: str, dim: int,
                   version: str) -> tuple[int, pa.Table]:
    """How many faces are stored, and those (``face_id``, ``identity_id``, ``kind``) whose
    vector in ``table`` is missing or from another encoder version, in the faces table's
    order. Also makes sure the table exists."""
    schema = embedding_schema(dim)
    faces = storage.read(workspace, FACES, columns=["face_id", "identity_id", "kind"],
                         schema=FACES_SCHEMA)
    stored = storage.read(workspace, table, columns=["face_id", "encoder_version"],
                          schema=schema)
    current = {
        face for face, stored_version in zip(stored.column("face_id").to_pylist(),
                                             stored.column("encoder_version").to_pylist(),
                                             strict=True)
        if stored_version == version
    }
    todo = faces.filter(pc.invert(pc.is_in(
        faces.column("face_id"), value_set=pa.array(sorted(current), pa.string()))))
    storage.ensure_table(workspace, table, schema)
    return faces.num_rows, todo


def read_crops(workspace: Workspace, ids: list[str]) -> np.ndarray:
    """The aligned crops of these faces, in this order, as a (n, 112, 112, 3) BGR batch."""
    crops_table = storage.read(workspace, FACES, columns=["face_id", "aligned_png"],
                               where=storage.where_in("face_id", ids))
    crop_of = dict(zip(crops_table.column("face_id").to_pylist(),
                       crops_table.column("aligned_png").to_pylist(), strict=True))
    return np.stack([decode_png(crop_of[i]) for i in ids])


def vector_rows(rows: pa.Table, vectors: np.ndarray, encoder_name: str, version: str,
                dim: int, run_id: str) -> pa.Table:
    """Rows of an embedding table: ``rows`` (face_id, identity_id, kind) with their vectors."""
    n = rows.num_rows
    now = dt.datetime.now(dt.UTC)
    return pa.table({
        "face_id": rows.column("face_id"),
        "identity_id": rows.column("identity_id"),
        "kind": rows.column("kind"),
        "encoder": [encoder_name] * n,
        "encoder_version": [version] * n,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
        "run_id": [run_id] * n,
        "embedded_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
    }, schema=embedding_schema(dim))


def finish_table(workspace: Workspace, table: str, encoder_name: str, version: str, dim: int,
                 computed: int, faces: int, run_id: str) -> TableReport:
    """Tag the table with the run and export its Parquet mirror."""
    storage.tag(workspace, table, f"run-{run_id}")
    parquet = storage.export_parquet(workspace, table)
    return TableReport(
        table=table, encoder=encoder_name, encoder_version=version, dim=dim,
        computed=computed, reused=faces - computed, rows=storage.count(workspace, table),
        parquet=str(parquet) if parquet else None,
    )


def embed_faces_with(
    workspace: Workspace,
    role: str,
    encoder: Encoder,
    *,
    run_id: str = "local",
    chunk: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> TableReport:
    """Embed every stored face whose vector from this encoder version is missing or stale.

    ``chunk`` faces are encoded and written at a time (a sharded run, ``tasks.embed_shards``,
    encodes a shard at a time).
    """
    name = embedding_table(role, encoder)
    n_faces, todo = faces_to_embed(workspace, name, encoder.dim, encoder.version)
    for part in _chunks(todo.num_rows, chunk):
        rows = todo.slice(part.start, part.stop - part.start)
        ids = rows.column("face_id").to_pylist()
        # Crops are fetched per chunk so memory stays bounded by the chunk, not the table.
        vectors = checked_vectors(encoder.encode(read_crops(workspace, ids)),
                                  (len(ids), encoder.dim), encoder)
        storage.upsert(workspace, name, vector_rows(rows, vectors, encoder.name,
                                                    encoder.version, encoder.dim, run_id),
                       "face_id")
        if progress:
            progress(part.stop, todo.num_rows)
    return finish_table(workspace, name, encoder.name, encoder.version, encoder.dim,
                        todo.num_rows, n_faces, run_id)


def embed_faces(
    workspace: Workspace,
    specs: Iterable[EncoderSpec],
    *,
    run_id: str = "local",
    progress: Callable[[int, int], None] | None = None,
) -> EmbedReport:
    started = time.perf_counter()
    report = EmbedReport(run_id=run_id)
    for spec in specs:
        if spec.role == "text":
            raise ValueError("text encoders embed style descriptions, not faces")
        report.tables[spec.role] = embed_faces_with(workspace, spec.role, load(spec),
                                                    run_id=run_id, progress=progress)
    report.seconds = time.perf_counter() - started
    return report


def embed_texts(workspace: Workspace, texts: dict[str, str], spec: EncoderSpec,
                run_id: str = "local") -> TableReport:
    """Vectors for named texts (style prompts), keyed by name; stale versions recomputed."""
    encoder = load(spec)
    name = embedding_table("text", encoder)
    schema = pa.schema([
        pa.field(TEXT_SCHEMA_KEY, pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("encoder_version", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), encoder.dim), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ])
    stored = storage.read(workspace, name, schema=schema)
    fresh = {(k, t, v) for k, t, v in zip(stored.column(TEXT_SCHEMA_KEY).to_pylist(),
                                          stored.column("text").to_pylist(),
                                          stored.column("encoder_version").to_pylist(),
                                          strict=True)}
    todo = {k: t for k, t in texts.items() if (k, t, encoder.version) not in fresh}
    storage.ensure_table(workspace, name, schema)
    if todo:
        keys = sorted(todo)
        vectors = checked_vectors(encoder.encode([todo[k] for k in keys]),
                                  (len(keys), encoder.dim), encoder)
        storage.upsert(workspace, name, pa.table({
            TEXT_SCHEMA_KEY: keys,
            "text": [todo[k] for k in keys],
            "encoder_version": [encoder.version] * len(keys),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)),
                                                        encoder.dim),
            "run_id": [run_id] * len(keys),
        }, schema=schema), TEXT_SCHEMA_KEY)
    storage.tag(workspace, name, f"run-{run_id}")
    parquet = storage.export_parquet(workspace, name)
    return TableReport(
        table=name, encoder=encoder.name, encoder_version=encoder.version, dim=encoder.dim,
        computed=len(todo), reused=len(texts) - len(todo), rows=storage.count(workspace, name),
        parquet=str(parquet) if parquet else None,
    )


def load_vectors(workspace: Workspace, table: str, where: str | None = None) -> pa.Table:
    """Rows of an embedding table with vectors, for evaluation and generation."""
    return storage.read(workspace, table, where=where)


@task(name="embed", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE)
def embed_task(workspace: str, specs: list[EncoderSpec], run_id: str = "local") -> EmbedReport:
    """Thin Prefect wrapper; encoders load inside the worker process (``encoders.load``)."""
    with Progress("embed faces", unit="face") as progress:
        return embed_faces(Workspace.open(workspace), specs, run_id=run_id, progress=progress)
