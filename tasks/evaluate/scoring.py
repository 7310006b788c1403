"""From probe and gallery vectors to the protocol's metrics, and back from the saved scores.

Conventions on top of ``metrics.py``'s (pessimistic ties, unmated probes are misses):

* A probe that failed ingestion (no face, unreadable, ...) is a miss at every rank and counts
  in ``n_probes``. In verification it is a false non-match against each of its gallery mates:
  one genuine score of ``FAILED_SCORE`` (-2, below any cosine) per mate, rejected at every
  threshold. That is ISO/IEC 19795-1's treatment of a failure to acquire; leaving those
  pairs out would raise TAR by exactly the share of inputs the system could not use.
* Identification comes from the top-k search (``gallery.search``), the same path a
  deployment would take, exact or ANN.
* Verification pairs are the full probe x gallery matrix while it has at most
  ``matrix_limit`` cells. Past that: every genuine pair, and impostor pairs against a seeded
  uniform sample of gallery rows (probes x sample <= ``matrix_limit``). Not the top-k
  impostors: those give the exact impostor count above a threshold only while no probe has
  more than k impostors above it, i.e. for FAR below about k / gallery size (2e-5 for top-20
  in a million), far under the 1e-3..1e-1 the protocol reports. A uniform sample estimates
  FAR without bias at every threshold, with resolution 1 / (probes x sample), which
  ``tar_at_far_resolved`` flags.
* The scores table holds each scored pair once with flags ``in_top_k`` (CMC rows) and
  ``verification`` (ROC rows); ``rebuild`` recomputes every figure from it plus the inputs
  table, with the same functions the run used.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.evaluate.bootstrap import ProbeData
from tasks.evaluate.gallery import (
    Candidates,
    build_gallery,
    recall_at_k,
    search,
    unit_rows,
)
from tasks.evaluate.metrics import (
    DEFAULT_FARS,
    DEFAULT_RANKS,
    Evaluation,
    eer,
    far_resolved,
    roc,
    tar_at_far,
)
from tasks.storage import Workspace

FAILED_SCORE = -2.0
RANKS: tuple[int, ...] = DEFAULT_RANKS
FARS: tuple[float, ...] = DEFAULT_FARS
TOP_K = max(RANKS)


@dataclass(frozen=True)
class Side:
    """Usable probes or gallery rows: ids, identities and vectors in one order."""

    ids: np.ndarray
    identities: np.ndarray
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Scored:
    """One recognizer's result: metrics, the pairs they came from, how they were searched."""

    evaluation: Evaluation
    pairs: pa.Table  # probe_id, gallery_id, score, genuine, in_top_k, verification
    search: dict[str, Any]
    verification: dict[str, Any]


def failed_genuine(failed_identities: Sequence[str], gallery_identities: Sequence[str]
                   ) -> np.ndarray:
    """``FAILED_SCORE`` once per (failed probe, gallery mate) pair."""
    per_identity = Counter(gallery_identities)
    count = sum(per_identity.get(identity, 0) for identity in failed_identities)
    return np.full(count, FAILED_SCORE)


def ranks_from_pairs(probe_index: np.ndarray, score: np.ndarray, genuine: np.ndarray,
                     n_probes: int) -> np.ndarray:
    """Rank of each probe's best mate among its scored pairs (inf: no mate among them).

    1 + the impostors scoring at least as high as the best mate: ``metrics.cmc``'s
    pessimistic tie rule, applied to whatever pairs were scored (the top-k).
    """
    best = np.full(n_probes, -np.inf)
    np.maximum.at(best, probe_index[genuine], score[genuine])
    ahead = np.zeros(n_probes)
    beaten = ~genuine & (score >= best[probe_index])
    np.add.at(ahead, probe_index[beaten], 1)
    return np.where(np.isfinite(best), 1 + ahead, np.inf)


def summarise(ranks: np.ndarray, genuine: np.ndarray, impostor: np.ndarray, n_gallery: int,
              n_without_mate: int) -> Evaluation:
    """An ``Evaluation`` from per-probe ranks and verification scores (failures included)."""
    if genuine.size == 0:
        raise ValueError("no genuine pairs: no probe has a mate in the gallery")
    if impostor.size == 0:
        raise ValueError("no impostor pairs: the gallery holds a single identity")
    ks = np.arange(1, max(RANKS) + 1)
    curve = (ranks[None, :] <= ks[:, None]).mean(axis=1)
    far, tar, thresholds = roc(genuine, impostor)
    return Evaluation(
        ranks=RANKS, cmc=curve, far=far, tar=tar, thresholds=thresholds,
        tar_at_far=tar_at_far(genuine, impostor, FARS),
        tar_at_far_resolved=far_resolved(impostor.size, FARS),
        eer=eer(genuine, impostor), n_probes=len(ranks), n_gallery=n_gallery,
        n_probes_without_mate=n_without_mate, n_genuine=int(genuine.size),
        n_impostor=int(impostor.size),
    )


