"""Train a sketch generator on a workspace: the plain function behind ``train_generator``.

Layout under ``<workspace>/generators/<name>/``:

    plan.json      what the run trains on (config, styles, split, data digest, batch, seed);
                   a resume with a different plan is refused, since it would silently train a
                   different schedule than the checkpoints started
    checkpoints/   the core loop's checkpoints (exact resume)
    reports/       loss curve + sample grid per checkpoint, and index.html
    final/         the EMA generator (save_pretrained) and training.json beside it

Training runs in segments that end at each checkpoint: ``train(..., resume=True)`` continues
from the checkpoint the previous segment wrote, so the reports can sample from the EMA weights
the core only hands back at the end of a call, and exactness is the core's resume guarantee.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from schemas.encoders import EncoderSpec
from schemas.styles import SLUG, PairedSource, Style
from schemas.vectors import VectorTable
from tasks.embed import TableReport, embed_texts
from tasks.encoders import load
from tasks.generate.batches import DatasetError, TrainingSet, batch_source
from tasks.generate.config import GeneratorConfig, load_config
from tasks.generate.dataset import assemble, read_text_vectors
from tasks.generate.reports import (
    CheckpointFiles,
    GridRow,
    write_checkpoint_report,
    write_index,
)
from tasks.locking import workspace_lock
from tasks.progress import Progress
from tasks.runtime import retry_transient
from tasks.splits import load_splits, resolve_split
from tasks.storage import Workspace, write_bytes_atomic
from tasks.styles.registry import (
    get_style,
    load_styles,
    style_texts,
    unique_dirs,
    workspace_styles,
)

log = logging.getLogger(__name__)

GENERATORS = "generators"
PLAN_FILE = "plan.json"
TRAINING_FILE = "training.json"
# Checkpoints' worth of steps when none is given: enough for a visible loss curve.
DEFAULT_CHECKPOINTS = 10
PREVIEW_GUIDANCE = 2.0
_REPORT = re.compile(r"^step-(\d{8})-samples\.png$")


class PlanError(ValueError):
    """A generator folder holds another run: resuming it would not continue the same schedule."""


class TrainRequest(BaseModel):
    """Everything one training run needs; small and picklable, so it crosses task bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: str
    config: str = "cpu"
    styles: list[str] | None = None
    steps: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    # A bundled split name or CSV path, or several (their union; sides must agree).
    split: str | list[str] | None = None
    resume: bool = False
    name: str = Field(default="default", pattern=SLUG, max_length=64)
    identity_encoder: EncoderSpec
    image_encoder: EncoderSpec
    text_encoder: EncoderSpec
    styles_dirs: list[str] = Field(default_factory=list)
    seed: int = 0
    sample_every: int | None = Field(default=None, ge=1)
    sample_steps: int | None = Field(default=None, ge=1,
                                     description="preview sampling steps (default: the "
                                                 "formulation's own)")
    preview_identities: int = Field(default=4, ge=1)
    device: str | None = None
    run_id: str = "local"


class CheckpointReport(BaseModel):
    step: int
    mean_loss: float
    loss_png: str
    samples_png: str
    report_html: str


class TrainReport(BaseModel):
    name: str
    run_id: str
    config: str
    device: str
    steps: int
    resumed_from: int | None
    steps_this_run: int
    final_loss: float = Field(description="mean loss of the last 100 steps (per-step is noisy)")
    styles: list[str]
    examples_per_style: dict[str, int]
    identities: int
    skipped: dict[str, dict[str, int]]
    artist_targets: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="per artist-target style, examples whose identity target is the artist's "
                    "sketch (used) and those trained without the term (unusable sketch)")
    split: str | None
    encoder_versions: dict[str, str]
    text_table: str
    generator_dir: str
    generator_version: str
    report_html: str
    checkpoints: list[CheckpointReport]
    seconds: float
    seconds_per_step: float | None


OnCheckpoint = Callable[[CheckpointReport], None]


def generator_root(workspace: Workspace, name: str) -> Path:
    return workspace.root / GENERATORS / name


