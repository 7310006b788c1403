"""Deterministic sketch renderers over aligned face photos.

Real forensic sketches are scarce, so two styles are made by plain image processing: they give
the generator's style-text condition distinct, consistent targets to learn from, at no labelling
cost, and they regenerate bit-for-bit from the photo (no randomness, no model weights). Inputs
are uint8 faces as ingestion stores them (112x112x3 BGR), or any H x W x 3 / H x W array;
outputs are uint8 greyscale of the same H x W: white paper, dark strokes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

Renderer = Callable[..., np.ndarray]


def _grey01(image: np.ndarray) -> np.ndarray:
    """Luma in [0, 1] as float32; a grey input and its BGR copy must render identically."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        b, g, r = arr[:, :, 0], arr[:, :, 1], arr[:, :, 2]
        if np.array_equal(b, g) and np.array_equal(g, r):
            arr = arr[:, :, 0]  # exact: skips the rounding of a colour-to-grey conversion
        else:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
    if arr.ndim != 2:
        raise ValueError(f"expected H x W or H x W x 3, got shape {arr.shape}")
    return arr.astype(np.float32) / 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    # An explicit odd kernel of about 3 sigma each side: OpenCV's own choice for float images
    # is wider, which costs time at large sigma for no visible change.
    k = 2 * max(1, int(np.ceil(3.0 * sigma))) + 1
    return cv2.GaussianBlur(x, (k, k), sigma, borderType=cv2.BORDER_REPLICATE)


def pencil_dodge(image: np.ndarray, blur_sigma: float = 6.0) -> np.ndarray:
    """Colour-dodge pencil rendering: grey / (1 - blur(invert(grey))).

    Dodging leaves flat areas white and keeps only local darkness, which is why it reads as
    graphite on paper. Its strokes are faint on soft, low-contrast faces, so the darkest tones
    are stretched toward a fixed floor, with a capped gain so a blank image does not turn its
    noise into strokes.
    """
    if blur_sigma <= 0:
        raise ValueError("blur_sigma must be positive")
    grey = _grey01(image)
    blurred = _blur(1.0 - grey, blur_sigma)
    dodge = np.minimum(grey / np.maximum(1.0 - blurred, 1e-3), 1.0)
    ink = 1.0 - dodge
    deep = float(np.percentile(ink, 99.5))
    if deep > 0:
        ink = np.minimum(ink * min(0.8 / deep, 4.0), 1.0)
    return _to_uint8(1.0 - ink)


def xdog_lines(
    image: np.ndarray,
    sigma: float = 0.8,
    k: float = 1.6,
    p: float = 20.0,
    epsilon: float = 0.75,
    phi: float = 6.0,
    flatten_sigma: float = 6.0,
) -> np.ndarray:
    """eXtended Difference-of-Gaussians lines (Winnemoeller, Kyprianidis & Olsen 2012).

    S = (1 + p) G_sigma - p G_(k sigma) sharpens edges into overshooting bands; the soft
    threshold T(S) = 1 if S >= epsilon else 1 + tanh(phi (S - epsilon)) turns the dark bands
    into anti-aliased lines. Plain XDoG also thresholds tone, so dark skin or dark hair would
    come out as black masses and the style would encode skin tone; dividing the grey by its
    local mean (Gaussian of ``flatten_sigma`` pixels, sized for 112 px faces) first makes flat
    areas white whatever their tone and leaves lines only. ``flatten_sigma=0`` gives the
    paper's tone-thresholding behaviour on a percentile-stretched grey.
    """
    if sigma <= 0 or k <= 1:
        raise ValueError("need sigma > 0 and k > 1")
    grey = _grey01(image)
    # Edge-preserving denoise first: p = 20 amplifies sensor noise into speckle otherwise.
    grey = cv2.bilateralFilter(grey, 5, 0.1, 2.0)
    if flatten_sigma > 0:
        # The floor keeps near-black regions from having their noise divided into lines.
        grey = np.minimum(grey / np.maximum(_blur(grey, flatten_sigma), 0.2), 1.0)
    else:
        lo, hi = (float(v) for v in np.percentile(grey, (1.0, 99.0)))
        if hi - lo > 1e-6:
            grey = np.clip((grey - lo) / (hi - lo), 0.0, 1.0)
    s = (1.0 + p) * _blur(grey, sigma) - p * _blur(grey, sigma * k)
    out = np.where(s >= epsilon, 1.0, 1.0 + np.tanh(phi * (s - epsilon)))
    return _to_uint8(out)


RENDERERS: dict[str, Renderer] = {
    "pencil-dodge": pencil_dodge,
    "xdog": xdog_lines,
}


def render(name: str, image: np.ndarray, **params: Any) -> np.ndarray:
    """Look a renderer up by the name a style file uses, and apply it."""
    try:
        fn = RENDERERS[name]
    except KeyError:
        known = ", ".join(sorted(RENDERERS))
        raise ValueError(f"unknown renderer {name!r}; known renderers: {known}") from None
    return fn(image, **params)
