"""Judge a dataset: verdicts from the stored metrics, dataset figures, the style contract's
pairs of drawings (``tasks.validate.pairs``), the contracts, and the decision to publish or
reject.

The contracts are the expensive, slow-to-import part (great-expectations); they are skipped
when this exact version was already checked against the same inputs (table versions of faces
and embeddings, the style registry), because their outcome cannot differ. The stored outcome
is reused instead, and the run still gets its own report.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from data_contracts.run import ContractReport
from data_contracts.thresholds import THRESHOLDS_FILE, Thresholds, load_thresholds
from schemas.encoders import EncoderSpec
from schemas.records import SKETCHES_SCHEMA
from schemas.settings import load_settings
from schemas.styles import Style
from schemas.validation import (
    SKETCH_METRICS,
    SKETCH_METRICS_SCHEMA,
    DatasetVersionRecord,
    GroupDiversity,
    MetricsReport,
    Scope,
    StylePairs,
    ValidationReport,
)
from schemas.vectors import VectorTable
from tasks import storage
from tasks.runtime import Laps, retry_transient
from tasks.storage import FACES, SKETCHES, Workspace
from tasks.styles.registry import styles_for
from tasks.validate import contracts as c
from tasks.validate import publish
from tasks.validate.artists import artist_scores, identity_bars
from tasks.validate.compute import StyleJudge, read_scope, sketch_resolution
from tasks.validate.metrics import (
    FRECHET_MAX_SAMPLES,
    dataset_metrics,
    frechet_reduced,
    group_diversity,
    reasons,
)
from tasks.validate.pairs import (
    Drawing,
    RenderKey,
    Scorer,
    Scores,
    face_styles,
    judge_pairs,
    lost_drawings,
)
from tasks.validate.start_renders import generator_starts, render_vectors
from tasks.validate.style_classifier import StyleClassifier, cache_path
from tasks.validate.vectors import stored_sketch_vectors

# suites-2: the style contract judges pairs of drawings of the same face (issue 20).
# suites-3: drawn styles' identity against their artists; wrong_style by the drawing's pair.
SUITES_VERSION = "suites-3"
NOT_MEASURED = "not_measured"


def thresholds_sha256(path: str | Path | None) -> str:
    return hashlib.sha256(Path(path or THRESHOLDS_FILE).read_bytes()).hexdigest()


def _source(metrics: MetricsReport, role: str, spec: EncoderSpec) -> VectorTable:
    info = metrics.sources[role]
    return VectorTable(role=role, table=str(info["table"]), version=str(info["version"]),
                       dim=int(info["dim"]), spec=spec)


def _content_hash(sketches: pa.Table) -> str:
    """Every column of every sketch in scope (sorted by id): the contracts see all of them."""
    digest = hashlib.sha256()
    for row in sketches.sort_by("sketch_id").to_pylist():
        digest.update(json.dumps(row, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def merge_metrics(workspace: Workspace, sketches: pa.Table, version: str,
                  carried: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Sketch rows joined with their current metrics (other metric rows are ignored).

    ``carried``: older versions whose rows the metrics stage found still holding against
    today's gallery (``MetricsReport.carried_versions``); they are current, and say so."""
    metrics = storage.read(workspace, SKETCH_METRICS, schema=SKETCH_METRICS_SCHEMA,
                           where=storage.where_in("metrics_version", [version, *carried]))
    by_id = {r["sketch_id"]: {**r, "metrics_version": version} for r in metrics.to_pylist()}
    merged = []
    for row in sketches.to_pylist():
        metric = by_id.get(row["sketch_id"])
        if metric is not None and metric["png_sha256"] not in (None, row["png_sha256"]) \
                and row["png_sha256"] is not None:
            metric = None  # measured on other pixels
        extra = {k: v for k, v in (metric or {}).items()
                 if k not in ("run_id", "status", "png_sha256")}
        merged.append({**row, **extra, "metrics_version": metric and metric["metrics_version"]})
    return merged


