"""The ``ingest`` flow: sources into the faces and quarantine tables."""

from __future__ import annotations

from prefect import flow

from flows.artifacts import ingest_markdown, publish, quarantine_rows
from flows.common import hold_workspace, resolve, write_run_record
from tasks.ingest.run import IngestReport, ingest_task
from tasks.runtime import current_run_id


@flow(name="ingest", log_prints=True)
def ingest(
    sources: list[str],
    workspace: str | None = None,
    root: str | None = None,
    pre_aligned: bool = False,
    retry_quarantined: bool = False,
) -> list[IngestReport]:
    """Ingest folders of identities and/or pairs manifests (see README: Ingestion)."""
    settings, ws = resolve(workspace)
    run_id = current_run_id()
    with hold_workspace(settings, ws, "ingest", run_id):
        reports = [
            ingest_task(str(ws.root), source, root=root, pre_aligned=pre_aligned,
                        settings=settings.ingest, run_id=run_id,
                        retry_quarantined=retry_quarantined)
            for source in sources
        ]
        publish("ingest-summary", ingest_markdown(reports), quarantine_rows(ws, run_id))
        write_run_record(ws, "ingest", run_id, {"sources": sources, "root": root,
                                                "pre_aligned": pre_aligned},
                         {f"ingest[{i}]": r for i, r in enumerate(reports)})
    return reports
