"""Per-sketch and dataset-level metrics, and the verdict that thresholds make of them.

Everything here is numpy over vectors and rows already in memory: the expensive part (decoding
PNGs, running encoders) happens once in ``tasks.validate.compute`` and is stored, so these
functions can be re-run on every validation for the price of a few matrix products.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from data_contracts.thresholds import SketchThresholds
from schemas.validation import (
    DatasetMetrics,
    DiversitySummary,
    GroupDiversity,
    IdentityBar,
    Reason,
    StyleFigures,
    StylePairs,
)
from tasks.validate.frechet import frechet_distance
from tasks.validate.health import Measures, judge

# Columns of a metrics row that come from ``tasks.validate.health.measure``.
HEALTH_COLUMNS = ("pixel_std", "saturated_share", "colour_deviation", "contrast",
                  "neighbour_correlation")
FRECHET_MAX_DIM = 64
FRECHET_MAX_SAMPLES = 2048


# --------------------------------------------------------------------------- identity


def identity_scores(
    sketches: np.ndarray,
    sources: np.ndarray,
    own_identities: Sequence[str],
    gallery: np.ndarray,
    gallery_identities: Sequence[str],
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray, list[str | None], np.ndarray]:
    """Cosine to the source mugshot, and the margin over the closest other identity.

    The margin is what a recognizer trained on the sketch would care about: a sketch can be
    fairly similar to its source and still closer to somebody else. Vectors are L2-normalised;
    rows of ``sources`` that are NaN (no reference) give NaN similarity. With no other
    identity in the gallery the impostor side is NaN: a margin needs someone to beat.
    """
    sketches = np.asarray(sketches, np.float32)
    sources = np.asarray(sources, np.float32)
    similarity = np.einsum("nd,nd->n", sketches, sources).astype(np.float64)
    n = len(sketches)
    impostor = np.full(n, np.nan)
    impostor_identity: list[str | None] = [None] * n
    gallery = np.asarray(gallery, np.float32)
    if n and len(gallery):
        labels = np.asarray(gallery_identities, dtype=object)
        # Identities as integer codes: the same mask as comparing the strings, without
        # millions of Python string comparisons a chunk (0.4 s a night at 12,000 drawings).
        codes: dict[str, int] = {}
        gallery_codes = np.array([codes.setdefault(x, len(codes)) for x in gallery_identities])
        own_codes = np.array([codes.get(x, -1) for x in own_identities])
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            scores = sketches[start:stop] @ gallery.T
            own = own_codes[start:stop, None] == gallery_codes[None]
            scores = np.where(own, -np.inf, scores)
            best = scores.argmax(axis=1)
            values = scores[np.arange(stop - start), best]
            for i, (value, index) in enumerate(zip(values, best, strict=True)):
                if np.isfinite(value):
                    impostor[start + i] = float(value)
                    impostor_identity[start + i] = str(labels[index])
    return similarity, impostor, impostor_identity, similarity - impostor


# --------------------------------------------------------------------------- diversity


def mean_pairwise_similarity(vectors: np.ndarray) -> float | None:
    """Mean cosine over distinct pairs; None below two samples (nothing to compare)."""
    vectors = np.asarray(vectors, np.float64)
    n = len(vectors)
    if n < 2:
        return None
    gram = vectors @ vectors.T
    return float((gram.sum() - np.trace(gram)) / (n * (n - 1)))


def group_diversity(identities: Sequence[str], styles: Sequence[str],
                    vectors: np.ndarray) -> list[GroupDiversity]:
    """Per (identity, style): too similar samples add nothing, too different ones drift."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(identities, styles, strict=True)):
        groups[key].append(i)
    vectors = np.asarray(vectors)
    return [
        GroupDiversity(identity_id=identity, style=style, samples=len(rows),
                       mean_pairwise_similarity=mean_pairwise_similarity(vectors[rows]))
        for (identity, style), rows in sorted(groups.items())
    ]


# --------------------------------------------------------------------------- verdicts


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def reasons(row: Mapping[str, Any], t: SketchThresholds, wrong_style: bool | None = None
            ) -> list[str]:
    """Why a sketch is rejected (empty: accepted), from its stored metrics and the thresholds.

    ``wrong_style``: whether the drawing lost its same-face style comparison
    (``tasks.validate.pairs.lost_drawings``; None: not decided). The order is the order a
    reviewer should read them: unusable pixels first, then health, then identity, then style.
    """
    found: list[str] = []
    if row["status"] == "nan":
        return [Reason.NAN.value]
    if row.get("file_problem"):
        return [row["file_problem"]]
    if all(_present(row.get(c)) for c in HEALTH_COLUMNS):
        health = judge(Measures(**{c: float(row[c]) for c in HEALTH_COLUMNS}),
                       min_pixel_std=t.min_pixel_std, max_saturated_share=t.max_saturated_share,
                       max_colour_deviation=t.max_colour_deviation, min_contrast=t.min_contrast,
                       min_neighbour_correlation=t.min_neighbour_correlation)
        found += health.reasons()
    if row["status"] == "blank" and Reason.BLANK.value not in found:
        found.append(Reason.BLANK.value)  # the generator's own flag counts even if std passes
    similarity = row.get("identity_similarity")
    if not _present(similarity):
        found.append(Reason.NO_IDENTITY_REFERENCE.value)
    elif similarity < t.min_identity_similarity:
        found.append(Reason.LOW_IDENTITY_SIMILARITY.value)
    margin = row.get("identity_margin")
    if _present(margin) and margin < t.min_identity_margin:
        found.append(Reason.IDENTITY_CONFUSION.value)
    if wrong_style:
        found.append(Reason.WRONG_STYLE.value)
    return found