def verdicts_of(rows: Sequence[Mapping[str, Any]], thresholds: Thresholds,
                lost: Sequence[bool | None] | None = None) -> dict[str, list[str]]:
    """Each sketch's reasons; ``lost``: per row, whether it lost its same-face style
    comparison (``tasks.validate.pairs.lost_drawings``)."""
    lost = lost if lost is not None else [None] * len(rows)
    return {row["sketch_id"]: (reasons(row, thresholds.sketches, wrong)
                               if row["metrics_version"] else [NOT_MEASURED])
            for row, wrong in zip(rows, lost, strict=True)}


def _diversity(workspace: Workspace, rows: Sequence[Mapping[str, Any]],
               verdicts: Mapping[str, list[str]], identity: VectorTable
               ) -> list[GroupDiversity]:
    accepted = [r for r in rows if not verdicts[r["sketch_id"]]]
    vectors = stored_sketch_vectors(workspace, identity,
                                    [(r["sketch_id"], r["png_sha256"]) for r in accepted])
    kept = [r for r in accepted if r["sketch_id"] in vectors]
    matrix = (np.stack([vectors[r["sketch_id"]] for r in kept]) if kept
              else np.zeros((0, identity.dim), np.float32))
    return group_diversity([r["identity_id"] for r in kept], [r["style"] for r in kept], matrix)


def _frechet(rows: Sequence[Mapping[str, Any]], verdicts: Mapping[str, list[str]],
             vectors: Mapping[str, np.ndarray], image: VectorTable,
             classifier: StyleClassifier | None
             ) -> dict[str, tuple[float | None, str, tuple[int, int]]]:
    """Per style: accepted sketches against the style's reference examples (real sketches for
    paired styles, renderer drawings for render styles), in image-encoder feature space.
    ``vectors``: the stored image vectors of the scope's sketches, by sketch id."""
    if classifier is None:
        return {}
    found = {}
    for style in sorted({r["style"] for r in rows} & set(classifier.classes)):
        members = [r for r in rows if r["style"] == style and not verdicts[r["sketch_id"]]]
        members = members[:FRECHET_MAX_SAMPLES]
        kept = [vectors[r["sketch_id"]] for r in members if r["sketch_id"] in vectors]
        generated = np.stack(kept) if kept else np.zeros((0, image.dim))
        reference = classifier.reference_features(style)
        found[style] = (frechet_reduced(generated, reference), classifier.reference[style],
                        (len(generated), len(reference)))
    return found


def _scorer(workspace: Workspace, metrics: MetricsReport, registry: Mapping[str, Style],
            image: VectorTable, classifier: StyleClassifier | None,
            text_spec: EncoderSpec | None, rows: Sequence[Mapping[str, Any]]
            ) -> Scorer | None:
    """The judge the metrics stage used, scoring every style: the cached classifier, or
    CLIP zero-shot when that is what judged (it needs the text encoder it used)."""
    if classifier is not None:
        return Scorer(list(classifier.classes), classifier.log_probabilities, "log-probability")
    if metrics.style_method == "clip-zero-shot" and text_spec is not None:
        judge = StyleJudge.for_workspace(workspace, registry, image, sketch_resolution(rows),
                                         text_spec)
        if judge.method == "clip-zero-shot":
            return Scorer(judge.classes(), judge.scores, "cosine")
    return None


def _drawings(workspace: Workspace, rows: Sequence[Mapping[str, Any]],
              vectors: Mapping[str, np.ndarray], scorer: Scorer | None) -> list[Drawing]:
    """Every sketch in scope with the judge's scores (None without stored pixels' vectors)
    and the start image its generator began from, at the sketch's size."""
    starts = generator_starts(workspace.root, {(r["generator_version"], r["generator_config"])
                                               for r in rows})
    ids = [r["sketch_id"] for r in rows if r["sketch_id"] in vectors] if scorer else []
    scores = dict(zip(ids, scorer.rows([vectors[i] for i in ids]), strict=True)
                  ) if ids and scorer else {}
    return [Drawing(r["face_id"], r["style"], scores.get(r["sketch_id"]),
                    (start, int(r["width"])) if (start := starts[r["generator_version"]])
                    else None)
            for r in rows]


