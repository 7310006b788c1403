"""Sketch-to-mugshot evaluation of one or more recognizers: the protocol of METHOD.md.

Probes are the real sketches of a pairs manifest, the gallery its mugshots plus optional
distractors; every recognizer sees the very same probes and gallery, so the side-by-side
table compares recognizers and nothing else. Outputs, all under ``out``:

    metrics.json    per recognizer: rank-1/5/10/20, TAR@FAR 1e-1/1e-2/1e-3, EER, counts,
                    how the gallery was searched (exact or ANN + its recall@k), and
                    ``ci95``: bootstrap 95 % intervals of rank-1 and TAR@FAR (probes
                    resampled ``bootstrap`` times, seeded; ``tasks/evaluate/bootstrap.py``)
    metrics.md      the side-by-side table, intervals in brackets
    cmc.png roc.png one curve per recognizer
    scores.parquet  every scored pair (recognizer, probe_id, gallery_id, score, genuine,
                    in_top_k, verification): ``scoring.rebuild`` recomputes every figure
    inputs.parquet  every probe and gallery file with its status (failed ones included)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from schemas.encoders import EncoderSpec
from schemas.settings import IngestSettings
from tasks.evaluate.bootstrap import N_RESAMPLES, bootstrap_intervals
from tasks.evaluate.gallery import DEFAULT_ANN_THRESHOLD, prune_galleries, table_name
from tasks.evaluate.inputs import Entry, EvaluationInputs, collect, split_identities
from tasks.evaluate.metrics import far_key
from tasks.evaluate.plots import plot_cmc, plot_roc
from tasks.evaluate.scoring import (
    FARS,
    RANKS,
    Scored,
    Side,
    probe_data_from_pairs,
    score_recognizer,
)
from tasks.ingest.run import IngestReport
from tasks.recognize.recognizer import load_recognizer
from tasks.runtime import retry_transient
from tasks.storage import Workspace, write_bytes_atomic, write_parquet_atomic

METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"
SCORES = "scores.parquet"
INPUTS = "inputs.parquet"
CMC_PNG = "cmc.png"
ROC_PNG = "roc.png"
MAX_LISTED_FAILURES = 200


class EvaluateRequest(BaseModel):
    """Everything one evaluation needs; small and picklable, so it crosses task bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: str
    pairs: str
    out: str
    recognizers: list[str] = Field(default_factory=lambda: ["baseline"], min_length=1)
    root: str | None = None
    distractors: str | None = None
    distractors_root: str | None = None
    split: str | None = None
    split_part: str = "test"
    identity_encoder: EncoderSpec
    ann_threshold: int = Field(default=DEFAULT_ANN_THRESHOLD, ge=0)
    # probe x gallery cells scored for verification before switching to a gallery sample
    matrix_limit: int = Field(default=5_000_000, ge=1)
    recall_queries: int = Field(default=1000, ge=1)
    seed: int = 0
    # probe resamples for the 95 % intervals (0: no intervals)
    bootstrap: int = Field(default=N_RESAMPLES, ge=0)
    # gallery tables of this many runs are kept in the workspace (this one included); older
    # ones are dropped: scores.parquet holds every figure, a gallery table is a cache
    keep_galleries: int = Field(default=3, ge=0)
    ingest: IngestSettings | None = None
    run_id: str = "local"


class EvaluateReport(BaseModel):
    run_id: str
    out: str
    metrics_json: str
    metrics_md: str
    cmc_png: str
    roc_png: str
    scores: str
    inputs: str
    n_probes: int
    n_failed_probes: int
    n_gallery: int
    n_failed_gallery: int
    recognizers: dict[str, dict[str, Any]]
    failures: list[dict[str, Any]]
    ingest: list[IngestReport]
    seconds: float
    dropped_galleries: list[str] = Field(default_factory=list)


def recognizer_names(refs: list[str]) -> list[str]:
    """Column names for the table: "baseline", a trained dir's name, deduplicated."""
    names: list[str] = []
    for ref in refs:
        base = ref if ref == "baseline" else Path(ref).expanduser().name or ref
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _side(entries: list[Entry], vectors: np.ndarray) -> Side:
    return Side(np.array([e.entry_id for e in entries], dtype=object),
                np.array([e.identity_id for e in entries], dtype=object), vectors)


def _inputs_table(inputs: EvaluationInputs) -> pa.Table:
    rows = []
    for role, entries in (("probe", inputs.probes), ("gallery", inputs.gallery)):
        for e in entries:
            loc = e.located
            rows.append({"role": role, "entry_id": e.entry_id, "identity_id": e.identity_id,
                         "origin": e.origin, "kind": loc.kind, "source_path": loc.source_path,
                         "face_id": loc.face_id, "status": "ok" if e.ok else loc.reason,
                         "detail": loc.detail})
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("role", pa.string()), ("entry_id", pa.string()), ("identity_id", pa.string()),
        ("origin", pa.string()), ("kind", pa.string()), ("source_path", pa.string()),
        ("face_id", pa.string()), ("status", pa.string()), ("detail", pa.string())]))