def pick_device(requested: str | None) -> str:
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_steps(config: GeneratorConfig) -> int:
    return DEFAULT_CHECKPOINTS * config.training.checkpoint_every


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _choose_styles(requested: list[str] | None, known: dict[str, Style]) -> list[Style]:
    if requested is None:
        return list(known.values())
    if not requested:
        raise DatasetError("styles is empty: give style names, or None for all with examples")
    return [get_style(name, known) for name in dict.fromkeys(requested)]


def check_artist_styles(config: GeneratorConfig, known: dict[str, Style]) -> None:
    """Refuse an artist target on a style that has no artist: a rendered style's "sketch" is
    the photo redrawn, so its target would be the photo's vector under another name."""
    for name in config.training.losses.identity_artist_styles:
        if name not in known:
            raise PlanError(f"config {config.name} asks for the artist identity target on "
                            f"style {name!r}, which is not a registered style "
                            f"(known: {', '.join(sorted(known))})")
        if not isinstance(known[name].source, PairedSource):
            raise PlanError(f"config {config.name} asks for the artist identity target on "
                            f"style {name!r}, which has no paired sketches (it is rendered "
                            f"from the photo): name only styles drawn by an artist")


def _check_plan(root: Path, plan: dict[str, Any], resume: bool, has_checkpoints: bool) -> None:
    """Refuse to mix two different runs in one generator folder."""
    path = root / PLAN_FILE
    if not resume:
        if has_checkpoints:
            raise PlanError(
                f"{root} already holds checkpoints of an earlier run: pass resume=True to "
                "continue it, or choose another name"
            )
        return
    if not path.is_file() or not has_checkpoints:
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    diff = sorted(k for k in set(saved) | set(plan) if saved.get(k) != plan.get(k))
    if diff:
        raise PlanError(
            f"cannot resume {root}: {', '.join(diff)} changed since the run started "
            "(same styles, split, data, batch size, seed, config and encoders are needed for "
            "the same schedule); start a new name instead"
        )


def _preview_samples(ema: Any, training: TrainingSet, sample_steps: int | None,
                     device: str) -> list[GridRow]:
    """One sample per (preview identity, style), fixed seeds: comparable across checkpoints."""
    rows = training.preview
    styles = list(training.styles)
    if not rows or not styles:
        return []
    pairs = [(r, s) for r in range(len(rows)) for s in range(len(styles))]
    conditions: dict[str, Any] = {
        "identity": np.stack([rows[r].identity for r, _ in pairs]),
        "image": np.stack([rows[r].image for r, _ in pairs]),
        "text": np.stack([training.text[s] for _, s in pairs]),
    }
    if training.spatial is not None:
        conditions["spatial"] = np.stack([rows[r].spatial for r, _ in pairs])
    if training.start is not None:
        conditions["start"] = np.stack([rows[r].start for r, _ in pairs])
    steps = sample_steps or ema.default_steps
    images = ema.sample(conditions, seeds=[10_000 + r for r, _ in pairs], steps=steps,
                        guidance=PREVIEW_GUIDANCE, device=device)
    samples: list[dict[str, np.ndarray]] = [{} for _ in rows]
    for (r, s), image in zip(pairs, images, strict=True):
        samples[r][styles[s]] = image
    return [GridRow(row.identity_id, row.photo, row.targets, samples[r])
            for r, row in enumerate(rows)]


def _all_reports(reports_dir: Path, losses: list[float]) -> list[CheckpointFiles]:
    """Every checkpoint report on disk, including those of an interrupted earlier run."""
    found = []
    for path in sorted(reports_dir.glob("step-*-samples.png")):
        match = _REPORT.match(path.name)
        if not match:
            continue
        step = int(match.group(1))
        recent = losses[max(0, step - 100):step] or [float("nan")]
        found.append(CheckpointFiles(step, float(np.mean(recent)),
                                     reports_dir / f"step-{step:08d}-loss.png", path))
    return found


@dataclass
class Prepared:
    """Everything decided before the first step: the data, the encoders, the plan."""

    config: GeneratorConfig
    training: TrainingSet
    versions: dict[str, str]
    dims: dict[str, int]
    prompts: dict[str, str]
    text_table: str
    split_path: str | None
    plan: dict[str, Any]
    batch_size: int
    steps: int
    every: int


def select_styles(request: TrainRequest, workspace: Workspace) -> list[Style]:
    """The requested styles (all registered ones when None), from every style folder."""
    return _choose_styles(request.styles, known_styles(request, workspace))


