"""The ``embed`` flow: identity and image vectors for every stored face."""

from __future__ import annotations

from prefect import flow

from flows.artifacts import embed_markdown, publish
from flows.common import (
    cluster_address,
    encoder_spec,
    hold_workspace,
    resolve,
    write_run_record,
)
from flows.sharded import embed_stage
from schemas.encoders import EncoderSpec
from tasks.embed import EmbedReport
from tasks.runtime import current_run_id


@flow(name="embed", log_prints=True)
def embed(
    workspace: str | None = None,
    identity_encoder: EncoderSpec | None = None,
    image_encoder: EncoderSpec | None = None,
    dask_address: str | None = None,
) -> EmbedReport:
    """Embed faces that have no vector from the current encoder versions.

    ``dask_address`` (default ``CLIP4SKETCH_DASK_ADDRESS``): encode in shards on that Dask
    cluster; the vectors are written here, as a local run writes them.
    """
    settings, ws = resolve(workspace)
    run_id = current_run_id()
    address = cluster_address(settings, dask_address, "embed")
    specs = [encoder_spec(settings, "identity", identity_encoder),
             encoder_spec(settings, "image", image_encoder)]
    with hold_workspace(settings, ws, "embed", run_id):
        report = embed_stage(settings, ws, specs, run_id=run_id, address=address)
        publish("embed-summary", embed_markdown(report))
        write_run_record(ws, "embed", run_id, {"encoders": [s.model_dump() for s in specs],
                                               "dask_address": address},
                         {"embed": report})
    return report
