"""The ``nightly`` flow: ingest -> embed -> generate what is missing -> validate -> publish
-> (train and evaluate, when configured).

Every stage skips work whose output exists (faces by content hash, vectors by encoder version,
sketches by item key, validation by content), so a night with nothing new costs little more
than Prefect's start-up, and a night with a few new faces does only their work. The whole run
holds the workspace lock; ``generate`` and ``validate`` run as sub-flows (visible as such in
the UI) and share their parent's hold.

Before the first generator is trained there is nothing to draw with: the night ingests and
embeds, and records generation as skipped with the command that fixes it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import BaseModel, Field

from flows.artifacts import embed_markdown, ingest_markdown, publish, quarantine_rows
from flows.common import (
    cluster_address,
    encoder_spec,
    hold_workspace,
    parent_heartbeat_only,
    resolve,
    write_run_record,
)
from flows.evaluate import evaluate
from flows.sharded import embed_stage, ingest_stage
from flows.stages import (
    DatasetRejectedError,
    Published,
    Stages,
    generate_and_publish,
    generation_preview,
)
from flows.train_recognizer import train_recognizer
from schemas.encoders import EncoderSpec
from schemas.settings import Settings
from tasks.embed import EmbedReport
from tasks.generate.catalog import DEFAULT_GENERATOR, find_generator
from tasks.ingest.preview import preview_source
from tasks.ingest.run import IngestReport
from tasks.retention import PruneReport, plan_prune, prune, resolve_policy
from tasks.runtime import current_run_id
from tasks.storage import Workspace


class NightlyReport(BaseModel):
    run_id: str
    workspace: str
    dry_run: bool = False
    stages: Stages = Field(default_factory=Stages)
    ingest: list[IngestReport] = Field(default_factory=list)
    embed: EmbedReport | None = None
    published: Published = Field(default_factory=Published)
    evaluation: str | None = None  # metrics.json of the night's evaluation
    recognizer: str | None = None
    prune: PruneReport | None = None
    run_record: str | None = None


class NightlyRejectedError(DatasetRejectedError):
    """The night ran, but its dataset broke a contract and was not published."""


def _generator(settings: Settings, ws: Workspace, given: str | None) -> tuple[Path | None, str]:
    """The generator folder, or None with the reason when none is saved yet."""
    chosen = given or settings.generate.generator
    path = find_generator(ws.root, chosen)
    if chosen is None and not path.exists():
        return None, (f"no generator at {ws.root / DEFAULT_GENERATOR}: train one with "
                      f"`clip4sketch train-generator --name default`")
    return path, ""


def _dry_run(settings: Settings, ws: Workspace, report: NightlyReport, sources: list[str],
             root: str | None, generator: Path | None, why_not: str,
             styles: list[str] | None, evaluate_pairs: str | None,
             train_recognizer_steps: int) -> None:
    stages = report.stages
    previews = [preview_source(ws, s, root, settings.ingest) for s in sources]
    new_photos = sum(p.new.get("photo", 0) for p in previews)
    stages.plan("ingest", "; ".join(
        f"{p.source}: {p.seen} files, {p.n_new} new ({p.known} stored, "
        f"{p.already_quarantined} refused before, {p.unreadable} unreadable)" for p in previews)
        or "no sources")
    stages.plan("embed", f"vectors for {sum(p.n_new for p in previews)} new faces, and any "
                         f"stored face lacking one from the current encoders")
    if generator is None:
        stages.skip("generate", why_not)
        return
    stages.plan("generate", generation_preview(settings, ws, generator, styles, new_photos))
    stages.plan("validate", "metrics and contracts of this generator's sketches; publish if "
                            "every contract holds")
    if train_recognizer_steps:
        stages.plan("train", f"head recognizer, {train_recognizer_steps} steps, on the "
                             f"published version")
    if evaluate_pairs:
        stages.plan("evaluate", f"{evaluate_pairs}: baseline"
                                + (" and the night's recognizer" if train_recognizer_steps
                                   else ""))


@flow(name="nightly", log_prints=True)
def nightly(
    sources: list[str] | None = None,
    workspace: str | None = None,
    root: str | None = None,
    pre_aligned: bool = False,
    retry_quarantined: bool = False,
    identity_encoder: EncoderSpec | None = None,
    image_encoder: EncoderSpec | None = None,
    generator: str | None = None,
    styles: list[str] | None = None,
    thresholds: str | None = None,
    train_recognizer_steps: int = 0,
    evaluate_pairs: str | None = None,
    evaluate_root: str | None = None,
    dry_run: bool = False,
    keep_published: int | None = None,
    keep_days: float | None = None,
    dask_address: str | None = None,
) -> NightlyReport:
    """One night's regeneration of the dataset.

    ``generator``: a folder or saved version (default: settings, then
    ``generators/default/final``); ``styles``: default every active style;
    ``thresholds``: default the reviewed ``data_contracts/thresholds.yaml``;
    ``train_recognizer_steps`` > 0 trains a head recognizer on the night's published version;
    ``evaluate_pairs`` (a pairs manifest) scores the baseline, and that recognizer, on it.
    ``dry_run`` prints what each stage would do and changes nothing.
    ``dask_address`` (default ``CLIP4SKETCH_DASK_ADDRESS``): ingest, embed and generate run in
    shards on that Dask cluster (see flows/sharded.py); the tables are written here.
    ``keep_published`` / ``keep_days`` (default: the retention settings; unset, nothing is
    removed): the night ends with a prune (see tasks/retention.py).
    """
    settings, ws = resolve(workspace)
    run_id = current_run_id()
    sources = list(sources or [])
    specs = [encoder_spec(settings, "identity", identity_encoder),
             encoder_spec(settings, "image", image_encoder)]
    report = NightlyReport(run_id=run_id, workspace=str(ws.root), dry_run=dry_run)
    stages = report.stages
    generator_path, why_not = _generator(settings, ws, generator)
    retention = (resolve_policy(keep_published, keep_days, settings.retention)
                 if keep_published is not None or settings.retention.keep_published else None)
    if dry_run:
        _dry_run(settings, ws, report, sources, root, generator_path, why_not, styles,
                 evaluate_pairs, train_recognizer_steps)
        if retention:
            plan = plan_prune(ws, *retention)
            stages.plan("prune", f"keep {len(plan.kept_versions)} version(s), prune "
                                 f"{len(plan.pruned_versions)}; {plan.bytes:,} bytes (as the "
                                 "workspace stands now, before tonight's version)")
        print("\n".join(["nightly --dry-run: nothing changed. It would:", *stages.lines()]))
        return report

    parameters = {"sources": sources, "root": root, "pre_aligned": pre_aligned,
                  "encoders": [s.model_dump() for s in specs],
                  "generator": str(generator_path) if generator_path else None,
                  "styles": styles, "thresholds": thresholds,
                  "train_recognizer_steps": train_recognizer_steps,
                  "evaluate_pairs": evaluate_pairs,
                  "dask_address": dask_address,
                  "generation": settings.generate.model_dump(mode="json"),
                  "retention": ({"keep_published": retention[0], "keep_days": retention[1]}
                                if retention else None)}
    try:
        with (hold_workspace(settings, ws, "nightly", run_id),
              parent_heartbeat_only(settings)):
            _run(settings, ws, report, sources, root, pre_aligned, retry_quarantined, specs,
                 generator_path, why_not, styles, thresholds, train_recognizer_steps,
                 evaluate_pairs, evaluate_root, dask_address)
            if retention:
                with stages.run("prune") as record:
                    report.prune = prune(ws, *retention)
                    record.detail = (f"kept {len(report.prune.kept_versions)} version(s), "
                                     f"pruned {len(report.prune.pruned_versions)}; "
                                     f"{report.prune.bytes_before - report.prune.bytes_after:,}"
                                     " bytes freed")
    finally:
        # Written on failure too: the manifest of a failed night says how far it got.
        record = write_run_record(ws, "nightly", run_id, parameters, _reports(report),
                                  summary=stages.summary())
        report.run_record = str(record)
        _publish_summary(ws, report)
    print("\n".join([f"nightly {run_id}:", *stages.lines(), f"run manifest: {record}"]))
    if report.published.rejected:
        raise NightlyRejectedError(report.published.rejected, report)
    return report


def _run(settings: Settings, ws: Workspace, report: NightlyReport, sources: list[str],
         root: str | None, pre_aligned: bool, retry_quarantined: bool,
         specs: list[EncoderSpec], generator: Path | None, why_not: str,
         styles: list[str] | None, thresholds: str | None, train_recognizer_steps: int,
         evaluate_pairs: str | None, evaluate_root: str | None,
         dask_address: str | None = None) -> None:
    stages, run_id = report.stages, report.run_id
    address = cluster_address(settings, dask_address, "ingest")
    with stages.run("ingest") as record:
        for source in sources:
            report.ingest += ingest_stage(settings, ws, [source], root=root,
                                          pre_aligned=pre_aligned,
                                          retry_quarantined=retry_quarantined, run_id=run_id,
                                          address=address)
        record.detail = (f"{sum(r.n_ingested for r in report.ingest)} new faces, "
                         f"{sum(r.n_quarantined for r in report.ingest)} quarantined; "
                         f"{sum(r.files_read for r in report.ingest):,} of "
                         f"{sum(r.seen for r in report.ingest):,} files read")
    with stages.run("embed") as record:
        report.embed = embed_stage(settings, ws, specs, run_id=run_id,
                                   address=cluster_address(settings, dask_address, "embed"))
        record.detail = ", ".join(f"{role} {t.computed} computed"
                                  for role, t in report.embed.tables.items())
    if generator is None:
        stages.skip("generate", why_not)
        return
    encoders = {f"{spec.role}_encoder": spec for spec in specs}
    report.published = generate_and_publish(stages, settings, ws, generator, styles,
                                            thresholds, encoders, dask_address)
    outcome = report.published.validation
    if outcome is None or not outcome.published:
        return
    recognizers = ["baseline"]
    if train_recognizer_steps:
        with stages.run("train") as record:
            trained = train_recognizer(workspace=str(ws.root), name=f"nightly-{outcome.version}",
                                       dataset=outcome.version, steps=train_recognizer_steps,
                                       resume=True, identity_encoder=specs[0])
            report.recognizer = trained.recognizer_dir
            recognizers.append(trained.recognizer_dir)
            record.detail = f"{trained.recognizer_dir}: {trained.steps} steps"
    if evaluate_pairs:
        with stages.run("evaluate") as record:
            scored = evaluate(pairs=evaluate_pairs, recognizers=recognizers,
                              out=str(ws.root / "evaluations" / f"nightly-{run_id}"),
                              workspace=str(ws.root), root=evaluate_root,
                              identity_encoder=specs[0])
            report.evaluation = scored.metrics_json
            record.detail = f"metrics: {scored.metrics_json}"


def _reports(report: NightlyReport) -> dict[str, BaseModel]:
    reports: dict[str, BaseModel] = {f"ingest[{i}]": r for i, r in enumerate(report.ingest)}
    if report.embed:
        reports["embed"] = report.embed
    if report.published.generation:
        reports["generate"] = report.published.generation
    if report.published.validation:
        reports["validate"] = report.published.validation
    if report.prune:
        reports["prune"] = report.prune
    return reports


def _publish_summary(ws: Workspace, report: NightlyReport) -> None:
    parts = [f"# Nightly run `{report.run_id}`", f"Workspace: `{ws.root}`", "",
             "| stage | status | seconds | detail |", "|---|---|---:|---|"]
    parts += [f"| {name} | {r.status} | {r.seconds:.1f} | {r.detail} |"
              for name, r in report.stages.records.items()]
    if report.ingest:
        parts += ["", ingest_markdown(report.ingest)]
    if report.embed:
        parts += ["", embed_markdown(report.embed)]
    publish("nightly-summary", "\n".join(parts), quarantine_rows(ws, report.run_id))
