"""The ``validate`` flow: metrics -> contracts -> publish or reject -> report -> artifacts.

A version is published only when every suite passes; otherwise the flow writes the report
and its artifacts first, then ends Failed with a message that names the failed expectations
and the report, and the previously published version stays current. Re-validating an
unchanged dataset reuses the stored metrics and the earlier contract outcome, so it costs
little more than reading the tables and writing a new report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from data_contracts.thresholds import load_thresholds
from flows.common import encoder_spec, hold_workspace, resolve, write_run_record
from schemas.encoders import EncoderSpec
from schemas.settings import load_settings
from schemas.validation import MetricsReport, Scope, ValidationReport
from tasks.runtime import current_run_id, retry_transient
from tasks.storage import Workspace, disk_space
from tasks.styles.registry import styles_for
from tasks.validate.compute import compute_metrics
from tasks.validate.judge import judge_dataset
from tasks.validate.report import write_report

MAX_FAILED_LISTED = 5


class ContractsFailedError(RuntimeError):
    """The dataset broke its contracts: not published (the report says why).

    Carries the full outcome, so a caller (the nightly run) can record the rejected
    version's figures in its manifest.
    """

    def __init__(self, message: str, outcome: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


def _registry(workspace: str):
    return styles_for(load_settings(workspace))


@task(name="validate-metrics", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def metrics_task(workspace: str, identity: EncoderSpec, image: EncoderSpec,
                 text: EncoderSpec | None, scope: Scope, run_id: str) -> MetricsReport:
    return compute_metrics(Workspace.open(workspace), identity, image, _registry(workspace),
                           scope=scope, text_spec=text, run_id=run_id)


@task(name="validate-contracts-publish", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def contracts_task(workspace: str, metrics: MetricsReport, identity: EncoderSpec,
                   image: EncoderSpec, scope: Scope, thresholds: str | None, report_path: str,
                   run_id: str) -> ValidationReport:
    """Verdicts, contracts, then publish or reject (a rejection is a result, not an error)."""

    return judge_dataset(Workspace.open(workspace), metrics, _registry(workspace), identity,
                         image, scope=scope, thresholds_path=thresholds,
                         report_path=report_path, run_id=run_id)


@task(name="validate-report", cache_policy=NO_CACHE)
def report_task(workspace: str, outcome: ValidationReport, thresholds: str | None) -> str:
    return str(write_report(Workspace.open(workspace), outcome, load_thresholds(thresholds)))


def summary_markdown(outcome: ValidationReport) -> str:
    d, m = outcome.dataset, outcome.metrics
    state = "**published**" if outcome.published else "**rejected** (not published)"
    lines = [
        f"# Validation run `{outcome.run_id}`", "",
        f"Dataset version `{outcome.version}` {state}; current published version: "
        f"`{outcome.current_version or 'none'}`.", "",
        f"- sketches {d.sketches}: accepted {d.accepted}, rejected {d.rejected} "
        f"({d.acceptance_rate:.1%} accepted), {d.identities} identities",
        f"- metrics: {m.computed} computed, {m.reused} reused (version `{m.metrics_version}`); "
        f"vectors encoded: {', '.join(f'{k} {v}' for k, v in m.encoded.items()) or 'none'}",
        f"- style check: {m.style_method or 'none'} over {', '.join(m.style_classes) or '-'}",
        f"- contracts: {'passed' if outcome.contracts_success else 'FAILED'}"
        + (" (reused from the identical earlier check)" if outcome.reused_contracts else ""),
        f"- report: [{Path(outcome.report_path).name}]({Path(outcome.report_path).as_uri()})",
    ]
    if outcome.data_docs:
        lines.append(f"- Data Docs: {outcome.data_docs}")
    if d.reasons:
        lines += ["", "Rejected by reason:", ""]
        lines += [f"- **{reason}**: {n}" for reason, n in sorted(d.reasons.items())]
    if outcome.failed_expectations:
        lines += ["", "Failed expectations:", ""]
        lines += [f"- {f}" for f in outcome.failed_expectations]
    return "\n".join(lines)


def style_rows(outcome: ValidationReport) -> list[dict[str, Any]]:
    return [{"style": style, "sketches": f.sketches, "accepted": f.accepted,
             "identities": f.identities,
             "mean_identity_similarity": _round(f.mean_identity_similarity),
             "mean_identity_margin": _round(f.mean_identity_margin),
             "wrong_style": f.wrong_style, "frechet": _round(f.frechet),
             "frechet_reference": f.frechet_reference}
            for style, f in outcome.dataset.per_style.items()]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def publish_artifacts(outcome: ValidationReport) -> None:
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    create_markdown_artifact(markdown=summary_markdown(outcome), key="validate-summary",
                             description="validation summary")
    create_table_artifact(table=style_rows(outcome) or [{"style": "none"}],
                          key="validate-styles", description="per-style figures")
    create_link_artifact(link=Path(outcome.report_path).as_uri(), key="validate-report",
                         link_text=f"validation report for {outcome.version}",
                         description="self-contained HTML report (opens offline)")


@flow(name="validate", log_prints=True)
def validate(
    workspace: str | None = None,
    generator_version: str | None = None,
    styles: list[str] | None = None,
    thresholds: str | None = None,
    identity_encoder: EncoderSpec | None = None,
    image_encoder: EncoderSpec | None = None,
    text_encoder: EncoderSpec | None = None,
) -> ValidationReport:
    """Validate the ``sketches`` table (or the part of it one generator version / some styles
    drew) and publish it as a dataset version if every contract holds.

    ``thresholds`` defaults to the reviewed ``data_contracts/thresholds.yaml``;
    ``text_encoder`` matters only with open_clip image and text encoders (zero-shot style
    check); otherwise the style classifier is trained on the registry's examples.
    """
    settings, ws = resolve(workspace)
    run_id = current_run_id()
    identity = encoder_spec(settings, "identity", identity_encoder)
    image = encoder_spec(settings, "image", image_encoder)
    text = encoder_spec(settings, "text", text_encoder) if text_encoder else None
    scope = Scope(generator_version=generator_version,
                  styles=tuple(styles) if styles else None)
    report_path = str(ws.reports_dir / f"validate-{run_id}.html")
    # Not every write goes through tasks.storage (great-expectations writes its own files):
    # a full disk met anywhere here is reported as one, not as a bare errno.
    with hold_workspace(settings, ws, "validate", run_id), \
            disk_space(ws.root, "validating the workspace"):
        metrics = metrics_task(str(ws.root), identity, image, text, scope, run_id)
        outcome = contracts_task(str(ws.root), metrics, identity, image, scope, thresholds,
                                 report_path, run_id)
        report_task(str(ws.root), outcome, thresholds)
        publish_artifacts(outcome)
        record = write_run_record(
            ws, "validate", run_id,
            {"generator_version": generator_version, "styles": styles,
             "thresholds": thresholds,
             "encoders": [s.model_dump() for s in (identity, image, text) if s]},
            {"validate": outcome},
        )
        outcome.run_record = str(record)
    print(f"dataset version {outcome.version}: {outcome.status}; "
          f"{outcome.dataset.accepted}/{outcome.dataset.sketches} sketches accepted; "
          f"report {outcome.report_path}")
    if not outcome.published:
        failed = outcome.failed_expectations
        listed = "; ".join(failed[:MAX_FAILED_LISTED]) + (
            f" and {len(failed) - MAX_FAILED_LISTED} more" if len(failed) > MAX_FAILED_LISTED
            else "")
        raise ContractsFailedError(
            f"dataset version {outcome.version} was not published: {listed or 'contracts failed'}."
            f" Report: {outcome.report_path}. The published version stays "
            f"{outcome.current_version or 'none (nothing published yet)'}.",
            outcome,
        )
    return outcome
