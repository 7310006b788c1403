"""The ``backfill`` flow: draw a style (new, or inactive in the nightly run) for every stored
face, then validate and publish a new dataset version.

Only the missing (face, style) items are drawn: the plan skips every sketch the generator
version already made, so a backfill interrupted at any point is finished by running it again.
No ingest and no embedding: a backfill works on what is stored.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from flows.common import hold_workspace, parent_heartbeat_only, resolve, write_run_record
from flows.stages import (
    DatasetRejectedError,
    Published,
    Stages,
    encoder_options,
    generate_and_publish,
    generation_preview,
)
from schemas.encoders import EncoderSpec
from tasks.generate.catalog import checked_generator, find_generator
from tasks.runtime import current_run_id
from tasks.styles.registry import prompts_for


class BackfillReport(BaseModel):
    run_id: str
    workspace: str
    styles: list[str]
    generator: str
    dry_run: bool = False
    stages: Stages = Field(default_factory=Stages)
    published: Published = Field(default_factory=Published)
    run_record: str | None = None


class BackfillRejectedError(DatasetRejectedError):
    """The backfilled dataset broke a contract and was not published."""


@flow(name="backfill", log_prints=True)
def backfill(
    styles: list[str],
    generator: str | None = None,
    workspace: str | None = None,
    thresholds: str | None = None,
    identity_encoder: EncoderSpec | None = None,
    image_encoder: EncoderSpec | None = None,
    dry_run: bool = False,
) -> BackfillReport:
    """``styles``: style names from the registry (an unknown name fails, listing the known
    ones); ``generator``: a saved generator's version or folder (default: settings, then
    ``generators/default/final``)."""

    if not styles:
        raise ValueError("backfill needs at least one style (--style NAME)")
    settings, ws = resolve(workspace)
    run_id = current_run_id()
    # Both checks before anything runs: a typo in a style or version costs seconds, not a night.
    names = list(prompts_for(settings, styles))
    path = find_generator(ws.root, generator or settings.generate.generator)
    checked_generator(path)
    report = BackfillReport(run_id=run_id, workspace=str(ws.root), styles=names,
                            generator=str(path), dry_run=dry_run)
    stages = report.stages
    if dry_run:
        stages.plan("generate", generation_preview(settings, ws, path, names))
        stages.plan("validate", "metrics and contracts of this generator's sketches (every "
                                "style); publish if every contract holds")
        print("\n".join(["backfill --dry-run: nothing changed. It would:", *stages.lines()]))
        return report
    encoders = encoder_options(settings, identity_encoder, image_encoder)
    try:
        with (hold_workspace(settings, ws, "backfill", run_id),
              parent_heartbeat_only(settings)):
            report.published = generate_and_publish(stages, settings, ws, path, names,
                                                    thresholds, encoders)
    finally:
        reports: dict[str, BaseModel] = {}
        if report.published.generation:
            reports["generate"] = report.published.generation
        if report.published.validation:
            reports["validate"] = report.published.validation
        record = write_run_record(ws, "backfill", run_id,
                                  {"styles": names, "generator": str(path),
                                   "thresholds": thresholds,
                                   "generation": settings.generate.model_dump(mode="json")},
                                  reports, summary=stages.summary())
        report.run_record = str(record)
    print("\n".join([f"backfill {run_id}:", *stages.lines(), f"run manifest: {record}"]))
    if report.published.rejected:
        raise BackfillRejectedError(report.published.rejected, report)
    return report
