"""Markdown and table artifacts: what a reviewer reads in the Prefect UI after a run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from schemas.generation import GenerateReport, PlanSummary
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
    lines = ["## Ingest", "", "| source | seen | ingested | skipped | quarantined | seconds |",
             "|---|---:|---|---|---|---:|"]
    for r in reports:
        lines.append(f"| `{r.source}` | {r.seen} | {_counts(r.ingested)} | {_counts(r.skipped)} "
                     f"| {_counts(r.quarantined)} | {r.seconds:.1f} |")
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
