"""Stages shared by ``nightly`` and ``backfill``: timing each stage for the run manifest, the
generate -> validate -> publish pair, and the dry run's account of what would happen.

A stage that fails is recorded as failed with its message before the error leaves the flow,
so the run manifest of a failed night says how far it got and how long each stage took.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from flows.common import encoder_spec
from flows.generate import generate
from flows.validate import ContractsFailedError, validate
from schemas.generation import GenerateReport
from schemas.settings import Settings
from schemas.validation import ValidationReport
from tasks.generate.catalog import checked_generator, trained_styles
from tasks.generate.conditions import ConditionError, condition_sources
from tasks.generate.plan import plan_generation
from tasks.storage import Workspace
from tasks.styles.registry import prompts_for

StageStatus = Literal["done", "skipped", "rejected", "failed", "planned"]


class StageRecord(BaseModel):
    status: StageStatus
    seconds: float = 0.0
    detail: str = ""


class Stages(BaseModel):
    """Stage name -> what happened, in the order the stages ran."""

    records: dict[str, StageRecord] = Field(default_factory=dict)

    @contextlib.contextmanager
    def run(self, name: str) -> Iterator[StageRecord]:
        record = StageRecord(status="done")
        self.records[name] = record
        started = time.perf_counter()
        try:
            yield record
        except BaseException as error:
            record.status = "failed"
            record.detail = record.detail or f"{type(error).__name__}: {error}"[:500]
            raise
        finally:
            record.seconds = round(time.perf_counter() - started, 3)

    def skip(self, name: str, why: str) -> None:
        self.records[name] = StageRecord(status="skipped", detail=why)

    def plan(self, name: str, what: str) -> None:
        self.records[name] = StageRecord(status="planned", detail=what)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Stage -> status, seconds, detail: the run manifest's ``summary``."""
        return {name: r.model_dump(mode="json") for name, r in self.records.items()}

    def lines(self) -> list[str]:
        return [f"{name:10} {r.status:8} {r.seconds:8.1f} s  {r.detail}"
                for name, r in self.records.items()]


class DatasetRejectedError(RuntimeError):
    """A run (nightly, backfill) ran through, but its dataset broke a contract and was not
    published; ``report`` holds every stage, for a caller that prints them."""

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class Published(BaseModel):
    """What the generate -> validate pair produced."""

    generation: GenerateReport | None = None
    validation: ValidationReport | None = None
    rejected: str | None = None  # the validation's message when the version was not published


def generate_and_publish(
    stages: Stages,
    settings: Settings,
    workspace: Workspace,
    generator: Path,
    styles: list[str] | None,
    thresholds: str | None,
    encoders: dict[str, Any],
    dask_address: str | None = None,
) -> Published:
    """Draw what is missing, then validate the generator's sketches and publish them.

    A rejected dataset is a result (``rejected`` holds why), not an exception: the caller
    records the night and then ends the run Failed, after its manifest is written.
    """
    out = Published()
    with stages.run("generate") as record:
        out.generation = generate(workspace=str(workspace.root), generator=str(generator),
                                styles=night_styles(settings, generator, styles),
                                dask_address=dask_address)
        generated = sum(c.generated for c in out.generation.per_style.values())
        record.detail = (f"generator {out.generation.generator_version}: {generated} drawn, "
                         f"{out.generation.shards} shards")
    with stages.run("validate") as record:
        try:
            out.validation = validate(workspace=str(workspace.root),
                                    generator_version=out.generation.generator_version,
                                    thresholds=thresholds, **encoders)
        except ContractsFailedError as error:
            record.status, record.detail = "rejected", str(error)
            out.validation, out.rejected = error.outcome, str(error)
            return out
        v = out.validation
        record.detail = (f"{v.version} {v.status}: {v.dataset.accepted}/{v.dataset.sketches} "
                         f"accepted; report {v.report_path}")
    return out


def night_styles(settings: Settings, generator: Path, styles: list[str] | None) -> list[str]:
    """The styles a night draws: those given, else every active style the generator was
    trained on (drawing an untrained style would publish noise under its name)."""
    active = list(prompts_for(settings, styles))
    if styles:
        return active
    trained = trained_styles(generator)
    chosen = [s for s in active if trained is None or s in trained]
    if not chosen:
        raise ValueError(
            f"the generator at {generator} was trained on {', '.join(trained or [])}, none of "
            f"them an active style ({', '.join(active) or 'none'}): pass --style, or mark a "
            f"style active in its registry file")
    return chosen


def generation_preview(
    settings: Settings,
    workspace: Workspace,
    generator: Path,
    styles: list[str] | None,
    new_photos: int = 0,
) -> str:
    """The dry run's line for generation: sketches missing now, plus those new photos add."""
    manifest = checked_generator(generator)
    names = night_styles(settings, generator, styles)
    samples = settings.generate.samples_per_face
    try:
        sources = condition_sources(workspace, manifest, roles=("identity", "image"))
    except ConditionError as error:
        return (f"generator {manifest['version']}: cannot plan yet ({error}); "
                f"new photos add {new_photos * len(names) * samples} sketches")
    plan = plan_generation(workspace, manifest["version"], sources, names, samples,
                           settings.generate.shard_size, write=False)
    added = new_photos * len(names) * samples
    per_style = ", ".join(f"{name} {c.todo}" for name, c in plan.per_style.items())
    return (f"generator {manifest['version']}: {plan.items_todo} missing sketches of stored "
            f"faces ({per_style}) + {added} for {new_photos} new photos, styles "
            f"{', '.join(names)}, {samples} per face"
            + (f"; skipped faces {plan.skipped_faces}" if plan.skipped_faces else ""))


def encoder_options(settings: Settings, identity: Any, image: Any) -> dict[str, Any]:
    return {"identity_encoder": encoder_spec(settings, "identity", identity),
            "image_encoder": encoder_spec(settings, "image", image)}
