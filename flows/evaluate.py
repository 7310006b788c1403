"""The ``evaluate`` flow: sketch-to-mugshot identification and verification, side by side.

Probes are a pairs manifest's sketches, the gallery its mugshots plus optional distractors;
each recognizer ("baseline" = the identity encoder, or a trained recognizer dir) is scored
on the same probes and gallery. Files land in ``out`` (default
``<workspace>/evaluations/<run id>``); see ``tasks/evaluate/run.py`` for what each holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.artifacts import ingest_markdown
from flows.common import encoder_spec, hold_workspace, resolve, write_run_record
from schemas.encoders import EncoderSpec
from tasks.evaluate.bootstrap import N_RESAMPLES
from tasks.evaluate.gallery import DEFAULT_ANN_THRESHOLD
from tasks.evaluate.metrics import far_key
from tasks.evaluate.run import EvaluateReport, EvaluateRequest, evaluate_task
from tasks.evaluate.scoring import FARS, RANKS
from tasks.runtime import current_run_id

MAX_FAILURE_ROWS = 500


def metrics_rows(report: EvaluateReport) -> list[dict[str, Any]]:
    """One row per recognizer for the table artifact."""
    rows = []
    for name, s in report.recognizers.items():
        row: dict[str, Any] = {"recognizer": name, "version": s["version"]}
        row.update({f"rank{k}": round(s[f"rank{k}"], 4) for k in RANKS})
        row.update({f"tar@far={far_key(f)}": round(s["tar_at_far"][far_key(f)], 4)
                    for f in FARS})
        if s.get("ci95"):
            row["rank1_ci95"] = [round(v, 4) for v in s["ci95"]["rank1"]]
            row["tar@far=1e-02_ci95"] = [round(v, 4) for v in s["ci95"]["tar_at_far"]["1e-02"]]
        row.update(eer=round(s["eer"], 4), probes=s["n_probes"],
                   failed_probes=s["n_failed_probes"], gallery=s["n_gallery"],
                   search=s["search"]["mode"], ann_recall=s.get("ann_recall_at_k"))
        rows.append(row)
    return rows


def evaluate_markdown(report: EvaluateReport) -> str:
    out = Path(report.out)
    lines = [f"# Evaluation `{report.run_id}`", "",
             Path(report.metrics_md).read_text(encoding="utf-8"), "",
             f"Files in `{out}`: [metrics.json]({Path(report.metrics_json).as_uri()}), "
             f"[CMC]({Path(report.cmc_png).as_uri()}), [ROC]({Path(report.roc_png).as_uri()}), "
             f"[scores.parquet]({Path(report.scores).as_uri()}), "
             f"[inputs.parquet]({Path(report.inputs).as_uri()}).", ""]
    if report.failures:
        lines += ["## Inputs that could not be used", "",
                  "| role | identity | reason | file |", "|---|---|---|---|"]
        lines += [f"| {f['role']} | {f['identity_id']} | {f['reason']} | `{f['source_path']}` |"
                  for f in report.failures[:20]]
        if len(report.failures) > 20:
            lines.append("\n... and more: see the `evaluate-failures` table artifact.")
        lines.append("")
    lines.append(ingest_markdown(report.ingest))
    return "\n".join(lines)


@flow(name="evaluate", log_prints=True)
def evaluate(
    pairs: str,
    recognizers: list[str] | None = None,
    out: str | None = None,
    distractors: str | None = None,
    workspace: str | None = None,
    root: str | None = None,
    distractors_root: str | None = None,
    ann_threshold: int = DEFAULT_ANN_THRESHOLD,
    split: str | None = None,
    split_part: str = "test",
    identity_encoder: EncoderSpec | None = None,
    matrix_limit: int = 5_000_000,
    seed: int = 0,
    bootstrap: int = N_RESAMPLES,
    keep_galleries: int = 3,
) -> EvaluateReport:
    """``recognizers``: "baseline" and/or trained recognizer dirs (default: baseline).
    ``split``: a bundled split name ("cuhk") or CSV; only its ``split_part`` identities are
    probed. ``root`` / ``distractors_root`` bound where manifest paths may point.
    ``bootstrap``: probe resamples for the 95 % intervals; ``keep_galleries``: gallery tables
    of this many runs stay in the workspace, older ones are dropped."""
    settings, ws = resolve(workspace)
    run_id = current_run_id()
    request = EvaluateRequest(
        workspace=str(ws.root), pairs=pairs,
        out=out or str(ws.root / "evaluations" / run_id),
        recognizers=recognizers or ["baseline"], root=root, distractors=distractors,
        distractors_root=distractors_root, split=split, split_part=split_part,
        identity_encoder=encoder_spec(settings, "identity", identity_encoder),
        ann_threshold=ann_threshold, matrix_limit=matrix_limit, seed=seed,
        bootstrap=bootstrap, keep_galleries=keep_galleries,
        ingest=settings.ingest, run_id=run_id,
    )
    # Evaluation ingests and embeds its inputs into the workspace: one writer at a time.
    with hold_workspace(settings, ws, "evaluate", run_id):
        report = evaluate_task(request)
    create_markdown_artifact(markdown=evaluate_markdown(report), key="evaluate-summary",
                             description="sketch -> mugshot metrics, side by side")
    create_table_artifact(table=metrics_rows(report), key="evaluate-metrics",
                          description="one row per recognizer")
    if report.failures:
        create_table_artifact(table=report.failures[:MAX_FAILURE_ROWS], key="evaluate-failures",
                              description="probe and gallery files that could not be used")
    write_run_record(ws, "evaluate", run_id,
                     request.model_dump(mode="json", exclude={"workspace", "run_id", "ingest"}),
                     {"evaluate": report})
    return report
