"""Embed in shards (on a Dask cluster): encoders run on workers, one writer fills the tables.

1. ``describe_encoder_task`` (on a worker) loads an encoder there and names it: name, size,
   version. The planning process never loads a model (it may have no GPU).
2. ``plan_embedding`` (the flow's process) finds the faces lacking a vector of that version,
   exactly as ``tasks.embed.embed_faces_with`` does, and writes them, ``shard_size`` at a
   time and in the same order, into item files under ``shards/embed/``.
3. ``encode_shard_task`` (a task per shard, on any worker) reads its item file and the faces'
   crops, encodes them with the encoder loaded once per worker process
   (``tasks.encoders.load``) and writes the vectors to its own Parquet file, with a checksum
   of its rows. It returns that file's name, row count and checksum.
4. ``merge_embeddings`` (the flow's process, the one writer of the embedding tables) upserts
   each shard's vectors by ``face_id``, tags the tables and exports them, and removes the
   shard files it merged.

The vectors are the local run's: bit for bit where the workers run the encoders on the same
intra-op thread count (batches do not change a vector), and SFace on any count; EfficientNet
on a worker's one thread differs from two threads by ~2.5e-7. A shard whose worker dies is
run again by Dask on another worker; its file is written whole or not at all, and the merge
upserts by key, so a face gets one vector, never zero or two. Shard files are named by the
encoder version and the face ids, so a rerun after a kill reuses those already written.
"""

from __future__ import annotations

import hashlib
import shutil
import time

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from schemas.encoders import EncoderSpec
from schemas.vectors import table_name
from tasks import storage
from tasks.embed import (
    EmbedReport,
    TableReport,
    checked_vectors,
    faces_to_embed,
    finish_table,
    read_crops,
    vector_matrix,
    vector_rows,
)
from tasks.encoders import load
from tasks.encoders.base import EncoderError
from tasks.runtime import retry_transient
from tasks.storage import CorruptFileError, Workspace

SHARDS_DIR = "shards/embed"

ITEMS_SCHEMA = pa.schema([pa.field("face_id", pa.string(), nullable=False),
                          pa.field("identity_id", pa.string(), nullable=False),
                          pa.field("kind", pa.string(), nullable=False)])


def _result_schema(dim: int) -> pa.Schema:
    # The items named as Parquet names them on reading, so the rows' checksum survives.
    return pa.schema([pa.field("face_id", pa.string(), nullable=False),
                      pa.field("vector", pa.list_(pa.field("element", pa.float32()), dim),
                               nullable=False)])


class EncoderInfo(BaseModel):
    """What a worker's loaded encoder is: enough to name its table and judge stored rows."""

    model_config = ConfigDict(frozen=True)

    role: str
    name: str
    dim: int
    version: str


class EmbedShard(BaseModel):
    """One shard of one encoder's work (paths relative to the workspace)."""

    model_config = ConfigDict(frozen=True)

    shard_id: str
    items: int
    items_path: str
    result_path: str
    encoder_version: str  # what the planning saw; a worker with other weights refuses


class EmbedShardDone(BaseModel):
    shard_id: str
    rows: int
    result_path: str
    rows_sha256: str
    reused: bool = False
    seconds: float = 0.0


class EmbedPlan(BaseModel):
    """One encoder's shards; small, the list of faces stays in the item files."""

    spec: EncoderSpec
    encoder: EncoderInfo
    table: str
    faces: int  # stored faces
    todo: int  # of them lacking a current vector
    shards: list[EmbedShard] = Field(default_factory=list)


def describe(spec: EncoderSpec) -> EncoderInfo:
    encoder = load(spec)
    return EncoderInfo(role=spec.role, name=encoder.name, dim=encoder.dim,
                       version=encoder.version)


