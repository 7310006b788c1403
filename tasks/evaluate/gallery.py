"""The gallery a probe is searched against: vectors in a LanceDB table, top-k per probe.

Forensic search runs against galleries of thousands to millions of mugshots. The gallery is
stored in LanceDB; how it is searched is a plan chosen by measurement (benchmarks/gallery.py,
1,000 probes, 128-d): every LanceDB call costs milliseconds whatever it does, so one exact
*blocked* matrix product over the gallery vectors (read once, ``load_gallery``) with a
``torch.topk`` per block answers a whole probe set faster than the IVF_PQ index answers it
query by query, at 100k and at 1M rows, with recall 1. The index is built and searched only
past ``DEFAULT_ANN_THRESHOLD`` rows (beyond what was measured), or when a caller asks. Because
an ANN index can miss true neighbours, whenever one is used its recall@k against exact search
on the same queries is measured and reported next to the metrics it produced.

Candidates come back from LanceDB and are re-scored here in float64 from the vectors this
module wrote. LanceDB's float32 distances (and PQ's approximate ones) would otherwise disagree
in the last digits with the score matrix used for verification, and a rank-1 rebuilt from the
raw-scores file could differ from the reported one on a near-tie.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

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
# Past this many rows the IVF_PQ index is searched instead of the exact blocked product. Set
# by benchmarks/gallery.py: exact blocked search was the fastest path at recall >= 0.99 for
# 1k probes at both 100k and 1M rows (README figures), so ANN only starts past what was
# measured. Memory of the exact path: rows x dim x 4 bytes (512 MB at 1M x 128).
DEFAULT_ANN_THRESHOLD = 1_000_000
# Gallery rows per block of the exact search: a (probes x block) float32 score matrix.
BLOCK_ROWS = 32_768


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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def table_name(recognizer: str, run_id: str) -> str:
    """One gallery table per recognizer and run: runs never read each other's galleries.

    ``gallery_<run>__<recognizer>``: a slug never holds two underscores in a row, so the
    run a table belongs to can be read back from its name (``run_of``) for retention.
    """
    return f"{GALLERY_PREFIX}_{_slug(run_id)}__{_slug(recognizer)}"[:200]


def run_of(table: str) -> str | None:
    """The run slug of a gallery table (None: not a gallery table); older names without the
    ``__`` separator are their own run."""
    if not table.startswith(f"{GALLERY_PREFIX}_"):
        return None
    rest = table[len(GALLERY_PREFIX) + 1:]
    return rest.split("__", 1)[0] if "__" in rest else rest


def prune_galleries(workspace: Workspace, keep_runs: int, current_run: str) -> list[str]:
    """Drop gallery tables of all but the newest ``keep_runs`` evaluation runs.

    Each evaluation writes one table per recognizer (a million-row gallery is ~0.5 GB), and
    ``scores.parquet`` already holds everything its figures need, so old galleries are only
    a cache. The current run counts as one of the kept runs unless ``keep_runs`` is 0, which
    drops its tables too. Runs are ordered by their tables' newest modification time.
    Returns the dropped table names.
    """
    if keep_runs < 0:
        raise ValueError(f"keep_runs must be >= 0, got {keep_runs}")
    by_run: dict[str, list[str]] = {}
    for name in storage.table_names(workspace):
        run = run_of(name)
        if run is not None:
            by_run.setdefault(run, []).append(name)

    def newest(run: str) -> float:
        times = [p.stat().st_mtime for name in by_run[run]
                 for p in [workspace.lancedb_dir / f"{name}.lance"] if p.exists()]
        return max(times, default=0.0)

    current = _slug(current_run)
    others = sorted((r for r in by_run if r != current), key=newest, reverse=True)
    kept = ([current] if current in by_run and keep_runs > 0 else [])
    kept += others[:max(0, keep_runs - len(kept))]
    dropped = [name for run in by_run if run not in kept for name in sorted(by_run[run])]
    for name in dropped:
        storage.drop_table(workspace, name)
    return dropped


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
    """Write the gallery table; index it when it holds more than ``ann_threshold`` rows.

    The returned ``Gallery`` keeps the vectors it wrote, so the exact path searches them
    without reading the table back; ``load_gallery`` is the same object for a stored table.
    """
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


def load_gallery(workspace: Workspace, table: str) -> Gallery:
    """A stored gallery table as a ``Gallery``: its vectors read once, in one scan.

    The exact blocked search needs each vector once per probe *set*, so reading the whole
    table once (~0.5 GB at 1M x 128) replaces one LanceDB call per probe. An existing index
    is not described here (``index=None``): searching it needs an explicit ``exact=False``
    with a plan.
    """
    import time

    started = time.perf_counter()
    rows = storage.read(workspace, table, columns=["gallery_id", "identity_id", "position",
                                                   "vector"])
    if rows.num_rows == 0:
        raise ValueError(f"gallery table {table} is empty or missing")
    order = np.argsort(rows.column("position").to_numpy(), kind="stable")
    column = rows.column("vector").combine_chunks()
    dim = column.type.list_size
    vectors = column.flatten().to_numpy().reshape(-1, dim)[order]
    return Gallery(table, np.asarray(rows.column("gallery_id").to_pylist(), dtype=object)[order],
                   np.asarray(rows.column("identity_id").to_pylist(), dtype=object)[order],
                   np.ascontiguousarray(vectors, dtype=np.float32), None, None,
                   time.perf_counter() - started)


def blocked_top_k(gallery_unit: np.ndarray, probes_unit: np.ndarray, k: int,
                  block: int = BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of every probe at once: (probes x block) products, a top-k per block.

    ``torch.topk`` is used because numpy's ``argpartition`` over a 1000 x 32k block costs
    ~0.9 s against ~20 ms (measured here), which would dominate the matrix product itself.
    Running top-k lists are merged block by block, so memory stays (probes x block). Rows
    must be unit length; returns (positions, float32 scores), best first.
    """
    import torch

    n = len(gallery_unit)
    k = min(k, n)
    queries = torch.from_numpy(np.ascontiguousarray(probes_unit, dtype=np.float32))
    best_scores = torch.full((len(queries), 0), -torch.inf)
    best_positions = torch.zeros((len(queries), 0), dtype=torch.int64)
    for start in range(0, n, block):
        rows = torch.from_numpy(np.ascontiguousarray(gallery_unit[start:start + block],
                                                     dtype=np.float32))
        scores = queries @ rows.T
        top_scores, top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        merged_scores = torch.cat([best_scores, top_scores], dim=1)
        merged_positions = torch.cat([best_positions, top + start], dim=1)
        best_scores, pick = torch.topk(merged_scores, min(k, merged_scores.shape[1]), dim=1)
        best_positions = torch.gather(merged_positions, 1, pick)
    return best_positions.numpy(), best_scores.numpy()


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
           exact: bool | None = None, method: str = "blocked") -> Candidates:
    """Top-``k`` gallery rows per probe, re-scored in float64.

    ``exact=None`` uses the index when the gallery has one; ``True`` forces exact search
    (the ground truth for recall); ``False`` requires the index. Exact search is the
    blocked product over the gallery's vectors (``method="blocked"``, the fast path) or,
    with ``method="lancedb"``, LanceDB's own brute-force scan (kept to measure against).
    """
    import time

    if exact is None:
        exact = gallery.index is None
    if not exact and gallery.index is None:
        raise ValueError(f"gallery {gallery.table} has no ANN index to search")
    probes = unit_rows(probes)
    started = time.perf_counter()
    if exact and method == "blocked":
        positions, _ = blocked_top_k(gallery.vectors, probes, k)
        padded = np.full((len(probes), k), -1, dtype=np.int64)
        padded[:, :positions.shape[1]] = positions
        return _rescore(gallery, probes, padded, time.perf_counter() - started)
    if method not in ("blocked", "lancedb"):
        raise ValueError(f"unknown search method {method!r}")
    plan = gallery.index
    found = storage.vector_search(
        workspace, gallery.table, probes, k, columns=["position"], distance="cosine",
        exact=exact, nprobes=None if exact or plan is None else plan.nprobes,
        refine_factor=None if exact or plan is None else plan.refine_factor)
    seconds = time.perf_counter() - started
    return _rescore(gallery, probes, lance_positions(found, len(probes), k), seconds)


def lance_positions(rows: Any, n_queries: int, k: int) -> np.ndarray:
    """(n_queries, k) gallery positions from a batched LanceDB search's rows (query_index,
    position, in rank order per query); -1 where a query found fewer than k."""
    positions = np.full((n_queries, k), -1, dtype=np.int64)
    query = rows.column("query_index").to_numpy()
    where = rows.column("position").to_numpy()
    order = np.argsort(query, kind="stable")
    query, where = query[order], where[order]
    slot = np.arange(len(query)) - np.searchsorted(query, query, side="left")
    keep = slot < k
    positions[query[keep], slot[keep]] = where[keep]
    return positions


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
