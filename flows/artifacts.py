"""Markdown and table artifacts: what a reviewer reads in the Prefect UI after a run."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks import storage
from tasks.embed import EmbedReport
from tasks.ingest.run import IngestReport
from tasks.storage import QUARANTINE, Workspace

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