def known_styles(request: TrainRequest, workspace: Workspace) -> dict[str, Style]:
    return load_styles(unique_dirs([*request.styles_dirs, *workspace_styles(workspace.root)]))


def embed_style_prompts(request: TrainRequest) -> TableReport:
    """Text vectors of the styles' prompts: the run's only write to the shared tables, so the
    flow does it under the workspace lock and training itself can run without holding it."""
    workspace = Workspace.open(request.workspace)
    styles = select_styles(request, workspace)
    return embed_texts(workspace, style_texts(styles), request.text_encoder,
                       run_id=request.run_id)


def prepare(request: TrainRequest, workspace: Workspace) -> Prepared:
    """Assemble the data from the stored vectors and write down the run's plan."""
    config = load_config(request.config)
    known = known_styles(request, workspace)
    check_artist_styles(config, known)
    styles = _choose_styles(request.styles, known)
    names = [request.split] if isinstance(request.split, str) else list(request.split or [])
    split_paths = [resolve_split(name).resolve() for name in names]
    split = load_splits(split_paths) if split_paths else None

    encoders = {role: load(getattr(request, f"{role}_encoder"))
                for role in ("identity", "image", "text")}
    tables = {role: VectorTable.of(role, enc) for role, enc in encoders.items()}
    prompts = style_texts(styles)
    text_vectors = read_text_vectors(workspace, tables["text"], prompts)
    # Imported here, not at the top: tasks.generate.formulations.base loads torch.
    from tasks.generate.formulations.base import build_formulation

    needs_start = build_formulation(config).needs_start
    targets = None
    if config.training.losses.identity > 0:
        # Imported here, not at the top: tasks.generate.objectives loads torch.
        from tasks.generate.objectives import identity_targets as targets
    training = assemble(workspace, styles, tables, text_vectors, config.resolution, split,
                        config.spatial_condition, request.preview_identities,
                        start=config.formulation.start if needs_start else None,
                        identity_targets=targets,
                        artist_styles=config.training.losses.identity_artist_styles,
                        photo_vectors=config.training.losses.needs_photo_vectors)
    _check_training(training, request.styles is not None, split, styles)

    versions = {role: enc.version for role, enc in encoders.items()}
    batch_size = request.batch_size or config.training.batch_size
    by_name = {s.name: s for s in styles}
    plan = {
        "config": config.name,
        "config_digest": _digest(config.model_dump(mode="json")),
        # Prompt and source decide the data; description and the active flag do not.
        "styles": {s: by_name[s].model_dump(mode="json", include={"prompt", "source"})
                   for s in training.styles},
        "split_digest": _digest(split) if split else None,
        "data_digest": training.fingerprint(),
        "batch_size": batch_size,
        "seed": request.seed,
        "encoder_versions": versions,
    }
    return Prepared(
        config=config, training=training, versions=versions,
        dims={role: enc.dim for role, enc in encoders.items()},
        prompts={s: prompts[s] for s in training.styles}, text_table=tables["text"].table,
        split_path=", ".join(map(str, split_paths)) or None, plan=plan,
        batch_size=batch_size, steps=request.steps or default_steps(config),
        every=request.sample_every or config.training.checkpoint_every,
    )


def _check_training(training: TrainingSet, explicit: bool, split: dict[str, str] | None,
                    styles: list[Style]) -> None:
    if explicit and training.empty_styles:
        detail = "; ".join(f"{s}: skipped {training.skipped.get(s) or 'none found'}"
                           for s in training.empty_styles)
        raise DatasetError(f"no training examples for style(s) {detail}")
    if split is not None:
        # Defence in depth: assembly already drops them; a leak here would void the evaluation.
        leaked = sorted(i for i in training.identities if split.get(i) != "train")
        if leaked:
            raise DatasetError(f"identities outside the train split reached training: {leaked}")
    if len(training) == 0:
        raise DatasetError(
            "no training examples in this workspace for styles "
            f"{', '.join(s.name for s in styles)} (skipped: {training.skipped}); ingest and "
            "embed photos (and paired sketches) first"
        )