def _render_scores(workspace: Workspace, drawings: Sequence[Drawing], image: VectorTable,
                   scorer: Scorer | None) -> dict[RenderKey, Scores]:
    """The judge's scores on the start render of every scored drawing's face: the fallback
    of a face drawn in one style, and the report's render control for all of them."""
    wanted = {(d.face_id, *d.start) for d in drawings if d.start and d.scores is not None}
    if scorer is None or not wanted:
        return {}
    vectors = render_vectors(workspace, wanted, image)
    keys = sorted(vectors)
    return dict(zip(keys, scorer.rows([vectors[k] for k in keys]), strict=True)
                ) if keys else {}


def style_pairs(workspace: Workspace, rows: Sequence[Mapping[str, Any]],
                vectors: Mapping[str, np.ndarray], image: VectorTable,
                scorer: Scorer | None, threshold: float
                ) -> tuple[dict[str, StylePairs], list[bool | None]]:
    """Per style in scope, the style contract's verdict (``tasks.validate.pairs``), and per
    row whether that drawing lost its own comparison; ``vectors``: the stored image vectors
    of the scope's sketches, by sketch id."""
    drawings = _drawings(workspace, rows, vectors, scorer)
    renders = _render_scores(workspace, drawings, image, scorer)
    classes, kind = (scorer.classes, scorer.kind) if scorer else ([], None)
    groups = face_styles(drawings)
    return (judge_pairs(drawings, renders, classes, threshold, kind, groups),
            lost_drawings(drawings, renders, groups))


def _inputs(workspace: Workspace, metrics: MetricsReport,
            registry: Mapping[str, Style]) -> str:
    tables = {FACES: storage.table_version(workspace, FACES)}
    for info in metrics.sources.values():
        tables[str(info["table"])] = storage.table_version(workspace, str(info["table"]))
    return json.dumps({"suites": SUITES_VERSION, "tables": tables,
                       "styles": sorted(registry)}, sort_keys=True)


