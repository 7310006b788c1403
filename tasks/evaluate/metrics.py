"""Identification and verification metrics for sketch (probe) vs mugshot (gallery) matching.

Conventions, chosen so that numbers are reproducible and never flatter a recognizer:

* Scores are similarities: higher means "more likely the same person". A pair is accepted at
  threshold ``t`` when ``score >= t``.
* CMC rank is counted in gallery *entries*. A probe's rank is 1 + the number of impostor gallery
  entries scoring at least as high as its best mated entry. A tie with an impostor therefore
  counts against the probe (pessimistic): argsort-based ranking would instead let the arbitrary
  order of equal floats decide, which changes rank-1 between runs and between recognizers that
  saturate (e.g. quantised or clipped scores).
* A probe whose identity has no entry in the gallery is a miss at every rank. It stays in the
  denominator because dropping it would silently turn an open-set search into a closed-set one
  and inflate rank-k; ``n_probes_without_mate`` reports how many there were.
* The ROC is exact: one point per distinct score, no threshold grid. insightface's IJB script
  takes sklearn's ROC and reads TAR at the point whose FAR is *nearest* the target (which may
  exceed it); its LFW script interpolates a threshold on a grid. Here TAR@FAR=f is the TAR at
  the smallest threshold whose FAR <= f, i.e. the best operating point that honours the FAR
  budget. That never overstates TAR, and it is what a deployed threshold would achieve.
* FAR=f needs at least 1/f impostor pairs to be measurable at all; below that the only
  achievable FAR <= f is 0, so TAR@FAR=f is really TAR@FAR=0. The value is still returned, and
  ``far_resolved`` flags it so reports can mark it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_RANKS: tuple[int, ...] = (1, 5, 10, 20)
DEFAULT_FARS: tuple[float, ...] = (1e-1, 1e-2, 1e-3)

# Rows of the score matrix processed at once in ``cmc``; bounds the (rows, G) temporaries when
# galleries grow to millions of distractors.
_CMC_CHUNK = 256


def far_key(far: float) -> str:
    """JSON key for a FAR target: ``1e-01``. Fixed width so keys sort and diff cleanly."""
    return f"{far:.0e}"


def _rows_list(rows: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    more = f" (+{len(rows) - limit} more)" if len(rows) > limit else ""
    return f"[{shown}]{more}"


def _check_vectors(name: str, vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, dim), got shape {vectors.shape}")
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        raise ValueError(f"{name} rows {_rows_list(bad)} contain NaN or inf")
    norms = np.linalg.norm(vectors, axis=1)
    zero = np.flatnonzero(norms <= np.finfo(np.float64).tiny)
    if zero.size:
        raise ValueError(f"{name} rows {_rows_list(zero)} are zero vectors (no direction)")
    return vectors / norms[:, None]


def similarity_matrix(probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Cosine similarity (P, G) in float64.

    Normalising here rather than trusting the caller means scores from encoders that return
    unnormalised features (or stored float16 vectors) stay comparable. Bad rows are rejected
    instead of yielding NaN scores, because a NaN would sort unpredictably and corrupt ranks.
    """
    p = _check_vectors("probes", probes)
    g = _check_vectors("gallery", gallery)
    if p.shape[1] != g.shape[1]:
        raise ValueError(f"probe dim {p.shape[1]} != gallery dim {g.shape[1]}")
    return np.clip(p @ g.T, -1.0, 1.0)


def _check_scores(
    scores: np.ndarray, probe_ids: Sequence[Any], gallery_ids: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    probe_ids = np.asarray(probe_ids)
    gallery_ids = np.asarray(gallery_ids)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (P, G), got shape {scores.shape}")
    if scores.shape != (len(probe_ids), len(gallery_ids)):
        raise ValueError(
            f"scores shape {scores.shape} does not match {len(probe_ids)} probe ids "
            f"x {len(gallery_ids)} gallery ids"
        )
    if scores.size == 0:
        raise ValueError("need at least one probe and one gallery entry")
    bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))
    if bad.size:
        raise ValueError(f"scores rows {_rows_list(bad)} contain NaN or inf")
    return scores, probe_ids, gallery_ids


