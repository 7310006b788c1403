"""The ``encoder`` recognizer: SFace's first blocks retrained on sketch *images*.

``procrustes`` and ``adapter`` (``sketch_side.py``) see only SFace's 128-d vectors, so a
sketch can teach them only through the vector SFace already made of it. Heterogeneous face
recognition adapts the *first layers* on the sketch side instead, where texture and line
work are still visible (Idiap's prepended domain transformer; ../shared/METHOD.md):

* the sketch branch is the torch port of SFace (``tasks/encoders/sface_torch.py``) with its
  first ``k`` of 14 convolution blocks trainable (convolutions and BatchNorm affine
  parameters; BatchNorm running statistics stay frozen, the module is always in eval mode)
  and everything after them frozen; the photo branch is the frozen SFace (its stored
  vectors), so at step 0 the recognizer *is* the baseline;
* loss: the adapter's multi-positive InfoNCE (tau 0.07) of each augmented sketch against
  every training identity's frozen photo vectors, plus lambda * (1 - cos) toward the frozen
  encoder's vector of the same (unaugmented) sketch;
* augmentation of the sketch (``augment``): shift, scale, small rotation, blur, contrast and
  brightness, stroke width (grey-level erosion / dilation);
* ``k``, lambda, the step count and, when real and other sketches mix, the real sketches'
  share of a batch are chosen on the validation part of the *training* identities
  (``sketch_side.validation_split``: real sketches as probes when there are any, every
  training photo as gallery), with early stopping; step 0 is always a candidate, so
  validation never prefers trained blocks to the baseline unless they win on held-out
  identities. Image-level training costs minutes on a CPU, so the chosen run's best-step
  weights are kept as they are (trained on the fit identities) rather than refit on all;
* a guard (``guard``: real pairs of *another* artist, never trained on): retrained blocks
  learn their artist's pencil, and can lose the other artists (CUHK-trained blocks took
  CUFSF test rank-1 from 0.540 to 0.475). With a guard, a step is a candidate only if its
  score on the guard's sketches is at least the frozen encoder's, so validation cannot
  trade one artist for another; step 0 always is one.

Only the trainable blocks are saved (safetensors, keys ``net.conv_<i>_...``); the rest is
rebuilt from the identity encoder's weights file, which is why loading with another
encoder version is refused (``recognizer.load_recognizer``).
"""

from __future__ import annotations

import copy
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.recognize.data import DataError
from tasks.recognize.sketch_side import (
    ADAPTER_HIDDEN,
    CURRICULUM,
    MIXED,
    REAL_KIND,
    TAU,
    EarlyStopping,
    Fitted,
    KindOffsets,
    VectorSet,
    _sample,
    _validation_gallery,
    fit_adapter,
    infonce,
    kind_offset_shares,
    of_kinds,
    one_thread,
    optimizer_step,
    real_shares,
    schedules,
    torch_modules,
    validation_score,
    validation_split,
)

ENCODER_MODE = "encoder"
N_BLOCKS = 14  # SFace's convolution blocks conv_1 ... conv_14
# Candidates for k, the first blocks retrained (on CUFSF train's validation identities k = 2
# learnt more slowly than k = 4: rank-1 0.711 vs 0.889 after 50 steps), and for lambda.
BLOCKS = (4, 8)
LAMBDAS = (0.3, 1.0)
ENCODER_LR = 3e-4
ENCODER_BATCH = 24
ENCODER_EVAL_EVERY = 10
ENCODER_PATIENCE = 3  # evaluations without a better validation score
ENCODER_THREADS = 2
# At most this many validation probes (a seeded draw): every evaluation embeds them all
# through the branch, ~0.05 s an image on a CPU.
MAX_VALIDATION_PROBES = 120
_BLOCK = re.compile(r"^net\.conv_(\d+)_")
# (probe crops, probe labels, gallery vectors, gallery labels)
Probes = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def block_of(name: str) -> int | None:
    """The SFace block a state key belongs to (``net.conv_3_dw_conv2d.weight`` -> 3)."""
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else None