def failure_rows(inputs: EvaluationInputs) -> list[dict[str, Any]]:
    rows = []
    for role in ("probes", "gallery"):
        for e in inputs.failed(role):
            rows.append({"role": role[:-1] if role == "probes" else role,
                         "identity_id": e.identity_id, "origin": e.origin,
                         "source_path": e.located.source_path, "reason": e.located.reason,
                         "detail": e.located.detail})
    return rows


def _leaked(recognizer: Any, inputs: EvaluationInputs) -> int | None:
    """How many probe identities a trained recognizer was trained on (None: baseline).

    METHOD.md: identities used in training never appear among test probes. The split
    enforces that when given; this makes a forgotten or mismatched split visible.
    """
    directory = getattr(recognizer, "directory", None)
    listed = Path(directory) / "identities.txt" if directory else None
    if listed is None or not listed.is_file():
        return None
    trained = set(listed.read_text(encoding="utf-8").split())
    return len(trained & {e.identity_id for e in inputs.probes})


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _with_interval(value: float, ci: list[float] | None, mark: str = "") -> str:
    text = f"{value:.3f}{mark}"
    return text if ci is None else f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]"


def metrics_markdown(summaries: dict[str, dict[str, Any]], header: dict[str, Any]) -> str:
    """The side-by-side table (one row per recognizer) plus what was evaluated."""
    far_cols = [far_key(f) for f in FARS]
    lines = [
        "| recognizer | " + " | ".join(f"rank-{k}" for k in RANKS) + " | "
        + " | ".join(f"TAR@FAR={c}" for c in far_cols) + " | EER | probes (failed) "
        "| gallery | search |",
        "|---|" + "---:|" * (len(RANKS) + len(far_cols) + 3) + "---|",
    ]
    for name, s in summaries.items():
        ci = s.get("ci95")
        tars = [_with_interval(s["tar_at_far"][c], ci["tar_at_far"][c] if ci else None,
                               "" if s["tar_at_far_resolved"][c] else "*")
                for c in far_cols]
        search = s["search"]
        how = (f"{search['index']['index_type']}, recall@{search['k']} "
               f"{search['recall_at_k']:.3f}" if search["mode"] == "ann" else "exact")
        lines.append(
            f"| {name} | " + " | ".join(
                _with_interval(s["rank1"], ci["rank1"] if ci else None) if k == 1
                else _fmt(s[f"rank{k}"]) for k in RANKS) + " | "
            + " | ".join(tars) + f" | {s['eer']:.3f} | {s['n_probes']} "
            f"({s['n_failed_probes']}) | {s['n_gallery']} | {how} |")
    notes = [
        "",
        f"Probes: {header['n_probes']} sketches from `{header['pairs']}`"
        + (f" (split `{header['split']}`, part `{header['split_part']}`)"
           if header["split"] else "")
        + f"; {header['n_failed_probes']} could not be used and count as misses at every "
        "rank and as rejected genuine pairs.",
        f"Gallery: {header['n_gallery']} mugshots ({header['n_distractors']} distractors); "
        f"{header['n_failed_gallery']} photos could not be used.",
        "`*` TAR at a FAR the impostor count cannot resolve (fewer than 1/FAR impostor "
        "pairs): it is really TAR at FAR 0.",
    ]
    if header.get("bootstrap"):
        notes.append(f"[low, high]: 95 % bootstrap interval, probes resampled "
                     f"{header['bootstrap']} times (seed {header['seed']}); failed probes are "
                     "resampled like the others.")
    for name, s in summaries.items():
        if s.get("probe_identities_seen_in_training"):
            notes.append(f"**Warning**: `{name}` was trained on "
                         f"{s['probe_identities_seen_in_training']} of the probe identities; "
                         "its figures are not a held-out result.")
    if any(s["verification"]["mode"] == "sampled" for s in summaries.values()):
        notes.append("Verification past the matrix limit uses every genuine pair and impostors "
                     "against a uniform gallery sample (see tasks/evaluate/scoring.py).")
    return "\n".join(lines + notes) + "\n"


