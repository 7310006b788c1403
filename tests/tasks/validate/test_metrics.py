"""Metric functions and verdicts on hand-made vectors and rows (no model, no workspace)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data_contracts.thresholds import load_thresholds
from schemas.validation import GroupDiversity
from tasks.validate.metrics import (
    dataset_metrics,
    frechet_reduced,
    group_diversity,
    healthy,
    identity_scores,
    mean_pairwise_similarity,
    reasons,
    reference_axes,
)

T = load_thresholds().sketches


def _unit(*rows: list[float]) -> np.ndarray:
    matrix = np.asarray(rows, np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_identity_similarity_and_margin_against_the_closest_other_identity():
    gallery = _unit([1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1])
    labels = ["a", "a", "b", "c"]
    sketches = _unit([1, 0.2, 0], [0.2, 1, 0])
    sources = gallery[[0, 0]]  # both claim to be a's first photo
    sim, impostor, who, margin = identity_scores(sketches, sources, ["a", "a"], gallery, labels)
    assert sim[0] > 0.9 and margin[0] > 0  # closest other identity (b) is further away
    assert who == ["b", "b"]
    assert margin[1] < 0  # the second sketch looks like b: identity confusion
    assert impostor[1] == pytest.approx(float(sketches[1] @ gallery[2]), abs=1e-6)


def test_margin_needs_another_identity_and_similarity_needs_a_reference():
    gallery = _unit([1, 0], [0.8, 0.2])
    sources = np.vstack([gallery[0], np.full(2, np.nan, np.float32)])
    sim, impostor, who, margin = identity_scores(_unit([1, 0.1], [1, 0]), sources, ["a", "a"],
                                                 gallery, ["a", "a"])
    assert np.isnan(impostor).all() and who == [None, None] and np.isnan(margin).all()
    assert not np.isnan(sim[0]) and np.isnan(sim[1])


def test_mean_pairwise_similarity_and_groups():
    assert mean_pairwise_similarity(_unit([1, 0])) is None
    assert mean_pairwise_similarity(_unit([1, 0], [1, 0], [1, 0])) == pytest.approx(1.0)
    assert mean_pairwise_similarity(_unit([1, 0], [0, 1])) == pytest.approx(0.0)
    groups = group_diversity(["a", "a", "b"], ["s", "s", "s"], _unit([1, 0], [0.6, 0.8], [0, 1]))
    assert [(g.identity_id, g.samples) for g in groups] == [("a", 2), ("b", 1)]
    assert groups[0].mean_pairwise_similarity == pytest.approx(0.6)
    assert groups[1].mean_pairwise_similarity is None


def _row(**values) -> dict:
    row = {"sketch_id": "s", "identity_id": "a", "style": "pencil", "status": "ok",
           "file_problem": None, "pixel_std": 40.0, "saturated_share": 0.5,
           "colour_deviation": 0.0, "contrast": 150.0, "neighbour_correlation": 0.8,
           "identity_similarity": 0.7, "identity_margin": 0.1, "style_predicted": "pencil"}
    return {**row, **values}


@pytest.mark.parametrize(("changes", "expected"), [
    ({}, []),
    ({"status": "nan", "pixel_std": None}, ["nan"]),
    ({"file_problem": "checksum_mismatch"}, ["checksum_mismatch"]),
    ({"pixel_std": 1.0, "contrast": 3.0}, ["blank"]),
    ({"contrast": 20.0}, ["low_contrast"]),
    ({"neighbour_correlation": 0.01}, ["noise"]),
    ({"colour_deviation": 12.0}, ["colour"]),
    ({"saturated_share": 0.99}, ["saturated"]),
    ({"identity_similarity": 0.1}, ["low_identity_similarity"]),
    ({"identity_margin": -0.05}, ["identity_confusion"]),
    ({"identity_similarity": None, "identity_margin": None}, ["no_identity_reference"]),
    # The judge's absolute call is a figure: it reads the person drawn, so it rejects
    # nothing; a drawing that loses its same-face comparison does (``wrong_style=True``).
    ({"style_predicted": "ink"}, []),
    ({"style_predicted": None}, []),
    ({"status": "blank"}, ["blank"]),  # the generator's own flag counts
])
def test_reasons_name_each_failure(changes, expected):
    assert reasons(_row(**changes), T) == expected


def test_a_drawing_that_lost_its_style_comparison_is_rejected_for_style_last():
    assert reasons(_row(), T, wrong_style=True) == ["wrong_style"]
    assert reasons(_row(identity_margin=-0.05), T, wrong_style=True) == [
        "identity_confusion", "wrong_style"]
    assert reasons(_row(), T, wrong_style=None) == [] == reasons(_row(), T, wrong_style=False)


def test_health_reasons_are_what_counts_as_unhealthy():
    assert not healthy(["noise"]) and not healthy(["nan"]) and not healthy(["missing_png"])
    assert healthy(["wrong_style", "identity_confusion"]) and healthy([])


def test_frechet_reduced_is_zero_for_the_reference_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    scales = np.linspace(3.0, 0.1, 200)  # a few strong directions, like image features
    reference = rng.normal(size=(80, 200)) * scales
    assert frechet_reduced(reference, reference) == pytest.approx(0.0, abs=1e-6)
    same = frechet_reduced(rng.normal(size=(80, 200)) * scales, reference)
    shifted = frechet_reduced(rng.normal(size=(80, 200)) * scales + 2.0 * scales, reference)
    assert same is not None and shifted is not None and shifted > 3 * same
    assert frechet_reduced(reference[:1], reference) is None
    # The reference's axes computed once give the same figure as computed inside.
    mean, axes = reference_axes(reference)
    assert axes.shape == (200, 64) and np.allclose(mean, reference.mean(axis=0))
    moved = rng.normal(size=(80, 200)) * scales + 2.0 * scales
    assert frechet_reduced(moved, reference, axes=(mean, axes)) == pytest.approx(
        frechet_reduced(moved, reference))
    assert reference_axes(reference[:10])[1].shape == (200, 9)  # at most n - 1 axes


def test_dataset_metrics_counts_acceptance_reasons_and_identities_without_any():
    rows = [_row(sketch_id="1"), _row(sketch_id="2", style="ink"),
            _row(sketch_id="3", identity_id="b")]
    verdicts = {"1": [], "2": ["wrong_style"], "3": ["noise", "low_identity_similarity"]}
    groups = [GroupDiversity(identity_id="a", style="pencil", samples=2,
                             mean_pairwise_similarity=0.99),
              GroupDiversity(identity_id="b", style="pencil", samples=1,
                             mean_pairwise_similarity=None)]
    summary, per_identity = dataset_metrics(rows, verdicts, groups, T,
                                            {"pencil": (1.5, "rendered", (2, 3))})
    assert (summary.sketches, summary.accepted, summary.rejected) == (3, 1, 2)
    assert math.isclose(summary.acceptance_rate, 1 / 3)
    assert summary.reasons == {"low_identity_similarity": 1, "noise": 1, "wrong_style": 1}
    assert per_identity == {"a": 1, "b": 0} and summary.accepted_per_identity == (0, 1, 1)
    assert summary.per_style["ink"].wrong_style == 1
    assert summary.per_style["ink"].style_calls == {"pencil": 1}
    assert summary.per_style["pencil"].style_calls == {"pencil": 2}
    assert summary.per_style["pencil"].frechet == 1.5
    assert (summary.diversity.groups, summary.diversity.too_similar,
            summary.diversity.single_sample) == (1, 1, 1)


def test_style_calls_count_judged_sketches_most_common_first():
    rows = [_row(sketch_id=str(i), style="ink", style_predicted=p)
            for i, p in enumerate(["pencil", "ink", "pencil", None, "pencil"])]
    verdicts = {r["sketch_id"]: [] for r in rows}
    summary, _ = dataset_metrics(rows, verdicts, [], T, {})
    calls = summary.per_style["ink"].style_calls
    assert calls == {"pencil": 3, "ink": 1} and list(calls) == ["pencil", "ink"]