def healthy(row_reasons: Iterable[str]) -> bool:
    unhealthy = {Reason.NAN, Reason.MISSING_PNG, Reason.CHECKSUM_MISMATCH, Reason.UNREADABLE_PNG,
                 Reason.BLANK, Reason.SATURATED, Reason.LOW_CONTRAST, Reason.NOISE, Reason.COLOUR}
    return not any(r in unhealthy for r in row_reasons)


# --------------------------------------------------------------------------- dataset level


def reference_axes(reference: np.ndarray, max_dim: int = FRECHET_MAX_DIM
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The reference set's mean and its top principal axes (columns), at most ``max_dim``:
    the space ``frechet_reduced`` measures in. Apart, so that several sets measured against
    one reference project once (a bootstrap compares two sources per resample)."""
    reference = np.asarray(reference, np.float64)
    mean = reference.mean(axis=0)
    dims = min(max_dim, len(reference) - 1, reference.shape[1])
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    return mean, vt[:dims].T


def frechet_reduced(generated: np.ndarray, reference: np.ndarray,
                    max_dim: int = FRECHET_MAX_DIM,
                    axes: tuple[np.ndarray, np.ndarray] | None = None) -> float | None:
    """Fréchet distance in the reference set's top principal components.

    With a few hundred samples a 1280-d covariance is rank-deficient and its square root is
    dominated by regularisation noise; projecting both sets onto at most ``max_dim``
    principal axes of the reference keeps the figure stable and comparable across runs of
    one dataset size. None when either side has fewer than two samples. ``axes``: the
    reference's ``reference_axes``, when the caller already has them.
    """
    generated, reference = np.asarray(generated, np.float64), np.asarray(reference, np.float64)
    if len(generated) < 2 or len(reference) < 2:
        return None
    mean, projection = axes if axes is not None else reference_axes(reference, max_dim)
    return frechet_distance((generated - mean) @ projection, (reference - mean) @ projection)


def _mean(values: Iterable[Any]) -> float | None:
    kept = [float(v) for v in values if _present(v)]
    return float(np.mean(kept)) if kept else None


def diversity_summary(groups: Sequence[GroupDiversity], t: SketchThresholds) -> DiversitySummary:
    summary = DiversitySummary()
    for group in groups:
        value = group.mean_pairwise_similarity
        if value is None:
            summary.single_sample += 1
            continue
        summary.groups += 1
        if value > t.max_mean_pairwise_similarity:
            summary.too_similar += 1
        elif value < t.min_mean_pairwise_similarity:
            summary.drifting += 1
        else:
            summary.in_band += 1
    return summary


def dataset_metrics(rows: Sequence[Mapping[str, Any]], verdicts: Mapping[str, list[str]],
                    diversity: Sequence[GroupDiversity], t: SketchThresholds,
                    frechet: Mapping[str, tuple[float | None, str, tuple[int, int]]],
                    pairs: Mapping[str, StylePairs] | None = None,
                    bars: Mapping[str, IdentityBar] | None = None
                    ) -> tuple[DatasetMetrics, dict[str, int]]:
    """Counts per style and identity, acceptance, reasons, diversity, Fréchet per style, the
    style contract's verdict per style (``pairs``, from ``tasks.validate.pairs``) and the
    identity contract's (``bars``, from ``tasks.validate.artists``).

    Returns the summary and the accepted count per identity (every identity in scope, zeros
    included: an identity with nothing accepted is what a reviewer looks for first).
    """
    per_style: dict[str, StyleFigures] = {}
    by_style: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_style[row["style"]].append(row)
    for style, members in sorted(by_style.items()):
        accepted = [r for r in members if not verdicts[r["sketch_id"]]]
        score, reference, samples = frechet.get(style, (None, None, None))
        per_style[style] = StyleFigures(
            sketches=len(members), accepted=len(accepted),
            identities=len({r["identity_id"] for r in members}),
            mean_identity_similarity=_mean(r.get("identity_similarity") for r in members),
            mean_identity_margin=_mean(r.get("identity_margin") for r in members),
            wrong_style=sum(Reason.WRONG_STYLE.value in verdicts[r["sketch_id"]]
                            for r in members),
            style_calls=dict(Counter(r["style_predicted"] for r in members
                                     if r.get("style_predicted") is not None).most_common()),
            frechet=score, frechet_reference=reference, frechet_samples=samples,
            pair_verdict=(pairs or {}).get(style),
            identity_bar=(bars or {}).get(style),
        )
    reason_counts = Counter(r for found in verdicts.values() for r in found)
    accepted = sum(1 for found in verdicts.values() if not found)
    per_identity = {identity: 0 for identity in sorted({r["identity_id"] for r in rows})}
    for row in rows:
        if not verdicts[row["sketch_id"]]:
            per_identity[row["identity_id"]] += 1
    counts = sorted(per_identity.values()) or [0]
    summary = DatasetMetrics(
        sketches=len(rows), accepted=accepted, rejected=len(rows) - accepted,
        acceptance_rate=accepted / len(rows) if rows else 0.0,
        identities=len(per_identity), per_style=per_style,
        accepted_per_identity=(counts[0], counts[len(counts) // 2], counts[-1]),
        reasons=dict(sorted(reason_counts.items())),
        diversity=diversity_summary(diversity, t),
    )
    return summary, per_identity
