"""A linear bridge from a rendering of the mugshot to the sketch (InDI / rectified flow).

x_t = (1 - t) x0 + t y + sigma sqrt(t (1 - t)) eps, with y the start image (the grey photo or
a renderer's drawing of it) and x0 the artist's sketch. The net predicts x0 (x0-prediction
beats epsilon at few steps), trained with L1. Sampling starts at y and takes Euler steps
x_{t-d} = x_t + (d / t)(x0_hat - x_t), which is diffusers' FlowMatchEulerDiscreteScheduler
with velocity (x_t - x0_hat) / t. Identity is present from step 0, which is why this trains
in minutes on a CPU where the noise-start DDPM needs days (METHOD.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler

from tasks.generate.formulations.base import Denoiser, Formulation, Noised, NoiseSource

TIME_SCALE = 1000.0  # the UNet's sinusoidal time embedding is tuned for 0..1000


class Bridge(Formulation):
    name = "bridge"
    needs_start = True
    # Sampling from the bridge's posterior keeps two seeds of one mugshot apart (a dataset
    # needs more than one picture per face) at no cost in steps.
    eta = 1.0

    def noise(self, x0: torch.Tensor, start: torch.Tensor | None,
              generator: torch.Generator, at: float | None = None) -> Noised:
        if start is None:
            raise ValueError(f"the bridge needs its start image ({self.spec.start}) per item")
        b = x0.shape[0]
        t = self.spec.t_min + (1.0 - self.spec.t_min) * torch.rand((b,), generator=generator)
        if at is not None:
            t = torch.full((b,), float(at))
        eps = torch.randn(x0.shape, generator=generator)
        t, eps = t.to(x0.device), eps.to(x0.device)
        tt = t.view(-1, 1, 1, 1)
        x_t = (1 - tt) * x0 + tt * start + self.spec.noise * (tt * (1 - tt)).sqrt() * eps
        return Noised(x_t=x_t, timestep=t * TIME_SCALE, target=x0, x0=x0, noise=eps, t=t)

    def loss(self, pred: torch.Tensor, noised: Noised) -> torch.Tensor:
        return F.l1_loss(pred.float(), noised.target)

    def x0_hat(self, pred: torch.Tensor, noised: Noised) -> torch.Tensor:
        return pred

    def scheduler(self) -> FlowMatchEulerDiscreteScheduler:
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=int(TIME_SCALE), shift=1.0)

    def sample(self, denoise: Denoiser, start: torch.Tensor | None, noise: NoiseSource,
               steps: int, eta: float) -> torch.Tensor:
        if start is None:
            raise ValueError(f"the bridge samples from its start image ({self.spec.start}): "
                             "give conditions['start']")
        scheduler = self.scheduler()
        scheduler.set_timesteps(steps, device=start.device)
        x = start.clone()
        for i, timestep in enumerate(scheduler.timesteps):
            t, s = scheduler.sigmas[i], scheduler.sigmas[i + 1]
            x0_hat = denoise(x, timestep.expand(x.shape[0]).float()).clamp(-1.0, 1.0)
            # The Euler step is the bridge posterior's mean x0_hat + (s / t)(x_t - x0_hat).
            x = scheduler.step((x - x0_hat) / t, timestep, x).prev_sample
            if eta > 0 and s > 0:
                # Its spread: a Brownian bridge pinned at x0_hat (time 0) and x_t (time t).
                x = x + eta * self.spec.noise * (s * (t - s) / t).sqrt() * noise()
        return x