def evaluate(request: EvaluateRequest, progress=None) -> EvaluateReport:
    """Ingest, embed, search and score every recognizer; write the files listed above."""

    say = progress or (lambda message: None)
    started = time.perf_counter()
    workspace = Workspace.open(request.workspace)
    out = Path(request.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    identities = (split_identities(request.split, request.split_part)
                  if request.split else None)
    inputs = collect(workspace, request.pairs, root=request.root,
                     distractors=request.distractors, distractors_root=request.distractors_root,
                     identities=identities, settings=request.ingest, run_id=request.run_id)
    probes, gallery = inputs.usable("probes"), inputs.usable("gallery")
    failed_probes = [e.identity_id for e in inputs.failed("probes")]
    say(f"{len(inputs.probes)} probes ({len(failed_probes)} failed), {len(gallery)} gallery "
        f"photos ({len(inputs.failed('gallery'))} failed)")
    if not gallery:
        raise ValueError(f"no usable gallery photo (failures: "
                         f"{inputs.failures_by_reason('gallery')})")

    summaries: dict[str, dict[str, Any]] = {}
    results: dict[str, Scored] = {}
    for ref, name in zip(request.recognizers, recognizer_names(request.recognizers),
                         strict=True):
        recognizer = load_recognizer(ref, request.identity_encoder)
        say(f"{name}: embedding with {recognizer.version}")
        probe_vectors = recognizer.embed(workspace, [e.located.face_id for e in probes],
                                         request.run_id)
        gallery_vectors = recognizer.embed(workspace, [e.located.face_id for e in gallery],
                                           request.run_id)
        scored = score_recognizer(
            workspace, table_name(name, request.run_id), _side(probes, probe_vectors),
            _side(gallery, gallery_vectors), failed_probes,
            ann_threshold=request.ann_threshold, matrix_limit=request.matrix_limit,
            recall_queries=request.recall_queries, seed=request.seed)
        results[name] = scored
        summary = scored.evaluation.summary()
        if request.bootstrap:
            summary["ci95"] = bootstrap_intervals(
                probe_data_from_pairs(scored.pairs, [e.entry_id for e in probes],
                                      failed_probes, [e.identity_id for e in gallery]),
                request.bootstrap, request.seed, FARS)
        summary.update(
            recognizer=ref, version=recognizer.version, n_failed_probes=len(failed_probes),
            n_failed_gallery=len(inputs.failed("gallery")), search=scored.search,
            verification=scored.verification,
            ann_recall_at_k=scored.search.get("recall_at_k"),
            probe_identities_seen_in_training=_leaked(recognizer, inputs))
        summaries[name] = summary
        say(f"{name}: rank-1 {summary['rank1']:.3f}, TAR@FAR=1e-2 "
            f"{summary['tar_at_far'][far_key(1e-2)]:.3f}, EER {summary['eer']:.3f}")

    header = {
        "run_id": request.run_id, "pairs": request.pairs, "root": request.root,
        "distractors": request.distractors, "split": request.split,
        "split_part": request.split_part if request.split else None,
        "split_excluded_identities": inputs.split_excluded,
        "n_probes": len(inputs.probes), "n_failed_probes": len(failed_probes),
        "failed_probes_by_reason": inputs.failures_by_reason("probes"),
        "n_gallery": len(gallery),
        "n_distractors": sum(1 for e in gallery if e.origin == "distractors"),
        "n_failed_gallery": len(inputs.failed("gallery")),
        "failed_gallery_by_reason": inputs.failures_by_reason("gallery"),
        "ignored": inputs.ignored, "ann_threshold": request.ann_threshold,
        "matrix_limit": request.matrix_limit, "identity_encoder": request.identity_encoder.label(),
        "bootstrap": request.bootstrap, "seed": request.seed,
    }
    dropped = prune_galleries(workspace, request.keep_galleries, request.run_id)
    header["dropped_galleries"] = dropped
    if dropped:
        say(f"dropped {len(dropped)} gallery tables of older runs (keep_galleries="
            f"{request.keep_galleries})")
    failures = failure_rows(inputs)
    document = {**header, "recognizers": summaries, "failures": failures[:MAX_LISTED_FAILURES]}
    write_bytes_atomic(json.dumps(document, indent=2, default=str).encode(), out / METRICS_JSON)
    markdown = metrics_markdown(summaries, header)
    write_bytes_atomic(markdown.encode(), out / METRICS_MD)
    evaluations = {name: r.evaluation for name, r in results.items()}
    plot_cmc(evaluations, out / CMC_PNG, title="CMC: sketch -> mugshot")
    plot_roc(evaluations, out / ROC_PNG, title="ROC: sketch vs mugshot")
    scores = pa.concat_tables([
        r.pairs.add_column(0, "recognizer", pa.array([name] * r.pairs.num_rows, pa.string())
                           .dictionary_encode())
        for name, r in results.items()])
    write_parquet_atomic(scores, out / SCORES)
    write_parquet_atomic(_inputs_table(inputs), out / INPUTS)
    return EvaluateReport(
        run_id=request.run_id, out=str(out), metrics_json=str(out / METRICS_JSON),
        metrics_md=str(out / METRICS_MD), cmc_png=str(out / CMC_PNG),
        roc_png=str(out / ROC_PNG), scores=str(out / SCORES), inputs=str(out / INPUTS),
        n_probes=len(inputs.probes), n_failed_probes=len(failed_probes),
        n_gallery=len(gallery), n_failed_gallery=len(inputs.failed("gallery")),
        recognizers=summaries, failures=failures[:MAX_LISTED_FAILURES],
        ingest=inputs.ingest, seconds=time.perf_counter() - started,
        dropped_galleries=dropped,
    )


@task(name="evaluate", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE)
def evaluate_task(request: EvaluateRequest) -> EvaluateReport:
    """Thin Prefect wrapper; recognizers and encoders load inside the worker process."""
    from prefect import get_run_logger

    logger = get_run_logger()
    return evaluate(request, progress=logger.info)
