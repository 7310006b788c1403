"""The images a generator is given besides its vectors, made the same way in training and at
generation time: a bridge's start image, the spatial channel, and the grey [-1, 1] form every
image takes on the way in.

Training (tasks.generate.dataset), shard sampling (tasks.generate.shard) and the benchmarks
all call these, so a sketch drawn tonight sees exactly the inputs its generator learned from.
Inputs come from the stored 112 px aligned crops; renderers run at that size (their parameters
are sized for it) and the result is resized afterwards, as the rendered styles' targets are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from tasks.faces import read_crops
from tasks.generate.formulations import GREY_START
from tasks.storage import Workspace
from tasks.styles.rendering import render


def to_grey(crop: np.ndarray) -> np.ndarray:
    return crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)


def resize_grey(grey: np.ndarray, size: int) -> np.ndarray:
    if grey.shape == (size, size):
        return grey
    shrink = size < grey.shape[0]
    return cv2.resize(grey, (size, size),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def to_unit(grey: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1], the range the diffusion model works in."""
    return grey.astype(np.float32) / 127.5 - 1.0


def start_images(crops: np.ndarray, start: str, size: int) -> np.ndarray:
    """float32 (N, 1, size, size) in [-1, 1]: the image a bridge starts from, per mugshot.

    ``crops``: uint8 (N, H, W, 3) BGR aligned faces as ingestion stores them (or (N, H, W)
    grey); ``start``: ``grey`` or a renderer's name.
    """
    crops = np.asarray(crops)
    out = np.empty((len(crops), 1, size, size), np.float32)
    for i, crop in enumerate(crops):
        grey = to_grey(crop) if start == GREY_START else render(start, crop)
        out[i, 0] = to_unit(resize_grey(grey, size))
    return out


def start_inputs(crops: Sequence[np.ndarray], start: str, size: int) -> np.ndarray:
    """A bridge's start image for each photo (none: an empty batch)."""
    if not crops:
        return np.zeros((0, 1, size, size), np.float32)
    return start_images(np.stack(crops), start, size)


def spatial_inputs(crops: Sequence[np.ndarray], mode: str, size: int) -> np.ndarray:
    """The model's spatial channel for each photo, computed once (not per step)."""
    # Imported here, not at the top: tasks.generate.networks loads diffusers and torch, which
    # a night that only plans or validates never needs.
    from tasks.generate.networks import spatial_condition

    if not crops:
        return np.zeros((0, 1, size, size), np.float32)
    return spatial_condition(np.stack(crops), mode, size).numpy().astype(np.float32)


def face_inputs(workspace: Workspace, generator: Any, faces: list[str]
                ) -> dict[str, dict[str, np.ndarray]] | None:
    """The images each face gives ``generator`` (its spatial channel, a bridge's start
    image), by condition key then face; None when it takes neither."""
    config = generator.config
    mode = config.spatial_condition
    if mode == "none" and not generator.needs_start:
        return None
    crops = read_crops(workspace, faces)
    ordered = [crops[f] for f in faces]
    maps: dict[str, dict[str, np.ndarray]] = {}
    if mode != "none":
        maps["spatial"] = dict(zip(faces, spatial_inputs(ordered, mode, config.resolution),
                                   strict=True))
    if generator.needs_start:
        made = start_inputs(ordered, config.formulation.start, config.resolution)
        maps["start"] = dict(zip(faces, made, strict=True))
    return maps
