"""Sketches of held-out identities drawn straight from a saved generator, for judging it.

The generator issue is judged on identities it never saw (a split's test part): their
mugshots go in, and the drawn sketches are compared with the same identities' real artist
sketches and with the start renderer's drawings by benchmarks.quality. Nothing is
written to the workspace's tables: this is a measurement, not a dataset version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schemas.settings import load_settings
from schemas.styles import PairedSource
from tasks import storage
from tasks.faces import read_crops
from tasks.generate.conditions import condition_sources, face_vectors, text_vectors
from tasks.generate.inputs import spatial_inputs, start_inputs, to_grey
from tasks.generate.saved import read_manifest
from tasks.splits import load_splits
from tasks.storage import FACES, Workspace
from tasks.styles.registry import get_style, styles_for
from tasks.styles.rendering import render

SEED_BASE = 50_000  # fixed seeds: two runs of the judge draw the same sketches


@dataclass
class HeldOut:
    """Aligned crops of the held-out identities with a real sketch in one style."""

    style: str
    identities: list[str]
    photo_ids: list[str]
    photos: np.ndarray  # uint8 (N, 112, 112, 3) BGR
    artists: np.ndarray  # uint8 (N, 112, 112) grey


def held_out(workspace: Workspace, style_name: str, splits: Sequence[str | Path],
             part: str = "test", limit: int | None = None) -> HeldOut:
    """The ``part`` identities of ``splits`` that have a photo and a real ``style`` sketch."""
    styles = styles_for(load_settings(workspace.root))  # as generate builds it
    style = get_style(style_name, styles)
    if not isinstance(style.source, PairedSource):
        raise ValueError(f"style {style_name} has no real sketches to judge against "
                         f"(its source is {style.source.kind})")
    split = load_splits(list(splits))
    faces = storage.read(workspace, FACES, columns=["face_id", "identity_id", "kind", "style",
                                                    "paired_face_id"]).to_pylist()
    kind = {f["face_id"]: f["kind"] for f in faces}
    pairs = sorted(
        (f["identity_id"], f["paired_face_id"], f["face_id"]) for f in faces
        if f["kind"] == "sketch" and f["style"] == style.source.sketch_style
        and split.get(f["identity_id"]) == part and kind.get(f["paired_face_id"]) == "photo"
    )
    seen: set[str] = set()
    pairs = [p for p in pairs if not (p[0] in seen or seen.add(p[0]))][:limit]
    if not pairs:
        raise ValueError(f"no {part} identities of {', '.join(map(str, splits))} with a "
                         f"{style_name} sketch in {workspace.root}")
    crops = read_crops(workspace, [p for _, p, _ in pairs] + [s for _, _, s in pairs])
    return HeldOut(
        style=style_name,
        identities=[i for i, _, _ in pairs],
        photo_ids=[p for _, p, _ in pairs],
        photos=np.stack([crops[p] for _, p, _ in pairs]),
        artists=np.stack([to_grey(crops[s]) for _, _, s in pairs]),
    )


def draw(workspace: Workspace, generator_dir: str | Path, photo_ids: Sequence[str],
         photos: np.ndarray, style: str, steps: int | None = None,
         guidance: float | None = None, batch_size: int = 16, eta: float | None = None,
         seed_base: int = SEED_BASE) -> np.ndarray:
    """uint8 (N, H, W): one sketch per photo in ``style`` (see ``draw_samples``)."""
    return draw_samples(workspace, generator_dir, photo_ids, photos, style, steps, guidance,
                        batch_size, eta, [seed_base])[0]


def draw_samples(workspace: Workspace, generator_dir: str | Path, photo_ids: Sequence[str],
                 photos: np.ndarray, style: str, steps: int | None = None,
                 guidance: float | None = None, batch_size: int = 16,
                 eta: float | None = None, seed_bases: Sequence[int] = (SEED_BASE,)
                 ) -> list[np.ndarray]:
    """One uint8 (N, H, W) array per seed base: each photo drawn in ``style`` as the generate
    stage draws it (the same condition tables, spatial and start images; seeds from the
    base), with one load of the generator and its conditions for all of them."""
    # Imported here, not at the top: tasks.generate.networks loads diffusers and torch.
    from tasks.generate.networks import SketchGenerator

    manifest = read_manifest(generator_dir)
    sources = condition_sources(workspace, manifest)
    generator = SketchGenerator.from_pretrained(
        generator_dir, expected_encoders={r: (s.dim, s.version) for r, s in sources.items()})
    vectors = {role: face_vectors(workspace, sources[role], list(photo_ids))
               for role in ("identity", "image")}
    text = text_vectors(workspace, sources["text"], [style])[style][0]
    config = generator.config
    steps = steps or generator.default_steps
    # As the generate stage does: the style's own noise where the generator has one.
    eta = generator.formulation.style_eta.get(style) if eta is None else eta
    guidance = config.formulation.default_guidance if guidance is None else guidance
    out: list[list[np.ndarray]] = [[] for _ in seed_bases]
    for at in range(0, len(photo_ids), batch_size):
        part = slice(at, at + batch_size)
        crops = list(photos[part])
        conditions: dict[str, Any] = {
            "identity": vectors["identity"][part], "image": vectors["image"][part],
            "text": np.repeat(text[None], len(crops), axis=0),
        }
        if config.spatial_condition != "none":
            conditions["spatial"] = spatial_inputs(crops, config.spatial_condition,
                                                   config.resolution)
        if generator.needs_start:
            conditions["start"] = start_inputs(crops, config.formulation.start,
                                               config.resolution)
        for drawn, base in zip(out, seed_bases, strict=True):
            seeds = [base + at + i for i in range(len(crops))]
            drawn.append(generator.sample(conditions, seeds, steps=steps, guidance=guidance,
                                          eta=eta))
    return [np.concatenate(drawn) for drawn in out]


def renders(photos: np.ndarray, renderer: str = "pencil-dodge") -> np.ndarray:
    """The classical drawing of each photo: what a generator must beat on realism."""
    return np.stack([render(renderer, crop) for crop in photos])
