"""A plain, resumable training loop for the sketch generator.

Every random draw of step k (augmentation, noise, timesteps, condition drops) comes from a
generator seeded by (seed, k), and the data of step k comes from ``batches(k)``. A step is
therefore a pure function of its index and the state before it, so a run killed at a
checkpoint and resumed ends with the same weights as a run that was never interrupted.
Checkpoints hold only safetensors, JSON and a weights_only-loadable ``trainer.pt``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tasks.generate.config import AugmentSpec
from tasks.generate.networks import SketchGenerator
from tasks.generate.objectives import Objective, build_objective

log = logging.getLogger(__name__)

Batch = Mapping[str, Any]
BatchSource = Callable[[int], Batch] | Iterable[Batch]

_CKPT = re.compile(r"^step-(\d{8})$")
MODEL_DIR = "model"
EMA_FILE = "ema.safetensors"
OBJECTIVE_FILE = "objective.safetensors"
TRAINER_FILE = "trainer.pt"
STATE_FILE = "state.json"


class TrainingError(RuntimeError):
    """Training cannot continue: diverged, or a resume that would change the schedule."""


# --------------------------------------------------------------------------- EMA


class EMA:
    """Exponential moving average of parameters, kept as named fp32 tensors.

    Own class rather than diffusers' EMAModel so its state is a flat name -> tensor dict that
    safetensors can store and that survives a resume bit-for-bit.
    """

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {n: p.detach().clone().float() for n, p in module.named_parameters()}

    def current_decay(self) -> float:
        # Warm-up: early on the average would otherwise be dominated by the random init.
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        for name, param in module.named_parameters():
            self.shadow[name].lerp_(param.detach().float(), weight)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        for name, param in module.named_parameters():
            param.copy_(self.shadow[name].to(param.device, param.dtype))

    def save(self, path: Path) -> None:
        save_file({n: t.detach().cpu().contiguous() for n, t in self.shadow.items()}, str(path))

    def load(self, path: Path, num_updates: int) -> None:
        state = load_file(str(path))
        if set(state) != set(self.shadow):
            raise TrainingError(f"{path} does not hold this model's parameters")
        self.shadow = {n: state[n].to(self.shadow[n].device) for n in self.shadow}
        self.num_updates = int(num_updates)


def ema_generator(generator: SketchGenerator, ema: EMA) -> SketchGenerator:
    """A copy of the generator carrying the EMA weights: the one to sample from and publish."""
    averaged = copy.deepcopy(generator)
    ema.copy_to(averaged)
    return averaged.eval()


# --------------------------------------------------------------------------- state


@dataclass
class TrainState:
    step: int
    losses: list[float]
    ema: EMA
    checkpoint: Path | None = None
    resumed_from: int | None = None
    seconds: float = 0.0
    history: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Hyper:
    """Everything that, if changed between a run and its resume, would change the result."""

    seed: int
    lr: float
    ema_decay: float
    weight_decay: float
    warmup_steps: int
    grad_clip: float | None
    augment: dict[str, float] | None
    config: str  # digest of the generator config JSON

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The one source of randomness of a training step, independent of earlier steps."""
    state = np.random.SeedSequence([int(seed), int(step)]).generate_state(2, dtype=np.uint32)
    value = (int(state[0]) << 32 | int(state[1])) & ((1 << 63) - 1)
    return torch.Generator("cpu").manual_seed(value)


# --------------------------------------------------------------------------- augmentation


def augment_batch(batch: Batch, spec: AugmentSpec | None,
                  generator: torch.Generator) -> dict[str, Any]:
    """Small random shift/scale and horizontal flip, applied to sketch and spatial together.

    Kept light on purpose: faces are aligned, and large moves would teach the generator to
    misplace features. Border padding because sketches have a flat paper background.
    """
    out = dict(batch)
    if spec is None or (spec.max_shift == 0 and spec.max_scale == 0 and spec.flip_p == 0):
        return out
    sketch = torch.as_tensor(batch["sketch"], dtype=torch.float32)
    b = sketch.shape[0]
    u = torch.rand((b, 4), generator=generator)
    scale = 1.0 + (u[:, 0] * 2 - 1) * spec.max_scale
    shift = (u[:, 1:3] * 2 - 1) * spec.max_shift * 2.0  # grid coords span 2 per image
    flip = torch.where(u[:, 3] < spec.flip_p, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(sketch.shape), align_corners=False)

    def warp(x: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border",
                             align_corners=False)

    out["sketch"] = warp(sketch)
    # Every full-resolution input moves with the sketch, or the bridge would learn to shift.
    for key in ("spatial", "start"):
        if batch.get(key) is not None:
            out[key] = warp(torch.as_tensor(batch[key], dtype=torch.float32))
    return out


