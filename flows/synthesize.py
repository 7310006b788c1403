"""The ``synthesize-mugshots`` flow: draw N new people as a folder source for ``ingest``.

Like generation (flows/generate.py), the work is one task per shard of candidates, seeded
by (seed, candidate index) and resumable; shards run on a thread pool of ``workers`` (one
OpenVINO thread each by default) or, given ``dask_address``, on an existing Dask cluster
(each worker loads the generator once). Then one task judges the candidates in order and
builds the identity folders and the manifest (tasks/synthesize/source.py). When refusals
leave fewer than N identities, another round draws more candidates, within a budget.

The hygiene thresholds default to the reviewed ``synthetic`` section of
data_contracts/thresholds.yaml; parameters override them for one run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from data_contracts.thresholds import load_thresholds
from flows.artifacts import synthesize_markdown
from flows.common import task_runner
from schemas.settings import IngestSettings
from schemas.synthesize import (
    WORK_DIR,
    HygieneThresholds,
    SynthesisParams,
    SynthesizeReport,
    SynthesizeRequest,
    SynthShardRef,
    SynthShardResult,
)
from tasks import storage
from tasks.locking import workspace_lock
from tasks.runtime import current_run_id, settle
from tasks.synthesize.generator import weights_digest
from tasks.synthesize.rounds import draw_rounds, summarise
from tasks.synthesize.shard import synthesize_shard_task

# Measured on 60 faces per value (SFace cosine between different drawn people, after
# alignment): psi 0.7 -> median 0.235, 15 % of pairs above the 0.363 match threshold and
# 1.5 % above 0.5, so greedy de-duplication at 0.5 refuses most candidates after a few
# hundred people; psi 1.0 -> median 0.126, 1.8 % above 0.363, none above 0.5. See the README.
DEFAULT_TRUNCATION = 1.0


@flow(name="synthesize-shards")
def synthesize_shards(request: SynthesizeRequest, shards: list[SynthShardRef]
                      ) -> dict[str, SynthShardResult | str]:
    """One task per shard; a failed shard is reported (its error), not raised, so the
    selection still judges every candidate before the gap."""

    futures = [synthesize_shard_task.submit(request, shard) for shard in shards]
    return {shard.shard_id: done.result if done.ok else done.error
            for shard, done in zip(shards, settle(futures, "synthesize shards"), strict=True)}


def build_request(out: str, identities: int, seed: int, truncation: float,
                  images_per_identity: int, sigma: float, size: int, shard_size: int,
                  threads: int, workspace: str | None, thresholds: str | None,
                  overrides: dict[str, float | None]) -> SynthesizeRequest:
    """The request with the reviewed hygiene thresholds and ingestion's detector settings."""

    reviewed = load_thresholds(thresholds).synthetic
    hygiene = HygieneThresholds(**{**reviewed.model_dump(),
                                   **{k: v for k, v in overrides.items() if v is not None}})
    ingest = IngestSettings()
    params = SynthesisParams(weights_sha256=weights_digest(), seed=seed,
                             truncation=truncation, size=size, sigma=sigma, threads=threads)
    return SynthesizeRequest(
        out=str(Path(out).expanduser().resolve()), identities=identities,
        images_per_identity=images_per_identity, params=params, hygiene=hygiene,
        shard_size=shard_size, workspace=workspace,
        detection_threshold=ingest.detection_threshold,
        detection_max_side=ingest.detection_max_side)


@flow(name="synthesize-mugshots", log_prints=True)
def synthesize_mugshots(
    out: str,
    identities: int,
    seed: int = 0,
    truncation: float = DEFAULT_TRUNCATION,
    images_per_identity: int = 1,
    sigma: float = 0.3,
    size: int = 512,
    shard_size: int = 32,
    workers: int = 1,
    threads: int = 1,
    dask_address: str | None = None,
    workspace: str | None = None,
    thresholds: str | None = None,
    max_identity_similarity: float | None = None,
    max_alignment_error: float | None = None,
    min_detection_score: float | None = None,
    max_candidates: int | None = None,
) -> SynthesizeReport:
    """Draw ``identities`` new people into ``out`` (a folder source), resuming or
    extending a folder drawn earlier with the same seed, truncation, size and sigma.

    ``workspace``: also refuse faces too similar to the photos stored there (its SFace
    table). ``max_candidates`` bounds the candidates judged in total (default 3N + a shard),
    so a threshold too strict for the truncation ends with a shortfall, not an endless run.
    """
    started = time.perf_counter()
    run_id = current_run_id()
    request = build_request(out, identities, seed, truncation, images_per_identity, sigma,
                            size, shard_size, threads, workspace, thresholds,
                            {"max_identity_similarity": max_identity_similarity,
                             "max_alignment_error": max_alignment_error,
                             "min_detection_score": min_detection_score})

    # One writer per source folder: a second run on the same folder refuses at once.
    with workspace_lock(Path(request.out) / WORK_DIR, f"synthesize-mugshots run {run_id}"):
        def draw(round_request: SynthesizeRequest, shards: list[SynthShardRef]
                 ) -> dict[str, SynthShardResult | str]:
            runner = task_runner(dask_address, workers)  # a fresh one each round
            return synthesize_shards.with_options(task_runner=runner)(round_request, shards)

        tally = draw_rounds(request, draw, f"dask:{dask_address}" if dask_address
                            else f"threads:{workers}", max_candidates)
        report = summarise(tally, run_id)
        report.seconds = time.perf_counter() - started
        create_markdown_artifact(key="synthesize-summary", markdown=synthesize_markdown(report),
                                 description="synthetic mugshots drawn, kept and refused")
        record = Path(report.out) / WORK_DIR / "runs" / f"{run_id}.json"
        storage.write_bytes_atomic(json.dumps({"request": request.model_dump(),
                                               "report": report.model_dump()}, indent=1
                                              ).encode(), record)
    if tally.failed:
        raise RuntimeError(f"{len(tally.failed)} shards failed (kept identities are in place; "
                           f"run again to finish): " + "; ".join(
                               f"{k}: {v}" for k, v in sorted(tally.failed.items())[:5]))
    return report
