"""Run suites against data frames and build Data Docs into the workspace.

A file-backed GX context under ``<workspace>/gx`` keeps every validation result, so Data
Docs show history across runs. Data Docs load their styles from CDNs and render unstyled
offline, which is why reviewers also get the self-contained HTML report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from data_contracts.suites import SuiteSpec

MAX_FAILING_KEYS = 50
DATASOURCE = "clip4sketch"


class ExpectationOutcome(BaseModel):
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    mostly: float | None = None
    failing_keys: list[str] = Field(default_factory=list)
    observed: Any = None

    def label(self) -> str:
        column = f"({self.column})" if self.column else ""
        return f"{self.expectation}{column}"


class SuiteOutcome(BaseModel):
    suite: str
    success: bool
    rows: int
    expectations: list[ExpectationOutcome]
    # The values the suite's parameters had in this run (the thresholds it was judged by).
    parameters: dict[str, Any] = Field(default_factory=dict)

    def failures(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success]


class ContractReport(BaseModel):
    success: bool
    suites: list[SuiteOutcome]
    data_docs: str | None = None

    def failures(self) -> list[str]:
        """``suite: expectation(column)`` for every failed expectation."""
        return [f"{s.suite}: {e.label()}" for s in self.suites for e in s.failures()]


def _context(root: Path):
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="file", project_root_dir=str(root))
    context.variables.progress_bars = {"globally": False}
    return context


# A resource no store holds: passed as the only identifier to build, every page builder
# skips its resources and only the index is written.
_INDEX_ONLY = ("index only",)


def rebuild_data_docs(root: Path) -> None:
    """Rebuild the Data Docs index from the results still stored (after retention removed
    old ones), so it links no page that is gone; the index builder also removes the pages
    whose result is gone. Only the index: the kept results' pages were built when they were
    validated, and rendering every one of them again was the prune's largest fixed cost
    (0.78 s a night, docs/results/reliability.md)."""
    if (root / "gx" / "great_expectations.yml").is_file():
        _context(root).build_data_docs(resource_identifiers=list(_INDEX_ONLY))


def _outcome(result: Any, key: str) -> ExpectationOutcome:
    config = result.expectation_config
    details = result.result or {}
    keys = [str(row.get(key)) for row in details.get("unexpected_index_list") or []
            if isinstance(row, dict)]
    return ExpectationOutcome(
        expectation=config.type,
        column=config.kwargs.get("column"),
        success=bool(result.success),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        mostly=config.kwargs.get("mostly"),
        failing_keys=sorted(set(keys))[:MAX_FAILING_KEYS],
        observed=details.get("observed_value"),
    )


def _suite(context, spec: SuiteSpec):
    """The stored suite when it already states ``spec`` (its digest in ``meta``), else
    ``spec`` written: writing a suite rewrites every expectation's file, and its checkpoint
    and Data Docs page after it. Thresholds and styles are parameters, outside the digest,
    so only a change of what is checked writes."""
    try:
        stored = context.suites.get(spec.name)
    except Exception:  # noqa: BLE001 - GX raises several kinds for "no such suite"
        stored = None
    if stored is not None and (stored.meta or {}).get("spec_sha256") == spec.sha256():
        return stored, False
    return context.suites.add_or_update(spec.build()), True


def _checkpoint(context, spec: SuiteSpec, batch, suite, changed: bool):
    """The suite's validation definition and checkpoint, written only when new or when the
    suite changed. The checkpoint has no actions: Data Docs are built once per run for the
    new results (``run_suites``), not once per suite with the index each time."""
    import great_expectations as gx

    if not changed:
        try:
            checkpoint = context.checkpoints.get(spec.name)
            if not checkpoint.actions and checkpoint.result_format == _result_format(spec):
                return checkpoint
        except Exception:  # noqa: BLE001 - missing or from another layout: written below
            pass
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=spec.name, data=batch, suite=suite))
    return context.checkpoints.add_or_update(gx.Checkpoint(
        name=spec.name, validation_definitions=[definition], actions=[],
        result_format=_result_format(spec)))


def _pandas_source(context):
    """The workspace's pandas data source with the assets earlier runs added. Made anew
    (``add_or_update_pandas``) it loses them, and adding eight assets and their batch
    definitions back rewrote the context's config file each night (0.11 s)."""
    try:
        source = context.data_sources.get(DATASOURCE)
        if source.type == "pandas":
            return source
    except KeyError:
        pass
    return context.data_sources.add_or_update_pandas(DATASOURCE)


def _result_format(spec: SuiteSpec) -> dict:
    return {"result_format": "COMPLETE", "unexpected_index_column_names": [spec.key]}


def run_suites(root: Path, checks: list[tuple[SuiteSpec, Any]]) -> ContractReport:
    """Validate each (suite, pandas frame) pair through a checkpoint, then build Data Docs
    for this run's results.

    One checkpoint per suite because a checkpoint feeds one frame to all its validations.
    """
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
    )

    context = _context(root)
    source = _pandas_source(context)
    outcomes = []
    built: list[Any] = []
    for spec, frame in checks:
        asset = (source.get_asset(spec.name) if spec.name in source.get_asset_names()
                 else source.add_dataframe_asset(spec.name))
        batch = (asset.get_batch_definition("whole") if asset.batch_definitions
                 else asset.add_batch_definition_whole_dataframe("whole"))
        suite, changed = _suite(context, spec)
        if changed:
            built.append(ExpectationSuiteIdentifier(name=spec.name))
        checkpoint = _checkpoint(context, spec, batch, suite, changed)
        run = checkpoint.run(batch_parameters={"dataframe": frame},
                             expectation_parameters=dict(spec.parameters) or None)
        ((identifier, result),) = run.run_results.items()
        built.append(identifier)
        outcomes.append(SuiteOutcome(
            suite=spec.name, success=bool(result.success), rows=len(frame),
            expectations=[_outcome(r, spec.key) for r in result.results],
            parameters=dict(spec.parameters),
        ))
    if built:
        context.build_data_docs(resource_identifiers=built)
    sites = context.get_docs_sites_urls()
    return ContractReport(success=all(o.success for o in outcomes), suites=outcomes,
                          data_docs=sites[0]["site_url"] if sites else None)
