"""Markdown and table artifacts: what a reviewer reads in the Prefect UI after a run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from schemas.generation import GenerateReport, PlanSummary
from schemas.synthesize import SFACE_MATCH_THRESHOLD, SynthesizeReport
from schemas.validation import StylePairs, ValidationReport
from tasks import storage
from tasks.embed import EmbedReport
from tasks.ingest.run import IngestReport
from tasks.retention import PruneReport
from tasks.storage import QUARANTINE, Workspace

if TYPE_CHECKING:  # importing the generator's module would slow every flow's start-up
    from tasks.generate.fit import TrainReport

MAX_TABLE_ROWS = 500


def _counts(counts: dict[str, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))


def ingest_markdown(reports: list[IngestReport]) -> str:
    lines = ["## Ingest", "",
             "| source | seen | read | ingested | skipped | quarantined | seconds |",
             "|---|---:|---:|---|---|---|---:|"]
    for r in reports:
        lines.append(f"| `{r.source}` | {r.seen} | {r.files_read} | {_counts(r.ingested)} "
                     f"| {_counts(r.skipped)} | {_counts(r.quarantined)} | {r.seconds:.1f} |")
    totals: dict[str, int] = {}
    for r in reports:
        for reason, n in r.quarantined.items():
            totals[reason] = totals.get(reason, 0) + n
    if totals:
        lines += ["", "Quarantined by reason:", ""]
        lines += [f"- **{reason}**: {n}" for reason, n in sorted(totals.items())]
    return "\n".join(lines)


def embed_markdown(report: EmbedReport) -> str:
    lines = ["## Embeddings", "", "| role | table | encoder version | dim | computed | reused |",
             "|---|---|---|---:|---:|---:|"]
    for role, t in report.tables.items():
        lines.append(f"| {role} | `{t.table}` | `{t.encoder_version}` | {t.dim} | {t.computed} "
                     f"| {t.reused} |")
    return "\n".join(lines)


def quarantine_rows(workspace: Workspace, run_id: str) -> list[dict[str, Any]]:
    rows = storage.read(workspace, QUARANTINE,
                        columns=["source_path", "identity_id", "kind", "reason", "detail",
                                 "manifest_line"],
                        where=f"run_id = '{run_id}'")
    return rows.to_pylist()[:MAX_TABLE_ROWS]


def publish(key: str, markdown: str, quarantine: list[dict[str, Any]] | None = None) -> None:
    create_markdown_artifact(markdown=markdown, key=key, description="run summary")
    if quarantine is not None:
        create_table_artifact(
            table=quarantine or [{"reason": "none", "detail": "nothing quarantined this run"}],
            key=f"{key}-quarantine",
            description=f"files refused this run (first {MAX_TABLE_ROWS})",
        )


def train_generator_markdown(report: TrainReport) -> str:
    """Summary of a ``train_generator`` run."""
    resumed = f", resumed from step {report.resumed_from}" if report.resumed_from else ""
    per_step = (f"{report.seconds_per_step:.2f} s/step" if report.seconds_per_step
                else "no steps this run")
    lines = [
        f"# Generator `{report.name}` ({report.config})", "",
        f"- steps: {report.steps} ({report.steps_this_run} this run{resumed}), {per_step}, "
        f"{report.seconds:.0f} s in all, on {report.device}",
        f"- final loss (mean of the last 100 steps): {report.final_loss:.4f}",
        f"- generator: `{report.generator_dir}` (version `{report.generator_version}`)",
        f"- report: [{report.report_html}]({Path(report.report_html).as_uri()})",
        f"- split: `{report.split or 'none: every identity'}`; "
        f"{report.identities} training identities",
        "", "| style | examples | skipped |", "|---|---:|---|",
    ]
    for style in sorted(set(report.examples_per_style) | set(report.skipped)):
        lines.append(f"| {style} | {report.examples_per_style.get(style, 0)} "
                     f"| {_counts(report.skipped.get(style, {}))} |")
    lines += ["", "| role | encoder version |", "|---|---|"]
    lines += [f"| {role} | `{v}` |" for role, v in report.encoder_versions.items()]
    return "\n".join(lines)


def generate_style_rows(report: GenerateReport) -> list[dict[str, Any]]:
    return [{"style": style, **counts.model_dump()} for style, counts in report.per_style.items()]


def generate_markdown(report: GenerateReport, plan: PlanSummary) -> str:
    lines = [f"# Generate run `{report.run_id}`", "",
             f"Generator `{report.generator_version}` (`{report.generator}`), "
             f"{plan.samples_per_face} samples per face, on {report.task_runner} "
             f"({', '.join(report.devices)}); {report.seconds:.1f} s.", "",
             f"Shards: {report.shards} ({report.shards_skipped} already finished, "
             f"{len(report.failed_shards)} failed).", "",
             "| style | planned | generated | reused | skipped (exists) | skipped (no vectors) "
             "| flagged |", "|---|---:|---:|---:|---:|---:|---:|"]
    for style, c in report.per_style.items():
        lines.append(f"| {style} | {c.planned} | {c.generated} | {c.reused} | "
                     f"{c.skipped_existing} | {c.skipped_no_vectors} | {c.flagged} |")
    lines += ["", f"Faces considered: {plan.faces_considered}, eligible: {plan.faces_eligible}; "
              f"skipped: {_counts(plan.skipped_faces)}."]
    if plan.unmatched_filters:
        lines.append(f"Face filters that matched nothing: {', '.join(plan.unmatched_filters)}.")
    lines.append(f"Flagged sketches (not usable): {_counts(report.flagged)}.")
    if report.merge and report.merge.tag:
        m = report.merge
        lines.append(f"Table `{m.table}`: {m.inserted} inserted, {m.updated} updated, "
                     f"{m.rows} rows, version {m.version} tagged `{m.tag}`.")
    elif report.merge:
        lines.append(f"Table `{report.merge.table}` unchanged ({report.merge.rows} rows).")
    if report.failed_shards:
        lines += ["", "Failed shards (run again to finish them):", ""]
        lines += [f"- `{shard}`: {error}" for shard, error in sorted(report.failed_shards.items())]
    return "\n".join(lines)


def publish_generate(markdown: str, style_rows: list[dict[str, Any]]) -> None:
    create_markdown_artifact(markdown=markdown, key="generate-summary", description="run summary")
    create_table_artifact(table=style_rows or [{"style": "none"}], key="generate-summary-styles",
                          description="sketches per style: planned, generated, skipped, flagged")


def prune_markdown(report: PruneReport) -> str:
    title = "Prune (dry run: nothing removed)" if report.dry_run else "Prune"
    rows = "\n".join(f"| {why} | {size:,} |" for why, size in sorted(report.summary().items()))
    return "\n".join([
        f"# {title}", "", *[f"- {line}" for line in report.lines()], "",
        "| what | bytes |", "|---|---:|", rows or "| nothing | 0 |", "",
        f"Workspace: {report.bytes_before:,} bytes before, {report.bytes_after:,} after "
        f"(LanceDB's clean-up freed {report.lancedb_bytes_freed:,})."])


def validate_markdown(outcome: ValidationReport) -> str:
    d, m = outcome.dataset, outcome.metrics
    state = "**published**" if outcome.published else "**rejected** (not published)"
    lines = [
        f"# Validation run `{outcome.run_id}`", "",
        f"Dataset version `{outcome.version}` {state}; current published version: "
        f"`{outcome.current_version or 'none'}`.", "",
        f"- sketches {d.sketches}: accepted {d.accepted}, rejected {d.rejected} "
        f"({d.acceptance_rate:.1%} accepted), {d.identities} identities",
        f"- metrics: {m.computed} computed, {m.rescored} rescored against the new gallery, "
        f"{m.carried} carried (no new face beat their impostor), "
        f"{m.reused} reused (version `{m.metrics_version}`); "
        f"vectors encoded: {', '.join(f'{k} {v}' for k, v in m.encoded.items()) or 'none'}",
        f"- style check: {m.style_method or 'none'} over {', '.join(m.style_classes) or '-'}",
        f"- contracts: {'passed' if outcome.contracts_success else 'FAILED'}"
        + (" (reused from the identical earlier check)" if outcome.reused_contracts else ""),
        f"- report: [{Path(outcome.report_path).name}]({Path(outcome.report_path).as_uri()})",
    ]
    if outcome.data_docs:
        lines.append(f"- Data Docs: {outcome.data_docs}")
    contract = [(style, f.pair_verdict) for style, f in d.per_style.items() if f.pair_verdict]
    if contract:
        lines += ["", "Style contract (pairs of drawings of the same face, per style):", ""]
        lines += [f"- **{style}**: {'pass' if p.passed else 'FAIL'}, {p.won} of {p.compared} "
                  f"won ({_share(p.share)}, threshold {p.threshold:.0%}); pairing: {p.pairing}; "
                  f"called {style} {_share(p.absolute_share)} (a figure, not a gate)"
                  for style, p in contract]
    if d.reasons:
        lines += ["", "Rejected by reason:", ""]
        lines += [f"- **{reason}**: {n}" for reason, n in sorted(d.reasons.items())]
    if outcome.failed_expectations:
        lines += ["", "Failed expectations:", ""]
        lines += [f"- {f}" for f in outcome.failed_expectations]
    return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def validate_style_rows(outcome: ValidationReport) -> list[dict[str, Any]]:
    return [{"style": style, "sketches": f.sketches, "accepted": f.accepted,
             "identities": f.identities,
             "mean_identity_similarity": _round(f.mean_identity_similarity),
             "mean_identity_margin": _round(f.mean_identity_margin),
             "wrong_style": f.wrong_style, "frechet": _round(f.frechet),
             "frechet_reference": f.frechet_reference, **_contract_row(f.pair_verdict)}
            for style, f in outcome.dataset.per_style.items()]


def _contract_row(verdict: StylePairs | None) -> dict[str, Any]:
    """The style contract's columns (None where no verdict was computed: same keys on
    every row, as a table artifact needs)."""
    if verdict is None:
        return dict.fromkeys(("style_contract", "won", "share_won", "pairing",
                              "called_own_style"))
    return {"style_contract": "pass" if verdict.passed else "FAIL",
            "won": f"{verdict.won}/{verdict.compared}", "share_won": _round(verdict.share),
            "pairing": verdict.pairing, "called_own_style": _round(verdict.absolute_share)}


def publish_validate(outcome: ValidationReport) -> None:
    create_markdown_artifact(markdown=validate_markdown(outcome), key="validate-summary",
                             description="validation summary")
    create_table_artifact(table=validate_style_rows(outcome) or [{"style": "none"}],
                          key="validate-styles", description="per-style figures")
    create_link_artifact(link=Path(outcome.report_path).as_uri(), key="validate-report",
                         link_text=f"validation report for {outcome.version}",
                         description="self-contained HTML report (opens offline)")


def synthesize_markdown(report: SynthesizeReport) -> str:
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