def _torch_classes() -> dict[str, type]:
    """Built lazily so importing this file never imports torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class SketchSFace(nn.Module):
        """SFace with its first ``blocks`` blocks trainable: images in [-1, 1], BGR or grey.

        Always in eval mode: ``train()`` is a no-op, so BatchNorm keeps SFace's running
        statistics (a batch of sketches must not redefine them) and Dropout stays off;
        gradients still reach the trainable blocks' weights.
        """

        def __init__(self, net: nn.Module, blocks: int) -> None:
            super().__init__()
            if not 0 <= blocks <= N_BLOCKS:
                raise ValueError(f"blocks must be 0..{N_BLOCKS}, got {blocks}")
            self.net = copy.deepcopy(net)
            self.blocks = blocks
            self.adapter: nn.Module | None = None  # a vector adapter on top, if validated
            for name, parameter in self.named_parameters():
                index = block_of(name)
                parameter.requires_grad_(index is not None and index <= blocks)
            super().train(False)

        def train(self, mode: bool = True) -> SketchSFace:
            return super().train(False)

        def trainable_keys(self) -> list[str]:
            return sorted(k for k in self.state_dict() if (block_of(k) or 99) <= self.blocks
                          or k.startswith("adapter."))

        def trainable_state(self) -> dict[str, torch.Tensor]:
            state = self.state_dict()
            # cloned: on the CPU .cpu() returns the live tensor, which training then moves
            return {k: state[k].detach().cpu().clone().contiguous()
                    for k in self.trainable_keys()}

        def load_trainable(self, state: dict[str, torch.Tensor]) -> None:
            expected = set(self.trainable_keys())
            if set(state) != expected:
                missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
                raise ValueError(f"weights do not fit {self.blocks} trainable blocks: missing "
                                 f"{missing[:3]}, unexpected {extra[:3]}")
            self.load_state_dict(state, strict=False)

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images.flip(1)
            vectors = self.net((rgb.float() + 1.0) * 127.5).float()
            norms = vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
            if self.adapter is not None:
                return self.adapter(vectors / norms)
            return vectors / norms, norms

    return {"SketchSFace": SketchSFace, "F": F}


def sface_net(weights: str | Path | None) -> Any:
    """The frozen torch SFace graph of this weights file (converted once per process)."""
    # Imported here, not at the top: sface_torch loads torch and onnx2torch.
    from tasks.encoders.sface_torch import load_sface_torch

    return load_sface_torch(Path(weights) if weights else None).net


def build_sketch_encoder(weights: str | Path | None, blocks: int,
                         adapter_hidden: int | None = None, dim: int = 128) -> Any:
    """The sketch branch: a copy of the torch SFace of this weights file, k blocks trainable,
    with a residual vector adapter of that width on top when ``adapter_hidden`` is given."""
    module = _torch_classes()["SketchSFace"](sface_net(weights), blocks)
    if adapter_hidden:
        module.adapter = torch_modules()["adapter"](dim, adapter_hidden)
    return module


# --------------------------------------------------------------------------- augmentation


def augment(x: Any, generator: Any) -> Any:
    """Random sketch augmentation of (B, C, H, W) images in [-1, 1], drawn from ``generator``.

    Stroke width (a 3x3 grey erosion thickens dark lines, a dilation thins them, a third of
    the batch each way at most), blur (Gaussian, sigma 0.3-1.2, half the batch), contrast
    (x0.7-1.3 around the image mean) and brightness (+-0.1), then one affine warp per image:
    shift +-6 %, scale 0.92-1.08, rotation +-8 degrees (border pixels repeat).
    """
    import torch
    import torch.nn.functional as F

    b, c, h, w = x.shape

    def uniform(low: float, high: float, n: int = b) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    def per_image(mask: torch.Tensor) -> torch.Tensor:
        return mask.to(x.device)[:, None, None, None]

    stroke = torch.rand(b, generator=generator)
    thick = -F.max_pool2d(-x, 3, 1, 1)
    thin = F.max_pool2d(x, 3, 1, 1)
    x = torch.where(per_image(stroke < 0.3), thick, torch.where(per_image(stroke > 0.7), thin, x))

    sigma = uniform(0.3, 1.2)
    blur = torch.rand(b, generator=generator) < 0.5
    radius = 2
    grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel1d = torch.exp(-(grid[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    kernel1d = kernel1d / kernel1d.sum(dim=1, keepdim=True)
    kernel = (kernel1d[:, :, None] * kernel1d[:, None, :]).to(x.device, x.dtype)
    kernel = kernel.repeat_interleave(c, dim=0)[:, None]  # (B*C, 1, 5, 5)
    padded = F.pad(x.reshape(1, b * c, h, w), (radius,) * 4, mode="replicate")
    blurred = F.conv2d(padded, kernel, groups=b * c).reshape(b, c, h, w)
    x = torch.where(per_image(blur), blurred, x)

    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = per_image(uniform(0.7, 1.3)).to(x.dtype)
    brightness = per_image(uniform(-0.1, 0.1)).to(x.dtype)
    x = (mean + contrast * (x - mean) + brightness).clamp(-1.0, 1.0)

    angle = uniform(-8.0, 8.0) * math.pi / 180.0
    scale = uniform(0.92, 1.08)
    shift = uniform(-0.06, 0.06, 2 * b).reshape(b, 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(x.device, x.dtype)
    sampling = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, sampling, padding_mode="border", align_corners=False)


# --------------------------------------------------------------------------- training


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Intra-op threads for image-level training (restored after): both cores of the CPU."""
    import os

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(count, os.cpu_count() or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def autocast_settings(device: Any, autocast: bool | None) -> tuple[bool, Any]:
    """(enabled, dtype): on for CUDA by default (bf16 where supported, else fp16), off on CPU
    unless asked (CPU autocast runs bf16; that is how the CUDA path is tested without one)."""
    import torch

    enabled = device.type == "cuda" if autocast is None else bool(autocast)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return enabled, torch.float16
    return enabled, torch.bfloat16


@dataclass
class EncoderData:
    """What the sketch branch trains on: sketch crops, their frozen vectors, photo vectors."""

    vectors: VectorSet  # frozen encoder vectors (sketches and photos), labels, kinds
    crops: np.ndarray  # (S, 112, 112, 3) uint8 BGR, aligned with vectors.sketch_vectors

    def subset(self, labels: Sequence[int]) -> EncoderData:
        keep = np.isin(self.vectors.sketch_labels, np.asarray(list(labels)))
        return EncoderData(self.vectors.subset(labels), self.crops[keep])

    def of_kinds(self, real: bool) -> EncoderData:
        """Only the real sketches, or only the others (every photo kept): the curriculum's
        stages."""
        keep = (self.vectors.sketch_kinds == REAL_KIND) == real
        return EncoderData(of_kinds(self.vectors, real), self.crops[keep])


@dataclass
class EncoderFitted:
    """The chosen sketch branch and how it was chosen."""

    state: dict[str, Any]  # the trainable blocks' tensors, for safetensors
    chosen: dict[str, Any]
    validation: dict[str, Any]
    losses: list[float]
    seconds_per_epoch: float | None
    probes_per_second: float | None
    module: Any = None  # the chosen branch, at its best step


def _images(crops: np.ndarray, device: Any) -> Any:
    """uint8 (N, 112, 112, 3) BGR -> float (N, 3, 112, 112) in [-1, 1], contiguous (the
    layout ``recognizer.crops_to_tensor`` gives; that module imports this one)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    return ((x / 255.0 - 0.5) / 0.5).contiguous().to(device)


def embed_crops(module: Any, crops: np.ndarray, device: Any, autocast: bool | None = None,
                batch: int = 64) -> np.ndarray:
    """Unit vectors of the sketch branch for uint8 BGR crops (no augmentation)."""
    import torch

    enabled, dtype = autocast_settings(device, autocast)
    out = []
    with torch.inference_mode():
        for start in range(0, len(crops), batch):
            x = _images(crops[start:start + batch], device)
            with torch.autocast(device.type, dtype=dtype, enabled=enabled):
                vectors, _ = module(x)
            out.append(vectors.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def train_encoder(base: Any, data: EncoderData, blocks: int, lam: float, seed: int,
                  steps: int, validate: Probes | None, device: Any,
                  real_share: float | None = None,
                  autocast: bool | None = None, batch: int = ENCODER_BATCH,
                  say: Callable[[str], None] | None = None,
                  step0: dict[str, Any] | None = None, guard: Probes | None = None,
                  start: tuple[dict[str, Any], dict[str, Any]] | None = None,
                  kind_offset: bool = False,
                  ) -> tuple[Any, list[float], list[dict[str, Any]], int, float]:
    """Train one sketch branch; with ``validate`` (probe crops, labels, gallery vectors,
    labels) stop early and return the best step's weights. Returns (module, losses,
    validation history, best step, seconds spent in training steps). ``step0``: the
    validation score of the untrained branch if already known (it is the frozen encoder's,
    the same for every candidate). With ``guard`` (another artist's probes) a step whose
    guard score falls under step 0's is recorded but never the best. ``start``: (trainable
    weights, their validation result) to continue from, the curriculum's second stage; its
    guard floor stays the frozen encoder's (``step0``). ``kind_offset``: the branch's vectors
    of drawn sketches are shifted by a learned vector per kind before the InfoNCE term
    (``KindOffsets``, training only; the preservation term compares the branch's own
    vectors), so the drawings' mean offset from their mugshots, which is not the artists',
    is not learned into the blocks that real probes pass through."""
    import torch
    import torch.nn.functional as F

    module = _torch_classes()["SketchSFace"](base, blocks).to(device)
    if start is not None:
        module.load_trainable(start[0])
    trainable = [p for p in module.parameters() if p.requires_grad]
    offsets = (KindOffsets(data.vectors.sketch_kinds, data.vectors.sketch_vectors.shape[1],
                           device) if kind_offset and trainable else None)
    optimizer = torch.optim.AdamW(
        [*trainable, *([offsets.learned] if offsets else [])], lr=ENCODER_LR,
        weight_decay=0.0) if trainable else None
    enabled, dtype = autocast_settings(device, autocast)
    scaler = (torch.amp.GradScaler("cuda") if enabled and device.type == "cuda"
              and dtype == torch.float16 else None)
    photos = torch.from_numpy(data.vectors.photo_vectors.astype(np.float32)).to(device)
    photo_labels = torch.from_numpy(data.vectors.photo_labels).to(device)
    frozen = torch.from_numpy(data.vectors.sketch_vectors.astype(np.float32)).to(device)
    labels = torch.from_numpy(data.vectors.sketch_labels).to(device)
    rng = np.random.default_rng([seed, 0xE4C0])
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    history: list[dict[str, Any]] = []
    say = say or (lambda message: None)

    def score() -> dict[str, Any]:
        probes, probe_labels, gallery, gallery_labels = validate
        vectors = embed_crops(module, probes, device, autocast)
        result: dict[str, Any] = validation_score(vectors, probe_labels, gallery,
                                                  gallery_labels)
        if guard is not None:
            g_probes, g_labels, g_gallery, g_gallery_labels = guard
            guarded = validation_score(embed_crops(module, g_probes, device, autocast),
                                       g_labels, g_gallery, g_gallery_labels)
            result["guard"] = guarded
        return result

    def eligible(result: dict[str, Any]) -> float:
        """The score early stopping compares: -inf where the guard lost ground."""
        if guard is None or result["guard"]["score"] >= floor - 1e-9:
            return result["score"]
        return -math.inf

    best = EarlyStopping(ENCODER_PATIENCE, module.trainable_state())
    floor = -math.inf
    if validate is not None:
        first = start[1] if start is not None else step0 or score()
        history.append({**first, "step": 0})  # a start's result carries its own stage's step
        best.score = first["score"]
        if guard is not None:
            floor = (step0 or first)["guard"]["score"]
    seconds = 0.0
    for step in range(1, steps + 1 if optimizer is not None else 1):
        began = time.perf_counter()
        index = _sample(rng, data.vectors.sketch_kinds, batch, real_share)
        x = augment(_images(data.crops[index], device), generator)
        chosen = torch.from_numpy(index).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=enabled):
            y, _ = module(x)
        y = y.float()
        preserve = (1.0 - F.cosine_similarity(y, frozen[chosen], dim=1)).mean()
        matched = offsets.shift(y, chosen) if offsets is not None else y
        loss = infonce(matched, labels[chosen], photos, photo_labels) + lam * preserve
        optimizer_step(loss, optimizer, scaler)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"encoder loss became {value} at step {step}")
        losses.append(value)
        seconds += time.perf_counter() - began
        if validate is not None and step % ENCODER_EVAL_EVERY == 0:
            result = score()
            if offsets is not None:
                result["offset_norms"] = offsets.norms()
            history.append({"step": step, **result})
            guarded = (f", guard rank-1 {result['guard']['rank1']:.3f} TAR "
                       f"{result['guard']['tar_at_far_1e-2']:.3f}" if guard is not None else "")
            say(f"k={blocks} lambda={lam} share={real_share}"
                f"{' shifted' if offsets is not None else ''} step {step}: loss "
                f"{np.mean(losses[-ENCODER_EVAL_EVERY:]):.3f}, validation rank-1 "
                f"{result['rank1']:.3f} TAR {result['tar_at_far_1e-2']:.3f}{guarded}")
            if best.update(step, eligible(result), module.trainable_state):
                break
    if validate is None:
        best.state, best.step = module.trainable_state(), len(losses)
    module.load_trainable(best.state)
    return module, losses, history, best.step, seconds


def fit_encoder(data: EncoderData, base: Any, seed: int, max_steps: int, device: Any,
                blocks: Sequence[int] = BLOCKS, lambdas: Sequence[float] = LAMBDAS,
                autocast: bool | None = None, batch: int = ENCODER_BATCH,
                say: Callable[[str], None] | None = None,
                guard: EncoderData | None = None) -> EncoderFitted:
    """Choose k, lambda, the real share and the step count on validation identities.

    Candidates are searched one coordinate at a time (k, then lambda, then the real share,
    then, real and drawn sketches mixed, the curriculum: drawn first, real alone after, and
    mixed batches whose drawn sketches' vectors are shifted by a learned offset per kind);
    every candidate trains on the fit identities with early stopping; the one with the best
    validation score (rank-1 + TAR@FAR=1e-2; ties: fewer steps, fewer blocks, larger lambda,
    mixed batches, no kind offsets, the kind-balanced mix) is kept at its best step. A best
    step of 0 keeps the frozen encoder. With ``guard`` (another artist's pairs, never
    trained on) only steps that keep the guard's score at least the frozen encoder's are
    candidates.
    """
    fit, val, probes = validation_split(data.vectors, seed)
    train = data.subset(fit)
    chosen_probes = np.isin(data.vectors.sketch_labels, val)
    if probes == "real":
        chosen_probes &= data.vectors.sketch_kinds == "sketch"
    if chosen_probes.sum() > MAX_VALIDATION_PROBES:
        keep = np.random.default_rng([seed, 0x7A1]).choice(
            np.flatnonzero(chosen_probes), MAX_VALIDATION_PROBES, replace=False)
        chosen_probes = np.isin(np.arange(len(chosen_probes)), keep)
    gallery, gallery_labels = _validation_gallery(data.vectors, val)
    validate = (data.crops[chosen_probes], data.vectors.sketch_labels[chosen_probes],
                gallery, gallery_labels)
    guard_probes = guard_set(guard, seed) if guard is not None else None
    runs: list[dict[str, Any]] = []
    modules: list[Any] = []
    spent = {"seconds": 0.0, "presented": 0}

    def run(k: int, lam: float, share: float | None, shifted: bool = False) -> None:
        module, losses, history, best_step, seconds = train_encoder(
            base, train, k, lam, seed, max_steps, validate, device, share, autocast, batch,
            say, runs[0]["history"][0] if runs else None, guard_probes,
            kind_offset=shifted)
        spent["seconds"] += seconds
        spent["presented"] += len(losses) * batch
        runs.append({"blocks": k, "lambda": lam, "schedule": MIXED, "real_share": share,
                     "kind_offset": shifted,
                     "best_step": best_step, "stage_steps": [best_step, 0],
                     "best": next(h for h in history if h["step"] == best_step),
                     "history": history, "steps_run": len(losses), "losses": losses})
        modules.append(module)

    def curriculum(k: int, lam: float) -> None:
        """The drawn sketches first, then the real ones alone from the first stage's best
        step (validated and guarded like every candidate)."""
        step0 = runs[0]["history"][0]
        tell = say or (lambda message: None)
        first, losses, history, best_first, seconds = train_encoder(
            base, train.of_kinds(real=False), k, lam, seed, max_steps, validate, device,
            None, autocast, batch, lambda m: tell(f"curriculum, generated sketches: {m}"),
            step0, guard_probes)
        start = (first.trainable_state(),
                 next(h for h in history if h["step"] == best_first))
        module, more, history, best_second, more_seconds = train_encoder(
            base, train.of_kinds(real=True), k, lam, seed, max_steps, validate, device,
            None, autocast, batch, lambda m: tell(f"curriculum, real sketches: {m}"), step0,
            guard_probes, start)
        spent["seconds"] += seconds + more_seconds
        spent["presented"] += (len(losses) + len(more)) * batch
        runs.append({"blocks": k, "lambda": lam, "schedule": CURRICULUM, "real_share": None,
                     "kind_offset": False, "best_step": best_first + best_second,
                     "stage_steps": [best_first, best_second],
                     "best": next(h for h in history if h["step"] == best_second),
                     "history": history, "steps_run": len(losses) + len(more),
                     "losses": losses + more})
        modules.append(module)

    # A coordinate search, image-level runs being too dear for the full product on a CPU:
    # every k at the first lambda (kind-balanced batches), the other lambdas at the best k,
    # then (real and other sketches mixed) the other real shares at the best (k, lambda).
    shares = real_shares(train.vectors.sketch_kinds)
    for k in blocks:
        run(k, lambdas[0], shares[0])
    lead = max(runs, key=_preference)
    for lam in lambdas[1:]:
        run(lead["blocks"], lam, shares[0])
    if len(shares) > 1:
        lead = max(runs, key=_preference)
        for share in shares[1:]:
            run(lead["blocks"], lead["lambda"], share)
    if CURRICULUM in schedules(train.vectors.sketch_kinds):
        lead = max(runs, key=_preference)
        curriculum(lead["blocks"], lead["lambda"])
    # then the mixed batches again with each drawn kind's vectors shifted (KindOffsets)
    for share in kind_offset_shares(train.vectors.sketch_kinds):
        lead = max(runs, key=_preference)
        run(lead["blocks"], lead["lambda"], share, shifted=True)
    seconds, presented = spent["seconds"], spent["presented"]
    order = max(range(len(runs)), key=lambda i: _preference(runs[i]))
    chosen, module = runs[order], modules[order]
    baseline = runs[0]["history"][0]
    epoch = len(train.crops)
    began = time.perf_counter()
    embed_crops(module, validate[0], device, autocast)
    rate = len(validate[0]) / max(time.perf_counter() - began, 1e-9)
    return EncoderFitted(
        state=module.trainable_state(),  # the best step's (step 0: the frozen encoder's)
        chosen={"blocks": chosen["blocks"], "lambda": chosen["lambda"],
                "schedule": chosen["schedule"], "real_share": chosen["real_share"],
                "kind_offset": chosen["kind_offset"],
                "steps": chosen["best_step"], "stage_steps": chosen["stage_steps"],
                "tau": TAU, "lr": ENCODER_LR, "batch": batch},
        validation={"identities": {"fit": len(fit), "validation": len(val)},
                    "probes": probes, "n_probes": int(chosen_probes.sum()),
                    "n_gallery": len(gallery_labels),
                    "runs": [{k: r[k] for k in ("blocks", "lambda", "schedule", "real_share",
                                                "kind_offset", "best_step", "stage_steps",
                                                "best", "steps_run")}
                             for r in runs],
                    "history": chosen["history"], "best": chosen["best"],
                    "baseline": {k: baseline[k] for k in ("rank1", "tar_at_far_1e-2",
                                                          "score")},
                    "sketches_per_epoch": epoch,
                    **({"guard": {"identities": len(guard.vectors.identities),
                                  "n_probes": len(guard_probes[0]),
                                  "n_gallery": len(guard_probes[3]),
                                  "baseline": baseline["guard"],
                                  "best": chosen["best"]["guard"]}}
                       if guard is not None and guard_probes is not None else {})},
        losses=chosen["losses"],
        seconds_per_epoch=seconds / presented * epoch if presented else None,
        probes_per_second=rate, module=module)


def guard_set(guard: EncoderData, seed: int) -> Probes:
    """The guard's probes (its real sketches, at most MAX_VALIDATION_PROBES, a seeded draw)
    and gallery (every guard photo)."""
    real = np.flatnonzero(guard.vectors.sketch_kinds == REAL_KIND)
    if len(real) > MAX_VALIDATION_PROBES:
        real = np.sort(np.random.default_rng([seed, 0x6A2D]).choice(
            real, MAX_VALIDATION_PROBES, replace=False))
    return (guard.crops[real], guard.vectors.sketch_labels[real],
            guard.vectors.photo_vectors, guard.vectors.photo_labels)


def guard_score(module: Any, guard: EncoderData, seed: int, device: Any,
                autocast: bool | None = None) -> dict[str, float]:
    """Rank-1, TAR@FAR=1e-2 and their sum of ``module`` on the guard's probes (the draw
    ``fit_encoder`` used): what anything added on top of the chosen blocks must keep."""
    probes, labels, gallery, gallery_labels = guard_set(guard, seed)
    return validation_score(embed_crops(module, probes, device, autocast), labels, gallery,
                            gallery_labels)


def adapter_on_top(data: EncoderData, module: Any, seed: int, device: Any,
                   autocast: bool | None = None) -> Fitted:
    """The ``adapter`` kind fit on the trained branch's sketch vectors (photos frozen).

    Its validation (the same identities as the branch's, which the branch never trained on)
    starts from the identity map, i.e. the branch alone: a chosen step count of 0 means the
    adapter did not help and is left out.
    """
    vectors = embed_crops(module, data.crops, device, autocast)
    on_branch = VectorSet(data.vectors.identities, vectors, data.vectors.sketch_labels,
                          data.vectors.sketch_kinds, data.vectors.photo_vectors,
                          data.vectors.photo_labels)
    with one_thread():
        # One fold: the branch trained on every other fold's identities, so only its own
        # validation identities are unseen by it.
        return fit_adapter(on_branch, seed, hidden=ADAPTER_HIDDEN, folds=1)


def _preference(run: dict[str, Any]) -> tuple:
    """Best validation score; ties: fewer steps (step 0: the encoder), fewer blocks, larger
    lambda, mixed batches (one stage), no kind offsets, the kind-balanced mix."""
    return (round(run["best"]["score"], 9), -run["best_step"], -run["blocks"], run["lambda"],
            run["schedule"] == MIXED, not run["kind_offset"], run["real_share"] is None)


def check_validation(data: VectorSet, seed: int) -> None:
    """Raise the validation split's DataError before any image is read or step taken."""
    try:
        validation_split(data, seed)
    except DataError as error:
        raise DataError(f"encoder: {error}") from error