class _StepClock:
    """Seconds per optimizer step, leaving out checkpoint and report time, logged as it goes."""

    def __init__(self, steps: int, every: int, say: Callable[[str], None],
                 progress: Callable[[int, int], None] | None = None):
        self.steps, self.say, self.progress = steps, say, progress
        self.log_every = max(1, min(50, every // 5))
        self.done, self.seconds, self.mark = 0, 0.0, time.perf_counter()
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def restart(self) -> None:
        self.mark = time.perf_counter()

    def __call__(self, step: int, loss: float, terms: dict[str, float] | None = None) -> None:
        now = time.perf_counter()
        self.done += 1
        self.seconds += now - self.mark
        self.mark = now
        for name, value in (terms or {}).items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1
        if step % self.log_every == 0:
            detail = " ".join(f"{k} {self.sums[k] / self.counts[k]:.4f}" for k in self.sums)
            self.say(f"step {step}/{self.steps} loss {loss:.4f} [{detail}] "
                     f"({self.per_step:.2f} s/step)")
            self.sums, self.counts = {}, {}
        if self.progress is not None:
            self.progress(step, self.steps)

    @property
    def per_step(self) -> float | None:
        return self.seconds / self.done if self.done else None


def fit_generator(request: TrainRequest, on_checkpoint: OnCheckpoint | None = None,
                  progress: Callable[[str], None] | None = None) -> TrainReport:
    """Prepare, train in checkpoint-sized segments with a report after each, save the EMA.

    The style prompts' text vectors must be stored already (``embed_style_prompts``).
    """
    say = progress or log.info
    began = time.perf_counter()
    workspace = Workspace.open(request.workspace)
    p = prepare(request, workspace)
    training = p.training
    say(f"training set: {training.examples_per_style} over {len(training.identities)} "
        f"identities; skipped {training.skipped}")

    root = generator_root(workspace, request.name)
    # Two runs on one generator folder would interleave checkpoints: the second is refused.
    with workspace_lock(root, f"train-generator {request.name} run {request.run_id}"):
        return _fit(request, p, root, on_checkpoint, say, began)


def _fit(request: TrainRequest, p: Prepared, root: Path, on_checkpoint: OnCheckpoint | None,
         say: Callable[[str], None], began: float) -> TrainReport:
    # Imported here, not at the top: tasks.generate.networks, tasks.generate.training load
    # diffusers and torch.
    from tasks.generate.networks import SketchGenerator
    from tasks.generate.training import ema_generator, latest_checkpoint, train

    training = p.training
    checkpoints, reports_dir = root / "checkpoints", root / "reports"
    last = latest_checkpoint(checkpoints)
    _check_plan(root, p.plan, request.resume, last is not None)
    write_bytes_atomic(json.dumps(p.plan, indent=2).encode(), root / PLAN_FILE)

    device = pick_device(request.device)
    generator = SketchGenerator.build(p.config, p.dims, p.versions, seed=request.seed).to(device)
    batches = batch_source(training, p.batch_size, request.seed)
    start = int(last.name.split("-")[1]) if (request.resume and last is not None) else 0
    boundaries = [b for b in range(p.every, p.steps, p.every) if b > start] + [p.steps]
    say(f"training {request.name}: steps {start} -> {p.steps} on {device}, batch "
        f"{p.batch_size}, checkpoint + report every {p.every}")

    bar = Progress(f"train {request.name}", unit="step")
    clock = _StepClock(p.steps, p.every, say, progress=bar)
    made: list[CheckpointReport] = []
    resumed_from: int | None = None
    title = f"generator {request.name} ({p.config.name})"
    for target in boundaries:
        clock.restart()
        state = train(generator, batches, target, checkpoint_dir=checkpoints,
                      checkpoint_every=p.every, seed=request.seed, resume=True, on_step=clock,
                      log_every=0)
        if target == boundaries[0]:
            resumed_from = state.resumed_from
        rows = _preview_samples(ema_generator(generator, state.ema), training,
                                request.sample_steps, device)
        files = write_checkpoint_report(reports_dir, state.step, state.losses, rows,
                                        training.styles, title)
        index = write_index(reports_dir, title,
                            _summary(request, training, state.step, p.steps, p.versions),
                            _all_reports(reports_dir, state.losses))
        made.append(CheckpointReport(step=files.step, mean_loss=files.loss,
                                     loss_png=str(files.loss_png),
                                     samples_png=str(files.samples_png), report_html=str(index)))
        say(f"checkpoint {state.step}: mean loss {files.loss:.4f}; report {index}")
        if on_checkpoint is not None:
            on_checkpoint(made[-1])

    final = ema_generator(generator, state.ema)
    final_dir = final.save_pretrained(root / "final")
    write_bytes_atomic(json.dumps({
        **p.plan, "split": str(p.split_path) if p.split_path else None,
        "run_id": request.run_id, "steps": state.step,
        "examples_per_style": training.examples_per_style,
        "identities": len(training.identities), "prompts": p.prompts,
        "text_table": p.text_table,
    }, indent=2).encode(), final_dir / TRAINING_FILE)
    bar.close()
    return TrainReport(
        name=request.name, run_id=request.run_id, config=p.config.name, device=device,
        steps=state.step, resumed_from=resumed_from, steps_this_run=clock.done,
        final_loss=float(np.mean(state.losses[-100:] or [float("nan")])),
        styles=list(training.styles), examples_per_style=training.examples_per_style,
        identities=len(training.identities), skipped=training.skipped,
        artist_targets=training.artist_targets,
        split=str(p.split_path) if p.split_path else None, encoder_versions=p.versions,
        text_table=p.text_table, generator_dir=str(final_dir),
        generator_version=final.version, report_html=made[-1].report_html, checkpoints=made,
        seconds=time.perf_counter() - began, seconds_per_step=clock.per_step,
    )


def _summary(request: TrainRequest, training: TrainingSet, step: int, steps: int,
             versions: dict[str, str]) -> dict[str, object]:
    return {
        "step": f"{step} of {steps}",
        "config": request.config,
        "styles": ", ".join(f"{s} ({n})" for s, n in training.examples_per_style.items()),
        "identities": len(training.identities),
        "split": (", ".join([request.split] if isinstance(request.split, str) else request.split)
                  if request.split else "none (all identities)"),
        "skipped": json.dumps(training.skipped),
        **({"artist identity targets": json.dumps(training.artist_targets)}
           if training.artist_targets else {}),
        **{f"{role} encoder": v for role, v in versions.items()},
    }


# --------------------------------------------------------------------------- Prefect


def _artifact_key(name: str, what: str) -> str:
    return f"train-generator-{name}-{what}"


def publish_checkpoint(name: str) -> OnCheckpoint:
    """Artifacts per checkpoint: the sample grid as an image and the HTML report as a link."""
    from prefect.artifacts import create_image_artifact, create_link_artifact

    def publish(report: CheckpointReport) -> None:
        create_image_artifact(
            image_url=Path(report.samples_png).as_uri(), key=_artifact_key(name, "samples"),
            description=f"step {report.step}: targets above, EMA samples below "
                        f"(mean loss {report.mean_loss:.4f})")
        create_link_artifact(
            link=Path(report.report_html).as_uri(), link_text=f"training report, step "
            f"{report.step}", key=_artifact_key(name, "report"),
            description="self-contained HTML: loss curve, sample grid, checkpoints")

    return publish


def _retry(task: Any, task_run: Any, state: Any) -> bool:
    """Transient errors only; a diverged loss would diverge again from the same checkpoint."""
    # Imported here, not at the top: tasks.generate.training loads diffusers and torch.
    from tasks.generate.training import TrainingError

    try:
        state.result()
    except TrainingError:
        return False
    except Exception:
        return retry_transient(task, task_run, state)
    return False


@task(name="embed-style-prompts", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def embed_style_prompts_task(request: TrainRequest) -> TableReport:
    return embed_style_prompts(request)


@task(name="train-generator", retries=1, retry_delay_seconds=10, retry_condition_fn=_retry,
      cache_policy=NO_CACHE)
def train_generator_task(request: TrainRequest) -> TrainReport:
    """Thin Prefect wrapper. A retry continues from the last checkpoint instead of restarting
    (and instead of tripping over the checkpoints the failed attempt left)."""
    from prefect import get_run_logger
    from prefect.runtime import task_run

    if task_run.run_count > 1:
        request = request.model_copy(update={"resume": True})
    return fit_generator(request, on_checkpoint=publish_checkpoint(request.name),
                         progress=get_run_logger().info)
