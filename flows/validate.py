"""The ``validate`` flow: metrics -> contracts -> publish or reject -> report -> artifacts.

A version is published only when every suite passes; otherwise the flow writes the report
and its artifacts first, then ends Failed with a message that names the failed expectations
and the report, and the previously published version stays current. Re-validating an
unchanged dataset reuses the stored metrics and the earlier contract outcome, so it costs
little more than reading the tables and writing a new report.
"""

from __future__ import annotations

from prefect import flow

from flows.artifacts import publish_validate
from flows.common import encoder_spec, hold_workspace, resolve, write_run_record
from schemas.encoders import EncoderSpec
from schemas.validation import Scope, ValidationReport
from tasks.runtime import current_run_id
from tasks.storage import disk_space
from tasks.validate.compute import metrics_task
from tasks.validate.judge import contracts_task
from tasks.validate.report import report_task

MAX_FAILED_LISTED = 5


class ContractsFailedError(RuntimeError):
    """The dataset broke its contracts: not published (the report says why).

    Carries the full outcome, so a caller (the nightly run) can record the rejected
    version's figures in its manifest.
    """

    def __init__(self, message: str, outcome: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


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
                                 report_path, run_id, text)
        report_task(str(ws.root), outcome, thresholds)
        publish_validate(outcome)
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
