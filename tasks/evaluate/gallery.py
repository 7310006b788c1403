"""The gallery a probe is searched against: vectors in a LanceDB table, top-k per probe.

Forensic search runs against galleries of thousands to millions of mugshots, so identification
goes through the same engine a deployment would use: exact (brute-force) search while the
gallery is small, an ANN index past a size threshold. Because an ANN index can miss true
neighbours, whenever one is used its recall@k against exact search on the same queries is
measured and reported next to the metrics it produced.

Candidates come back from LanceDB and are re-scored here in float64 from the vectors this
module wrote. LanceDB's float32 distances (and PQ's approximate ones) would otherwise disagree
in the last digits with the score matrix used for verification, and a rank-1 rebuilt from the
raw-scores file could differ from the reported one on a near-tie.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from tasks import storage
from tasks.storage import Workspace

GALLERY_PREFIX = "gallery"
# IVF_PQ trains a 256-centroid codebook per sub-vector and LanceDB builds no PQ index below
# 256 rows; under a few thousand rows PQ saves nothing worth its recall loss, so small
# galleries that still cross the ANN threshold (tests, tiny deployments) get IVF_FLAT.
PQ_MIN_ROWS = 4096
# Rows per IVF partition LanceDB trains on (its sample rate): it trains no more partitions
# than rows / this.
ROWS_PER_PARTITION = 256
# Searched partitions as a share of all partitions (at least MIN_NPROBES), and PQ candidates
# re-ranked exactly per result. Tuned with benchmarks/gallery.py for recall@20 >= 0.95 on
# clustered 128-d vectors at 100k rows; see the README figures.
NPROBES_SHARE = 0.1
MIN_NPROBES = 8
# Exact re-ranking of refine * k PQ candidates. More rows means more vectors quantised to
# near-identical codes, so large galleries re-rank more (benchmarks/gallery.py, top-20 over
# clustered 128-d vectors: 100k rows at 10 -> recall 0.992; 1M rows at 10 -> 0.937, at 20 ->
# 0.990 for the same 34 ms a query).
REFINE_FACTOR = 10
LARGE_GALLERY_ROWS = 250_000
LARGE_REFINE_FACTOR = 20


@dataclass(frozen=True)
class IndexPlan:
    """How an ANN index is built and queried; recorded in metrics.json so runs compare."""

    index_type: str
    num_partitions: int
    num_sub_vectors: int | None
    nprobes: int
    refine_factor: int | None

    def as_dict(self) -> dict:
        return asdict(self)


def plan_index(n_rows: int, dim: int) -> IndexPlan:
    """Index parameters for a gallery of ``n_rows`` vectors of ``dim`` dimensions.

    sqrt(N) partitions is LanceDB's (and FAISS's) rule of thumb: it balances the cost of
    choosing partitions against scanning them. Eight dimensions per PQ sub-vector keeps
    enough resolution for cosine ranking of face vectors, and the exact re-ranking of
    ``REFINE_FACTOR * k`` candidates recovers most of what the quantiser loses.
    """
    if n_rows < 1:
        raise ValueError("cannot index an empty gallery")
    cap = max(1, n_rows // ROWS_PER_PARTITION)
    partitions = max(1, min(round(math.sqrt(n_rows)), cap))
    nprobes = min(partitions, max(MIN_NPROBES, math.ceil(partitions * NPROBES_SHARE)))
    if n_rows < PQ_MIN_ROWS:
        partitions = max(2, min(round(math.sqrt(n_rows)), 16)) if n_rows >= 4 else 1
        nprobes = max(1, math.ceil(partitions / 2))
        return IndexPlan("IVF_FLAT", partitions, None, nprobes, None)
    sub_vectors = dim // 8 if dim % 8 == 0 else (dim // 4 if dim % 4 == 0 else 1)
    refine = LARGE_REFINE_FACTOR if n_rows >= LARGE_GALLERY_ROWS else REFINE_FACTOR
    return IndexPlan("IVF_PQ", partitions, sub_vectors, nprobes, refine)


def table_name(recognizer: str, run_id: str) -> str:
    """One gallery table per recognizer and run: runs never read each other's galleries."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{recognizer}_{run_id}").strip("_").lower()
    return f"{GALLERY_PREFIX}_{slug}"[:200]


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32): cosine is then a dot product."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected (N, dim) vectors, got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    bad = ~np.isfinite(vectors).all(axis=1) | (norms[:, 0] <= 0)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} vectors are zero or non-finite; first at row "
                         f"{int(np.flatnonzero(bad)[0])}")
    return vectors / norms


@dataclass(frozen=True)
class Gallery:
    """A gallery written to LanceDB, with the arrays kept in memory for re-scoring."""

    table: str
    ids: np.ndarray  # (G,) gallery ids (face ids)
    identities: np.ndarray  # (G,) identity ids
    vectors: np.ndarray  # (G, D) unit float32
    index: IndexPlan | None
    index_stats: dict | None
    seconds_to_build: float

    def __len__(self) -> int:
        return len(self.ids)


