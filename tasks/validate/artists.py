"""The identity contract of a drawn style: the bar its own artists clear, in the same gallery.

The absolute identity gates (SFace cosine ≥ 0.25 for 95 % of sketches, closer to the own
mugshot than to anybody else for 90 %) were set for drawings that sit where the photo sits.
An artist's drawing does not: in the real-data workspace (2,011 mugshots) the CUHK artists'
own sketches clear them for 94.7 % / 62.2 % and the CUFSF artists' for 77.5 % / 37.6 %. A
generator that draws like those artists would be rejected for the very thing it was asked to
do, and the margin share falls by itself as the mugshot gallery grows.

So a style that is drawn from real artists' sketches (a ``paired`` style) and has enough of
those sketches in the workspace is held to its artists instead: on the faces the artists drew,
the generated drawings' shares must reach ``min_ratio_to_artists`` of the artists' own shares,
both measured here against the same gallery with the same per-sketch thresholds. The
comparison is face for face, as the style contract's pairs are: the people drawn are the
same on both sides, so a version that happens to draw harder faces is not penalised, and
one that draws easy ones is not let through. Every other style keeps the absolute gates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_contracts.thresholds import SketchThresholds
from schemas.styles import PairedSource, Style
from schemas.validation import IdentityBar
from schemas.vectors import VectorTable
from tasks import storage
from tasks.embed import vector_matrix
from tasks.storage import FACES, Workspace
from tasks.validate.metrics import identity_scores
from tasks.validate.vectors import gallery


@dataclass(frozen=True)
class ArtistScores:
    """The artists' own sketches of one style: the photo face each is of, and its identity
    figures against the gallery (cosine to that photo, margin over the closest other)."""

    faces: list[str]
    similarity: np.ndarray
    margin: np.ndarray


def artist_scores(workspace: Workspace, identity: VectorTable,
                  registry: Mapping[str, Style],
                  photos: tuple[list[str], list[str], np.ndarray] | None = None
                  ) -> dict[str, ArtistScores]:
    """Per paired style with real sketches in the workspace, their identity figures.

    ``photos``: (face ids, identity ids, vectors) of every mugshot, as the metrics stage
    compared the generated sketches with; read (``tasks.validate.vectors.gallery``) only
    when there are artists' sketches to compare. A real sketch without a stored vector (its
    face failed embedding), or whose photo is not in the gallery, is left out: it has no
    figure.
    """
    sketch_styles = {s.source.sketch_style: name for name, s in registry.items()
                     if isinstance(s.source, PairedSource)}
    if not sketch_styles:
        return {}
    faces = storage.read(workspace, FACES,
                         columns=["face_id", "identity_id", "style", "paired_face_id"],
                         where=f"kind = 'sketch' AND "
                               f"{storage.where_in('style', sorted(sketch_styles))}")
    vectors = storage.read(workspace, identity.table, columns=["face_id", "vector"],
                           where=f"kind = 'sketch' AND encoder_version = "
                                 f"{storage.quote(identity.version)}")
    by_face = dict(zip(vectors.column("face_id").to_pylist(),
                       vector_matrix(vectors.column("vector"), identity.dim), strict=True))
    if not faces.num_rows or not by_face:
        return {}
    g_faces, g_identities, g_vectors = photos or gallery(workspace, identity)
    photo_row = {face: i for i, face in enumerate(g_faces)}
    found: dict[str, ArtistScores] = {}
    for sketch_style, style in sorted(sketch_styles.items()):
        rows = [r for r in faces.to_pylist() if r["style"] == sketch_style
                and r["face_id"] in by_face and r["paired_face_id"] in photo_row]
        if not rows:
            continue
        similarity, _, _, margin = identity_scores(
            np.stack([by_face[r["face_id"]] for r in rows]),
            g_vectors[[photo_row[r["paired_face_id"]] for r in rows]],
            [r["identity_id"] for r in rows], g_vectors, g_identities)
        found[style] = ArtistScores([r["paired_face_id"] for r in rows], similarity, margin)
    return found


def _shares(similarity: Sequence[Any], margin: Sequence[Any], t: SketchThresholds
            ) -> tuple[float | None, float | None]:
    """Shares reaching the per-sketch identity thresholds. A missing figure counts as not
    reaching them (a sketch without pixels has no identity), as in the metrics suite."""
    if not len(similarity):
        return None, None

    def reached(values: Sequence[Any], floor: float) -> float:
        return float(np.mean([v is not None and np.isfinite(v) and v >= floor
                              for v in values]))
    return (reached(similarity, t.min_identity_similarity),
            reached(margin, t.min_identity_margin))


def identity_bars(rows: Sequence[Mapping[str, Any]], artists: Mapping[str, ArtistScores],
                  t: SketchThresholds) -> dict[str, IdentityBar]:
    """Per style in ``rows``: which identity gate judges it, and how it fares.

    A style with artists' sketches of at least ``min_artist_faces`` of the faces it drew is
    judged against them on those faces ("artists"); any other style by the metrics suite's
    absolute shares ("absolute"), whose figures are given here too.
    """
    by_style: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_style.setdefault(row["style"], []).append(row)
    bars: dict[str, IdentityBar] = {}
    for style, members in sorted(by_style.items()):
        every = _shares([r.get("identity_similarity") for r in members],
                        [r.get("identity_margin") for r in members], t)
        figures = {"drawings_all": len(members), "share_identity_all": every[0],
                   "share_margin_all": every[1]}
        art = artists.get(style)
        drawn = {r["face_id"] for r in members}
        common = sorted(drawn & set(art.faces)) if art else []
        if len(common) < t.min_artist_faces:
            why = ("no artists' sketches of it in the workspace" if not art else
                   f"its artists drew {len(common)} of its faces, under "
                   f"{t.min_artist_faces}")
            passed = ((every[0] or 0.0) >= t.min_share_identity
                      and (every[1] or 0.0) >= t.min_share_margin)
            bars[style] = IdentityBar(
                mode="absolute", line=f"absolute shares ({why})", faces=len(drawn),
                drawings=len(members), share_identity=every[0], share_margin=every[1],
                passed=passed, **figures)
            continue
        keep = set(common)
        own = [r for r in members if r["face_id"] in keep]
        share = _shares([r.get("identity_similarity") for r in own],
                        [r.get("identity_margin") for r in own], t)
        mask = np.asarray([f in keep for f in art.faces])
        theirs = _shares(list(art.similarity[mask]), list(art.margin[mask]), t)
        bar = IdentityBar(
            mode="artists", faces=len(common), drawings=len(own),
            line=(f"against its artists on the {len(common)} faces they drew "
                  f"({len(own)} drawings, {int(mask.sum())} artists' sketches)"),
            share_identity=share[0], share_margin=share[1],
            artist_sketches=int(mask.sum()), artist_share_identity=theirs[0],
            artist_share_margin=theirs[1], ratio=t.min_ratio_to_artists, passed=False,
            **figures)
        bars[style] = bar.model_copy(update={
            "passed": min(bar.headroom_identity, bar.headroom_margin) >= 0})
    return bars
