"""Losses on the predicted clean sketch, beside the formulation's regression loss.

A regression loss (L1 on x0, MSE on epsilon) alone makes a bridge drift to the average
sketch: identity fades and strokes blur (METHOD.md). Two remedies, each weighted and switched
on from a step by ``config.training.losses``:

- identity: 1 - cos(SFace(x0_hat), SFace(mugshot)) through a differentiable port of SFace.
  Judge the result with another recognizer too (dlib), or the generator learns to fool its
  judge.
  With ``identity_downsample`` / ``identity_jitter`` SFace reads a blurred, shifted copy, so
  the gradient cannot pay in pixel-level textures that fool recognizers but are no drawing.
- adversarial: a hinge PatchGAN (pix2pix) critic on (start image, sketch) pairs with
  spectral norm. It has its own optimizer; its state is checkpointed with the run so that a
  resumed run continues the same game. With ``critic_style`` it is a projection critic on
  the style's text vector (Miyato & Koyama 2018) that also learns a real sketch under another
  style's text as fake (matching-aware, Reed et al. 2016): each style must look like itself.
  Real sketches of one style come with one dataset's photos, so such a critic should not see
  the start image (``critic_sees_start``), and ``style_swap_items`` also draws a few mugshots
  in another style (from the start image, as the sampler's first step does) for the critic
  alone to judge: the way one mugshot is made to come out differently per style.

``Objective`` is what the training loop calls; with both weights at zero it is exactly the
formulation's loss, so older configs train as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tasks.generate.config import LossSpec

_CRITIC_SEED_SALT = 0xC217
_OLD_OUT = "net.6."
SFACE_SIZE = 112


class PatchCritic(nn.Module):
    """4-layer PatchGAN over (condition, sketch): one real/fake score per ~22 px patch.

    With ``style_dim`` each patch's score adds <features, W style>: a projection critic,
    the way a conditional GAN tells classes apart without a classifier head.
    """

    def __init__(self, in_channels: int, channels: int, style_dim: int | None = None):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        c = channels
        self.net = nn.Sequential(
            sn(nn.Conv2d(in_channels, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
        )
        self.out = sn(nn.Conv2d(4 * c, 1, 3, padding=1))
        self.style = None if style_dim is None else sn(nn.Linear(style_dim, 4 * c, bias=False))

    def forward(self, condition: torch.Tensor | None, sketch: torch.Tensor,
                style: torch.Tensor | None = None) -> torch.Tensor:
        x = sketch if condition is None else torch.cat([condition.to(sketch), sketch], dim=1)
        features = self.net(x)
        score = self.out(features)
        if self.style is not None:
            if style is None:
                raise ValueError("this critic judges (sketch, style): give the style vectors")
            projection = self.style(style.to(features))[:, :, None, None]
            score = score + (features * projection).sum(dim=1, keepdim=True)
        return score


def jitter_and_blur(picture: torch.Tensor, downsample: int, jitter: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """What the identity loss's recognizer sees: the picture shrunk and back, then shifted."""
    if downsample > 1:
        size = picture.shape[-2:]
        picture = F.avg_pool2d(picture, downsample)
        picture = F.interpolate(picture, size=size, mode="bilinear", align_corners=False)
    if jitter > 0:
        b, _, h, _ = picture.shape
        shifts = torch.randint(-jitter, jitter + 1, (b, 2), generator=generator)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = shifts.float() * 2.0 / h
        grid = F.affine_grid(theta.to(picture), list(picture.shape), align_corners=False)
        picture = F.grid_sample(picture, grid, padding_mode="border", align_corners=False)
    return picture


def identity_targets(crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """SFace vectors (torch port) of aligned BGR mugshot crops: the identity loss's targets."""
    from tasks.encoders.sface_torch import load_sface_torch, sface_embed

    model = load_sface_torch()
    out = []
    with torch.no_grad():
        for i in range(0, len(crops), batch_size):
            part = torch.as_tensor(np.asarray(crops[i:i + batch_size]), dtype=torch.float32)
            images = part.permute(0, 3, 1, 2) / 127.5 - 1.0
            out.append(sface_embed(model, images).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 128), np.float32)