def build_gallery(workspace: Workspace, table: str, ids: np.ndarray, identities: np.ndarray,
                  vectors: np.ndarray, *, ann_threshold: int) -> Gallery:
    """Write the gallery table; index it when it holds more than ``ann_threshold`` rows."""
    import time

    started = time.perf_counter()
    ids, identities = np.asarray(ids, dtype=object), np.asarray(identities, dtype=object)
    vectors = unit_rows(vectors)
    if not (len(ids) == len(identities) == len(vectors)) or not len(ids):
        raise ValueError(f"gallery needs matching non-empty ids ({len(ids)}), identities "
                         f"({len(identities)}) and vectors ({len(vectors)})")
    dim = vectors.shape[1]
    rows = pa.table({
        "gallery_id": pa.array(list(ids), pa.string()),
        "identity_id": pa.array(list(identities), pa.string()),
        "position": pa.array(np.arange(len(ids), dtype=np.int64)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
    })
    storage.write_table(workspace, table, rows)
    plan = stats = None
    if len(ids) > ann_threshold:
        plan = plan_index(len(ids), dim)
        stats = storage.create_vector_index(
            workspace, table, index_type=plan.index_type, distance="cosine",
            num_partitions=plan.num_partitions, num_sub_vectors=plan.num_sub_vectors)
    return Gallery(table, ids, identities, vectors, plan, stats,
                   time.perf_counter() - started)


@dataclass(frozen=True)
class Candidates:
    """Top-k gallery rows per probe, best first; padded with -1 / -inf past the gallery."""

    positions: np.ndarray  # (Q, k) int64 row in the gallery arrays, -1 = none
    scores: np.ndarray  # (Q, k) float64 cosine, -inf = none
    seconds: float

    @property
    def k(self) -> int:
        return self.positions.shape[1]


def search(workspace: Workspace, gallery: Gallery, probes: np.ndarray, k: int, *,
           exact: bool | None = None) -> Candidates:
    """Top-``k`` gallery rows per probe through LanceDB, re-scored in float64.

    ``exact=None`` uses the index when the gallery has one; ``True`` forces a brute-force
    scan (the ground truth for recall); ``False`` requires the index.
    """
    import time

    if exact is None:
        exact = gallery.index is None
    if not exact and gallery.index is None:
        raise ValueError(f"gallery {gallery.table} has no ANN index to search")
    probes = unit_rows(probes)
    started = time.perf_counter()
    plan = gallery.index
    found = storage.vector_search(
        workspace, gallery.table, probes, k, columns=["position"], distance="cosine",
        exact=exact, nprobes=None if exact or plan is None else plan.nprobes,
        refine_factor=None if exact or plan is None else plan.refine_factor)
    seconds = time.perf_counter() - started
    positions = np.full((len(probes), k), -1, dtype=np.int64)
    query = found.column("query_index").to_numpy()
    where = found.column("position").to_numpy()
    order = np.argsort(query, kind="stable")
    query, where = query[order], where[order]
    slot = np.arange(len(query)) - np.searchsorted(query, query, side="left")
    keep = slot < k
    positions[query[keep], slot[keep]] = where[keep]
    return _rescore(gallery, probes, positions, seconds)


def _rescore(gallery: Gallery, probes: np.ndarray, positions: np.ndarray,
             seconds: float) -> Candidates:
    valid = positions >= 0
    scores = np.full(positions.shape, -np.inf)
    rows, cols = np.nonzero(valid)
    scores[rows, cols] = np.einsum(
        "ij,ij->i", probes[rows].astype(np.float64),
        gallery.vectors[positions[rows, cols]].astype(np.float64))
    # best first; stable so LanceDB's own tie order (row id) survives equal scores
    order = np.argsort(-scores, axis=1, kind="stable")
    return Candidates(np.take_along_axis(positions, order, axis=1),
                      np.take_along_axis(scores, order, axis=1), seconds)


def recall_at_k(approx: Candidates, exact: Candidates) -> float:
    """Mean share of the exact top-k that the approximate search also returned."""
    shares = []
    for found, truth in zip(approx.positions, exact.positions, strict=True):
        truth = truth[truth >= 0]
        if truth.size:
            shares.append(np.isin(truth, found[found >= 0]).mean())
    return float(np.mean(shares)) if shares else 1.0


def brute_force_top_k(gallery_unit: np.ndarray, probes: np.ndarray,
                      k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k with numpy alone (matrix product + argpartition): positions, scores.

    ``gallery_unit`` rows must already be unit length (``Gallery.vectors`` are): normalising
    a million rows per query would cost more than the search. The yardstick for the
    LanceDB paths in ``benchmarks/gallery.py``; in memory, so only for galleries that fit.
    """
    probes = unit_rows(probes)
    k = min(k, len(gallery_unit))
    scores = probes @ gallery_unit.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
