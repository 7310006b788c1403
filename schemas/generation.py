"""Shapes the generation stage passes around: sampling settings, shard references, reports.

Everything here is small on purpose: a shard task receives a context and a shard reference
(paths and counts, about a kilobyte) and returns counts; images, vectors and models never
travel through Prefect (they would be pickled, hashed and held in memory by the engine).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas.settings import GenerationSettings
from schemas.vectors import VectorTable

CONDITION_ROLES = ("identity", "image", "text")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplingParams(_Frozen):
    """How to sample; recorded on every sketch row because each knob changes the pixels."""

    steps: int = Field(50, ge=1, le=1000)
    guidance: float = Field(2.0, ge=0.0)
    # DDIM's eta (at most 1) or a bridge's posterior-noise scale (more than 1 draws samples
    # of one face further apart); the formulation's own limit is checked where eta is chosen
    # (tasks.generate.formulations.check_eta).
    eta: float = Field(0.0, ge=0.0, le=10.0)
    # Per style, over ``eta``: one artist's drawings reach that artist's sharpness at another
    # noise than another artist's (docs/results/generator.md, "Sampling noise per style").
    style_eta: dict[str, Annotated[float, Field(ge=0.0, le=10.0)]] = Field(default_factory=dict)
    batch_size: int = Field(16, ge=1)
    # A sample whose pixel standard deviation (0-255 scale) is below this is "blank": a
    # collapsed generator draws flat grey paper, which must not pass as a sketch.
    blank_std: float = Field(2.0, ge=0.0)

    def eta_for(self, style: str) -> float:
        """The sampling noise a drawing in ``style`` is made with (and recorded with)."""
        return self.style_eta.get(style, self.eta)


class GenerationContext(_Frozen):
    """What every shard of one run shares: the workspace, the generator and how to sample."""

    workspace: str
    generator_path: str
    generator_version: str
    generator_config: str
    conditions: dict[str, VectorTable]  # by role: identity, image, text
    sampling: SamplingParams = SamplingParams()
    # Devices this run may use. Locally, one per GPU ("cuda:0", "cuda:1") or ["cpu"]; a shard
    # claims a free one. On Dask, ["auto"]: each worker owns one GPU (CUDA_VISIBLE_DEVICES).
    devices: list[str] = Field(default_factory=lambda: ["auto"], min_length=1)
    run_id: str = "local"
    # Intra-op threads every CPU shard samples with, wherever it runs (a local thread, a Dask
    # worker): fixed once, where the run is planned, so all shards round alike.
    cpu_threads: int = Field(default_factory=lambda: planned_cpu_threads(), ge=1)

    def expected_encoders(self) -> dict[str, tuple[int, str]]:
        return {role: (c.dim, c.version) for role, c in self.conditions.items()}


def planned_cpu_threads() -> int:
    """``CLIP4SKETCH_GENERATE_CPU_THREADS``, else this process's torch thread count.

    Read in the process that builds the context (the flow's), never in a worker: a Dask
    worker's own default (one thread) is exactly what must not decide the pixels.
    """

    configured = GenerationSettings().cpu_threads
    if configured is not None:
        return configured
    import torch

    return torch.get_num_threads()


class ShardRef(_Frozen):
    """One shard: its id, size and files (paths relative to the workspace)."""

    shard_id: str
    items: int
    items_path: str
    result_path: str


class ShardResult(BaseModel):
    """What one shard task did; ``by_style`` counts generated/reused/ok/nan/blank per style."""

    shard_id: str
    items: int
    generated: int = 0
    reused: int = 0
    skipped: bool = False  # finished earlier and every PNG checked out: nothing was sampled
    repaired: int = 0  # items of a finished shard whose PNG was missing or corrupted
    # Intact neighbours re-sampled alongside a repaired item whose pixels came out different
    # from their recorded checksum: the environment (device, libraries) is not the original.
    not_reproduced: int = 0
    by_style: dict[str, dict[str, int]] = Field(default_factory=dict)
    device: str = ""
    seconds: float = 0.0
    result_path: str = ""


class ShardOutcome(BaseModel):
    """One shard of a run: its result, or the error it failed with."""

    shard_id: str
    result: ShardResult | None = None
    error: str | None = None
    disk_full: bool = False  # failed for want of space: the run's error says so first


class StyleCounts(BaseModel):
    """Per style: items in scope, and what became of them this run."""

    planned: int = 0  # eligible faces x samples, before skipping what exists
    skipped_existing: int = 0  # already in the sketches table
    skipped_no_vectors: int = 0  # the face lacks vectors from the generator's encoders
    todo: int = 0
    generated: int = 0
    reused: int = 0  # found finished on disk (an earlier, interrupted run)
    flagged: int = 0  # status nan or blank


class PlanSummary(BaseModel):
    """The plan without its shard list (that stays in the plan file)."""

    plan_path: str
    generator_version: str
    styles: list[str]
    samples_per_face: int
    faces_considered: int
    faces_eligible: int
    skipped_faces: dict[str, int] = Field(default_factory=dict)  # by reason
    unmatched_filters: list[str] = Field(default_factory=list)
    per_style: dict[str, StyleCounts] = Field(default_factory=dict)
    items_todo: int = 0
    shards: int = 0


class Plan(PlanSummary):
    shard_refs: list[ShardRef] = Field(default_factory=list)


class MergeReport(BaseModel):
    table: str
    merged_rows: int
    inserted: int
    updated: int
    rows: int
    version: int | None
    tag: str | None
    parquet: str | None


class GenerateReport(BaseModel):
    run_id: str
    workspace: str
    generator: str
    generator_version: str
    styles: list[str]
    devices: list[str]
    task_runner: str
    shards: int
    shards_skipped: int
    failed_shards: dict[str, str] = Field(default_factory=dict)  # shard id -> error
    per_style: dict[str, StyleCounts] = Field(default_factory=dict)
    skipped_faces: dict[str, int] = Field(default_factory=dict)
    flagged: dict[str, int] = Field(default_factory=dict)  # by status
    merge: MergeReport | None = None
    seconds: float = 0.0
    run_record: str | None = None
