"""Train a sketch-to-mugshot recognizer: the plain function behind ``train_recognizer``.

``procrustes`` and ``adapter`` adapt the sketch side only and choose their hyper-parameters
on a validation part of the training identities (``tasks/recognize/sketch_side.py``); they
fit in seconds on vectors, so they keep no checkpoints (a rerun is the resume). The two
modes below share one loop, one loss and one checkpoint format:

* ``head`` (the CPU default): the identity encoder stays frozen, its vectors are computed
  once, and a ProjectionHead learns with a margin loss to pull sketches onto their mugshots.
* ``backbone``: an AdaFace IR backbone (an official checkpoint, or from scratch) is fine-tuned
  on aligned crops with the same loss; mixed precision on CUDA.

Layout of ``out``:

    plan.json                 what the run trains (data fingerprint, hyper-parameters); a
                              resume with another plan is refused, it would replay a
                              different schedule than the checkpoints started
    checkpoints/step-NNNNNNNN/ model.safetensors (model + margin head), optimizer.pt (loads
                              with weights_only=True), state.json (step, losses, scaler),
                              config.json (the recognizer config + its training inputs);
                              written to a temp dir, then renamed
    recognizer.json recognizer.safetensors   the trained recognizer ``evaluate`` loads
    identities.txt            the identities trained on (audit: none is held out)
    loss.png training.json

Exact resume: a batch is a pure function of (seed, step) (``data.batch_indices``) and so is
the step's torch seed (dropout, flips), the LR schedule depends on the step only, and the
optimizer state is restored, so a run killed at any step and resumed ends where an
uninterrupted run ends.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.encoders import EncoderSpec
from schemas.settings import IngestSettings
from tasks.encoders import load
from tasks.encoders.adaface import (
    EMBEDDING_DIM,
    build_model,
    load_weights,
    read_state_dict,
    resolve_arch,
)
from tasks.ingest.locate import locate
from tasks.ingest.run import ingest_source
from tasks.ingest.sources import read_source
from tasks.recognize.data import (
    DataError,
    Example,
    TrainingSet,
    assemble,
    batch_indices,
    load_crops,
    load_vectors,
    photos_of,
    synthetic_source,
)
from tasks.recognize.recognizer import CONFIG_FILE, FORMAT, WEIGHTS_FILE, crops_to_tensor
from tasks.recognize.sketch_encoder import (
    BLOCKS,
    ENCODER_BATCH,
    ENCODER_LR,
    ENCODER_MODE,
    ENCODER_THREADS,
    N_BLOCKS,
    EncoderData,
    adapter_on_top,
    check_validation,
    fit_encoder,
    guard_score,
    sface_net,
    torch_threads,
)
from tasks.recognize.sketch_side import (
    ADAPTER_LR,
    SKETCH_SIDE_MODES,
    VectorSet,
    fit_sketch_side,
    optimizer_step,
    torch_modules,
)
from tasks.runtime import retry_transient
from tasks.splits import load_split, resolve_split
from tasks.storage import Workspace, write_bytes_atomic

Mode = Literal["head", "backbone", "procrustes", "adapter", "encoder"]
Loss = Literal["adaface", "arcface", "cosface"]
PLAN_FILE = "plan.json"
CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_CHECKPOINT_FILES = ("model.safetensors", "optimizer.pt", "state.json", "config.json")
DEFAULT_LR = {"head": 1e-3, "backbone": 1e-4}
DEFAULT_BATCH = {"encoder": ENCODER_BATCH}


class TrainRecognizerRequest(BaseModel):
    """Everything one training run needs; small and picklable, so it crosses task bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: str
    out: str
    # synthetic sources (``data.synthetic_source``); None: the workspace's `sketches` table
    dataset: str | list[str] | None = None
    real_pairs: str | list[str] | None = None  # pairs manifests of real sketches
    real_pairs_root: str | list[str] | None = None  # one for all manifests, or one each
    # encoder: pairs manifests of *other* artists, never trained on: a step that scores
    # under the frozen encoder on their sketches is no candidate (sketch_encoder.fit_encoder)
    guard_pairs: str | list[str] | None = None
    guard_pairs_root: str | list[str] | None = None
    # encoder: the k values (SFace's first k blocks retrained) its search tries; None: BLOCKS.
    # One value pins k where a small validation part cannot choose (ties go to fewer blocks)
    encoder_blocks: list[int] | None = None
    # identities of a source in the split's test part: refused, unless this drops them
    drop_test_identities: bool = False
    synthetic_styles: list[str] | None = None  # keep only synthetic sketches of these styles
    # where encoder vectors of a training set are cached (default <out>/cache); keyed by the
    # data fingerprint and encoder version, so recognizers trained on one set can share it
    vectors_cache: str | None = None
    include_synthetic: bool = True
    mode: Mode = "head"
    loss: Loss = "adaface"
    backbone_arch: str = "ir_50"
    backbone_weights: str | None = None
    identity_encoder: EncoderSpec
    steps: int = Field(default=1000, ge=1)
    batch_size: int | None = Field(default=None, ge=2)  # None: DEFAULT_BATCH of the mode
    samples_per_identity: int = Field(default=4, ge=2)
    lr: float | None = Field(default=None, gt=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    hidden: int | None = Field(default=None, ge=1)  # ProjectionHead residual MLP width
    seed: int = 0
    resume: bool = False
    split: str | None = None
    checkpoint_every: int = Field(default=100, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    device: str | None = None
    ingest: IngestSettings | None = None
    run_id: str = "local"

    def batch(self) -> int:
        """The batch size: as given, else the mode's default (an image-level encoder step
        on a CPU costs ~0.1 s an image, so its batches are smaller)."""
        return self.batch_size or DEFAULT_BATCH.get(self.mode, 64)

    def datasets(self) -> list[str | None]:
        if self.dataset is None:
            return [None]
        return [self.dataset] if isinstance(self.dataset, str) else list(self.dataset)

    @field_validator("encoder_blocks")
    @classmethod
    def _each_k_once(cls, blocks: list[int] | None) -> list[int] | None:
        """Sorted, each k once: a k named twice would train the same candidates twice."""
        return None if blocks is None else sorted(set(blocks))

    @model_validator(mode="after")
    def _guard_needs_the_encoder(self) -> TrainRecognizerRequest:
        if self.guard_pairs and self.mode != ENCODER_MODE:
            raise ValueError(f"guard_pairs checks the encoder kind's trained blocks on "
                             f"another artist; mode {self.mode} has none")
        if self.encoder_blocks is not None:
            if self.mode != ENCODER_MODE:
                raise ValueError(f"encoder_blocks are the encoder kind's candidates for k; "
                                 f"mode {self.mode} retrains no blocks")
            if not self.encoder_blocks or not all(1 <= k <= N_BLOCKS
                                                  for k in self.encoder_blocks):
                raise ValueError(f"encoder_blocks must be one or more of 1..{N_BLOCKS}, got "
                                 f"{self.encoder_blocks}")
        return self

    def pairs_sources(self) -> list[tuple[str, str | None]]:
        """(manifest, root) per real-pairs manifest."""
        if not self.real_pairs:
            return []
        manifests = [self.real_pairs] if isinstance(self.real_pairs, str) else self.real_pairs
        roots = self.real_pairs_root
        if roots is None or isinstance(roots, str):
            return [(m, roots) for m in manifests]
        if len(roots) == 1:
            return [(m, roots[0]) for m in manifests]
        if len(roots) != len(manifests):
            raise DataError(f"{len(manifests)} real-pairs manifests but {len(roots)} roots: "
                            "give one root for all or one per manifest")
        return list(zip(manifests, roots, strict=True))


class TrainRecognizerReport(BaseModel):
    out: str
    mode: Mode
    loss: str  # a Loss for head/backbone; "orthogonal" / "infonce" for the sketch-side kinds
    device: str
    steps: int
    resumed_from: int | None
    steps_this_run: int
    first_loss: float | None = Field(description="mean loss of the first 10 steps")
    final_loss: float | None = Field(description="mean loss of the last 10 steps")
    identities: int
    examples: dict[str, int]
    skipped: dict[str, int]
    inputs: dict[str, Any]
    recognizer_dir: str
    loss_png: str
    seconds: float
    seconds_per_step: float | None
    validation: dict[str, Any] | None = Field(
        default=None, description="procrustes/adapter/encoder: how hyper-parameters were chosen")
    seconds_per_epoch: float | None = Field(
        default=None, description="encoder: seconds of training steps per pass over the fit "
                                  "sketches")
    probes_per_second: float | None = Field(
        default=None, description="encoder: sketches embedded per second by the trained branch")


StepHook = Callable[[int, float], None]


# --------------------------------------------------------------------------- data


def gather_examples(workspace: Workspace, request: TrainRecognizerRequest,
                    split: dict[str, str] | None = None,
                    say: Callable[[str], None] | None = None,
                    ) -> tuple[list[Example], dict[str, Any]]:
    """Examples from every requested source, and a record of exactly what was read.

    Two kinds of bad input are never silently dropped: a real sketch (or photo) with no
    usable face is counted by reason in ``inputs`` and in the report's ``skipped``; a source
    with identities in the split's *test* part is refused (naming them) unless
    ``drop_test_identities`` asks to drop them, which ``assemble`` then counts as held out.
    """

    say = say or (lambda message: None)
    examples: list[Example] = []
    synthetic: list[dict[str, Any]] = []
    real: list[dict[str, Any]] = []
    if request.include_synthetic:
        for source in request.datasets():
            found, provenance = synthetic_source(workspace, source, request.synthetic_styles)
            _refuse_test_identities(found, split, source or "sketches", request)
            examples += found
            synthetic.append(provenance)
    for manifest, root in request.pairs_sources():
        items = read_source(manifest, root)
        _refuse_test_identities(items, split, manifest, request)
        report = ingest_source(workspace, manifest, root=root, settings=request.ingest,
                               run_id=request.run_id)
        placed = locate(workspace, items, request.ingest)
        # the manifest's photos arrive with ``photos_of`` below, like every other photo
        examples += [Example(p.identity_id, "sketch", p.face_id, f"real_pairs:{manifest}",
                             face_id=p.face_id)
                     for p in placed if p.ok and p.kind == "sketch"]
        failed: dict[str, dict[str, int]] = {}
        for p in placed:
            if not p.ok:
                by_reason = failed.setdefault(p.kind, {})
                by_reason[p.reason] = by_reason.get(p.reason, 0) + 1
        for kind, reasons in failed.items():
            say(f"{manifest}: {sum(reasons.values())} {kind}(s) unusable and not trained on: "
                f"{reasons}")
        real.append({"manifest": manifest, "root": root, "files": len(placed),
                     "unusable": failed, "ingested": report.ingested})
    if not synthetic and not real:
        raise DataError("nothing to train on: include_synthetic is off and no real_pairs")
    inputs: dict[str, Any] = {}
    if synthetic:
        inputs["synthetic"] = synthetic[0] if len(synthetic) == 1 else synthetic
    if real:
        inputs["real_pairs"] = real[0] if len(real) == 1 else real
    sketched = {e.identity_id for e in examples if e.kind != "photo"}
    examples += photos_of(workspace, sketched)
    return examples, inputs


def training_fingerprint(request: TrainRecognizerRequest) -> str:
    """The fingerprint of the data ``request`` would train on now (what ``recognizer.json``
    records as ``training_data.fingerprint``): a caller that reuses trained recognizers
    compares it, because a source folder drawn again is other data under the same request.
    Reads tables and lists, not pixels (a workspace source's photo crops excepted); real
    pairs are ingested first, as training does (a no-op once they are)."""
    workspace = Workspace.open(request.workspace)
    split = load_split(resolve_split(request.split)) if request.split else None
    examples, _ = gather_examples(workspace, request, split)
    return assemble(examples, split).fingerprint()


def _refuse_test_identities(items: list[Any], split: dict[str, str] | None, source: str,
                            request: TrainRecognizerRequest) -> None:
    """Refuse a source that holds identities of the split's test part (see gather_examples).

    A test identity in training makes every figure on that test set a leak; dropping it
    silently would hide that the manifest given was the wrong one.
    """
    if split is None or request.drop_test_identities:
        return
    test = sorted({i.identity_id for i in items if split.get(i.identity_id) == "test"})
    if test:
        raise DataError(
            f"{source} holds {len(test)} identities of the test part of split "
            f"{request.split} (e.g. {', '.join(test[:3])}): a recognizer trained on them "
            "cannot be evaluated on that test set. Give a source of train identities only, "
            "or pass drop_test_identities (--drop-test-identities) to drop them (counted "
            "as held_out in the report)")


def _unusable_counts(inputs: dict[str, Any]) -> dict[str, int]:
    """``unusable_<kind>_<reason>`` counts over every real-pairs manifest."""
    real = inputs.get("real_pairs")
    out: dict[str, int] = {}
    for record in [real] if isinstance(real, dict) else (real or []):
        for kind, reasons in record["unusable"].items():
            for reason, n in reasons.items():
                key = f"unusable_{kind}_{reason}"
                out[key] = out.get(key, 0) + n
    return out


def _cache_dir(request: TrainRecognizerRequest, out: Path) -> Path:
    return Path(request.vectors_cache).expanduser() if request.vectors_cache else out / "cache"


def _cached_vectors(workspace: Workspace, request: TrainRecognizerRequest,
                    training: TrainingSet, cache: Path) -> tuple[np.ndarray, str]:
    """Encoder vectors of the training set, cached per (data, encoder version) for resumes."""

    encoder = load(request.identity_encoder)
    key = hashlib.sha256(f"{training.fingerprint()}\0{encoder.version}".encode()).hexdigest()
    path = cache / f"vectors-{key[:24]}.npy"
    if path.is_file():
        return np.load(path), encoder.version
    vectors = load_vectors(workspace, encoder, training.examples, request.run_id)
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    write_bytes_atomic(buffer.getvalue(), path)
    return vectors, encoder.version


# --------------------------------------------------------------------------- model


def build(request: TrainRecognizerRequest, num_classes: int, in_dim: int | None) -> tuple[Any, Any]:
    """(trainable embedding module, margin head), seeded so a fresh start is reproducible."""
    # Imported here, not at the top: tasks.recognize.losses loads torch.
    import torch

    from tasks.recognize.losses import ProjectionHead, make_head

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(request.seed)
        if request.mode == "head":
            module = ProjectionHead(in_dim, in_dim, request.hidden)
            dim = in_dim
        else:
            arch = resolve_arch(request.backbone_arch)
            module = build_model(arch)
            if request.backbone_weights:
                load_weights(module, read_state_dict(request.backbone_weights), arch)
            dim = EMBEDDING_DIM
        head = make_head(request.loss, dim, num_classes)
    return module, head


def lr_at(step: int, steps: int, base: float) -> float:
    """Linear warm-up over 5 % of the steps, then cosine decay to zero: a function of step."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def step_seed(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(step) * 7_919 + 17) % (2**63 - 1)


# --------------------------------------------------------------------------- checkpoints


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first; half-written temp dirs never match."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and all((path / f).is_file() for f in _CHECKPOINT_FILES):
            found.append((int(match.group(1)), path))
    return sorted(found)


def _tensors(module: Any, head: Any) -> dict[str, Any]:
    state = {f"model.{k}": v for k, v in module.state_dict().items()}
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def write_checkpoint(root: Path, step: int, module: Any, head: Any, optimizer: Any,
                     state: dict[str, Any], config: dict[str, Any], keep: int) -> Path:
    """All files into a temp dir, fsynced, then one rename: a kill leaves no half checkpoint."""
    import torch
    from safetensors.torch import save

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    temp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        buffer = io.BytesIO()
        torch.save(optimizer.state_dict(), buffer)
        files = {
            "model.safetensors": save(_tensors(module, head)),
            "optimizer.pt": buffer.getvalue(),
            "state.json": json.dumps(state).encode(),
            "config.json": json.dumps(config, indent=2, default=str).encode(),
        }
        for name, data in files.items():
            with open(temp / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    for _, old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, module: Any, head: Any, optimizer: Any) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(path / "model.safetensors"))
    module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu",
                                         weights_only=True))
    return json.loads((path / "state.json").read_text(encoding="utf-8"))


def _clean_partial(root: Path) -> None:
    if root.is_dir():
        for path in root.glob(".step-*"):
            shutil.rmtree(path, ignore_errors=True)


def _check_plan(out: Path, plan: dict[str, Any], resume: bool, has_checkpoints: bool) -> None:
    path = out / PLAN_FILE
    if not resume:
        if has_checkpoints:
            raise DataError(f"{out} already holds checkpoints of an earlier run: pass "
                            "resume=True to continue it, or choose another out")
        return
    if has_checkpoints and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(saved) | set(plan) if saved.get(k) != plan.get(k))
        if changed:
            raise DataError(f"cannot resume {out}: {', '.join(changed)} changed since the run "
                            "started; start a new out instead")


# --------------------------------------------------------------------------- reports


def plot_losses(losses: list[float], path: Path, title: str) -> Path:
    """Per-step loss and its running mean (Agg canvas: thread-safe under Prefect)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, alpha=0.35, linewidth=0.8, label="step")
    if losses:
        window = max(1, min(50, len(losses) // 10))
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, linewidth=1.6, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(linestyle="--", alpha=0.4)
    ax.legend(loc="upper right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return write_bytes_atomic(buffer.getvalue(), path)


def _write_recognizer(out: Path, module: Any, config: dict[str, Any],
                      identities: tuple[str, ...]) -> None:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    write_bytes_atomic(save(state), out / WEIGHTS_FILE)
    write_bytes_atomic(json.dumps(config, indent=2, default=str).encode(), out / CONFIG_FILE)
    write_bytes_atomic(("\n".join(identities) + "\n").encode(), out / "identities.txt")


# --------------------------------------------------------------------------- training


def train_recognizer(request: TrainRecognizerRequest, on_step: StepHook | None = None,
                     progress: Callable[[str], None] | None = None) -> TrainRecognizerReport:
    """Assemble the data, train with checkpoints (resumable), write the recognizer dir."""
    import torch
    import torch.nn.functional as F

    say = progress or (lambda message: None)
    began = time.perf_counter()
    workspace = Workspace.open(request.workspace)
    out = Path(request.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    split = None
    if request.split:
        split = load_split(resolve_split(request.split))
    examples, inputs = gather_examples(workspace, request, split, say)
    training = assemble(examples, split)
    training.skipped = dict(sorted({**training.skipped, **_unusable_counts(inputs)}.items()))
    say(f"training set: {training.counts()} over {len(training.identities)} identities; "
        f"skipped {training.skipped or 'nothing'}")

    if request.mode == ENCODER_MODE:
        return _train_sketch_encoder(request, workspace, training, inputs, out, began, say,
                                     split)
    if request.mode in SKETCH_SIDE_MODES:
        return _train_sketch_side(request, workspace, training, inputs, out, began, say)
    in_dim = encoder_version = None
    if request.mode == "head":
        training.vectors, encoder_version = _cached_vectors(workspace, request, training,
                                                            _cache_dir(request, out))
        in_dim = training.vectors.shape[1]
    else:
        training.crops = load_crops(workspace, training.examples)

    K = request.samples_per_identity
    P = max(1, request.batch() // K)
    lr = request.lr or DEFAULT_LR[request.mode]
    plan = {
        "mode": request.mode, "loss": request.loss, "data": training.fingerprint(),
        "identities": len(training.identities), "batch": [P, K], "lr": lr,
        "weight_decay": request.weight_decay, "steps": request.steps, "seed": request.seed,
        "hidden": request.hidden if request.mode == "head" else None,
        "identity_encoder_version": encoder_version,
        "backbone": ([request.backbone_arch, _digest_file(request.backbone_weights)]
                     if request.mode == "backbone" else None),
        "split": request.split,
    }
    checkpoints = out / CHECKPOINTS
    _clean_partial(checkpoints)
    existing = list_checkpoints(checkpoints)
    _check_plan(out, plan, request.resume, bool(existing))
    write_bytes_atomic(json.dumps(plan, indent=2).encode(), out / PLAN_FILE)

    device = torch.device(request.device or (
        "cuda" if request.mode == "backbone" and torch.cuda.is_available() else "cpu"))
    module, head = build(request, len(training.identities), in_dim)
    module.to(device)
    head.to(device)
    optimizer = torch.optim.AdamW(list(module.parameters()) + list(head.parameters()), lr=lr,
                                  weight_decay=request.weight_decay)
    amp = _amp(device)
    losses: list[float] = []
    start = 0
    resumed_from = None
    if request.resume and existing:
        step_done, path = existing[-1]
        state = load_checkpoint(path, module, head, optimizer)
        losses, start, resumed_from = list(state["losses"]), step_done, step_done
        if amp["scaler"] is not None and state.get("scaler"):
            amp["scaler"].load_state_dict(state["scaler"])
        say(f"resumed from {path.name}")

    config = recognizer_config(request, training, inputs, in_dim, encoder_version, lr)
    labels = torch.from_numpy(training.labels)
    module.train()
    head.train()
    timed = time.perf_counter()
    for step in range(start, request.steps):
        index = batch_indices(training, request.seed, step, P, K)
        torch.manual_seed(step_seed(request.seed, step))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, request.steps, lr)
        x = _inputs(training, index, request.mode, device)
        y = labels[index].to(device)
        with torch.autocast(device.type, dtype=amp["dtype"], enabled=amp["enabled"]):
            embeddings, norms = module(x)
        logits = head(embeddings.float(), norms.float(), y)
        loss = F.cross_entropy(logits, y)
        optimizer_step(loss, optimizer, amp["scaler"])
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step + 1}; lower lr")
        losses.append(value)
        done = step + 1
        if done % request.checkpoint_every == 0 or done == request.steps:
            state = {"step": done, "losses": losses,
                     "scaler": amp["scaler"].state_dict() if amp["scaler"] else None}
            write_checkpoint(checkpoints, done, module, head, optimizer, state,
                             {**config, "steps_done": done}, request.keep_checkpoints)
        if done % max(1, request.steps // 10) == 0:
            say(f"step {done}/{request.steps} loss {np.mean(losses[-10:]):.4f}")
        if on_step is not None:
            on_step(done, value)
    ran = request.steps - start
    seconds_training = time.perf_counter() - timed

    module.eval()
    _write_recognizer(out, module.cpu(), {**config, "steps_done": request.steps},
                      training.identities)
    loss_png = plot_losses(losses, out / "loss.png",
                           f"{request.mode} / {request.loss}: {len(training.identities)} "
                           "identities")
    report = TrainRecognizerReport(
        out=str(out), mode=request.mode, loss=request.loss, device=str(device),
        steps=request.steps, resumed_from=resumed_from, steps_this_run=ran,
        first_loss=float(np.mean(losses[:10])) if losses else None,
        final_loss=float(np.mean(losses[-10:])) if losses else None,
        identities=len(training.identities), examples=training.counts(),
        skipped=training.skipped, inputs=inputs, recognizer_dir=str(out),
        loss_png=str(loss_png), seconds=time.perf_counter() - began,
        seconds_per_step=seconds_training / ran if ran else None,
    )
    write_bytes_atomic(report.model_dump_json(indent=2).encode(), out / "training.json")
    return report


def _train_sketch_side(request: TrainRecognizerRequest, workspace: Workspace,
                       training: TrainingSet, inputs: dict[str, Any], out: Path,
                       began: float, say: Callable[[str], None]) -> TrainRecognizerReport:
    """``procrustes`` / ``adapter``: fit on encoder vectors, write the recognizer dir."""

    training.vectors, encoder_version = _cached_vectors(workspace, request, training,
                                                        _cache_dir(request, out))
    in_dim = training.vectors.shape[1]
    timed = time.perf_counter()
    fitted = fit_sketch_side(request.mode, training.identities, training.labels,
                             training.kinds, training.vectors, request.seed,
                             max_steps=request.steps, hidden=request.hidden)
    seconds = time.perf_counter() - timed
    best, base = fitted.validation["best"], fitted.validation["baseline"]
    say(f"{request.mode}: chose {fitted.chosen} on {fitted.validation['identities']} "
        f"identities; validation rank-1 {best['rank1']:.3f} (identity map "
        f"{base['rank1']:.3f}), TAR@FAR=1e-2 {best['tar_at_far_1e-2']:.3f} "
        f"({base['tar_at_far_1e-2']:.3f})")
    config = recognizer_config(request, training, inputs, in_dim, encoder_version,
                               ADAPTER_LR if request.mode == "adapter" else 0.0)
    config.update(applies_to="sketch", chosen=fitted.chosen,
                  hidden=fitted.chosen.get("hidden"),
                  steps=fitted.chosen.get("steps", 0), loss=_SKETCH_SIDE_LOSS[request.mode])
    from safetensors.torch import save

    write_bytes_atomic(save(fitted.state), out / WEIGHTS_FILE)
    write_bytes_atomic(json.dumps(config, indent=2, default=str).encode(), out / CONFIG_FILE)
    write_bytes_atomic(("\n".join(training.identities) + "\n").encode(),
                       out / "identities.txt")
    write_bytes_atomic(json.dumps(fitted.validation, indent=2, default=float).encode(),
                       out / "validation.json")
    title = (f"{request.mode}: validation score by alpha ({fitted.chosen.get('weighting')})"
             if request.mode == "procrustes" else
             f"adapter: loss, lambda {fitted.chosen['lambda']}")
    loss_png = plot_losses(fitted.losses, out / "loss.png", title)
    report = TrainRecognizerReport(
        out=str(out), mode=request.mode, loss=config["loss"], device="cpu",
        steps=config["steps"], resumed_from=None, steps_this_run=len(fitted.losses),
        first_loss=float(np.mean(fitted.losses[:10])) if fitted.losses else None,
        final_loss=float(np.mean(fitted.losses[-10:])) if fitted.losses else None,
        identities=len(training.identities), examples=training.counts(),
        skipped=training.skipped, inputs=inputs, recognizer_dir=str(out),
        loss_png=str(loss_png), seconds=time.perf_counter() - began,
        seconds_per_step=seconds / len(fitted.losses) if fitted.losses else None,
        validation={k: v for k, v in fitted.validation.items()
                    if k not in ("grid", "history", "runs")} | {"chosen": fitted.chosen},
    )
    write_bytes_atomic(report.model_dump_json(indent=2).encode(), out / "training.json")
    return report


_SKETCH_SIDE_LOSS = {"procrustes": "orthogonal", "adapter": "infonce"}


def _train_sketch_encoder(request: TrainRecognizerRequest, workspace: Workspace,
                          training: TrainingSet, inputs: dict[str, Any], out: Path,
                          began: float, say: Callable[[str], None],
                          split: dict[str, str] | None = None) -> TrainRecognizerReport:
    """``encoder``: SFace's first blocks retrained on sketch images (``sketch_encoder.py``)."""
    import torch
    from safetensors.torch import save

    if request.identity_encoder.name != "sface":
        raise DataError(f"mode encoder retrains SFace's first blocks; the identity encoder "
                        f"here is {request.identity_encoder.label()}")
    # Too few identities for a validation part: say so before any vector, pixel or step.
    check_validation(VectorSet.from_training(
        training.identities, training.labels, training.kinds,
        np.ones((len(training.labels), 1), np.float32)), request.seed)
    training.vectors, encoder_version = _cached_vectors(workspace, request, training,
                                                        _cache_dir(request, out))
    vectors = VectorSet.from_training(training.identities, training.labels, training.kinds,
                                      training.vectors)
    data = EncoderData(vectors, load_crops(workspace, _sketches(training)))
    guard = None
    if request.guard_pairs:
        guard, inputs["guard_pairs"] = _guard_data(workspace, request, training, split, out,
                                                   say)
    encoder = load(request.identity_encoder)
    device = torch.device(request.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    base = sface_net(encoder.weights)
    timed = time.perf_counter()
    with torch_threads(ENCODER_THREADS):
        fitted = fit_encoder(data, base, request.seed, request.steps, device,
                             blocks=tuple(request.encoder_blocks or BLOCKS),
                             batch=min(request.batch(), 4 * len(data.crops)), say=say,
                             guard=guard)
        # the adapter on top of the branch's vectors, kept only if validation says so
        top = adapter_on_top(data, fitted.module, request.seed, device)
    seconds = time.perf_counter() - timed
    fitted.validation["adapter_on_top"] = {k: top.validation[k]
                                           for k in ("best", "baseline", "runs")}
    fitted.chosen["adapter"] = top.chosen if top.chosen["steps"] else None
    if fitted.chosen["adapter"]:
        fitted.module.adapter = torch_modules()["adapter"](training.vectors.shape[1],
                                                           top.chosen["hidden"])
        fitted.module.adapter.load_state_dict(top.state)
        if guard is not None:
            # The adapter on top answers to the same guard as the blocks under it.
            score = guard_score(fitted.module, guard, request.seed, device)
            floor = fitted.validation["guard"]["baseline"]["score"]
            fitted.validation["adapter_on_top"]["guard"] = score
            if score["score"] < floor - 1e-9:
                say(f"encoder: the adapter on top is refused by the guard (score "
                    f"{score['score']:.3f} under the frozen encoder's {floor:.3f})")
                fitted.module.adapter = fitted.chosen["adapter"] = None
    if fitted.chosen["adapter"]:
        fitted.state = fitted.module.trainable_state()
        fitted.validation["best"] = {"step": fitted.chosen["steps"],
                                     **{k: top.validation["best"][k] for k in
                                        ("rank1", "tar_at_far_1e-2", "score")}}
    best, baseline = fitted.validation["best"], fitted.validation["baseline"]
    say(f"encoder: chose {fitted.chosen} on {fitted.validation['identities']} identities; "
        f"validation rank-1 {best['rank1']:.3f} (frozen encoder {baseline['rank1']:.3f}), "
        f"TAR@FAR=1e-2 {best['tar_at_far_1e-2']:.3f} ({baseline['tar_at_far_1e-2']:.3f}); "
        f"{fitted.seconds_per_epoch or 0:.1f} s an epoch, {fitted.probes_per_second:.1f} "
        f"probes/s")
    weights = save(fitted.state)
    config = recognizer_config(request, training, inputs, training.vectors.shape[1],
                               encoder_version, ENCODER_LR)
    config.update(applies_to="sketch", chosen=fitted.chosen, blocks=fitted.chosen["blocks"],
                  steps=fitted.chosen["steps"], loss="infonce",
                  hidden=(fitted.chosen["adapter"] or {}).get("hidden"),
                  weights_sha256=hashlib.sha256(weights).hexdigest())
    write_bytes_atomic(weights, out / WEIGHTS_FILE)
    write_bytes_atomic(json.dumps(config, indent=2, default=str).encode(), out / CONFIG_FILE)
    write_bytes_atomic(("\n".join(training.identities) + "\n").encode(),
                       out / "identities.txt")
    write_bytes_atomic(json.dumps(fitted.validation, indent=2, default=float).encode(),
                       out / "validation.json")
    loss_png = plot_losses(fitted.losses, out / "loss.png",
                           f"encoder: loss, k {fitted.chosen['blocks']}, lambda "
                           f"{fitted.chosen['lambda']}")
    steps_run = sum(r["steps_run"] for r in fitted.validation["runs"])
    report = TrainRecognizerReport(
        out=str(out), mode=request.mode, loss="infonce", device=str(device),
        steps=fitted.chosen["steps"], resumed_from=None, steps_this_run=steps_run,
        first_loss=float(np.mean(fitted.losses[:10])) if fitted.losses else None,
        final_loss=float(np.mean(fitted.losses[-10:])) if fitted.losses else None,
        identities=len(training.identities), examples=training.counts(),
        skipped=training.skipped, inputs=inputs, recognizer_dir=str(out),
        loss_png=str(loss_png), seconds=time.perf_counter() - began,
        seconds_per_step=seconds / steps_run if steps_run else None,
        validation={k: v for k, v in fitted.validation.items()
                    if k not in ("history", "runs")} | {"chosen": fitted.chosen},
        seconds_per_epoch=fitted.seconds_per_epoch,
        probes_per_second=fitted.probes_per_second,
    )
    write_bytes_atomic(report.model_dump_json(indent=2).encode(), out / "training.json")
    return report


def _sketches(training: TrainingSet) -> list[Example]:
    return [e for e, kind in zip(training.examples, training.kinds.tolist(), strict=True)
            if kind != "photo"]


def _guard_data(workspace: Workspace, request: TrainRecognizerRequest, training: TrainingSet,
                split: dict[str, str] | None, out: Path, say: Callable[[str], None],
                ) -> tuple[EncoderData, dict[str, Any]]:
    """The guard pairs as the branch sees them (crops, frozen vectors), and what was read.

    Read like real pairs (ingested, located, an unusable sketch counted by reason, a test
    identity refused), never trained on. A guard identity whose photo (or another sketch)
    is also in the training set is kept and counted: the branch may have learnt that person,
    which can only flatter the guard, never make it refuse a step that keeps the artist.
    """
    guard_request = request.model_copy(update={
        "real_pairs": request.guard_pairs, "real_pairs_root": request.guard_pairs_root,
        "include_synthetic": False, "guard_pairs": None, "guard_pairs_root": None})
    examples, inputs = gather_examples(workspace, guard_request, split, say)
    try:
        guarded = assemble(examples, split)
    except DataError as error:
        raise DataError(f"guard pairs {request.guard_pairs}: {error} (unusable: "
                        f"{_unusable_counts(inputs) or 'none'})") from error
    shared = len(set(guarded.identities) & set(training.identities))
    guarded.vectors, _ = _cached_vectors(workspace, guard_request, guarded,
                                         _cache_dir(request, out))
    vectors = VectorSet.from_training(guarded.identities, guarded.labels, guarded.kinds,
                                      guarded.vectors)
    say(f"guard: {guarded.counts()} over {len(guarded.identities)} identities ({shared} "
        f"also in the training set), its sketches never trained on")
    record = inputs["real_pairs"]
    return (EncoderData(vectors, load_crops(workspace, _sketches(guarded))),
            {"pairs": record, "identities": len(guarded.identities),
             "identities_also_trained": shared,
             "skipped": dict(sorted({**guarded.skipped,
                                     **_unusable_counts(inputs)}.items()))})


def recognizer_config(request: TrainRecognizerRequest, training: TrainingSet,
                      inputs: dict[str, Any], in_dim: int | None,
                      encoder_version: str | None, lr: float) -> dict[str, Any]:
    """What ``recognizer.load_recognizer`` needs, plus the inputs the weights came from."""
    config: dict[str, Any] = {
        "format": FORMAT, "mode": request.mode, "loss": request.loss,
        "num_classes": len(training.identities), "steps": request.steps, "lr": lr,
        "batch_size": request.batch(), "samples_per_identity": request.samples_per_identity,
        "seed": request.seed, "split": request.split,
        "training_data": {"fingerprint": training.fingerprint(), "examples": training.counts(),
                          "identities": len(training.identities),
                          "skipped": training.skipped, "inputs": inputs},
    }
    if request.mode != "backbone":
        config.update(in_dim=in_dim, out_dim=in_dim, hidden=request.hidden,
                      identity_encoder=request.identity_encoder.model_dump(exclude_none=True),
                      identity_encoder_version=encoder_version)
    else:
        config.update(arch=resolve_arch(request.backbone_arch), embedding_dim=EMBEDDING_DIM,
                      backbone_weights=request.backbone_weights,
                      backbone_weights_sha256=_digest_file(request.backbone_weights))
    return config


def _digest_file(path: str | None) -> str | None:
    if not path:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _amp(device: Any) -> dict[str, Any]:
    """bf16 autocast where the GPU has it; else fp16 with a loss scaler; none on CPU."""
    import torch

    if device.type != "cuda":
        return {"enabled": False, "dtype": torch.bfloat16, "scaler": None}
    if torch.cuda.is_bf16_supported():
        return {"enabled": True, "dtype": torch.bfloat16, "scaler": None}
    return {"enabled": True, "dtype": torch.float16, "scaler": torch.amp.GradScaler("cuda")}


def _inputs(training: TrainingSet, index: np.ndarray, mode: str, device: Any) -> Any:
    import torch

    if mode == "head":
        return torch.from_numpy(training.vectors[index]).to(device)
    x = crops_to_tensor(training.crops[index]).to(device)
    # horizontal flips drawn from the step's torch seed (set by the caller): replayable
    flip = torch.rand(len(index)) < 0.5
    return torch.where(flip.to(device)[:, None, None, None], x.flip(-1), x)


@task(name="train-recognizer", retries=1, retry_delay_seconds=5,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def train_recognizer_task(request: TrainRecognizerRequest) -> TrainRecognizerReport:
    """Thin Prefect wrapper. A retry resumes from the last checkpoint instead of restarting."""
    from prefect import get_run_logger
    from prefect.runtime import task_run

    if (task_run.run_count or 1) > 1 and not request.resume:
        request = request.model_copy(update={"resume": True})
    return train_recognizer(request, progress=get_run_logger().info)
