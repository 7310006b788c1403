"""Image health of a generated sketch: blank, saturated, low-contrast, noise or colour.

A diffusion sampler that diverges produces flat grey, pure black/white, a faint wash or noise;
a wrong input path can produce a colour image. These checks are cheap and need no model, so
they run on every sketch before the identity and style metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

REASONS = ("blank", "saturated", "low_contrast", "noise", "colour")


@dataclass(frozen=True)
class Measures:
    """Threshold-free pixel statistics: stored once per sketch, judged on every run."""

    pixel_std: float
    saturated_share: float
    colour_deviation: float
    contrast: float  # 99th - 1st percentile of the grey values
    neighbour_correlation: float  # Pearson r of horizontally adjacent grey pixels

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Health:
    pixel_std: float
    saturated_share: float
    colour_deviation: float
    blank: bool
    saturated: bool
    colour: bool
    contrast: float = 255.0
    neighbour_correlation: float = 1.0
    low_contrast: bool = False
    noise: bool = False

    @property
    def healthy(self) -> bool:
        return not self.reasons()

    def reasons(self) -> list[str]:
        return [name for name in REASONS if getattr(self, name)]

    def as_dict(self) -> dict:
        return {**asdict(self), "healthy": self.healthy}


def measure(image: np.ndarray) -> Measures:
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
    low, high = np.percentile(grey, (1.0, 99.0))
    return Measures(
        pixel_std=float(grey.std()),
        saturated_share=float(((grey <= 0) | (grey >= 255)).mean()),
        colour_deviation=colour_deviation,
        contrast=float(high - low),
        neighbour_correlation=_neighbour_correlation(grey),
    )


def _neighbour_correlation(grey: np.ndarray) -> float:
    # Drawn strokes are a few pixels wide, so adjacent pixels agree (r > 0.7 for the renderers
    # at 64 px); sampler noise is independent per pixel (r ~ 0). A flat image has no
    # variance to correlate and counts as perfectly smooth (it is caught as blank instead).
    if grey.shape[1] < 2:
        return 1.0
    left, right = grey[:, :-1].ravel(), grey[:, 1:].ravel()
    left, right = left - left.mean(), right - right.mean()
    scale = float(np.sqrt((left * left).sum() * (right * right).sum()))
    return 1.0 if scale < 1e-6 else float((left * right).sum() / scale)


def judge(measures: Measures, *, min_pixel_std: float, max_saturated_share: float,
          max_colour_deviation: float, min_contrast: float = 0.0,
          min_neighbour_correlation: float = -1.0) -> Health:
    """Apply thresholds; a blank image is not also called low-contrast or noisy."""
    blank = measures.pixel_std < min_pixel_std
    return Health(
        pixel_std=measures.pixel_std,
        saturated_share=measures.saturated_share,
        colour_deviation=measures.colour_deviation,
        contrast=measures.contrast,
        neighbour_correlation=measures.neighbour_correlation,
        blank=blank,
        saturated=measures.saturated_share > max_saturated_share,
        colour=measures.colour_deviation > max_colour_deviation,
        low_contrast=not blank and measures.contrast < min_contrast,
        noise=not blank and measures.neighbour_correlation < min_neighbour_correlation,
    )


def image_health(image: np.ndarray, *, min_pixel_std: float, max_saturated_share: float,
                 max_colour_deviation: float, min_contrast: float = 0.0,
                 min_neighbour_correlation: float = -1.0) -> Health:
    """``image``: uint8 grey (H, W) or BGR (H, W, 3)."""
    return judge(measure(image), min_pixel_std=min_pixel_std,
                 max_saturated_share=max_saturated_share,
                 max_colour_deviation=max_colour_deviation, min_contrast=min_contrast,
                 min_neighbour_correlation=min_neighbour_correlation)
