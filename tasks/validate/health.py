"""Image health of a generated sketch: blank, saturated, low-contrast or colour.

A diffusion sampler that diverges produces flat grey, pure black/white or noise; a wrong
input path can produce a colour image. These checks are cheap and need no model, so they
run on every sketch before the identity and style metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Health:
    pixel_std: float
    saturated_share: float
    colour_deviation: float
    blank: bool
    saturated: bool
    colour: bool

    @property
    def healthy(self) -> bool:
        return not (self.blank or self.saturated or self.colour)

    def reasons(self) -> list[str]:
        return [name for name in ("blank", "saturated", "colour") if getattr(self, name)]

    def as_dict(self) -> dict:
        return {**asdict(self), "healthy": self.healthy}


def image_health(image: np.ndarray, *, min_pixel_std: float, max_saturated_share: float,
                 max_colour_deviation: float) -> Health:
    """``image``: uint8 grey (H, W) or BGR (H, W, 3)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 3:
        pixels = image.astype(np.float32)
        grey = pixels.mean(axis=2)
        colour_deviation = float(np.abs(pixels - grey[..., None]).mean())
    else:
        grey = image.astype(np.float32)
        colour_deviation = 0.0
    pixel_std = float(grey.std())
    saturated_share = float(((grey <= 0) | (grey >= 255)).mean())
    return Health(
        pixel_std=pixel_std,
        saturated_share=saturated_share,
        colour_deviation=colour_deviation,
        blank=pixel_std < min_pixel_std,
        saturated=saturated_share > max_saturated_share,
        colour=colour_deviation > max_colour_deviation,
    )
