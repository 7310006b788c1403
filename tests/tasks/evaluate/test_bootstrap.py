"""Bootstrap intervals: exact at no resampling, seeded, paired, failures resampled too."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.evaluate.bootstrap import (
    ProbeData,
    bootstrap_intervals,
    paired_difference,
    rank1_samples,
    resample_counts,
    tar_samples,
)
from tasks.evaluate.metrics import evaluate_scores, tar_at_far


def probe_data(n: int, seed: int, shift: float = 1.5) -> tuple[ProbeData, np.ndarray]:
    """n probes x n gallery, one mate each; genuine scores higher by ``shift`` on average."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, n)) * 0.1
    scores[np.arange(n), np.arange(n)] += shift * 0.1
    scores = np.round(scores, 2)  # ties, as quantised scores have
    mated = np.eye(n, dtype=bool)
    rows = np.repeat(np.arange(n), n).reshape(n, n)
    hit = scores[np.arange(n), np.arange(n)] > np.where(mated, -np.inf, scores).max(axis=1)
    return ProbeData(hit, scores[mated], rows[mated], scores[~mated], rows[~mated]), scores


def test_counts_are_seeded_and_sum_to_the_probe_count():
    counts = resample_counts(57, 200, seed=3)
    assert counts.shape == (200, 57) and (counts.sum(axis=1) == 57).all()
    assert np.array_equal(counts, resample_counts(57, 200, seed=3))
    assert not np.array_equal(counts, resample_counts(57, 200, seed=4))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_resampling_reproduces_the_metrics_exactly(seed: int):
    data, scores = probe_data(40, seed)
    ones = np.ones((1, 40), np.int32)
    n = 40
    full = evaluate_scores(scores, np.arange(n), np.arange(n), ranks=(1,), fars=(1e-1, 1e-2))
    # rank-1 with strict wins; the metrics count ties against the probe, so do we
    assert rank1_samples(data, ones)[0] == pytest.approx(full.rank(1))
    for far in (1e-1, 1e-2, 0.3):
        expected = tar_at_far(data.genuine, data.impostor, [far])[far]
        assert tar_samples(data, ones, far)[0] == pytest.approx(expected), far


def test_weighted_tar_equals_tar_of_the_duplicated_probes():
    data, _ = probe_data(30, 5)
    counts = resample_counts(30, 5, seed=0)
    for b, c in enumerate(counts):
        genuine = np.repeat(data.genuine, c[data.genuine_probe])
        impostor = np.repeat(data.impostor, c[data.impostor_probe])
        expected = tar_at_far(genuine, impostor, [1e-1])[1e-1]
        assert tar_samples(data, counts[b:b + 1], 1e-1)[0] == pytest.approx(expected)


def test_intervals_hold_the_estimate_and_shrink_with_more_probes():
    small, _ = probe_data(40, 0)
    large, _ = probe_data(400, 0)
    a = bootstrap_intervals(small, 300, seed=0, fars=(1e-1,))
    b = bootstrap_intervals(large, 300, seed=0, fars=(1e-1,))
    assert a == bootstrap_intervals(small, 300, seed=0, fars=(1e-1,))
    point = small.hit.mean()
    assert a["rank1"][0] <= point <= a["rank1"][1]
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(b["rank1"]) < width(a["rank1"])
    assert width(b["tar_at_far"]["1e-01"]) < width(a["tar_at_far"]["1e-01"])


def test_paired_difference_of_a_recognizer_with_itself_is_zero_and_detects_a_better_one():
    weak, _ = probe_data(200, 0, shift=0.5)
    strong, _ = probe_data(200, 0, shift=3.0)
    same = paired_difference(weak, weak, "rank1", n_resamples=200)
    assert same["ci95"] == [0.0, 0.0]
    better = paired_difference(strong, weak, "1e-02", n_resamples=200)
    assert better["ci95"][0] > 0
    with pytest.raises(ValueError, match="same probes"):
        paired_difference(weak, probe_data(10, 0)[0])


def test_failed_probes_are_resampled_as_misses():
    data, _ = probe_data(20, 1)
    failed = ProbeData(np.r_[data.hit, False, False],
                       np.r_[data.genuine, -2.0, -2.0], np.r_[data.genuine_probe, 20, 21],
                       data.impostor, data.impostor_probe)
    counts = np.ones((1, 22), np.int32)
    assert rank1_samples(failed, counts)[0] == pytest.approx(data.hit.sum() / 22)
    assert tar_samples(failed, counts, 1.0)[0] == 1.0
    assert tar_samples(failed, counts, 1e-1)[0] <= 20 / 22
