"""Ingest in shards (on a Dask cluster): decode, detect and align on workers, decide here.

Decoding, YuNet and alignment (``run.analyse``) are the costly part of ingestion and depend
only on a file's bytes and the ingest settings. Everything that depends on other files (which
identity claims a picture first, which sketch pairs with which photo, what is refused as a
duplicate) is cheap, and stays in the one process that writes the tables:

1. ``plan_source`` (this process) lists the source, hashes every file (its face id) and
   writes, for each content that may need decoding, ``(sha256, path)`` into shard item files
   under ``shards/ingest/`` — the tasks get these files' names, never the bytes;
2. ``analyse_shard`` (a task per shard, on any worker) reads the files again, checks their
   bytes still hash as planned, analyses them and writes the analyses to its own Parquet file
   (with a checksum of its rows);
3. ``merge_source`` (this process, the one writer of ``faces`` and ``quarantine``) replays
   ``run.ingest_source``'s loop with the analyses read back instead of computed.

So a sharded run stores the rows a local run stores. Shard files are named by their content
(the shas, the settings that change an analysis, YuNet's file and OpenCV's version): a worker
finding its result already written and intact (a rerun after a kill) reuses it, and the
files of a finished run are removed (``remove_shards``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from schemas.records import FACES_SCHEMA, QuarantineReason, QuarantineRecord
from schemas.settings import IngestSettings
from tasks import storage
from tasks.digests import FileDigests, source_digests
from tasks.ingest.align import YUNET, bundled_model
from tasks.ingest.run import (
    Analysis,
    IngestReport,
    analyse,
    ingest_source,
    known_pictures,
    read_hashes,
    read_unchanged,
    to_analyse,
)
from tasks.ingest.sources import SourceItem, read_source
from tasks.runtime import retry_transient
from tasks.storage import CorruptFileError, Workspace

SHARDS_DIR = "shards/ingest"

ITEMS_SCHEMA = pa.schema([pa.field("sha256", pa.string(), nullable=False),
                          pa.field("path", pa.binary(), nullable=False)])
# The record's fields that come from the pixels, typed as the faces table types them.
FACE_FIELDS = ("width", "height", "image_format", "image_mode", "exif_transposed", "alignment",
               "det_box", "det_landmarks", "det_score", "n_faces", "aligned_png")


def parquet_field(field: pa.Field) -> pa.Field:
    """``field``, nullable, with a list's items named ``element`` as Parquet names them when
    reading: pyarrow's default ``item`` would come back renamed, and the rows' checksum
    (``storage.rows_sha256``, which hashes type names) would no longer match."""
    kind = field.type
    if pa.types.is_fixed_size_list(kind):
        kind = pa.list_(kind.value_field.with_name("element"), kind.list_size)
    elif pa.types.is_list(kind):
        kind = pa.list_(kind.value_field.with_name("element"))
    return field.with_type(kind).with_nullable(True)


RESULT_SCHEMA = pa.schema(
    [pa.field("sha256", pa.string(), nullable=False),
     pa.field("changed", pa.bool_(), nullable=False),
     pa.field("pixel_sha256", pa.string()),
     pa.field("refusal", pa.string()),
     pa.field("refusal_detail", pa.string())]
    + [parquet_field(FACES_SCHEMA.field(name)) for name in FACE_FIELDS])


class IngestShard(BaseModel):
    """One shard: what a task receives (paths relative to the workspace)."""

    model_config = ConfigDict(frozen=True)

    shard_id: str
    items: int
    items_path: str
    result_path: str


class IngestShardDone(BaseModel):
    """What a shard task hands back: where its analyses are, how many, and their checksum."""

    shard_id: str
    rows: int
    result_path: str
    rows_sha256: str
    reused: bool = False
    seconds: float = 0.0


@dataclass
class SourcePlan:
    """A source read and hashed, kept in the planning process until its merge."""

    source: str
    items: list[SourceItem]
    readable: list[tuple[SourceItem, str]]
    quarantine: list[QuarantineRecord]
    shards: list[IngestShard]
    # The source's digest cache as planning used it: the merge saves the duplicate pictures
    # with it and reports the files it read.
    digests: FileDigests | None = None


@functools.lru_cache(maxsize=1)
def _detector_version() -> str:
    import cv2

    digest = hashlib.sha256(bundled_model(YUNET).read_bytes()).hexdigest()[:12]
    return f"{YUNET}@{digest}|opencv {cv2.__version__}"


def analysis_key(settings: IngestSettings, is_pre_aligned: bool) -> str:
    """What, besides the bytes, decides an analysis: part of every shard's name."""
    limits = (settings.detection_threshold, settings.detection_max_side, settings.min_side,
              settings.max_pixels)
    return "|".join([repr(limits), str(is_pre_aligned), _detector_version()])


def plan_source(workspace: Workspace, source: str | Path, *, root: str | Path | None,
                is_pre_aligned: bool, settings: IngestSettings, run_id: str,
                retry_quarantined: bool, shard_size: int) -> SourcePlan:
    """List and hash a source and write the item files of the shards to analyse."""
    items = read_source(source, root)
    quarantine: list[QuarantineRecord] = []
    digests = source_digests(workspace.root, source, root,
                             trust_stat=settings.verify_files != "all")
    readable = read_hashes(items, settings, run_id, quarantine, digests=digests)
    digests.save(only_seen=True)
    todo = to_analyse(workspace, readable, retry_quarantined, known_pictures(digests))
    key = analysis_key(settings, is_pre_aligned)
    shards = []
    for start in range(0, len(todo), shard_size):
        part = todo[start:start + shard_size]
        digest = hashlib.sha256(key.encode())
        for _, sha in part:
            digest.update(sha.encode())
        shard_id = digest.hexdigest()[:16]
        shard = IngestShard(shard_id=shard_id, items=len(part),
                            items_path=f"{SHARDS_DIR}/{shard_id}.items.parquet",
                            result_path=f"{SHARDS_DIR}/{shard_id}.parquet")
        rows = pa.table({"sha256": [sha for _, sha in part],
                         "path": [os.fsencode(item.path) for item, _ in part]},
                        schema=ITEMS_SCHEMA)
        storage.write_parquet_atomic(rows, workspace.root / shard.items_path, checksum=True)
        shards.append(shard)
    return SourcePlan(str(source), items, readable, quarantine, shards, digests)