def judge_dataset(
    workspace: Workspace,
    metrics: MetricsReport,
    registry: Mapping[str, Style],
    identity_spec: EncoderSpec,
    image_spec: EncoderSpec,
    *,
    scope: Scope | None = None,
    thresholds_path: str | Path | None = None,
    report_path: str,
    run_id: str = "local",
    text_spec: EncoderSpec | None = None,
) -> ValidationReport:
    """Verdicts, dataset metrics, contracts, then publish or reject; returns the outcome.

    ``text_spec``: the text encoder of a CLIP zero-shot style check (as the metrics stage
    got it); the registry classifier needs none.
    """
    seconds: dict[str, float] = {}
    started, laps = time.perf_counter(), Laps()
    thresholds = load_thresholds(thresholds_path)
    thresholds_sha = thresholds_sha256(thresholds_path)
    sketches = read_scope(workspace, scope or Scope(), columns=list(SKETCHES_SCHEMA.names))
    rows = merge_metrics(workspace, sketches, metrics.metrics_version, metrics.carried_versions)
    identity = _source(metrics, "identity", identity_spec)
    image = _source(metrics, "image", image_spec)
    classifier = None
    if metrics.style_fingerprint and cache_path(workspace, metrics.style_fingerprint).is_file():
        classifier = StyleClassifier.from_bytes(
            cache_path(workspace, metrics.style_fingerprint).read_bytes())
    scorer = _scorer(workspace, metrics, registry, image, classifier, text_spec, rows)
    # The scope's image vectors, read once for the style pairs and the Fréchet figures.
    image_vectors = stored_sketch_vectors(
        workspace, image, [(r["sketch_id"], r["png_sha256"]) for r in rows]
    ) if (scorer is not None or classifier is not None) else {}
    laps.lap("read")
    pairs, lost = style_pairs(workspace, rows, image_vectors, image, scorer,
                              thresholds.sketches.min_share_pairs_won)
    laps.lap("pairs")
    verdicts = verdicts_of(rows, thresholds, lost)
    diversity = _diversity(workspace, rows, verdicts, identity)
    bars = identity_bars(rows, artist_scores(workspace, identity, registry),
                         thresholds.sketches)
    laps.lap("verdicts")
    frechet = _frechet(rows, verdicts, image_vectors, image, classifier)
    laps.lap("frechet")
    dataset, per_identity = dataset_metrics(rows, verdicts, diversity, thresholds.sketches,
                                            frechet, pairs, bars)
    content = _content_hash(sketches)
    version = "ds-" + hashlib.sha256(
        f"{metrics.metrics_version}|{thresholds_sha}|{content}".encode()).hexdigest()[:12]
    inputs = _inputs(workspace, metrics, registry)
    laps.lap("figures")
    seconds["assess"] = time.perf_counter() - started

    started = time.perf_counter()
    existing = publish.get_version(workspace, version)
    reused = existing is not None and existing["inputs"] == inputs
    if reused:
        contracts = ContractReport.model_validate_json(existing["contracts"])
    else:
        frame = c.metrics_frame(rows, verdicts, metrics.metrics_version,
                                {s for s, b in bars.items() if b.mode == "artists"})
        suites = c.checks(workspace, thresholds, sketches=sketches, metrics=frame,
                          diversity=c.diversity_frame(diversity),
                          style_pairs=c.style_pairs_frame(pairs),
                          identity_bar=c.identity_bar_frame(bars), styles=list(registry),
                          embedding_tables={k: str(v["table"]) for k, v in
                                            metrics.sources.items()})
        contracts = c.run_contracts(workspace, suites)
    seconds["contracts"] = time.perf_counter() - started

    started = time.perf_counter()
    status = "published" if contracts.success else "rejected"
    record = DatasetVersionRecord(
        version=version, status=status, created_at=dt.datetime.now(dt.UTC), run_id=run_id,
        sketches=dataset.sketches, accepted=dataset.accepted, rejected=dataset.rejected,
        acceptance_rate=dataset.acceptance_rate, identities=dataset.identities,
        per_style=json.dumps({s: {"sketches": f.sketches, "accepted": f.accepted}
                              for s, f in dataset.per_style.items()}),
        reasons=json.dumps(dataset.reasons), metrics_version=metrics.metrics_version,
        thresholds_sha256=thresholds_sha, inputs=inputs,
        sketches_table_version=storage.table_version(workspace, SKETCHES),
        manifest_path=None, verdicts_path="", report_path=report_path,
        data_docs=contracts.data_docs, contracts=contracts.model_dump_json(),
        dataset_metrics=dataset.model_dump_json(),
    )
    if reused:
        record = DatasetVersionRecord.model_validate(existing)
        if record.status == "published":
            publish._point_current(workspace, version)
    else:
        table = publish.verdict_table(rows, verdicts, version)
        details = {"dataset": dataset.model_dump(mode="json"), "per_identity": per_identity,
                   "diversity": [g.model_dump() for g in diversity],
                   "classifier_cv_accuracy": classifier.cv_accuracy if classifier else None,
                   "thresholds": thresholds.model_dump()}
        publish.write_verdicts(workspace, table, thresholds_sha, run_id)
        record = publish.record_version(workspace, record, table, details)
    seconds["publish"] = time.perf_counter() - started
    published = contracts.success
    return ValidationReport(
        run_id=run_id, workspace=str(workspace.root), version=version,
        status="published" if published else "rejected", published=published,
        current_version=publish.current_version(workspace), reused_contracts=reused,
        metrics=metrics, dataset=dataset, contracts_success=contracts.success,
        failed_expectations=contracts.failures(), report_path=report_path,
        data_docs=contracts.data_docs,
        manifest_path=record.manifest_path if published else None,
        verdicts_path=record.verdicts_path if record.verdicts_path else None,
        seconds=seconds, assess_seconds=laps.seconds,
    )


@task(name="validate-contracts-publish", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def contracts_task(workspace: str, metrics: MetricsReport, identity: EncoderSpec,
                   image: EncoderSpec, scope: Scope, thresholds: str | None, report_path: str,
                   run_id: str, text: EncoderSpec | None = None) -> ValidationReport:
    """Verdicts, contracts, then publish or reject (a rejection is a result, not an error)."""
    return judge_dataset(Workspace.open(workspace), metrics, styles_for(load_settings(workspace)),
                         identity, image, scope=scope, thresholds_path=thresholds,
                         report_path=report_path, run_id=run_id, text_spec=text)
