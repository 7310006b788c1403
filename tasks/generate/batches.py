"""The training set in memory and the batches drawn from it: plain numpy, no workspace.

Kept apart from ``tasks.generate.dataset`` (which reads the workspace to assemble it) so a
training set exported to a machine without the storage stack (an accelerator box that has
only torch) trains through the same batch draw as the flow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# Salt so the batch sampler's stream is unrelated to the training step's noise stream, which
# is seeded from the same (seed, step).
_BATCH_SALT = 0x5EED_BA7C


class DatasetError(ValueError):
    """The workspace cannot give a usable training set (no vectors, no examples, ...)."""


@dataclass(frozen=True)
class PreviewRow:
    """A fixed identity drawn in every report's sample grid, with its per-style targets."""

    identity_id: str
    face_id: str
    photo: np.ndarray  # uint8 (112, 112, 3) BGR aligned crop, for display
    identity: np.ndarray
    image: np.ndarray
    spatial: np.ndarray | None
    targets: dict[str, np.ndarray]  # style -> uint8 (H, W) grey target
    start: np.ndarray | None = None  # a bridge's start image, (1, H, W) in [-1, 1]


@dataclass
class TrainingSet:
    styles: tuple[str, ...]
    style_index: np.ndarray  # (N,) int64 into styles
    face_id: tuple[str, ...]  # the photo each example's conditions come from
    identity_id: tuple[str, ...]
    identity: np.ndarray  # (N, d_identity) float32
    image: np.ndarray  # (N, d_image) float32
    text: np.ndarray  # (S, d_text) float32, one row per style
    sketch: np.ndarray  # (N, 1, H, W) float32 in [-1, 1]
    spatial: np.ndarray | None  # (N, 1, H, W) float32 in [-1, 1], or None
    # A bridge's start image per example (N, 1, H, W) in [-1, 1], or None.
    start: np.ndarray | None = None
    # SFace vectors each example's drawing should match (N, 128), for the identity loss, or
    # None: the mugshot's, or the artist's sketch's for the config's artist-target styles.
    id_target: np.ndarray | None = None
    # Each example's weight in the identity loss (N,): 0 where the artist target is asked for
    # but that sketch gives no usable vector (trained without the term, and counted).
    id_weight: np.ndarray | None = None
    # The mugshot's vector (N, 128), for the loss's photo anchor (losses.identity_photo), or
    # None.
    id_photo: np.ndarray | None = None
    # (N,) 1 on the artist-target styles' examples (batch["sketch"] is the artist's drawing of
    # the person), else 0; None without artist-target styles. The items the photo anchor
    # compares with their mugshot, and, where id_weight says the sketch is usable, those
    # the SFace feature matching (losses.identity_features) compares with it.
    id_artist: np.ndarray | None = None
    # style -> {"used": n, "unusable": n}: examples given the artist's target, or not.
    artist_targets: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)  # style -> reason -> n
    empty_styles: tuple[str, ...] = ()
    preview: list[PreviewRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.face_id)

    @property
    def examples_per_style(self) -> dict[str, int]:
        counts = np.bincount(self.style_index, minlength=len(self.styles))
        return {s: int(n) for s, n in zip(self.styles, counts, strict=True)}

    @property
    def identities(self) -> set[str]:
        return set(self.identity_id)

    def fingerprint(self) -> str:
        """Digest of everything a batch can contain: a resume must see the same data."""
        digest = hashlib.sha256()
        digest.update("|".join(self.styles).encode())
        digest.update("|".join(self.face_id).encode())
        for array in (self.style_index, self.identity, self.image, self.text, self.sketch,
                      self.spatial, self.start, self.id_target, self.id_weight,
                      self.id_photo, self.id_artist):
            if array is not None:
                digest.update(str(array.shape).encode())
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def batch_source(training: TrainingSet, batch_size: int,
                 seed: int) -> Callable[[int], dict[str, np.ndarray]]:
    """``step -> batch``, a pure function of (seed, step): what makes a resume exact.

    Styles are drawn uniformly, then an example within the style, so a style with few examples
    (real sketches: one per identity) is not drowned out by a rendered style that has one per
    photo. Items are drawn with replacement, which keeps the draw independent of the step's
    position in an epoch.
    """
    if len(training) == 0:
        raise DatasetError("the training set is empty")
    if batch_size < 1:
        raise DatasetError("batch_size must be at least 1")
    members = [np.flatnonzero(training.style_index == s) for s in range(len(training.styles))]

    def batch(step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([int(seed), int(step), _BATCH_SALT])
        styles = rng.integers(0, len(members), size=batch_size)
        index = np.array([members[s][rng.integers(0, len(members[s]))] for s in styles])
        out = {
            "sketch": training.sketch[index],
            "identity": training.identity[index],
            "image": training.image[index],
            "text": training.text[training.style_index[index]],
        }
        for key in ("spatial", "start", "id_target", "id_weight", "id_photo", "id_artist"):
            array = getattr(training, key)
            if array is not None:
                out[key] = array[index]
        return out

    return batch