def _row(sha: str, analysis: Analysis | None) -> dict:
    row = {"sha256": sha, "changed": analysis is None, "pixel_sha256": None, "refusal": None,
           "refusal_detail": None, **dict.fromkeys(FACE_FIELDS)}
    if analysis is not None:
        row["pixel_sha256"] = analysis.pixel_sha
        if analysis.refusal is not None:
            row["refusal"], row["refusal_detail"] = analysis.refusal[0].value, analysis.refusal[1]
        row.update(analysis.face or {})
    return row


def _done(shard: IngestShard, rows: pa.Table, reused: bool, started: float) -> IngestShardDone:
    return IngestShardDone(shard_id=shard.shard_id, rows=rows.num_rows,
                           result_path=shard.result_path, rows_sha256=storage.rows_sha256(rows),
                           reused=reused, seconds=time.perf_counter() - started)


def analyse_shard(workspace: Workspace, shard: IngestShard, settings: IngestSettings,
                  is_pre_aligned: bool) -> IngestShardDone:
    """Analyse one shard's files into its result file; an intact earlier result is kept."""
    started = time.perf_counter()
    result = workspace.root / shard.result_path
    try:
        rows = storage.read_verified_parquet(result)
        # A file that changed under an earlier attempt is read again, not trusted stale.
        if rows.num_rows == shard.items and not any(rows.column("changed").to_pylist()):
            return _done(shard, rows, True, started)
    except (FileNotFoundError, CorruptFileError):
        pass
    items = storage.read_verified_parquet(workspace.root / shard.items_path).to_pylist()
    out = []
    for item in items:
        data = read_unchanged(Path(os.fsdecode(item["path"])), item["sha256"],
                              settings.max_file_bytes)
        out.append(_row(item["sha256"], None if data is None
                        else analyse(data, settings, is_pre_aligned)))
    rows = pa.Table.from_pylist(out, schema=RESULT_SCHEMA)
    storage.write_parquet_atomic(rows, result, checksum=True)
    return _done(shard, rows, False, started)


@task(name="ingest-shard", task_run_name="ingest-shard-{shard.shard_id}", retries=2,
      retry_delay_seconds=5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def analyse_shard_task(workspace: str, shard: IngestShard, settings: IngestSettings,
                       pre_aligned: bool = False) -> IngestShardDone:
    """Thin Prefect wrapper: a shard reference in, a result reference out; YuNet is built
    once per worker thread (``tasks.ingest.align``), never passed."""
    return analyse_shard(Workspace.open(workspace), shard, settings, pre_aligned)


def _analyses(workspace: Workspace, plan: SourcePlan,
              done: list[IngestShardDone]) -> dict[str, Analysis | None]:
    by_id = {d.shard_id: d for d in done}
    missing = [s.shard_id for s in plan.shards if s.shard_id not in by_id]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(plan.shards)} ingest shards of "
                           f"{plan.source} did not finish ({', '.join(missing[:3])}); nothing "
                           f"of this source was written: run again (finished shards are kept)")
    analyses: dict[str, Analysis | None] = {}
    for shard in plan.shards:
        rows = storage.read_verified_parquet(workspace.root / shard.result_path)
        if (rows.num_rows != shard.items
                or storage.rows_sha256(rows) != by_id[shard.shard_id].rows_sha256):
            raise CorruptFileError(f"{shard.result_path} is not the file its task wrote; run "
                                   f"ingest again")
        for row in rows.to_pylist():
            if row["changed"]:
                analyses[row["sha256"]] = None
                continue
            refusal = (QuarantineReason(row["refusal"]), row["refusal_detail"]) \
                if row["refusal"] is not None else None
            face = None if row["aligned_png"] is None else {k: row[k] for k in FACE_FIELDS}
            analyses[row["sha256"]] = Analysis(row["pixel_sha256"], refusal, face)
    return analyses


def merge_source(workspace: Workspace, plan: SourcePlan, done: list[IngestShardDone], *,
                 is_pre_aligned: bool, settings: IngestSettings, run_id: str,
                 retry_quarantined: bool, progress=None) -> IngestReport:
    """Write the source's faces and quarantine rows: ``ingest_source``'s own decisions, fed
    with the shards' analyses. Then its shard files go."""
    analyses = _analyses(workspace, plan, done)
    report = ingest_source(
        workspace, plan.source, is_pre_aligned=is_pre_aligned, settings=settings,
        run_id=run_id, retry_quarantined=retry_quarantined, progress=progress,
        analyses=lambda item, sha: analyses[sha], items=plan.items, readable=plan.readable,
        quarantine=plan.quarantine, digests=plan.digests)
    for shard in plan.shards:
        for path in (shard.items_path, shard.result_path):
            (workspace.root / path).unlink(missing_ok=True)
    return report


def remove_shards(workspace: Workspace) -> None:
    """Remove every ingest shard file (a finished run's, and any a killed run left)."""
    shutil.rmtree(workspace.root / SHARDS_DIR, ignore_errors=True)
