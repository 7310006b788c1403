"""Gallery search at scale: LanceDB exact vs IVF_PQ vs numpy brute force, top-k latency + recall.

Forensic search runs a sketch against galleries of up to millions of mugshots. This measures,
on one synthetic gallery, what the evaluation stage (``tasks/evaluate/gallery.py``) does past
its ANN threshold: per-query top-k latency of the IVF_PQ index with the parameters
``plan_index`` picks (and a small sweep around them), its recall@k against LanceDB's exact
search on the same queries, and a brute-force numpy search (matrix product + argpartition)
over the same vectors as the yardstick.

The vectors are unit 128-d with clustered structure like face embeddings: "families" of
identities share a direction, each identity has a few samples near its own centre, and a
query is a fresh sample of a gallery identity (a probe whose mate is in the gallery).

    .venv/bin/python benchmarks/gallery.py --n 100000          # ~3 minutes on 2 busy cores
    .venv/bin/python benchmarks/gallery.py                     # 1,000,000 rows: run on a big box
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LANCEDB_LOG", "error")

from tasks import storage  # noqa: E402
from tasks.evaluate.gallery import (  # noqa: E402
    brute_force_top_k,
    build_gallery,
    plan_index,
    unit_rows,
)
from tasks.storage import Workspace  # noqa: E402


def clustered_vectors(n: int, dim: int, queries: int, seed: int,
                      per_identity: int = 4, families: int = 1000,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gallery, identity of each row, queries): a family centre, an identity offset, noise."""
    rng = np.random.default_rng(seed)
    n_identities = max(1, n // per_identity)
    family = rng.normal(size=(families, dim)).astype(np.float32)
    family /= np.linalg.norm(family, axis=1, keepdims=True)
    identity_family = rng.integers(0, families, n_identities)
    # identity centres: cos ~0.6 to their family, ~0 to other families
    centres = unit_rows(0.8 * family[identity_family]
                        + 0.6 * unit_rows(rng.normal(size=(n_identities, dim))))
    label = rng.integers(0, n_identities, n)
    # samples: cos ~0.75 to their identity centre (a same-person pair scores ~0.55)
    noise = unit_rows(rng.normal(size=(n, dim)).astype(np.float32))
    gallery = unit_rows(0.75 * centres[label] + 0.66 * noise)
    asked = rng.choice(label, size=queries)
    q_noise = unit_rows(rng.normal(size=(queries, dim)).astype(np.float32))
    probes = unit_rows(0.75 * centres[asked] + 0.66 * q_noise)
    return gallery, label, probes


def per_query(search_one, queries: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Run queries one at a time (a user's search), returning results and seconds each."""
    results, seconds = [], []
    for q in queries:
        started = time.perf_counter()
        results.append(search_one(q))
        seconds.append(time.perf_counter() - started)
    return results, np.asarray(seconds)


def recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    return float(np.mean([np.isin(t, f).mean() for f, t in zip(found, truth, strict=True)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery rows")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workspace", default=None,
                        help="keep the gallery table here (default: a temporary folder)")
    args = parser.parse_args()

    if args.workspace:
        return run(args, Workspace.open(args.workspace))
    with tempfile.TemporaryDirectory(prefix="bench-gallery-") as folder:
        return run(args, Workspace.open(folder))


def run(args: argparse.Namespace, workspace: Workspace) -> int:
    started = time.perf_counter()
    gallery_vectors, labels, probes = clustered_vectors(args.n, args.dim, args.queries,
                                                        args.seed)
    print(f"{args.n:,} x {args.dim}-d clustered unit vectors, {args.queries} queries, "
          f"top-{args.k} (made in {time.perf_counter() - started:.1f} s)")

    table = "bench_gallery"
    ids = np.array([f"g{i}" for i in range(args.n)], dtype=object)
    gallery = build_gallery(workspace, table, ids, labels.astype(str), gallery_vectors,
                            ann_threshold=args.n + 1)  # no index yet: time its build alone
    plan = plan_index(args.n, args.dim)
    started = time.perf_counter()
    stats = storage.create_vector_index(
        workspace, table, index_type=plan.index_type, num_partitions=plan.num_partitions,
        num_sub_vectors=plan.num_sub_vectors)
    build_seconds = time.perf_counter() - started
    print(f"index {plan.as_dict()} built in {build_seconds:.1f} s: {stats}")

    def lance(exact: bool, nprobes: int | None = None, refine: int | None = None):
        def one(q: np.ndarray) -> np.ndarray:
            rows = storage.vector_search(workspace, table, q[None], args.k,
                                         columns=["position"], exact=exact,
                                         nprobes=nprobes, refine_factor=refine)
            return rows.column("position").to_numpy()
        return one

    def numpy_one(q: np.ndarray) -> np.ndarray:
        return brute_force_top_k(gallery.vectors, q[None], args.k)[0][0]

    truth, exact_s = per_query(lance(True), probes)
    numpy_found, numpy_s = per_query(numpy_one, probes)
    rows = [("numpy brute force (matmul + argpartition)", numpy_s, recall(numpy_found, truth)),
            ("LanceDB exact (bypass_vector_index)", exact_s, 1.0)]
    sweep = [(plan.nprobes, plan.refine_factor, "plan_index default")]
    if plan.index_type == "IVF_PQ":
        sweep += [(max(1, plan.nprobes // 2), plan.refine_factor, ""),
                  (min(plan.num_partitions, plan.nprobes * 2), plan.refine_factor, ""),
                  (plan.nprobes, None, "no refine"),
                  (plan.nprobes, (plan.refine_factor or 1) * 2, "")]
    for nprobes, refine, note in sweep:
        found, seconds = per_query(lance(False, nprobes, refine), probes)
        label = f"LanceDB {plan.index_type} nprobes={nprobes} refine={refine}"
        rows.append((label + (f" ({note})" if note else ""), seconds, recall(found, truth)))

    # Batched throughput: all queries in one call (how evaluation searches its probes).
    started = time.perf_counter()
    brute_force_top_k(gallery.vectors, probes, args.k)
    numpy_batch = time.perf_counter() - started

    width = max(len(r[0]) for r in rows)
    print(f"\n| {'method':<{width}} | median ms | p95 ms | recall@{args.k} |")
    print(f"|{'-' * (width + 2)}|----------:|-------:|----------:|")
    for label, seconds, rec in rows:
        print(f"| {label:<{width}} | {np.median(seconds) * 1e3:9.1f} | "
              f"{np.percentile(seconds, 95) * 1e3:6.1f} | {rec:9.3f} |")
    print(f"\nindex build {build_seconds:.1f} s; numpy batched ({args.queries} queries at "
          f"once) {numpy_batch * 1e3 / args.queries:.2f} ms/query")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