def _pairs_table(probes: Side, gallery: Side, pi: np.ndarray, gi: np.ndarray,
                 score: np.ndarray, in_top_k: np.ndarray, verification: np.ndarray) -> pa.Table:
    """Pairs as Arrow with dictionary-encoded ids (millions of rows share few strings)."""
    def ids(values: np.ndarray, index: np.ndarray) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(index.astype(np.int32)),
                                              pa.array(list(values), pa.string()))
    return pa.table({
        "probe_id": ids(probes.ids, pi),
        "gallery_id": ids(gallery.ids, gi),
        "score": pa.array(score, pa.float64()),
        "genuine": pa.array(probes.identities[pi] == gallery.identities[gi], pa.bool_()),
        "in_top_k": pa.array(in_top_k, pa.bool_()),
        "verification": pa.array(verification, pa.bool_()),
    })


def _top_k_pairs(candidates: Candidates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(candidates.positions >= 0)
    return rows, candidates.positions[rows, cols], candidates.scores[rows, cols]


def score_recognizer(
    workspace: Workspace,
    table: str,
    probes: Side,
    gallery: Side,
    failed_probe_identities: Sequence[str],
    *,
    ann_threshold: int,
    matrix_limit: int,
    recall_queries: int,
    seed: int = 0,
    k: int = TOP_K,
) -> Scored:
    """Search, score and summarise one recognizer's vectors (see the module conventions)."""
    if len(probes) == 0:
        raise ValueError("no usable probe: every sketch failed ingestion")
    probe_unit, gallery_unit = unit_rows(probes.vectors), unit_rows(gallery.vectors)
    indexed = build_gallery(workspace, table, gallery.ids, gallery.identities, gallery_unit,
                            ann_threshold=ann_threshold)
    candidates = search(workspace, indexed, probe_unit, k)
    search_info: dict[str, Any] = {
        "mode": "ann" if indexed.index else "exact", "k": k, "table": table,
        "build_seconds": round(indexed.seconds_to_build, 3),
        "seconds": round(candidates.seconds, 3),
    }
    if indexed.index:
        rng = np.random.default_rng([seed, 0xA11])
        n = min(len(probes), recall_queries)
        sample = np.sort(rng.choice(len(probes), size=n, replace=False))
        exact = search(workspace, indexed, probe_unit[sample], k, exact=True)
        approx = Candidates(candidates.positions[sample], candidates.scores[sample], 0.0)
        search_info.update(index=indexed.index.as_dict(), index_stats=indexed.index_stats,
                           recall_at_k=recall_at_k(approx, exact), recall_queries=n,
                           exact_seconds=round(exact.seconds, 3))

    started = time.perf_counter()
    P, G = len(probes), len(gallery)
    tk_p, tk_g, tk_s = _top_k_pairs(candidates)
    if P * G <= matrix_limit:
        matrix = probe_unit.astype(np.float64) @ gallery_unit.astype(np.float64).T
        pi, gi = np.divmod(np.arange(P * G), G)
        score = matrix.reshape(-1)
        in_top_k = np.zeros(P * G, bool)
        in_top_k[tk_p * G + tk_g] = True
        verification = np.ones(P * G, bool)
        verification_info = {"mode": "full", "pairs": P * G}
    else:
        size = max(1, min(G, matrix_limit // P))
        rng = np.random.default_rng([seed, 0x5A4])
        sample = np.sort(rng.choice(G, size=size, replace=False))
        positions_of: dict[str, list[int]] = {}
        for position, identity in enumerate(gallery.identities):
            positions_of.setdefault(identity, []).append(position)
        gen_p = np.array([p for p, identity in enumerate(probes.identities)
                          for _ in positions_of.get(identity, [])], dtype=np.int64)
        gen_g = np.array([g for identity in probes.identities
                          for g in positions_of.get(identity, [])], dtype=np.int64)
        samp_p, samp_g = np.repeat(np.arange(P), size), np.tile(sample, P)
        keys = np.concatenate([tk_p * G + tk_g, gen_p * G + gen_g, samp_p * G + samp_g])
        unique, first = np.unique(keys, return_index=True)
        pi, gi = np.divmod(unique, G)
        # top-k pairs keep the search's own scores, so CMC and ROC read identical numbers
        score = np.einsum("ij,ij->i", probe_unit[pi].astype(np.float64),
                          gallery_unit[gi].astype(np.float64))
        from_top_k = first < len(tk_p)
        score[from_top_k] = tk_s[first[from_top_k]]
        in_top_k = np.isin(unique, tk_p * G + tk_g)
        verification = np.isin(unique, np.concatenate([gen_p * G + gen_g,
                                                       samp_p * G + samp_g]))
        verification_info = {"mode": "sampled", "gallery_sample": int(size),
                             "pairs": int(verification.sum())}
    pairs = _pairs_table(probes, gallery, pi, gi, score, in_top_k, verification)
    evaluation = evaluation_from_pairs(pairs, probes.ids, probes.identities,
                                       failed_probe_identities, gallery.identities)
    verification_info["seconds"] = round(time.perf_counter() - started, 3)
    return Scored(evaluation, pairs, search_info, verification_info)


def _read_pairs(pairs: pa.Table, probe_ids: Sequence[str]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(probe index, score, genuine, verification mask, rank) from a scores table: the one
    reading that metrics and their bootstrap share."""
    index_of = {probe: i for i, probe in enumerate(probe_ids)}
    probe_index = np.array([index_of[p] for p in pairs.column("probe_id").to_pylist()],
                           dtype=np.int64)
    score = pairs.column("score").to_numpy()
    genuine = pairs.column("genuine").to_numpy(zero_copy_only=False)
    top = pairs.column("in_top_k").to_numpy(zero_copy_only=False)
    check = pairs.column("verification").to_numpy(zero_copy_only=False)
    ranks = ranks_from_pairs(probe_index[top], score[top], genuine[top], len(probe_ids))
    return probe_index, score, genuine, check, ranks


def evaluation_from_pairs(pairs: pa.Table, probe_ids: Sequence[str],
                          probe_identities: Sequence[str], failed_identities: Sequence[str],
                          gallery_identities: Sequence[str]) -> Evaluation:
    """Metrics from a scores table: the one path both the run and ``rebuild`` take.

    ``probe_ids`` / ``probe_identities`` are the usable probes; ``failed_identities`` one
    entry per failed probe; ``gallery_identities`` one per usable gallery row.
    """
    probe_index, score, genuine, check, ranks = _read_pairs(pairs, probe_ids)
    ranks = np.concatenate([ranks, np.full(len(failed_identities), np.inf)])
    genuine_scores = np.concatenate([score[check & genuine],
                                     failed_genuine(failed_identities, gallery_identities)])
    mated = set(gallery_identities)
    without = sum(1 for i in [*probe_identities, *failed_identities] if i not in mated)
    return summarise(ranks, genuine_scores, score[check & ~genuine], len(gallery_identities),
                     without)


def probe_data_from_pairs(pairs: pa.Table, probe_ids: Sequence[str],
                          failed_identities: Sequence[str],
                          gallery_identities: Sequence[str]) -> ProbeData:
    """Per-probe hits and verification pairs for ``bootstrap``; the same reading of the
    scores table as ``evaluation_from_pairs``, failed probes appended after the usable ones.
    """
    probe_index, score, genuine, check, ranks = _read_pairs(pairs, probe_ids)
    hit = np.concatenate([ranks <= 1, np.zeros(len(failed_identities), bool)])
    per_identity = Counter(gallery_identities)
    failed_probe = np.array([len(probe_ids) + j for j, identity in enumerate(failed_identities)
                             for _ in range(per_identity.get(identity, 0))], dtype=np.int64)
    return ProbeData(
        hit=hit,
        genuine=np.concatenate([score[check & genuine], np.full(len(failed_probe),
                                                                FAILED_SCORE)]),
        genuine_probe=np.concatenate([probe_index[check & genuine], failed_probe]),
        impostor=score[check & ~genuine], impostor_probe=probe_index[check & ~genuine])


# --------------------------------------------------------------------------- files

INPUT_COLUMNS = ("role", "entry_id", "identity_id", "origin", "kind", "source_path",
                 "face_id", "status", "detail")


def rebuild(scores_path: str | Path, inputs_path: str | Path) -> dict[str, Evaluation]:
    """Every recognizer's metrics again, from ``scores.parquet`` and ``inputs.parquet`` only."""
    import pyarrow.parquet as pq

    scores = pq.read_table(scores_path)
    inputs = pq.read_table(inputs_path).to_pylist()
    probes = [r for r in inputs if r["role"] == "probe"]
    usable = [r for r in probes if r["status"] == "ok"]
    failed = [r["identity_id"] for r in probes if r["status"] != "ok"]
    gallery = [r["identity_id"] for r in inputs if r["role"] == "gallery" and r["status"] == "ok"]
    out: dict[str, Evaluation] = {}
    names = scores.column("recognizer").cast(pa.string())
    for name in pc.unique(names).to_pylist():
        out[name] = evaluation_from_pairs(
            scores.filter(pc.equal(names, name)), [r["entry_id"] for r in usable],
            [r["identity_id"] for r in usable], failed, gallery)
    return out