# --------------------------------------------------------------------------- checkpoints


def list_checkpoints(checkpoint_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (state.json written last), oldest first."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _CKPT.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    found = list_checkpoints(checkpoint_dir)
    return found[-1][1] if found else None


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _write_checkpoint(root: Path, step: int, generator: SketchGenerator, ema: EMA,
                      optimizer: torch.optim.Optimizer, hyper: _Hyper, losses: list[float],
                      keep: int | None, objective: Objective) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        (tmp / MODEL_DIR).mkdir()
        generator._write(tmp / MODEL_DIR)
        ema.save(tmp / EMA_FILE)
        critic = objective.tensors()
        if critic:
            save_file(critic, str(tmp / OBJECTIVE_FILE))
        torch.save({"optimizer": optimizer.state_dict(), "rng": _rng_state(),
                    "objective_optimizer": objective.optimizer_state()}, tmp / TRAINER_FILE)
        state = {"step": step, "ema_num_updates": ema.num_updates, "hyper": hyper.as_dict(),
                 "losses": losses, "generator_config": generator.config.name}
        (tmp / STATE_FILE).write_text(json.dumps(state) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:
        for _, old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _clean_partial(root: Path) -> None:
    """Temp dirs left by a run killed mid-write are garbage: they were never renamed."""
    if root.is_dir():
        for path in root.glob(".step-*.tmp-*"):
            shutil.rmtree(path, ignore_errors=True)


def _load_checkpoint(path: Path, generator: SketchGenerator, ema: EMA,
                     optimizer: torch.optim.Optimizer, hyper: _Hyper,
                     objective: Objective) -> dict[str, Any]:
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    saved = state["hyper"]
    current = json.loads(json.dumps(hyper.as_dict()))
    diff = sorted(k for k in current if saved.get(k) != current[k])
    if diff:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current[k]!r}" for k in diff)
        raise TrainingError(
            f"cannot resume from {path}: the run's settings changed ({detail}); resume with the "
            "original settings or start a new checkpoint_dir"
        )
    generator.load_weights(path / MODEL_DIR)
    ema.load(path / EMA_FILE, state["ema_num_updates"])
    trainer = torch.load(path / TRAINER_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(trainer["optimizer"])
    if (path / OBJECTIVE_FILE).is_file():
        objective.load(load_file(str(path / OBJECTIVE_FILE)), trainer.get("objective_optimizer"))
    torch.set_rng_state(trainer["rng"]["torch"])
    if "cuda" in trainer["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(trainer["rng"]["cuda"])
    return state


# --------------------------------------------------------------------------- loop


def _batch_at(source: BatchSource, iterator: Iterator[Batch] | None, step: int) -> Batch:
    if callable(source):
        return source(step)
    assert iterator is not None
    try:
        return next(iterator)
    except StopIteration:
        raise TrainingError(f"the batch iterable ran out at step {step}") from None


def train(
    generator: SketchGenerator,
    batches: BatchSource,
    steps: int,
    lr: float | None = None,
    ema_decay: float | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    seed: int = 0,
    resume: bool = False,
    *,
    weight_decay: float | None = None,
    warmup_steps: int | None = None,
    grad_clip: float | None | Literal["config"] = "config",
    augment: AugmentSpec | None | bool = True,
    keep_checkpoints: int | None = 3,
    amp: bool = True,
    log_every: int = 50,
    on_step: Callable[[int, float, dict[str, float]], None] | None = None,
) -> TrainState:
    """Train ``generator`` in place for ``steps`` optimizer steps in total (not additional).

    ``batches`` is best a function ``step -> batch`` (deterministic in the step); an iterable
    also works, and on resume its first ``k`` batches are skipped, so it must replay the same
    order. Settings left as None come from the generator config's ``training`` section
    (``grad_clip="config"`` likewise; None disables clipping; ``augment=True`` uses the config's
    augmentation, False/None none). With ``resume`` the newest checkpoint in ``checkpoint_dir``
    is loaded and the same schedule continues; with no checkpoint there, training starts fresh.
    """
    t_cfg = generator.config.training
    lr = t_cfg.lr if lr is None else lr
    ema_decay = t_cfg.ema_decay if ema_decay is None else ema_decay
    weight_decay = t_cfg.weight_decay if weight_decay is None else weight_decay
    warmup_steps = t_cfg.warmup_steps if warmup_steps is None else warmup_steps
    grad_clip = t_cfg.grad_clip if grad_clip == "config" else grad_clip
    every = checkpoint_every or t_cfg.checkpoint_every
    aug = t_cfg.augment if augment is True else (augment or None)
    hyper = _Hyper(seed, float(lr), float(ema_decay), float(weight_decay), int(warmup_steps),
                   grad_clip, aug.model_dump() if aug else None,
                   hashlib.sha256(generator.config.to_json().encode()).hexdigest()[:16])

    # foreach: one fused call per step instead of ~10 tiny ops per tensor (the CPU default).
    optimizer = torch.optim.AdamW(generator.parameters(), lr=lr, weight_decay=weight_decay,
                                  foreach=True)
    ema = EMA(generator, ema_decay)
    objective = build_objective(generator, seed)
    losses: list[float] = []
    start, resumed_from, last = 0, None, None
    ckpt_root = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_root is not None:
        _clean_partial(ckpt_root)
    if resume:
        if ckpt_root is None:
            raise TrainingError("resume=True needs a checkpoint_dir")
        last = latest_checkpoint(ckpt_root)
        if last is not None:
            state = _load_checkpoint(last, generator, ema, optimizer, hyper, objective)
            start = resumed_from = int(state["step"])
            losses = [float(x) for x in state["losses"]]
            log.info("resumed from %s at step %d", last, start)

    iterator: Iterator[Batch] | None = None
    if not callable(batches):
        iterator = iter(batches)
        for _ in range(start):
            next(iterator)

    device = generator.device
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda"
                else contextlib.nullcontext())
    generator.train()
    term_sums: dict[str, float] = {}
    began = time.perf_counter()
    for step in range(start, steps):
        rng = step_generator(seed, step)
        batch = augment_batch(_batch_at(batches, iterator, step), aug, rng)
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else lr
        with autocast:
            loss, terms = objective.generator_loss(generator, batch, rng, step)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(
                f"loss is {value} at step {step}; the last checkpoint "
                f"({latest_checkpoint(ckpt_root) if ckpt_root else 'none'}) is still good"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(generator.parameters(), grad_clip)
        optimizer.step()
        with autocast:
            terms.update(objective.critic_step(batch))
        ema.update(generator)
        losses.append(value)
        for name, term in terms.items():
            term_sums[name] = term_sums.get(name, 0.0) + term
        done = step + 1
        if on_step is not None:
            on_step(done, value, terms)
        if log_every and done % log_every == 0:
            recent = losses[-log_every:]
            detail = " ".join(f"{k} {v / log_every:.4f}" for k, v in term_sums.items())
            log.info("step %d/%d loss %.4f (%s)", done, steps, sum(recent) / len(recent), detail)
            term_sums.clear()
        if ckpt_root is not None and (done % every == 0 or done == steps):
            last = _write_checkpoint(ckpt_root, done, generator, ema, optimizer, hyper, losses,
                                     keep_checkpoints, objective)
    generator.eval()
    return TrainState(step=max(start, steps), losses=losses, ema=ema,
                      checkpoint=last, resumed_from=resumed_from,
                      seconds=time.perf_counter() - began, history={"hyper": hyper.as_dict()})
