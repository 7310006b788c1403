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
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from data_contracts.thresholds import load_thresholds
from schemas.settings import IngestSettings
from schemas.synthesize import (
    MANIFEST_NAME,
    REFUSALS,
    SFACE_MATCH_THRESHOLD,
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
from tasks.progress import Progress
from tasks.runtime import current_run_id
from tasks.synthesize.generator import weights_digest
from tasks.synthesize.shard import shard_refs, synthesize_shard_task
from tasks.synthesize.source import impostor_stats, open_source, select

# Measured on 60 faces per value (SFace cosine between different drawn people, after
# alignment): psi 0.7 -> median 0.235, 15 % of pairs above the 0.363 match threshold and
# 1.5 % above 0.5, so greedy de-duplication at 0.5 refuses most candidates after a few
# hundred people; psi 1.0 -> median 0.126, 1.8 % above 0.363, none above 0.5. See the README.
DEFAULT_TRUNCATION = 1.0
# Expected share of candidates kept, used only to size the first round of drawing.
FIRST_ROUND_KEEP_RATE = 0.9


def task_runner(dask_address: str | None, workers: int) -> TaskRunner:
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    return ThreadPoolTaskRunner(max_workers=workers)


@flow(name="synthesize-shards")
def synthesize_shards(request: SynthesizeRequest, shards: list[SynthShardRef]
                      ) -> dict[str, SynthShardResult | str]:
    """One task per shard; a failed shard is reported (its error), not raised, so the
    selection still judges every candidate before the gap."""

    futures = [synthesize_shard_task.submit(request, shard) for shard in shards]
    with Progress("synthesize shards", total=len(futures), unit="shard") as progress:
        for future in futures:
            future.wait()
            progress.advance()
    wait(futures)
    out: dict[str, SynthShardResult | str] = {}
    for shard, future in zip(shards, futures, strict=True):
        state = future.state
        out[shard.shard_id] = (future.result() if state.is_completed()
                               else state.message or state.name)
    return out


@task(name="select-identities", cache_policy=NO_CACHE)
def select_task(request: SynthesizeRequest, last: int) -> dict[str, object]:
    """Judge drawn candidates in order and build identity folders: one writer per source."""

    state = open_source(request)
    select(state, request, last)
    return {"kept": state.kept, "kept_now": state.kept_now, "judged_now": state.judged_now,
            "next_index": state.next_index, "refused": dict(state.refused_now),
            "images_refused": dict(state.images_refused_now), "gap": state.stopped_at_gap}


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


def _markdown(report: SynthesizeReport) -> str:
    imp = report.impostor
    refused = ", ".join(f"{k} {v}" for k, v in sorted(report.refused.items())) or "none"
    lines = [
        "## Synthetic mugshots", "",
        f"`{report.out}`: **{report.kept}** identities ({report.images} images) of "
        f"{report.requested} requested; this run kept {report.kept_new}, judged "
        f"{report.candidates_judged} candidates, drew {report.candidates_drawn}.", "",
        f"- refused (identities): {refused}",
        f"- refused (extra images): {report.images_refused or 'none'}",
        f"- surplus candidates kept for later: {report.surplus}",
        f"- shards: {report.shards} ({report.shards_skipped} finished before) on "
        f"{report.task_runner}",
    ]
    if report.seconds_per_image is not None:
        lines.append(f"- generator: {report.seconds_per_image:.3f} s an image; "
                     f"{report.seconds_per_candidate:.3f} s a candidate with all checks")
    if imp.pairs:
        lines.append(f"- SFace between kept identities: median {imp.median:.3f}, p99 "
                     f"{imp.p99:.3f}, max {imp.max:.3f}, {imp.share_above_match:.2%} of "
                     f"{imp.pairs} pairs above {SFACE_MATCH_THRESHOLD}")
    if report.short_by:
        lines.append(f"- **short by {report.short_by}**: the candidate budget ran out")
    return "\n".join(lines)


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
        tally = draw_rounds(request, dask_address, workers, max_candidates)
        report = summarise(tally, run_id)
        report.seconds = time.perf_counter() - started
        create_markdown_artifact(key="synthesize-summary", markdown=_markdown(report),
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


@dataclass
class Tally:
    """What the rounds of one run did, summed."""

    request: SynthesizeRequest
    runner: str
    refused: Counter[str] = field(default_factory=Counter)
    images_refused: Counter[str] = field(default_factory=Counter)
    results: dict[str, SynthShardResult] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    judged: int = 0
    kept_new: int = 0


def draw_rounds(request: SynthesizeRequest, dask_address: str | None, workers: int,
                max_candidates: int | None) -> Tally:
    """Draw shards of candidates, then judge them, until N identities are kept, a shard
    fails, or the candidate budget (default: 3 per missing identity + a shard) runs out.

    Each round draws what the keep rate so far says is needed, in whole shards; a
    threshold too strict for the truncation ends with a shortfall, not an endless run.
    """

    state = open_source(request)
    tally = Tally(request.model_copy(update={"shard_size": state.manifest["shard_size"]}),
                  f"dask:{dask_address}" if dask_address else f"threads:{workers}")
    request = tally.request  # the first run's shard size stays the folder's
    wanted = request.identities
    budget = max_candidates or (state.judged + 3 * max(wanted - state.kept, 0)
                                + request.shard_size)
    kept, next_index = state.kept, state.next_index
    while kept < wanted and next_index < budget and not tally.failed:
        rate = kept / next_index if next_index and kept else FIRST_ROUND_KEEP_RATE
        last = min(budget, next_index + math.ceil((wanted - kept) / max(rate, 0.05)))
        shards = shard_refs(request, next_index, last)
        last = shards[-1].first + shards[-1].count
        print(f"round: candidates {next_index}..{last - 1} in {len(shards)} shards on "
              f"{tally.runner} ({kept}/{wanted} identities kept)")
        outcome = synthesize_shards.with_options(
            task_runner=task_runner(dask_address, workers))(request, shards)
        for shard_id, result in outcome.items():
            if isinstance(result, str):
                tally.failed[shard_id] = result
            else:
                tally.results[shard_id] = result
        selected = select_task(request, last)
        tally.refused.update(selected["refused"])
        tally.images_refused.update(selected["images_refused"])
        tally.judged += selected["judged_now"]
        tally.kept_new += selected["kept_now"]
        kept, next_index = selected["kept"], selected["next_index"]
        if not selected["judged_now"]:
            break  # nothing could be judged (records unreadable): stop rather than loop
    return tally


def summarise(tally: Tally, run_id: str) -> SynthesizeReport:
    """The run's report from the folder's manifest and the shards' counts."""

    request = tally.request
    state = open_source(request)
    drawn = [r for r in tally.results.values() if r.drawn]
    images_drawn = sum(r.drawn for r in drawn)
    candidates_drawn = sum(r.candidates - r.reused for r in drawn)
    # Shard files are named c<first>-<size>.json: the highest drawn candidate + 1.
    highest = max((int(p.stem[1:].split("-")[0]) + request.shard_size
                   for p in (state.root / WORK_DIR / "shards").glob("c*.json")), default=0)
    return SynthesizeReport(
        run_id=run_id, out=str(state.root), manifest=str(state.root / MANIFEST_NAME),
        requested=request.identities, kept=state.kept, kept_new=tally.kept_new,
        images=sum(len(i["images"]) for i in state.manifest["identities"]),
        candidates_drawn=candidates_drawn, candidates_judged=tally.judged,
        surplus=max(highest - state.next_index, 0),
        refused={k: tally.refused[k] for k in REFUSALS if tally.refused[k]},
        images_refused={k: tally.images_refused[k] for k in REFUSALS
                        if tally.images_refused[k]},
        shards=len(tally.results) + len(tally.failed),
        shards_skipped=sum(r.skipped for r in tally.results.values()),
        failed_shards=tally.failed, task_runner=tally.runner,
        seconds_per_image=(sum(r.draw_seconds for r in drawn) / images_drawn
                           if images_drawn else None),
        seconds_per_candidate=(sum(r.seconds for r in drawn) / candidates_drawn
                               if candidates_drawn else None),
        impostor=impostor_stats(state, request),
        short_by=max(request.identities - state.kept, 0) if not tally.failed else 0,
    )
