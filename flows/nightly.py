"""The ``nightly`` flow: ingest what is new, then embed it.

Later stages (generate, validate, publish, train, evaluate) join here as they land;
each stage skips work whose output exists, so a nightly run over an unchanged source
costs little more than Prefect's start-up.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from flows.artifacts import embed_markdown, ingest_markdown, publish, quarantine_rows
from flows.common import encoder_spec, hold_workspace, resolve, write_run_record
from schemas.encoders import EncoderSpec
from tasks.embed import EmbedReport, embed_task
from tasks.ingest.run import IngestReport, ingest_task
from tasks.runtime import current_run_id


class NightlyReport(BaseModel):
    run_id: str
    workspace: str
    ingest: list[IngestReport]
    embed: EmbedReport
    run_record: str


@flow(name="nightly", log_prints=True)
def nightly(
    sources: list[str],
    workspace: str | None = None,
    root: str | None = None,
    pre_aligned: bool = False,
    retry_quarantined: bool = False,
    identity_encoder: EncoderSpec | None = None,
    image_encoder: EncoderSpec | None = None,
) -> NightlyReport:
    settings, ws = resolve(workspace)
    run_id = current_run_id()
    specs = [encoder_spec(settings, "identity", identity_encoder),
             encoder_spec(settings, "image", image_encoder)]
    with hold_workspace(settings, ws, "nightly", run_id):
        ingested = [
            ingest_task(str(ws.root), source, root=root, pre_aligned=pre_aligned,
                        settings=settings.ingest, run_id=run_id,
                        retry_quarantined=retry_quarantined)
            for source in sources
        ]
        embedded = embed_task(str(ws.root), specs, run_id=run_id)
        markdown = "\n\n".join([f"# Nightly run `{run_id}`", f"Workspace: `{ws.root}`",
                                ingest_markdown(ingested), embed_markdown(embedded)])
        publish("nightly-summary", markdown, quarantine_rows(ws, run_id))
        record = write_run_record(
            ws, "nightly", run_id,
            {"sources": sources, "root": root, "pre_aligned": pre_aligned,
             "encoders": [s.model_dump() for s in specs]},
            {**{f"ingest[{i}]": r for i, r in enumerate(ingested)}, "embed": embedded},
        )
    return NightlyReport(run_id=run_id, workspace=str(ws.root), ingest=ingested,
                         embed=embedded, run_record=str(record))
