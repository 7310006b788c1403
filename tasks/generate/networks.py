"""The sketch generator's networks: a diffusers UNet over 1-channel sketches, conditioned by
token projections of a mugshot's identity, image and style-text vectors.

Every condition is replaced by a learned null token at random during training, so sampling can
use classifier-free guidance and can also leave out a condition it does not have. Saving and
loading write and read the format ``tasks.generate.saved`` defines and checks (safetensors only,
never pickled, with a manifest that records the encoders, the sha256 and the tensor shapes of
every weights file); checking a saved generator there needs none of the networks here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tasks.generate.config import ROLES, GeneratorConfig, load_config
from tasks.generate.formulations.base import build_formulation
from tasks.generate.saved import (
    CONFIG_FILE,
    FORMAT_VERSION,
    HEAD_WEIGHTS,
    PROJECTOR_WEIGHTS,
    SCHEDULER_DIR,
    SHAPES_KEY,
    UNET_DIR,
    UNET_WEIGHTS,
    GeneratorLoadError,
    check_encoders,
    check_shapes,
    jsonable,
    read_config,
    read_manifest,
    sha256_file,
    shapes_record,
    verify_files,
    write_manifest,
)

Vector = np.ndarray | torch.Tensor


class TrainingOutputs(NamedTuple):
    loss: torch.Tensor
    x0_hat: torch.Tensor
    t: torch.Tensor  # (B,) each item's time, 0 at the sketch, 1 where sampling begins


class NonFiniteSampleError(RuntimeError):
    """Some samples of a batch came out NaN/inf.

    Raised instead of returning, so that no caller can save a broken image as good by
    accident; ``images`` still holds the whole batch (broken items zeroed) and ``finite`` says
    which items are usable, so a shard can keep the good ones and flag the rest.
    """

    def __init__(self, images: np.ndarray, finite: np.ndarray):
        bad = np.flatnonzero(~finite).tolist()
        super().__init__(f"{len(bad)} of {len(finite)} samples are not finite (items {bad})")
        self.images = images
        self.finite = finite


# --------------------------------------------------------------------------- conditions


class ConditionProjector(nn.Module):
    """Turns each role's vector into a few cross-attention tokens.

    Each role gets its own MLP (vectors of different encoders live in unrelated spaces), a
    learned type/position embedding per token (so attention can tell roles apart) and learned
    null tokens that stand in for a dropped or absent condition.
    """

    def __init__(
        self,
        dims: Mapping[str, int],
        tokens: Mapping[str, int],
        hidden_dim: int,
        width: int,
        drop: Mapping[str, float] | None = None,
        drop_all: float = 0.0,
    ):
        super().__init__()
        self.dims = {r: int(dims[r]) for r in ROLES}
        self.tokens = {r: int(tokens[r]) for r in ROLES}
        self.width = width
        self.drop_rates = {r: float((drop or {}).get(r, 0.0)) for r in ROLES}
        self.drop_all = float(drop_all)
        self.mlps = nn.ModuleDict({
            r: nn.Sequential(
                # Encoder vectors are L2-normalised: entries ~ 1/sqrt(d), too small to train on
                # directly, and the scale differs between encoders.
                nn.LayerNorm(self.dims[r]),
                nn.Linear(self.dims[r], hidden_dim),
                nn.SiLU(),
                nn.Linear(hidden_dim, self.tokens[r] * width),
            )
            for r in ROLES
        })
        self.type_embed = nn.ParameterDict({
            r: nn.Parameter(torch.randn(self.tokens[r], width) * 0.02) for r in ROLES
        })
        self.null_tokens = nn.ParameterDict({
            r: nn.Parameter(torch.randn(self.tokens[r], width) * 0.02) for r in ROLES
        })
        self.out_norm = nn.LayerNorm(width)

    @property
    def num_tokens(self) -> int:
        return sum(self.tokens.values())

    def sample_drop(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """(B, 3) bool: which roles each training item loses (independent, plus all at once)."""
        rates = torch.tensor([self.drop_rates[r] for r in ROLES])
        each = torch.rand((batch_size, len(ROLES)), generator=generator) < rates
        every = torch.rand((batch_size, 1), generator=generator) < self.drop_all
        return each | every

    def forward(
        self,
        vectors: Mapping[str, torch.Tensor | None],
        drop: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """(B, N, width) tokens; a role that is None or dropped gets its null tokens."""
        present = [v for v in (vectors.get(r) for r in ROLES) if v is not None]
        if batch_size is None:
            if not present:
                raise ValueError("give batch_size when no condition vector is given")
            batch_size = present[0].shape[0]
        device = self.out_norm.weight.device
        parts = []
        for i, role in enumerate(ROLES):
            null = self.null_tokens[role].unsqueeze(0).expand(batch_size, -1, -1)
            vec = vectors.get(role)
            if vec is None:
                parts.append(null)
                continue
            if vec.ndim != 2 or vec.shape != (batch_size, self.dims[role]):
                raise ValueError(
                    f"{role} vectors must be ({batch_size}, {self.dims[role]}), got "
                    f"{tuple(vec.shape)}: was the generator trained with this {role} encoder?"
                )
            tok = self.mlps[role](vec.to(device, torch.float32))
            tok = tok.view(batch_size, self.tokens[role], self.width) + self.type_embed[role]
            if drop is not None:
                tok = torch.where(drop[:, i].to(device).view(-1, 1, 1), null, tok)
            parts.append(tok)
        return self.out_norm(torch.cat(parts, dim=1))

    def unconditional(self, batch_size: int) -> torch.Tensor:
        """The all-dropped tokens that classifier-free guidance subtracts."""
        return self.forward(dict.fromkeys(ROLES), batch_size=batch_size)


# --------------------------------------------------------------------------- spatial input


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def spatial_condition(faces: np.ndarray | torch.Tensor, mode: str, size: int) -> torch.Tensor:
    """The extra UNet input channel made from aligned mugshots, in [-1, 1].

    ``faces``: uint8 (N, H, W, 3) BGR as ingestion stores them, or uint8 (N, H, W) grey.
    ``edges`` is a Sobel magnitude drawn dark-on-white like a sketch, which keeps layout
    but throws away photo shading the generator should not copy.
    """
    if mode not in ("grey", "edges"):
        raise ValueError(f"spatial condition {mode!r} has no image; use 'grey' or 'edges'")
    arr = torch.as_tensor(np.asarray(faces)).float()
    if arr.ndim == 4:
        b, g, r = arr[..., 0], arr[..., 1], arr[..., 2]
        arr = 0.114 * b + 0.587 * g + 0.299 * r
    if arr.ndim != 3:
        raise ValueError(f"expected (N, H, W, 3) BGR or (N, H, W) grey faces, got {arr.shape}")
    grey = arr.unsqueeze(1) / 255.0
    if grey.shape[-2:] != (size, size):
        grey = F.interpolate(grey, size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False)
    if mode == "grey":
        return (grey * 2.0 - 1.0).clamp(-1.0, 1.0)
    kernels = torch.stack([_SOBEL, _SOBEL.T]).unsqueeze(1)
    grad = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    mag = grad.pow(2).sum(1, keepdim=True).sqrt()
    scale = mag.flatten(1).quantile(0.98, dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)
    return (1.0 - 2.0 * (mag / scale).clamp(0.0, 1.0)).clamp(-1.0, 1.0)


# --------------------------------------------------------------------------- weights


def _tensor_digest(state: Mapping[str, torch.Tensor]) -> str:
    """Hash of tensor contents, independent of how a file happens to serialise them."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def expected_shapes(config: GeneratorConfig) -> dict[str, dict[str, tuple[int, ...]]]:
    """Tensor shapes each weights file must hold for ``config``: the modules are built on
    the meta device, so nothing is allocated whatever the config's size."""
    c = config.conditions
    with torch.device("meta"):
        modules = [(UNET_WEIGHTS, UNet2DConditionModel(**config.unet_kwargs())),
                   (PROJECTOR_WEIGHTS, ConditionProjector(c.dims, c.tokens, c.hidden_dim,
                                                          config.unet.cross_attention_dim))]
        if config.refine_channels:
            modules.append((HEAD_WEIGHTS, RefineHead(config.refine_channels,
                                                     config.image_channels)))
    return {rel: {k: tuple(v.shape) for k, v in module.state_dict().items()}
            for rel, module in modules}


