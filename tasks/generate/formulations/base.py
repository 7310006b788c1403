"""The interface every formulation implements, building one from a config, and the start
images a bridge begins from."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from tasks.generate.config import GeneratorConfig
from tasks.generate.formulations import FORMULATIONS, known_formulations

# (x_t, model timestep) -> the model's (guided) prediction, in the formulation's own terms.
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# () -> per-item noise of the sample's shape, each item from its own seeded generator.
NoiseSource = Callable[[], torch.Tensor]


@dataclass
class Noised:
    """One training batch made noisy: what the net sees and what it should answer."""

    x_t: torch.Tensor
    timestep: torch.Tensor  # what the UNet's time embedding receives, shape (B,)
    target: torch.Tensor
    # Kept for x0_hat: the pieces the prediction is combined with.
    x0: torch.Tensor
    noise: torch.Tensor
    t: torch.Tensor  # the formulation's own time, shape (B,)


class Formulation(ABC):
    name: ClassVar[str]
    # True when sampling starts from an image made from the mugshot (conditions["start"]).
    needs_start: ClassVar[bool] = False
    # Sampling noise when neither the caller nor the config says.
    eta: ClassVar[float] = 0.0

    def __init__(self, config: GeneratorConfig):
        self.config = config
        self.spec = config.formulation

    @property
    def default_steps(self) -> int:
        return self.spec.default_steps

    @property
    def default_eta(self) -> float:
        return self.eta if self.spec.default_eta is None else self.spec.default_eta

    @property
    def style_eta(self) -> dict[str, float]:
        return dict(self.spec.style_eta)

    @abstractmethod
    def noise(self, x0: torch.Tensor, start: torch.Tensor | None,
              generator: torch.Generator, at: float | None = None) -> Noised:
        """x_t and the target for a clean batch; all randomness from ``generator`` (CPU).

        ``at`` (0..1, 1 = where sampling begins) fixes the time for every item instead of
        drawing it: losses that judge what the sampler's first step draws use ``at=1``.
        """

    def time_fraction(self, noised: Noised) -> torch.Tensor:
        """Each item's time as a fraction, 0 at the clean sketch and 1 where sampling
        begins: the scale ``at`` and ``losses.identity_max_t`` use."""
        return noised.t.float()

    @abstractmethod
    def loss(self, pred: torch.Tensor, noised: Noised) -> torch.Tensor:
        """The scalar regression loss of one batch."""

    @abstractmethod
    def x0_hat(self, pred: torch.Tensor, noised: Noised) -> torch.Tensor:
        """The clean sketch the prediction implies (for losses on the picture itself)."""

    @abstractmethod
    def sample(self, denoise: Denoiser, start: torch.Tensor | None, noise: NoiseSource,
               steps: int, eta: float) -> torch.Tensor:
        """Run the sampler from noise (or from ``start``) to a clean batch in [-1, 1]."""

    @abstractmethod
    def scheduler(self) -> Any:
        """The diffusers scheduler that samples, saved beside the model as its own config."""

    def provenance(self) -> dict[str, Any]:
        """What a sketch row records so it can be regenerated bit-for-bit."""
        return {"formulation": self.spec.model_dump(mode="json"),
                "scheduler": dict(self.scheduler().config)}


def build_formulation(config: GeneratorConfig) -> Formulation:
    """The formulation a config names (the modules are named in ``FORMULATIONS``)."""
    kind = config.formulation.kind
    try:
        module_name, cls_name = FORMULATIONS[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown formulation {kind!r}; known: "
                         f"{', '.join(known_formulations())}") from None
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(config)
