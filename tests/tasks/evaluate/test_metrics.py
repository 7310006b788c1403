"""Metrics checked against hand-computed cases, brute force and scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.evaluate.metrics import (
    cmc,
    eer,
    evaluate_scores,
    far_resolved,
    roc,
    similarity_matrix,
    tar_at_far,
    verification_pairs,
)
from tasks.evaluate.plots import plot_cmc, plot_roc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- similarity -------------------------------------------------------------------------------


def test_similarity_is_scale_invariant_cosine():
    rng = np.random.default_rng(0)
    p, g = rng.normal(size=(4, 8)), rng.normal(size=(5, 8))
    s = similarity_matrix(p * 7.0, g * 0.01)
    expected = (p / np.linalg.norm(p, axis=1, keepdims=True)) @ (
        g / np.linalg.norm(g, axis=1, keepdims=True)
    ).T
    assert s.shape == (4, 5)
    np.testing.assert_allclose(s, expected, atol=1e-12)


def test_similarity_rejects_nan_and_zero_rows_by_index():
    good = np.ones((3, 4))
    bad = good.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"probes rows \[1\].*NaN"):
        similarity_matrix(bad, good)
    zero = good.copy()
    zero[2] = 0.0
    with pytest.raises(ValueError, match=r"gallery rows \[2\].*zero"):
        similarity_matrix(good, zero)
    with pytest.raises(ValueError, match="dim"):
        similarity_matrix(good, np.ones((2, 5)))


# --- CMC --------------------------------------------------------------------------------------


def test_cmc_hand_computed_3x3():
    ids = ["a", "b", "c"]
    scores = np.array(
        [
            [0.9, 0.5, 0.1],  # mate 0.9 is top        -> rank 1
            [0.8, 0.6, 0.7],  # two impostors above 0.6 -> rank 3
            [0.2, 0.4, 0.3],  # one impostor above 0.3  -> rank 2
        ]
    )
    np.testing.assert_allclose(cmc(scores, ids, ids, max_rank=5), [1 / 3, 2 / 3, 1, 1, 1])


def test_cmc_perfect_and_reversed():
    ids = np.arange(6)
    perfect = np.eye(6) + 0.01
    assert cmc(perfect, ids, ids, max_rank=1)[0] == 1.0
    reversed_ = 1.0 - np.eye(6)
    curve = cmc(reversed_, ids, ids, max_rank=6)
    assert curve[0] == 0.0
    assert curve[-1] == 1.0  # the mate is last, at rank G


def test_cmc_ties_are_pessimistic_and_only_impostors_count():
    # mate ties with an impostor: not a rank-1 hit
    np.testing.assert_allclose(cmc(np.array([[0.5, 0.5]]), ["a"], ["a", "b"], 2), [0.0, 1.0])
    # ...regardless of gallery order
    np.testing.assert_allclose(cmc(np.array([[0.5, 0.5]]), ["a"], ["b", "a"], 2), [0.0, 1.0])
    # two mated entries tying with each other do not push each other down
    np.testing.assert_allclose(cmc(np.array([[0.5, 0.5, 0.1]]), ["a"], ["a", "a", "b"], 1), [1.0])


def test_cmc_unmated_probes_are_misses_at_every_rank():
    scores = np.array([[0.9, 0.1], [0.9, 0.8]])
    curve = cmc(scores, ["a", "zzz"], ["a", "b"], max_rank=2)
    np.testing.assert_allclose(curve, [0.5, 0.5])


def test_cmc_rejects_nan_and_bad_shapes():
    with pytest.raises(ValueError, match=r"rows \[0\]"):
        cmc(np.array([[np.nan, 0.1]]), ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="does not match"):
        cmc(np.zeros((2, 2)), ["a"], ["a", "b"])


# --- ROC, TAR@FAR, EER ------------------------------------------------------------------------


def test_roc_hand_computed_with_ties():
    genuine = np.array([0.9, 0.7, 0.5, 0.5])
    impostor = np.array([0.7, 0.3, 0.5, 0.1])
    far, tar, thr = roc(genuine, impostor)
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.7, 0.5, 0.3, 0.1])
    # at 0.7 one genuine and one impostor are accepted together (tie), likewise at 0.5
    np.testing.assert_allclose(tar, [0, 0.25, 0.5, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(far, [0, 0.0, 0.25, 0.5, 0.75, 1.0])

    got = tar_at_far(genuine, impostor, fars=(0.1, 0.25, 0.5))
    assert got == {0.1: 0.25, 0.25: 0.5, 0.5: 1.0}
    # FAR - FRR goes -0.25 -> +0.5 between thresholds 0.7 and 0.5: crossing at 1/3 of the way
    assert eer(genuine, impostor) == pytest.approx(0.25 + 0.25 / 3)


def test_perfect_separation():
    genuine = np.array([0.8, 0.9, 0.95])
    impostor = np.linspace(-0.5, 0.5, 2000)
    assert eer(genuine, impostor) == 0.0
    assert tar_at_far(genuine, impostor) == {1e-1: 1.0, 1e-2: 1.0, 1e-3: 1.0}


def test_reversed_separation():
    genuine = np.array([-0.5, -0.4])
    impostor = np.array([0.3, 0.4, 0.5])
    assert eer(genuine, impostor) == 1.0
    assert tar_at_far(genuine, impostor, fars=(0.5,)) == {0.5: 0.0}


def test_eer_of_identical_distributions_is_half():
    rng = np.random.default_rng(1)
    assert eer(rng.normal(size=20_000), rng.normal(size=20_000)) == pytest.approx(0.5, abs=0.015)


def _random_pairs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # rounded so that ties within and across classes are common
    genuine = np.round(rng.normal(1.5, 1.0, size=600), 2)
    impostor = np.round(rng.normal(0.0, 1.0, size=4000), 2)
    return genuine, impostor


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tar_at_far_matches_brute_force_threshold_scan(seed):
    genuine, impostor = _random_pairs(seed)
    fars = (0.2, 1e-1, 1e-2, 1e-3, 3e-4)
    got = tar_at_far(genuine, impostor, fars)
    candidates = np.concatenate([[np.inf], genuine, impostor])
    for f in fars:
        best = 0.0
        for t in candidates:
            if np.mean(impostor >= t) <= f:
                best = max(best, float(np.mean(genuine >= t)))
        assert got[f] == pytest.approx(best), f


@pytest.mark.parametrize("seed", [3, 4])
def test_roc_and_tar_at_far_agree_with_sklearn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    genuine, impostor = _random_pairs(seed)
    labels = np.r_[np.ones(genuine.size), np.zeros(impostor.size)]
    fpr, tpr, thr = metrics.roc_curve(labels, np.r_[genuine, impostor], drop_intermediate=False)
    far, tar, thresholds = roc(genuine, impostor)
    np.testing.assert_allclose(far, fpr)
    np.testing.assert_allclose(tar, tpr)
    np.testing.assert_allclose(thresholds[1:], thr[1:])
    for f, value in tar_at_far(genuine, impostor, (1e-1, 1e-2, 1e-3)).items():
        assert value == pytest.approx(tpr[fpr <= f].max())


def test_far_resolution_needs_one_over_f_impostors():
    assert far_resolved(999, (1e-1, 1e-2, 1e-3)) == {1e-1: True, 1e-2: True, 1e-3: False}
    assert far_resolved(1000, (1e-3,)) == {1e-3: True}
    assert far_resolved(9, (1e-1,)) == {1e-1: False}


def test_roc_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="genuine"):
        roc(np.array([]), np.array([0.1]))
    with pytest.raises(ValueError, match="impostor"):
        roc(np.array([0.1]), np.array([np.nan]))


# --- pairs and the full evaluation ------------------------------------------------------------


def test_verification_pairs_split_by_identity():
    scores = np.arange(6, dtype=float).reshape(2, 3)
    genuine, impostor = verification_pairs(scores, [1, 2], [1, 2, 2])
    np.testing.assert_array_equal(np.sort(genuine), [0, 4, 5])
    np.testing.assert_array_equal(np.sort(impostor), [1, 2, 3])


def _toy_embeddings(n_ids: int = 40, dim: int = 32, noise: float = 0.6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    gallery = centres + noise * rng.normal(size=centres.shape)
    probes = centres + noise * rng.normal(size=centres.shape)
    ids = np.array([f"id{i:03d}" for i in range(n_ids)])
    return probes, gallery, ids


def test_evaluate_scores_summary_is_json_and_consistent():
    probes, gallery, ids = _toy_embeddings()
    scores = similarity_matrix(probes, gallery)
    result = evaluate_scores(scores, ids, ids)
    summary = result.summary()
    json.dumps(summary)  # plain floats / ints / bools only
    for key in ("rank1", "rank5", "rank10", "rank20", "tar_at_far", "eer", "n_probes"):
        assert key in summary
    assert summary["n_probes"] == 40 and summary["n_gallery"] == 40
    assert summary["n_genuine"] == 40 and summary["n_impostor"] == 40 * 39
    assert set(summary["tar_at_far"]) == {"1e-01", "1e-02", "1e-03"}
    # 1560 impostor pairs resolve 1e-3 but not 1e-4
    assert summary["tar_at_far_resolved"] == {"1e-01": True, "1e-02": True, "1e-03": True}
    assert summary["rank1"] <= summary["rank5"] <= summary["rank10"] <= summary["rank20"]
    assert 0.5 < summary["rank1"] <= 1.0
    np.testing.assert_allclose(result.cmc, cmc(scores, ids, ids, max_rank=20))
    genuine, impostor = verification_pairs(scores, ids, ids)
    assert summary["eer"] == pytest.approx(eer(genuine, impostor))

    few = evaluate_scores(scores[:5, :5], ids[:5], ids[:5], fars=(1e-1, 1e-2))
    assert few.summary()["tar_at_far_resolved"] == {"1e-01": True, "1e-02": False}


def test_evaluate_scores_counts_unmated_probes():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6]])
    result = evaluate_scores(scores, ["a", "b", "ghost"], ["a", "b"], ranks=(1, 2))
    summary = result.summary()
    assert summary["rank1"] == pytest.approx(2 / 3)
    assert summary["rank2"] == pytest.approx(2 / 3)
    assert summary["n_probes_without_mate"] == 1
    with pytest.raises(ValueError, match="no probe has a mate"):
        evaluate_scores(scores[:1], ["ghost"], ["a", "b"])


# --- plots ------------------------------------------------------------------------------------


def test_plots_write_pngs(tmp_path):
    probes, gallery, ids = _toy_embeddings()
    results = {
        "off-the-shelf": evaluate_scores(similarity_matrix(probes, gallery), ids, ids),
        "trained": evaluate_scores(similarity_matrix(probes, probes + 0.1), ids, ids),
    }
    cmc_png = plot_cmc(results, tmp_path / "cmc.png")
    roc_png = plot_roc(results, tmp_path / "sub" / "roc.png")
    for path in (cmc_png, roc_png):
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_plot_roc_accepts_plain_arrays_and_thins_long_curves(tmp_path):
    rng = np.random.default_rng(0)
    far, tar, _ = roc(rng.normal(2, 1, size=2000), rng.normal(size=50_000))
    path = plot_roc({"big": {"far": far, "tar": tar}}, tmp_path / "roc.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="empty"):
        plot_cmc({}, tmp_path / "none.png")
