"""Bootstrap 95 % intervals for rank-1 and TAR@FAR: how much of a difference is noise.

On 57 probes one probe is 1.75 points of rank-1, so two recognizers' figures are read
against the spread a different draw of probes would give. The unit resampled is the probe
(its rank and all its genuine and impostor pairs move together), never the pair: pairs of
one probe are not independent, and resampling them would make intervals too narrow.

* Probes are drawn with replacement ``n_resamples`` times from a seeded generator, so a run
  is reproducible and two recognizers scored on the same probes with the same seed see the
  very same resamples (``paired_difference`` uses that).
* A failed probe is one of the probes: resampled like the others, a miss at every rank, its
  genuine pairs scored ``FAILED_SCORE`` (``scoring``'s convention).
* TAR@FAR in a resample is computed exactly as ``metrics.tar_at_far`` does (smallest
  threshold whose FAR <= f), on the pairs weighted by how often their probe was drawn.
* Percentile intervals (2.5 %, 97.5 %): no normality assumption for a proportion near 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tasks.evaluate.metrics import DEFAULT_FARS, far_key

N_RESAMPLES = 1000
LEVEL = 0.95
# resamples handled at once: bounds the (chunk, pairs) weight matrix
_CHUNK = 50


@dataclass(frozen=True)
class ProbeData:
    """Per-probe inputs of the resampled metrics.

    ``hit``: rank-1 success per probe (failed probes included as False); ``genuine_probe`` /
    ``impostor_probe``: the probe index of each verification pair.
    """

    hit: np.ndarray  # (P,) bool
    genuine: np.ndarray  # (Ng,) scores
    genuine_probe: np.ndarray  # (Ng,) int
    impostor: np.ndarray  # (Ni,) scores
    impostor_probe: np.ndarray  # (Ni,) int

    @property
    def n_probes(self) -> int:
        return len(self.hit)


def resample_counts(n_probes: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_probes) draw counts: a pure function of (n_probes, n_resamples, seed)."""
    rng = np.random.default_rng([int(seed), 0xB007])
    draws = rng.integers(0, n_probes, size=(n_resamples, n_probes))
    counts = np.zeros((n_resamples, n_probes), np.int32)
    rows = np.repeat(np.arange(n_resamples), n_probes)
    np.add.at(counts, (rows, draws.reshape(-1)), 1)
    return counts


def rank1_samples(data: ProbeData, counts: np.ndarray) -> np.ndarray:
    return (counts @ data.hit.astype(np.float64)) / data.n_probes


def tar_samples(data: ProbeData, counts: np.ndarray, far: float) -> np.ndarray:
    """TAR at the smallest threshold whose weighted FAR <= ``far``, per resample.

    With impostors sorted by score descending, the threshold sits just above s*, the
    highest impostor score whose inclusion pushes the weighted FAR past ``far`` (a whole
    tie group enters at once); TAR is the weighted share of genuine scores above s*.
    """
    order = np.argsort(-data.impostor, kind="stable")
    scores = data.impostor[order]
    probe = data.impostor_probe[order]
    # last index of each tie group: FAR is only evaluated where a threshold can sit
    group_end = np.r_[scores[1:] != scores[:-1], True]
    out = np.empty(len(counts))
    for start in range(0, len(counts), _CHUNK):
        c = counts[start:start + _CHUNK].astype(np.float64)
        weights = c[:, probe]  # (B, Ni)
        total = weights.sum(axis=1, keepdims=True)
        cumulative = np.cumsum(weights, axis=1) / np.maximum(total, 1e-300)
        over = (cumulative > far + 1e-12) & group_end[None, :]
        has = over.any(axis=1)
        first = np.argmax(over, axis=1)
        cut = np.where(has, scores[first], -np.inf)  # s*
        g_weights = c[:, data.genuine_probe]
        g_total = g_weights.sum(axis=1)
        above = (data.genuine[None, :] > cut[:, None]) * g_weights
        out[start:start + len(c)] = above.sum(axis=1) / np.maximum(g_total, 1e-300)
    return out


def interval(samples: np.ndarray, level: float = LEVEL) -> list[float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return [float(low), float(high)]


def bootstrap_intervals(data: ProbeData, n_resamples: int = N_RESAMPLES, seed: int = 0,
                        fars: Iterable[float] = DEFAULT_FARS) -> dict:
    """``{"rank1": [lo, hi], "tar_at_far": {"1e-02": [lo, hi], ...}, ...}`` for metrics.json."""
    counts = resample_counts(data.n_probes, n_resamples, seed)
    return {
        "level": LEVEL, "n_resamples": n_resamples, "seed": seed, "unit": "probe",
        "rank1": interval(rank1_samples(data, counts)),
        "tar_at_far": {far_key(f): interval(tar_samples(data, counts, f)) for f in fars},
    }


def paired_difference(a: ProbeData, b: ProbeData, metric: str = "rank1",
                      n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Interval of (a - b) over the same resamples of the same probes.

    Two recognizers on one probe set are correlated: the interval of their difference is
    narrower than what two overlapping marginal intervals suggest, and is the right test of
    "a beats b". ``metric``: ``rank1`` or a FAR key such as ``1e-02``.
    """
    if a.n_probes != b.n_probes:
        raise ValueError(f"paired bootstrap needs the same probes ({a.n_probes} vs "
                         f"{b.n_probes})")
    counts = resample_counts(a.n_probes, n_resamples, seed)
    if metric == "rank1":
        diff = rank1_samples(a, counts) - rank1_samples(b, counts)
    else:
        far = float(metric)
        diff = tar_samples(a, counts, far) - tar_samples(b, counts, far)
    return {"metric": metric, "mean": float(diff.mean()), "ci95": interval(diff)}