class Objective:
    """The generator's total loss for a step, and the critic's update after it."""

    def __init__(self, spec: LossSpec, device: torch.device | str, seed: int = 0,
                 condition_channels: int = 1, style_dim: int | None = None):
        self.spec = spec
        self.device = torch.device(device)
        self.identity_model: nn.Module | None = None
        if spec.identity > 0:
            from tasks.encoders.sface_torch import load_sface_torch

            self.identity_model = load_sface_torch().to(self.device)
        self.critic: PatchCritic | None = None
        self.critic_optimizer: torch.optim.Optimizer | None = None
        if spec.adversarial > 0:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed) ^ _CRITIC_SEED_SALT)
                if spec.critic_style and style_dim is None:
                    raise ValueError("losses.critic_style needs the style text's dimension")
                seen = condition_channels if spec.critic_sees_start else 0
                self.critic = PatchCritic(seen + 1, spec.discriminator_channels,
                                          style_dim if spec.critic_style else None
                                          ).to(self.device)
            self.critic_optimizer = torch.optim.Adam(self.critic.parameters(),
                                                     lr=spec.discriminator_lr, betas=(0.5, 0.999))
        self._fake: torch.Tensor | None = None
        self._swapped: tuple[dict[str, Any], torch.Tensor] | None = None

    @property
    def needs_identity_targets(self) -> bool:
        return self.identity_model is not None

    def _active(self, weight: float, from_step: int, step: int) -> bool:
        return weight > 0 and step >= from_step

    def _condition(self, batch: Mapping[str, Any], device: torch.device) -> torch.Tensor | None:
        if not self.spec.critic_sees_start:
            return None
        for key in ("start", "spatial"):
            if batch.get(key) is not None:
                return torch.as_tensor(batch[key], dtype=torch.float32).to(device)
        return None

    def generator_loss(self, generator: Any, batch: Mapping[str, Any], rng: torch.Generator,
                       step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its named terms (floats, for the log)."""
        loss, x0_hat = generator.training_outputs(batch, rng)
        terms = {"regression": float(loss.detach())}
        total = loss
        spec = self.spec
        if self.identity_model is not None and self._active(spec.identity,
                                                            spec.identity_from_step, step):
            from tasks.encoders.sface_torch import sface_embed

            if batch.get("id_target") is None:
                raise ValueError("the identity loss needs batch['id_target'] (SFace vectors of "
                                 "the mugshots): assemble the training set with them")
            k = spec.identity_items or x0_hat.shape[0]
            target = torch.as_tensor(batch["id_target"][:k], dtype=torch.float32).to(self.device)
            picture = jitter_and_blur(x0_hat[:k].float(), spec.identity_downsample,
                                      spec.identity_jitter, rng)
            if picture.shape[-1] != SFACE_SIZE:  # small test configs; SFace reads 112 px
                picture = F.interpolate(picture, size=(SFACE_SIZE, SFACE_SIZE),
                                        mode="bilinear", align_corners=False)
            vectors = sface_embed(self.identity_model, picture)
            identity = (1.0 - (vectors * F.normalize(target, dim=1)).sum(dim=1)).mean()
            terms["identity"] = float(identity.detach())
            total = total + spec.identity * identity
        self._fake = self._swapped = None
        if self.critic is not None and self._active(spec.adversarial,
                                                    spec.adversarial_from_step, step):
            condition = self._condition(batch, self.device)
            adversarial = -self.critic(condition, x0_hat.float(), self._style(batch)).mean()
            terms["adversarial"] = float(adversarial.detach())
            self._fake = x0_hat.detach()
            swapped = self._swap_styles(batch)
            if swapped is not None:
                _, drawn = generator.training_outputs(swapped, rng, at=1.0)
                other = -self.critic(self._condition(swapped, self.device), drawn.float(),
                                     self._style(swapped)).mean()
                terms["adversarial_swapped"] = float(other.detach())
                adversarial = 0.5 * (adversarial + other)
                self._swapped = (swapped, drawn.detach())
            total = total + spec.adversarial * adversarial
        return total, terms

    def _swap_styles(self, batch: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first ``style_swap_items`` items under the style of the nearest later item
        whose style differs (None when the batch holds one style)."""
        k = min(self.spec.style_swap_items, len(batch["text"]))
        if k == 0 or self.critic is None or self.critic.style is None:
            return None
        text = torch.as_tensor(batch["text"])
        n = text.shape[0]
        picked, rows = [], []
        for i in range(k):
            for j in range(1, n):
                if not torch.equal(text[(i + j) % n], text[i]):
                    picked.append(i)
                    rows.append((i + j) % n)
                    break
        if not picked:
            return None
        index = torch.as_tensor(picked)
        swapped = {key: (torch.as_tensor(value)[index] if value is not None else None)
                   for key, value in batch.items()}
        swapped["text"] = text[torch.as_tensor(rows)]
        return swapped

    def critic_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One hinge update of the critic on this step's real sketches and fakes."""
        if self.critic is None or self._fake is None:
            return {}
        assert self.critic_optimizer is not None
        condition = self._condition(batch, self.device)
        real = torch.as_tensor(batch["sketch"], dtype=torch.float32).to(self.device)
        style = self._style(batch)
        fake = F.relu(1.0 + self.critic(condition, self._fake, style)).mean()
        if self._swapped is not None:
            swapped, drawn = self._swapped
            fake = 0.5 * (fake + F.relu(1.0 + self.critic(
                self._condition(swapped, self.device), drawn, self._style(swapped))).mean())
        loss = F.relu(1.0 - self.critic(condition, real, style)).mean() + fake
        terms: dict[str, float] = {}
        if style is not None:
            # Real sketches under the next item's style: fake wherever that style differs.
            other = style.roll(1, dims=0)
            differs = (other - style).abs().amax(dim=1) > 0
            if bool(differs.any()):
                scores = self.critic(condition, real, other).mean(dim=(1, 2, 3))
                mismatch = F.relu(1.0 + scores[differs]).mean()
                # Half fakes, half mismatches (GAN-CLS): the critic's two kinds of "no".
                loss = loss - 0.5 * fake + 0.5 * mismatch
                terms["critic_mismatch"] = float(mismatch.detach())
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        self._fake = self._swapped = None
        return {"critic": float(loss.detach()), **terms}

    def _style(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        if self.critic is None or self.critic.style is None:
            return None
        if batch.get("text") is None:
            raise ValueError("a style critic needs batch['text'] (each item's style vector)")
        return torch.as_tensor(batch["text"], dtype=torch.float32).to(self.device)

    # ---- checkpoints: the critic is part of the run's state, not of the generator

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.critic is None:
            return {}
        return {k: v.detach().cpu().contiguous() for k, v in self.critic.state_dict().items()}

    def optimizer_state(self) -> dict[str, Any] | None:
        return None if self.critic_optimizer is None else self.critic_optimizer.state_dict()

    def load(self, tensors: Mapping[str, torch.Tensor],
             optimizer: Mapping[str, Any] | None) -> None:
        if self.critic is None:
            return
        # Checkpoints written before the critic had a style projection kept its last conv
        # as net.6; it is ``out`` now, so a run started then still resumes.
        state = {(f"out.{k[len(_OLD_OUT):]}" if k.startswith(_OLD_OUT) else k): v
                 for k, v in tensors.items()}
        self.critic.load_state_dict(state, strict=True)
        if optimizer is not None and self.critic_optimizer is not None:
            self.critic_optimizer.load_state_dict(dict(optimizer))


def build_objective(generator: Any, seed: int = 0) -> Objective:
    config = generator.config
    channels = 1 if (generator.needs_start or config.spatial_condition != "none") else 0
    return Objective(config.training.losses, generator.device, seed, channels,
                     config.conditions.dims.get("text"))
