"""The ``ingest`` flow: sources into the faces and quarantine tables."""

from __future__ import annotations

from prefect import flow

from flows.artifacts import ingest_markdown, publish, quarantine_rows
from flows.common import cluster_address, hold_workspace, resolve, write_run_record
from flows.sharded import ingest_stage
from tasks.ingest.run import IngestReport
from tasks.runtime import current_run_id


@flow(name="ingest", log_prints=True)
def ingest(
    sources: list[str],
    workspace: str | None = None,
    root: str | None = None,
    pre_aligned: bool = False,
    retry_quarantined: bool = False,
    dask_address: str | None = None,
) -> list[IngestReport]:
    """Ingest folders of identities and/or pairs manifests (see README: Ingestion).

    ``dask_address`` (default ``CLIP4SKETCH_DASK_ADDRESS``): decode, detect and align in
    shards on that Dask cluster; the tables are written here, as a local run writes them.
    """
    settings, ws = resolve(workspace)
    run_id = current_run_id()
    address = cluster_address(settings, dask_address, "ingest")
    with hold_workspace(settings, ws, "ingest", run_id):
        reports = ingest_stage(settings, ws, sources, root=root, pre_aligned=pre_aligned,
                               retry_quarantined=retry_quarantined, run_id=run_id,
                               address=address)
        publish("ingest-summary", ingest_markdown(reports), quarantine_rows(ws, run_id))
        write_run_record(ws, "ingest", run_id, {"sources": sources, "root": root,
                                                "pre_aligned": pre_aligned,
                                                "dask_address": address},
                         {f"ingest[{i}]": r for i, r in enumerate(reports)})
    return reports