def _probe_ranks(scores: np.ndarray, probe_ids: np.ndarray, gallery_ids: np.ndarray) -> np.ndarray:
    """Rank of each probe's best mate (1-based, pessimistic ties); inf when it has no mate."""
    ranks = np.full(len(probe_ids), np.inf)
    for start in range(0, len(probe_ids), _CMC_CHUNK):
        block = scores[start : start + _CMC_CHUNK]
        mated = probe_ids[start : start + _CMC_CHUNK, None] == gallery_ids[None, :]
        has_mate = mated.any(axis=1)
        best_mate = np.where(mated, block, -np.inf).max(axis=1)
        ahead = ((block >= best_mate[:, None]) & ~mated).sum(axis=1)
        ranks[start : start + len(block)] = np.where(has_mate, 1 + ahead, np.inf)
    return ranks


def cmc(
    scores: np.ndarray,
    probe_ids: Sequence[Any],
    gallery_ids: Sequence[Any],
    max_rank: int = 20,
) -> np.ndarray:
    """Identification rate at ranks 1..max_rank (index k-1 holds rank k).

    Ties and unmated probes follow the module conventions: ties with impostors go against the
    probe, and probes without a gallery mate are misses at every rank.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    scores, probe_ids, gallery_ids = _check_scores(scores, probe_ids, gallery_ids)
    ranks = _probe_ranks(scores, probe_ids, gallery_ids)
    ks = np.arange(1, max_rank + 1)
    return (ranks[None, :] <= ks[:, None]).mean(axis=1)


def _check_pair_scores(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError(f"no {name} scores: the ROC is undefined")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} scores contain NaN or inf")
    return values


def roc(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC: (far, tar, thresholds), one point per distinct score plus a leading +inf.

    Thresholds descend, so FAR and TAR ascend from (0, 0). Genuine and impostor pairs with the
    same score are accepted together at that threshold: the curve moves diagonally there rather
    than pretending an order exists between equal scores. Matches
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    """
    gen = np.sort(_check_pair_scores("genuine", genuine))
    imp = np.sort(_check_pair_scores("impostor", impostor))
    distinct = np.unique(np.concatenate([gen, imp]))[::-1]
    thresholds = np.concatenate([[np.inf], distinct])
    # count of scores >= t is n - (number strictly below t)
    tar = (gen.size - np.searchsorted(gen, thresholds, side="left")) / gen.size
    far = (imp.size - np.searchsorted(imp, thresholds, side="left")) / imp.size
    return far, tar, thresholds


def far_resolved(n_impostor: int, fars: Iterable[float] = DEFAULT_FARS) -> dict[float, bool]:
    """Whether each FAR target is measurable with ``n_impostor`` impostor pairs (n >= 1/f)."""
    # tolerance so 1000 impostors resolve 1e-3 despite 1e-3 not being exact in binary
    return {float(f): n_impostor * float(f) >= 1.0 - 1e-9 for f in fars}


def tar_at_far(
    genuine: np.ndarray,
    impostor: np.ndarray,
    fars: Iterable[float] = DEFAULT_FARS,
) -> dict[float, float]:
    """TAR at the smallest threshold whose FAR <= f, for each f.

    Check ``far_resolved(len(impostor), fars)`` before reporting: an unresolved target is
    really TAR at FAR 0.
    """
    far, tar, _ = roc(genuine, impostor)
    return _tar_at_far_from_roc(far, tar, fars)


def _tar_at_far_from_roc(
    far: np.ndarray, tar: np.ndarray, fars: Iterable[float]
) -> dict[float, float]:
    out: dict[float, float] = {}
    for f in fars:
        # far ascends; the last index with far <= f is the smallest admissible threshold.
        idx = int(np.searchsorted(far, float(f), side="right")) - 1
        out[float(f)] = float(tar[max(idx, 0)])  # idx >= 0 anyway: the +inf point has FAR 0
    return out


def eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Equal error rate: where FAR and FRR cross, linearly interpolated between ROC points.

    Interpolating along the exact ROC segment (rather than taking the nearest point, as many
    scripts do) makes the value independent of how finely thresholds happen to be sampled.
    """
    far, tar, _ = roc(genuine, impostor)
    return _eer_from_roc(far, tar)


def _eer_from_roc(far: np.ndarray, tar: np.ndarray) -> float:
    diff = far - (1.0 - tar)  # FAR - FRR: -1 at the +inf threshold, rises monotonically to +1
    i = int(np.argmax(diff >= 0.0))
    if diff[i] == 0.0 or i == 0:
        return float(far[i])
    d0, d1 = diff[i - 1], diff[i]
    a = -d0 / (d1 - d0)
    return float(far[i - 1] + a * (far[i] - far[i - 1]))


def verification_pairs(
    scores: np.ndarray, probe_ids: Sequence[Any], gallery_ids: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray]:
    """All probe x gallery scores split into (genuine, impostor) by identity match."""
    scores, probe_ids, gallery_ids = _check_scores(scores, probe_ids, gallery_ids)
    mated = probe_ids[:, None] == gallery_ids[None, :]
    return scores[mated], scores[~mated]


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one recognizer on one probe/gallery split.

    Curves are kept as arrays for plotting; ``summary()`` is the small JSON-ready part that
    goes into reports and artifacts (the ROC can have as many points as there are pairs).
    """

    ranks: tuple[int, ...]
    cmc: np.ndarray  # identification rate at ranks 1..max(ranks)
    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    tar_at_far: dict[float, float]
    tar_at_far_resolved: dict[float, bool]
    eer: float
    n_probes: int
    n_gallery: int
    n_probes_without_mate: int
    n_genuine: int
    n_impostor: int

    def rank(self, k: int) -> float:
        return float(self.cmc[k - 1])

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"rank{k}": self.rank(k) for k in self.ranks}
        out["tar_at_far"] = {far_key(f): float(v) for f, v in self.tar_at_far.items()}
        out["tar_at_far_resolved"] = {
            far_key(f): bool(v) for f, v in self.tar_at_far_resolved.items()
        }
        out["eer"] = float(self.eer)
        out["n_probes"] = int(self.n_probes)
        out["n_gallery"] = int(self.n_gallery)
        out["n_probes_without_mate"] = int(self.n_probes_without_mate)
        out["n_genuine"] = int(self.n_genuine)
        out["n_impostor"] = int(self.n_impostor)
        return out


def evaluate_scores(
    scores: np.ndarray,
    probe_ids: Sequence[Any],
    gallery_ids: Sequence[Any],
    ranks: Iterable[int] = DEFAULT_RANKS,
    fars: Iterable[float] = DEFAULT_FARS,
) -> Evaluation:
    """All protocol metrics from one (P, G) similarity matrix; see the module conventions."""
    ranks = tuple(int(k) for k in ranks)
    fars = tuple(float(f) for f in fars)
    if not ranks or min(ranks) < 1:
        raise ValueError(f"ranks must be positive integers, got {ranks}")
    scores, probe_ids, gallery_ids = _check_scores(scores, probe_ids, gallery_ids)
    curve = cmc(scores, probe_ids, gallery_ids, max_rank=max(ranks))
    genuine, impostor = verification_pairs(scores, probe_ids, gallery_ids)
    if genuine.size == 0:
        raise ValueError("no probe has a mate in the gallery: check that the ids match")
    if impostor.size == 0:
        raise ValueError("no impostor pairs: probes and gallery share a single identity")
    far, tar, thresholds = roc(genuine, impostor)
    has_mate = np.isin(probe_ids, gallery_ids)
    return Evaluation(
        ranks=ranks,
        cmc=curve,
        far=far,
        tar=tar,
        thresholds=thresholds,
        tar_at_far=_tar_at_far_from_roc(far, tar, fars),
        tar_at_far_resolved=far_resolved(impostor.size, fars),
        eer=_eer_from_roc(far, tar),
        n_probes=len(probe_ids),
        n_gallery=len(gallery_ids),
        n_probes_without_mate=int((~has_mate).sum()),
        n_genuine=int(genuine.size),
        n_impostor=int(impostor.size),
    )