def check_weight_shapes(root: str | Path, config: GeneratorConfig | None = None) -> None:
    """Refuse weights files whose tensors do not fit the shapes ``config`` builds.

    What loading checks: the shapes come from the config itself (built on the meta device),
    not from what the manifest recorded (``tasks.generate.saved.check_recorded_shapes``).
    """
    root = Path(root)
    config = config or read_config(root)
    check_shapes(root, expected_shapes(config), config.name)


# --------------------------------------------------------------------------- full resolution


class RefineHead(nn.Module):
    """A small full-resolution conv head after pixel_shuffle, residual, starting at zero.

    With space-to-depth each output pixel comes from one of s*s channels at a coarse
    position; nothing makes neighbouring sub-pixels agree, and an adversarial loss then
    grows a periodic grid (METHOD.md). Three 3x3 convs at full resolution see every pixel
    with its neighbours and with the UNet's full-resolution inputs.
    """

    def __init__(self, channels: int, context_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(1 + context_channels, channels, 3, padding=1)
        self.conv_mid = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_out = nn.Conv2d(channels, 1, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, pred: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv_in(torch.cat([pred, context.to(pred.dtype)], dim=1)))
        h = F.silu(self.conv_mid(h))
        return pred + self.conv_out(h)


@torch.no_grad()
def icnr_(conv: nn.Conv2d, factor: int) -> None:
    """ICNR initialisation (Aitken et al. 2017): the s*s sub-pixel channels start equal.

    pixel_shuffle of equal channels is a nearest-neighbour upsampling, so a fresh generator
    draws no checkerboard that training then has to unlearn.
    """
    groups = factor * factor
    if conv.out_channels % groups:
        return
    per = conv.out_channels // groups
    weight = conv.weight.view(per, groups, *conv.weight.shape[1:])
    weight.copy_(weight[:, :1].expand_as(weight))
    if conv.bias is not None:
        bias = conv.bias.view(per, groups)
        bias.copy_(bias[:, :1].expand_as(bias))


# --------------------------------------------------------------------------- generator


class SketchGenerator(nn.Module):
    """UNet + condition projector + formulation, with safe save/load and sampling.

    The formulation (config.formulation.kind) owns how noise is added and removed; this class
    owns the nets and the conditions, and never branches on the formulation's name.
    """

    def __init__(
        self,
        config: GeneratorConfig,
        encoder_versions: Mapping[str, str] | None = None,
        unet: UNet2DConditionModel | None = None,
    ):
        super().__init__()
        self.config = config
        fresh = unet is None
        self.unet = unet if unet is not None else UNet2DConditionModel(**config.unet_kwargs())
        if fresh and config.space_to_depth > 1:
            icnr_(self.unet.conv_out, config.space_to_depth)
        c = config.conditions
        self.projector = ConditionProjector(
            c.dims, c.tokens, c.hidden_dim, config.unet.cross_attention_dim, c.drop, c.drop_all
        )
        self.head = (RefineHead(config.refine_channels, config.image_channels)
                     if config.refine_channels else None)
        self.encoder_versions: dict[str, str] = dict(encoder_versions or {})
        self.formulation = build_formulation(config)

    @classmethod
    def build(
        cls,
        config: GeneratorConfig | str | Path,
        condition_dims: Mapping[str, int] | None = None,
        encoder_versions: Mapping[str, str] | None = None,
        seed: int = 0,
    ) -> SketchGenerator:
        """A freshly initialised generator; the seed makes the initial weights reproducible."""
        if not isinstance(config, GeneratorConfig):
            config = load_config(config)
        if condition_dims:
            config = config.with_condition_dims(dict(condition_dims))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(config, encoder_versions)

    # ---- facts

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def condition_dims(self) -> dict[str, int]:
        return dict(self.config.conditions.dims)

    @property
    def scheduler_config(self) -> dict[str, Any]:
        """The sampler's settings, recorded with every sketch (provenance)."""
        return jsonable(self.formulation.provenance())

    @property
    def needs_start(self) -> bool:
        """Whether sampling needs conditions["start"] (see tasks.generate.inputs.start_images)."""
        return self.formulation.needs_start

    @property
    def default_steps(self) -> int:
        return self.formulation.default_steps

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def weight_shapes(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """The tensor shapes of each weights file a save writes."""
        return {rel: {k: tuple(v.shape) for k, v in module.state_dict().items()}
                for rel, module in ((UNET_WEIGHTS, self.unet), (PROJECTOR_WEIGHTS, self.projector),
                                    (HEAD_WEIGHTS, self.head))
                if module is not None}

    def weights_digest(self) -> str:
        return _tensor_digest(self.state_dict())

    @property
    def version(self) -> str:
        """Config name + short hash of the weights: changes whenever the weights do."""
        return f"{self.config.name}-{self.weights_digest()[:12]}"

    # ---- core

    def _predict(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor,
                 spatial: torch.Tensor | None) -> torch.Tensor:
        """The net's raw prediction at full resolution (epsilon or x0: the formulation's)."""
        if self.config.spatial_condition != "none":
            if spatial is None:
                raise ValueError(
                    f"this generator needs a spatial condition ({self.config.spatial_condition})"
                )
            x = torch.cat([x, spatial.to(x.device, x.dtype)], dim=1)
        s = self.config.space_to_depth
        inner = F.pixel_unshuffle(x, s) if s > 1 else x
        labels = tokens.mean(dim=1) if self.config.unet.pooled_to_time else None
        out = self.unet(inner, t, encoder_hidden_states=tokens, class_labels=labels).sample
        if s > 1:
            out = F.pixel_shuffle(out, s)
        if self.head is not None:
            out = self.head(out, x)
        return out

    def _start(self, start: Vector | None, batch_size: int) -> torch.Tensor | None:
        if not self.needs_start:
            return None
        size = self.config.resolution
        if start is None:
            raise ValueError(
                f"this generator ({self.config.formulation.kind}) starts from the mugshot's "
                f"{self.config.formulation.start!r} image: give conditions['start'] "
                "(tasks.generate.inputs.start_images)"
            )
        s = torch.as_tensor(start, dtype=torch.float32)
        if s.shape != (batch_size, 1, size, size):
            raise ValueError(f"start must be ({batch_size}, 1, {size}, {size}), got {s.shape}")
        return s.to(self.device)

    def _spatial(self, spatial: Vector | None, batch_size: int) -> torch.Tensor | None:
        if self.config.spatial_condition == "none" or spatial is None:
            return None
        s = torch.as_tensor(spatial, dtype=torch.float32)
        size = self.config.resolution
        if s.shape != (batch_size, 1, size, size):
            raise ValueError(f"spatial must be ({batch_size}, 1, {size}, {size}), got {s.shape}")
        return s.to(self.device)

    def training_outputs(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator,
                         at: float | None = None) -> TrainingOutputs:
        """(the formulation's regression loss, the clean sketch the prediction implies, each
        item's time as a fraction: 0 the sketch, 1 where sampling begins).

        All randomness (noise, times, condition drops) comes from ``generator`` so the
        training loop can make a step a pure function of its step index, which is what makes
        a resumed run identical to an uninterrupted one. The second value feeds losses on
        the picture itself (identity, adversarial: tasks.generate.objectives). ``at`` fixes
        the formulation's time (1: the sampler's first step), see ``Formulation.noise``.
        """
        device = self.device
        sketch = torch.as_tensor(batch["sketch"], dtype=torch.float32)
        size = self.config.resolution
        if sketch.ndim != 4 or sketch.shape[1:] != (1, size, size):
            raise ValueError(f"sketch must be (B, 1, {size}, {size}), got {tuple(sketch.shape)}")
        b = sketch.shape[0]
        start = self._start(batch.get("start"), b)
        noised = self.formulation.noise(sketch.to(device), start, generator, at)
        drop = self.projector.sample_drop(b, generator)
        vectors = {r: torch.as_tensor(batch[r]) for r in ROLES}
        tokens = self.projector(vectors, drop=drop)
        pred = self._predict(noised.x_t, noised.timestep, tokens,
                             self._spatial(batch.get("spatial"), b))
        return TrainingOutputs(self.formulation.loss(pred, noised),
                               self.formulation.x0_hat(pred.float(), noised),
                               self.formulation.time_fraction(noised))

    def training_step(self, batch: Mapping[str, torch.Tensor],
                      generator: torch.Generator) -> torch.Tensor:
        """The formulation's regression loss for one batch (see ``training_outputs``)."""
        return self.training_outputs(batch, generator)[0]

    @torch.no_grad()
    def sample(
        self,
        conditions: Mapping[str, Vector | None],
        seeds: Sequence[int],
        steps: int = 50,
        guidance: float = 2.0,
        eta: float | Sequence[float] | None = None,
        device: str | torch.device | None = None,
    ) -> np.ndarray:
        """The formulation's sampler with classifier-free guidance; uint8 (B, H, W) sketches.

        Each item draws its noise from its own CPU generator seeded with its own seed, so an
        item's pixels do not depend on its neighbours or on the batch size (up to float
        rounding in batched convolutions). A role missing from ``conditions`` (or None) is
        left out through its null tokens. A bridge also needs ``conditions["start"]``. With
        ``guidance == 1`` the unconditional pass is skipped. ``eta`` may be one per item
        (each style its own noise): the items of each value are sampled together, in batch
        order. Raises NonFiniteSampleError (carrying the batch and a mask) on NaN/inf. A
        ``device`` other than the model's moves the model there (and it stays there).
        """
        if device is not None and torch.device(device) != self.device:
            self.to(device)
        if eta is not None and not isinstance(eta, int | float):
            return self._sample_per_eta(conditions, seeds, steps, guidance, list(eta))
        dev = self.device
        b = len(seeds)
        if b == 0:
            size = self.config.resolution
            return np.zeros((0, size, size), dtype=np.uint8)
        vectors = {
            r: None if conditions.get(r) is None
            else torch.as_tensor(conditions[r], dtype=torch.float32).to(dev)
            for r in ROLES
        }
        spatial = self._spatial(conditions.get("spatial"), b)
        start = self._start(conditions.get("start"), b)
        tokens = self.projector(vectors, batch_size=b)
        cfg = float(guidance) != 1.0
        if cfg:
            tokens = torch.cat([tokens, self.projector.unconditional(b)])
            spatial = None if spatial is None else torch.cat([spatial, spatial])
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        shape = (1, 1, self.config.resolution, self.config.resolution)

        def per_item_noise() -> torch.Tensor:
            return torch.cat([torch.randn(shape, generator=g) for g in gens]).to(dev)

        autocast = (torch.autocast("cuda", dtype=torch.float16) if dev.type == "cuda"
                    else contextlib.nullcontext())

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            t = t.to(dev)
            with autocast:
                if not cfg:
                    return self._predict(x, t, tokens, spatial).float()
                pred = self._predict(torch.cat([x, x]), torch.cat([t, t]), tokens,
                                     spatial).float()
            cond, uncond = pred.chunk(2)
            return uncond + guidance * (cond - uncond)

        eta = self.formulation.default_eta if eta is None else eta
        was_training = self.training
        self.eval()
        try:
            x = self.formulation.sample(denoise, start, per_item_noise, steps, eta)
        finally:
            self.train(was_training)
        finite = torch.isfinite(x).flatten(1).all(dim=1).cpu().numpy()
        x = torch.nan_to_num(x, nan=-1.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0)
        images = ((x[:, 0] + 1.0) * 127.5).round().to(torch.uint8).cpu().numpy()
        if not finite.all():
            images[~finite] = 0
            raise NonFiniteSampleError(images, finite)
        return images

    def _sample_per_eta(self, conditions: Mapping[str, Vector | None], seeds: Sequence[int],
                        steps: int, guidance: float, etas: list[float]) -> np.ndarray:
        if len(etas) != len(seeds):
            raise ValueError(f"{len(etas)} eta values for {len(seeds)} seeds: give one per item")
        groups: dict[float, list[int]] = {}
        for i, value in enumerate(etas):
            groups.setdefault(float(value), []).append(i)
        if len(groups) == 1:
            return self.sample(conditions, seeds, steps, guidance, etas[0] if etas else None)
        size = self.config.resolution
        images = np.zeros((len(seeds), size, size), dtype=np.uint8)
        finite = np.ones(len(seeds), dtype=bool)
        for value, index in groups.items():
            part = {role: None if vector is None else vector[index]
                    for role, vector in conditions.items()}
            try:
                images[index] = self.sample(part, [seeds[i] for i in index], steps, guidance,
                                            value)
            except NonFiniteSampleError as error:
                images[index], finite[index] = error.images, error.finite
        if not finite.all():
            raise NonFiniteSampleError(images, finite)
        return images

    # ---- persistence

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the generator atomically: a temp dir renamed into place, manifest last."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            self._write(tmp)
            if target.exists():
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def _write(self, root: Path) -> None:
        self.unet.save_pretrained(root / UNET_DIR, safe_serialization=True)
        weights = [UNET_WEIGHTS, PROJECTOR_WEIGHTS]
        for rel, module in ((PROJECTOR_WEIGHTS, self.projector), (HEAD_WEIGHTS, self.head)):
            if module is not None:
                save_file({k: v.detach().cpu().contiguous()
                           for k, v in module.state_dict().items()}, str(root / rel))
        if self.head is not None:
            weights.append(HEAD_WEIGHTS)
        self.formulation.scheduler().save_pretrained(root / SCHEDULER_DIR)
        self.config.save(root / CONFIG_FILE)
        manifest = {
            "format": FORMAT_VERSION,
            "version": self.version,
            "config_name": self.config.name,
            "encoder_versions": self.encoder_versions,
            "condition_dims": self.condition_dims,
            "resolution": self.config.resolution,
            "spatial_condition": self.config.spatial_condition,
            "formulation": self.config.formulation.kind,
            "default_steps": self.config.formulation.default_steps,
            "default_guidance": self.config.formulation.default_guidance,
            "default_eta": self.formulation.default_eta,
            "style_eta": self.formulation.style_eta,
            "start": self.config.formulation.start if self.needs_start else None,
            "scheduler": self.scheduler_config,
            "files": {rel: sha256_file(root / rel) for rel in weights},
            SHAPES_KEY: shapes_record(self.weight_shapes()),
            "libraries": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        }
        write_manifest(root, manifest)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        expected_encoders: Mapping[str, tuple[int, str | None]] | None = None,
        device: str | torch.device | None = None,
    ) -> SketchGenerator:
        """Load a saved generator; checks encoders, then file hashes, before reading weights."""
        root = Path(directory)
        manifest = read_manifest(root)
        if expected_encoders:
            check_encoders(manifest, expected_encoders)
        verify_files(root, manifest["files"])
        config = read_config(root)
        check_weight_shapes(root, config)
        try:
            unet = UNet2DConditionModel.from_pretrained(root / UNET_DIR, use_safetensors=True)
        except (OSError, ValueError, SafetensorError) as err:
            raise GeneratorLoadError(f"cannot load the UNet from {root / UNET_DIR}: {err}") from err
        _check_unet_config(unet, config, root)
        generator = cls(config, manifest.get("encoder_versions"), unet=unet)
        generator._load_projector(root)
        generator._load_head(root)
        generator.eval()
        return generator.to(device) if device is not None else generator

    def load_weights(self, directory: str | Path) -> None:
        """Load the weights of a saved generator with the same config into this instance.

        Used on resume, where the optimizer already points at this instance's parameters.
        """
        root = Path(directory)
        manifest = read_manifest(root)
        verify_files(root, manifest["files"])
        saved = read_config(root)
        if saved != self.config:
            raise GeneratorLoadError(
                f"the generator at {root} was saved with config {saved.name!r} that differs from "
                f"this generator's config {self.config.name!r}"
            )
        try:
            state = load_file(str(root / UNET_WEIGHTS), device=str(self.device))
        except SafetensorError as err:
            raise GeneratorLoadError(f"cannot read {root / UNET_WEIGHTS}: {err}") from err
        self.unet.load_state_dict(state, strict=True)
        self._load_projector(root)
        self._load_head(root)
        self.encoder_versions = dict(manifest.get("encoder_versions", {}))

    def _load_projector(self, root: Path) -> None:
        try:
            state = load_file(str(root / PROJECTOR_WEIGHTS), device=str(self.device))
            self.projector.load_state_dict(state, strict=True)
        except (SafetensorError, RuntimeError) as err:
            raise GeneratorLoadError(f"cannot load {root / PROJECTOR_WEIGHTS}: {err}") from err

    def _load_head(self, root: Path) -> None:
        if self.head is None:
            return
        try:
            state = load_file(str(root / HEAD_WEIGHTS), device=str(self.device))
            self.head.load_state_dict(state, strict=True)
        except (SafetensorError, RuntimeError, FileNotFoundError) as err:
            raise GeneratorLoadError(f"cannot load {root / HEAD_WEIGHTS}: {err}") from err


def _check_unet_config(unet: UNet2DConditionModel, config: GeneratorConfig, root: Path) -> None:
    """The UNet's own config.json must describe the net that generator_config.json implies."""
    wanted = jsonable(config.unet_kwargs())
    found = jsonable({k: unet.config.get(k) for k in wanted})
    diff = sorted(k for k in wanted if wanted[k] != found[k])
    if diff:
        raise GeneratorLoadError(
            f"{root / UNET_DIR}/config.json disagrees with {CONFIG_FILE} on {', '.join(diff)}"
        )
