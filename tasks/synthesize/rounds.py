"""Rounds of drawing and judging candidates until N identities are kept.

Each round draws the candidates the keep rate so far says are needed, in whole shards
(``shard``), then judges them in order (``source.select_task``); the flow supplies how a
round's shards are drawn (its sub-flow, on the task runner it picked). ``summarise`` turns
what the rounds did into the run's report.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas.synthesize import (
    MANIFEST_NAME,
    REFUSALS,
    WORK_DIR,
    SynthesizeReport,
    SynthesizeRequest,
    SynthShardRef,
    SynthShardResult,
)
from tasks.synthesize.shard import shard_refs
from tasks.synthesize.source import impostor_stats, open_source, select_task

# Expected share of candidates kept, used only to size the first round of drawing.
FIRST_ROUND_KEEP_RATE = 0.9

# Draws one round's shards: {shard id: its result, or the error it failed with}.
DrawShards = Callable[[SynthesizeRequest, list[SynthShardRef]], dict[str, SynthShardResult | str]]


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


def draw_rounds(request: SynthesizeRequest, draw: DrawShards, runner: str,
                max_candidates: int | None) -> Tally:
    """Draw shards of candidates (``draw``: the flow's sub-flow on its task runner, named
    ``runner``), then judge them, until N identities are kept, a shard fails, or the
    candidate budget (default: 3 per missing identity + a shard) runs out.

    Each round draws what the keep rate so far says is needed, in whole shards; a
    threshold too strict for the truncation ends with a shortfall, not an endless run.
    """

    state = open_source(request)
    tally = Tally(request.model_copy(update={"shard_size": state.manifest["shard_size"]}),
                  runner)
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
        outcome = draw(request, shards)
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
