"""Noise-start DDPM with epsilon-prediction and DDIM sampling: the paper's formulation.

Faithful to CLIP4Sketch (the conditions alone carry identity), and the right choice with a
GPU and tens of thousands of steps; on a CPU it cannot train long enough (METHOD.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from tasks.generate.formulations.base import Denoiser, Formulation, Noised, NoiseSource


class DDPM(Formulation):
    name = "ddpm"
    needs_start = False

    def __init__(self, config: Any):
        super().__init__(config)
        self._train = DDPMScheduler(**config.scheduler.diffusers_config())

    def noise(self, x0: torch.Tensor, start: torch.Tensor | None,
              generator: torch.Generator, at: float | None = None) -> Noised:
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        steps = self.config.scheduler.num_train_timesteps
        t = torch.randint(0, steps, (x0.shape[0],), generator=generator)
        if at is not None:
            t = torch.full((x0.shape[0],), round(float(at) * (steps - 1)), dtype=torch.long)
        t = t.to(x0.device)
        x_t = self._train.add_noise(x0, noise, t)
        return Noised(x_t=x_t, timestep=t, target=noise, x0=x0, noise=noise, t=t)

    def time_fraction(self, noised: Noised) -> torch.Tensor:
        return noised.t.float() / max(self.config.scheduler.num_train_timesteps - 1, 1)

    def loss(self, pred: torch.Tensor, noised: Noised) -> torch.Tensor:
        return F.mse_loss(pred.float(), noised.target)

    def x0_hat(self, pred: torch.Tensor, noised: Noised) -> torch.Tensor:
        alpha = self._train.alphas_cumprod.to(pred.device)[noised.t].view(-1, 1, 1, 1)
        return ((noised.x_t - (1 - alpha).sqrt() * pred) / alpha.sqrt()).clamp(-1.0, 1.0)

    def scheduler(self) -> DDIMScheduler:
        return DDIMScheduler(**self.config.scheduler.diffusers_config())

    def sample(self, denoise: Denoiser, start: torch.Tensor | None, noise: NoiseSource,
               steps: int, eta: float) -> torch.Tensor:
        scheduler = self.scheduler()
        x = noise()
        scheduler.set_timesteps(steps, device=x.device)
        for t in scheduler.timesteps:
            eps = denoise(x, t.expand(x.shape[0]))
            variance = noise() if eta > 0 else None
            x = scheduler.step(eps, t, x, eta=eta, variance_noise=variance).prev_sample
        return x
