"""Losses on the predicted clean sketch, beside the formulation's regression loss.

A regression loss (L1 on x0, MSE on epsilon) alone makes a bridge drift to the average
sketch: identity fades and strokes blur (METHOD.md). Two remedies, each weighted and switched
on from a step by ``config.training.losses``:

- identity: 1 - cos(SFace(x0_hat), SFace(mugshot)) through a differentiable port of SFace.
  Judge the result with another recognizer too (dlib), or the generator learns to fool its
  judge.
- adversarial: a hinge PatchGAN (pix2pix) critic on (start image, sketch) pairs with
  spectral norm. It has its own optimizer; its state is checkpointed with the run so that a
  resumed run continues the same game.

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
SFACE_SIZE = 112


class PatchCritic(nn.Module):
    """4-layer PatchGAN over (condition, sketch): one real/fake score per ~22 px patch."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        c = channels
        self.net = nn.Sequential(
            sn(nn.Conv2d(in_channels, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(4 * c, 1, 3, padding=1)),
        )

    def forward(self, condition: torch.Tensor | None, sketch: torch.Tensor) -> torch.Tensor:
        x = sketch if condition is None else torch.cat([condition.to(sketch), sketch], dim=1)
        return self.net(x)


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
                 condition_channels: int = 1):
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
                self.critic = PatchCritic(condition_channels + 1,
                                          spec.discriminator_channels).to(self.device)
            self.critic_optimizer = torch.optim.Adam(self.critic.parameters(),
                                                     lr=spec.discriminator_lr, betas=(0.5, 0.999))
        self._fake: torch.Tensor | None = None

    @property
    def needs_identity_targets(self) -> bool:
        return self.identity_model is not None

    def _active(self, weight: float, from_step: int, step: int) -> bool:
        return weight > 0 and step >= from_step

    @staticmethod
    def _condition(batch: Mapping[str, Any], device: torch.device) -> torch.Tensor | None:
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
            picture = x0_hat[:k].float()
            if picture.shape[-1] != SFACE_SIZE:  # small test configs; SFace reads 112 px
                picture = F.interpolate(picture, size=(SFACE_SIZE, SFACE_SIZE),
                                        mode="bilinear", align_corners=False)
            vectors = sface_embed(self.identity_model, picture)
            identity = (1.0 - (vectors * F.normalize(target, dim=1)).sum(dim=1)).mean()
            terms["identity"] = float(identity.detach())
            total = total + spec.identity * identity
        self._fake = None
        if self.critic is not None and self._active(spec.adversarial,
                                                    spec.adversarial_from_step, step):
            condition = self._condition(batch, self.device)
            adversarial = -self.critic(condition, x0_hat.float()).mean()
            terms["adversarial"] = float(adversarial.detach())
            total = total + spec.adversarial * adversarial
            self._fake = x0_hat.detach()
        return total, terms

    def critic_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One hinge update of the critic on this step's real sketches and fakes."""
        if self.critic is None or self._fake is None:
            return {}
        assert self.critic_optimizer is not None
        condition = self._condition(batch, self.device)
        real = torch.as_tensor(batch["sketch"], dtype=torch.float32).to(self.device)
        loss = (F.relu(1.0 - self.critic(condition, real)).mean()
                + F.relu(1.0 + self.critic(condition, self._fake)).mean())
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        self._fake = None
        return {"critic": float(loss.detach())}

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
        self.critic.load_state_dict(dict(tensors), strict=True)
        if optimizer is not None and self.critic_optimizer is not None:
            self.critic_optimizer.load_state_dict(dict(optimizer))


def build_objective(generator: Any, seed: int = 0) -> Objective:
    config = generator.config
    channels = 1 if (generator.needs_start or config.spatial_condition != "none") else 0
    return Objective(config.training.losses, generator.device, seed, channels)