@task(name="describe-encoder", task_run_name="describe-{spec.role}-{spec.name}", retries=2,
      retry_delay_seconds=5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def describe_encoder_task(spec: EncoderSpec) -> EncoderInfo:
    """Load the encoder on a worker (kept there for its shards) and say what it is."""
    return describe(spec)


def plan_embedding(workspace: Workspace, spec: EncoderSpec, encoder: EncoderInfo,
                   shard_size: int = 512) -> EmbedPlan:
    if spec.role == "text":
        raise ValueError("text encoders embed style descriptions, not faces")
    table = table_name(spec.role, encoder.name, encoder.dim)
    n_faces, todo = faces_to_embed(workspace, table, encoder.dim, encoder.version)
    plan = EmbedPlan(spec=spec, encoder=encoder, table=table, faces=n_faces,
                     todo=todo.num_rows)
    for start in range(0, todo.num_rows, shard_size):
        rows = todo.slice(start, shard_size).cast(ITEMS_SCHEMA)
        digest = hashlib.sha256(f"{table}|{encoder.version}".encode())
        for face_id in rows.column("face_id").to_pylist():
            digest.update(face_id.encode())
        shard_id = digest.hexdigest()[:16]
        shard = EmbedShard(shard_id=shard_id, items=rows.num_rows,
                           items_path=f"{SHARDS_DIR}/{shard_id}.items.parquet",
                           result_path=f"{SHARDS_DIR}/{shard_id}.parquet",
                           encoder_version=encoder.version)
        storage.write_parquet_atomic(rows, workspace.root / shard.items_path, checksum=True)
        plan.shards.append(shard)
    return plan


def _done(shard: EmbedShard, rows: pa.Table, reused: bool, started: float) -> EmbedShardDone:
    return EmbedShardDone(shard_id=shard.shard_id, rows=rows.num_rows,
                          result_path=shard.result_path, rows_sha256=storage.rows_sha256(rows),
                          reused=reused, seconds=time.perf_counter() - started)


def encode_shard(workspace: Workspace, spec: EncoderSpec, shard: EmbedShard) -> EmbedShardDone:
    """Vectors of one shard's faces into its result file; an intact earlier one is kept."""
    started = time.perf_counter()
    result = workspace.root / shard.result_path
    try:
        rows = storage.read_verified_parquet(result)
        if rows.num_rows == shard.items:
            return _done(shard, rows, True, started)
    except (FileNotFoundError, CorruptFileError):
        pass
    encoder = load(spec)
    if encoder.version != shard.encoder_version:
        raise EncoderError(
            f"this worker's {spec.label()} is version {encoder.version}, the run was planned "
            f"for {shard.encoder_version}: give every worker the same weights")
    ids = storage.read_verified_parquet(workspace.root / shard.items_path) \
        .column("face_id").to_pylist()
    vectors = checked_vectors(encoder.encode(read_crops(workspace, ids)),
                              (len(ids), encoder.dim), encoder)
    rows = pa.table({"face_id": ids,
                     "vector": pa.FixedSizeListArray.from_arrays(
                         pa.array(vectors.reshape(-1)), encoder.dim)},
                    schema=_result_schema(encoder.dim))
    storage.write_parquet_atomic(rows, result, checksum=True)
    return _done(shard, rows, False, started)


@task(name="embed-shard", task_run_name="embed-{spec.role}-{shard.shard_id}", retries=2,
      retry_delay_seconds=5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def encode_shard_task(workspace: str, spec: EncoderSpec, shard: EmbedShard) -> EmbedShardDone:
    """Thin Prefect wrapper: references in and out; the encoder loads in the worker."""
    return encode_shard(Workspace.open(workspace), spec, shard)


def _merge_plan(workspace: Workspace, plan: EmbedPlan, done: dict[str, EmbedShardDone],
                run_id: str) -> tuple[TableReport, list[str]]:
    info, merged, failed = plan.encoder, 0, []
    for shard in plan.shards:
        finished = done.get(shard.shard_id)
        if finished is None:
            failed.append(shard.shard_id)
            continue
        items = storage.read_verified_parquet(workspace.root / shard.items_path)
        rows = storage.read_verified_parquet(workspace.root / shard.result_path)
        if (rows.num_rows != shard.items or storage.rows_sha256(rows) != finished.rows_sha256
                or rows.column("face_id").to_pylist() != items.column("face_id").to_pylist()):
            raise CorruptFileError(f"{shard.result_path} is not the file its task wrote; run "
                                   f"embed again")
        vectors = vector_matrix(rows.column("vector"), info.dim)
        storage.upsert(workspace, plan.table, vector_rows(items, vectors, info.name,
                                                          info.version, info.dim, run_id),
                       "face_id")
        merged += rows.num_rows
        for path in (shard.items_path, shard.result_path):
            (workspace.root / path).unlink(missing_ok=True)
    return finish_table(workspace, plan.table, info.name, info.version, info.dim, merged,
                        plan.faces - (plan.todo - merged), run_id), failed


def merge_embeddings(workspace: Workspace, plans: list[EmbedPlan], done: list[EmbedShardDone],
                     run_id: str) -> tuple[EmbedReport, list[str]]:
    """Upsert every finished shard; returns the report and the shards that did not finish
    (their faces keep no vector until the next run, which embeds exactly those)."""
    started = time.perf_counter()
    by_id = {d.shard_id: d for d in done}
    report, failed = EmbedReport(run_id=run_id), []
    for plan in plans:
        report.tables[plan.spec.role], missing = _merge_plan(workspace, plan, by_id, run_id)
        failed += missing
    report.seconds = time.perf_counter() - started
    return report, failed


def remove_shards(workspace: Workspace) -> None:
    """Remove every embed shard file (a finished run's, and any a killed run left)."""
    shutil.rmtree(workspace.root / SHARDS_DIR, ignore_errors=True)
