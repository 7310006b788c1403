"""Ingest and embed as stages, on this machine or in shards on a Dask cluster.

The ``ingest``, ``embed`` and ``nightly`` flows call these. Without a cluster address each
stage runs as before, in this process. With one (``--dask-address``, or
``CLIP4SKETCH_DASK_ADDRESS``), the costly work goes to the cluster's workers as one task per
shard, through prefect-dask's ``DaskTaskRunner`` on a sub-flow (``ingest-shards``,
``embed-shards``), the way ``generate`` sends its shards:

- ingest: this process lists and hashes each source; workers decode, detect and align; this
  process, the one writer, replays ingestion's decisions on their analyses
  (``tasks.ingest.shards``);
- embed: a worker names each encoder (loading it there); this process plans the faces lacking
  vectors; workers encode them; this process upserts the vectors (``tasks.embed_shards``).

Tasks exchange shard file names, counts and checksums, never images, tables or models; a
model loads once per worker process. Workers read the source files and the workspace by the
same paths as this process (a shared file system), and should report to a real Prefect server
(``PREFECT_API_URL``): without one each worker process starts a temporary server of its own.
"""

from __future__ import annotations

import time

from prefect import flow

from flows.common import task_runner
from schemas.encoders import EncoderSpec
from schemas.settings import IngestSettings, Settings
from tasks.embed import EmbedReport, embed_task
from tasks.embed_shards import (
    EmbedPlan,
    EmbedShardDone,
    describe_encoder_task,
    encode_shard_task,
    merge_embeddings,
    plan_embedding,
)
from tasks.embed_shards import remove_shards as remove_embed_shards
from tasks.ingest.run import IngestReport, ingest_task
from tasks.ingest.shards import (
    IngestShard,
    IngestShardDone,
    analyse_shard_task,
    merge_source,
    plan_source,
)
from tasks.ingest.shards import remove_shards as remove_ingest_shards
from tasks.runtime import settle
from tasks.storage import Workspace


def _finished(futures: list, label: str) -> tuple[list, list[str]]:
    """Results of the futures that completed, and a line for each that did not."""
    settled = settle(futures, label)
    return [s.result for s in settled if s.ok], [s.error for s in settled if not s.ok]


@flow(name="ingest-shards")
def ingest_shards(workspace: str, shards: list[IngestShard], settings: IngestSettings,
                  pre_aligned: bool = False) -> list[IngestShardDone]:
    """One analysis task per shard; those that did not finish are left out (the merge then
    refuses the source and names them)."""
    futures = [analyse_shard_task.submit(workspace, shard, settings, pre_aligned)
               for shard in shards]
    done, _ = _finished(futures, "ingest shards")
    return done


@flow(name="embed-shards")
def embed_shards(workspace: str, specs: list[EncoderSpec],
                 shard_size: int) -> tuple[list[EmbedPlan], list[EmbedShardDone], list[str]]:
    """Name each encoder on a worker, plan its shards here, encode them on the workers."""
    described = [describe_encoder_task.submit(spec) for spec in specs]
    ws = Workspace.open(workspace)
    plans = [plan_embedding(ws, spec, future.result(), shard_size)
             for spec, future in zip(specs, described, strict=True)]
    futures = [encode_shard_task.submit(workspace, plan.spec, shard)
               for plan in plans for shard in plan.shards]
    done, failed = _finished(futures, "embed shards")
    return plans, done, failed


def ingest_stage(settings: Settings, ws: Workspace, sources: list[str], *, root: str | None,
                 pre_aligned: bool, retry_quarantined: bool, run_id: str,
                 address: str | None) -> list[IngestReport]:
    """Ingest each source in turn: in this process, or in shards on the cluster at
    ``address`` (one writer either way: sources are merged in order, here)."""
    if not address:
        return [ingest_task(str(ws.root), source, root=root, pre_aligned=pre_aligned,
                            settings=settings.ingest, run_id=run_id,
                            retry_quarantined=retry_quarantined)
                for source in sources]
    reports = []
    for source in sources:
        started = time.perf_counter()
        plan = plan_source(ws, source, root=root, is_pre_aligned=pre_aligned,
                           settings=settings.ingest, run_id=run_id,
                           retry_quarantined=retry_quarantined,
                           shard_size=settings.ingest.shard_size)
        print(f"ingest {source}: {len(plan.readable)} readable files, {len(plan.shards)} "
              f"shards to analyse on Dask at {address}")
        done = []
        if plan.shards:
            done = ingest_shards.with_options(task_runner=task_runner(address))(
                str(ws.root), plan.shards, settings.ingest, pre_aligned)
        report = merge_source(ws, plan, done, is_pre_aligned=pre_aligned,
                              settings=settings.ingest, run_id=run_id,
                              retry_quarantined=retry_quarantined)
        report.seconds = time.perf_counter() - started  # planning and shards included
        reports.append(report)
    remove_ingest_shards(ws)
    return reports


def embed_stage(settings: Settings, ws: Workspace, specs: list[EncoderSpec], *, run_id: str,
                address: str | None) -> EmbedReport:
    """Embed the faces lacking current vectors: here, or in shards on the cluster."""
    if not address:
        return embed_task(str(ws.root), specs, run_id=run_id)
    started = time.perf_counter()
    plans, done, failed = embed_shards.with_options(task_runner=task_runner(address))(
        str(ws.root), specs, settings.embed_shard_size)
    report, unmerged = merge_embeddings(ws, plans, done, run_id)
    report.seconds = time.perf_counter() - started
    if failed or unmerged:
        raise RuntimeError(
            f"{len(unmerged)} embed shard(s) did not finish (the others are merged; run "
            f"embed again to finish): " + "; ".join(failed[:5]))
    remove_embed_shards(ws)
    return report
