"""Merge finished shard files into the ``sketches`` table: the one writer of that table.

Shard tasks run in parallel and each writes only its own Parquet file; this single step
upserts them into LanceDB by ``sketch_id`` (``merge_insert``, so merging the same shard twice
changes nothing), tags the table version with the run, exports ``datasets/sketches.parquet``
and compacts the fragments that chunked upserts leave behind. ``per_style`` and ``flagged``
sum what the run's shards did, for its report.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from schemas.generation import MergeReport, PlanSummary, ShardOutcome, StyleCounts
from schemas.records import SKETCHES_SCHEMA
from tasks import storage
from tasks.generate.plan import read_plan
from tasks.runtime import retry_transient
from tasks.storage import SKETCHES, CorruptFileError, Workspace

CHUNK_ROWS = 50_000  # rows per upsert: bounds memory whatever the number of shards


def _shard_rows(path: Path) -> pa.Table:
    """A finished shard's rows, checked against the checksum the shard recorded: a file
    damaged since is refused (a rerun draws its sketches again) rather than merged."""
    try:
        rows = storage.read_verified_parquet(path)
    except CorruptFileError as error:
        raise CorruptFileError(f"{error}; run generate again to draw its sketches anew"
                               ) from error
    return rows.select(SKETCHES_SCHEMA.names).cast(SKETCHES_SCHEMA)


def _upsert(workspace: Workspace, parts: list[pa.Table], seen: set[str]) -> tuple[int, int]:
    rows = pa.concat_tables(parts)
    ids = rows.column("sketch_id").to_pylist()
    # A sketch belongs to one shard of a plan; anything else is a second copy of the same key.
    fresh = [i not in seen and not seen.add(i) for i in ids]
    rows = rows.filter(pa.array(fresh, pa.bool_()))
    result = storage.upsert(workspace, SKETCHES, rows, "sketch_id")
    return result.inserted, result.updated


def merge_shards(workspace: Workspace, result_paths: list[Path], run_id: str) -> MergeReport:
    """Upsert the given shard Parquets into ``sketches``; returns counts and the new version.

    With nothing to merge the table is left alone: no new version, tag or export, so a
    nightly run that finds no new work does not rewrite the whole dataset file.
    """
    storage.ensure_table(workspace, SKETCHES, SKETCHES_SCHEMA)
    if not result_paths:
        return MergeReport(table=SKETCHES, merged_rows=0, inserted=0, updated=0,
                           rows=storage.count(workspace, SKETCHES), version=None, tag=None,
                           parquet=None)
    seen: set[str] = set()
    parts: list[pa.Table] = []
    pending = merged = inserted = updated = 0
    for path in result_paths:
        rows = _shard_rows(path)
        parts.append(rows)
        pending += rows.num_rows
        merged += rows.num_rows
        if pending >= CHUNK_ROWS:
            i, u = _upsert(workspace, parts, seen)
            inserted, updated, parts, pending = inserted + i, updated + u, [], 0
    if parts:
        i, u = _upsert(workspace, parts, seen)
        inserted, updated = inserted + i, updated + u
    label = storage.tag(workspace, SKETCHES, f"run-{run_id}")
    parquet = storage.export_parquet(workspace, SKETCHES)
    storage.compact(workspace, [SKETCHES])
    versions = storage.tags(workspace, SKETCHES)
    return MergeReport(
        table=SKETCHES, merged_rows=merged, inserted=inserted, updated=updated,
        rows=storage.count(workspace, SKETCHES), version=versions.get(label) if label else None,
        tag=label, parquet=str(parquet) if parquet else None,
    )


def finished_shards(workspace: Workspace, plan_path: str | Path) -> list[Path]:
    """Result files of the plan's shards that finished (a failed shard has none)."""
    plan = read_plan(plan_path)
    paths = [workspace.root / ref.result_path for ref in plan.shard_refs]
    return [p for p in paths if p.is_file()]


@task(name="merge-sketches", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def merge_task(workspace: str, plan_path: str, run_id: str) -> MergeReport:
    """Merges every shard of the plan that finished; takes the plan's path, not its rows."""
    ws = Workspace.open(workspace)
    return merge_shards(ws, finished_shards(ws, plan_path), run_id)


def per_style(plan: PlanSummary, outcomes: list[ShardOutcome]) -> dict[str, StyleCounts]:
    """The plan's counts per style, plus what the finished shards generated, reused and
    flagged."""
    counts = {name: style.model_copy() for name, style in plan.per_style.items()}
    for outcome in outcomes:
        if outcome.result is None:
            continue
        for style, done in outcome.result.by_style.items():
            target = counts.setdefault(style, StyleCounts())
            target.generated += done.get("generated", 0)
            target.reused += done.get("reused", 0)
            target.flagged += done.get("nan", 0) + done.get("blank", 0)
    return counts


def flagged(outcomes: list[ShardOutcome]) -> dict[str, int]:
    """Sketches flagged ``nan`` or ``blank`` by the finished shards, by status."""
    totals: dict[str, int] = {}
    for outcome in outcomes:
        for counts in (outcome.result.by_style.values() if outcome.result else []):
            for status in ("nan", "blank"):
                if counts.get(status):
                    totals[status] = totals.get(status, 0) + counts[status]
    return totals
