"""Ingest + embed throughput: this machine alone beside a two-worker Dask cluster.

Run: .venv/bin/python -m benchmarks.ingest_dask [--source DIR_OR_MANIFEST] [--root DIR]
     [--workers 2] [--threads 1] [--ingest-shard-size 64] [--embed-shard-size 512]
     [--repeat 1]

Default source: the AT&T faces in ../shared/data/orl (400 photos, 40 identities), else 40
demo identities x 5 photos. Each run ingests and embeds (SFace + EfficientNet-Lite0) the
source into a fresh workspace through the ``ingest`` and ``embed`` flows, so Prefect's
costs are counted as a user pays them. All runs report to one temporary Prefect server
(the workers get its ``PREFECT_API_URL``). The cluster is a ``distributed.LocalCluster``
of ``--workers`` processes with ``--threads`` threads each; its first run pays for the
workers' imports and model loads ("cold"), later ones find them loaded ("warm").
``--repeat N`` runs the local and the warm Dask run N times each, alternating, and reports
each one's fastest: on a machine shared with other work, the least disturbed run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tasks.demo.faces import make_demo_source

for _key, _value in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                     "LANCEDB_LOG": "error",
                     "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}.items():
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parents[1]


def _run(label: str, workspace: Path, source: str, root: str | None,
         address: str | None) -> dict:
    # Imported here, not at the top: the flows load prefect, which reads the environment
    # (PREFECT_HOME, the shard sizes) that main() sets first.
    from flows.embed import embed
    from flows.ingest import ingest

    started = time.perf_counter()
    reports = ingest(sources=[source], workspace=str(workspace), root=root,
                     dask_address=address)
    ingested = time.perf_counter()
    embedded = embed(workspace=str(workspace), dask_address=address)
    done = time.perf_counter()
    faces = sum(r.n_ingested for r in reports)
    return {"label": label, "faces": faces, "ingest": ingested - started,
            "embed": done - ingested, "total": done - started,
            "quarantined": sum(r.n_quarantined for r in reports),
            "vectors": sum(t.computed for t in embedded.tables.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None)
    parser.add_argument("--root", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--ingest-shard-size", type=int, default=64)
    parser.add_argument("--embed-shard-size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        os.environ["PREFECT_HOME"] = str(temp / "prefect")
        (temp / "prefect").mkdir()
        os.environ["CLIP4SKETCH_INGEST_SHARD_SIZE"] = str(args.ingest_shard_size)
        os.environ["CLIP4SKETCH_EMBED_SHARD_SIZE"] = str(args.embed_shard_size)
        source, root = args.source, args.root
        orl = (REPO / ".." / "shared" / "data" / "orl").resolve()
        if source is None and orl.is_dir():
            source = str(orl)
        elif source is None:
            source = str(make_demo_source(temp / "demo", identities=40,
                                          photos_per_identity=5) / "photos")

        from distributed import Client, LocalCluster
        from prefect.settings import PREFECT_API_URL
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
            local = "local (this process)"
            name = f"dask {args.workers} workers x {args.threads} thread"
            started = time.perf_counter()
            with LocalCluster(n_workers=args.workers, threads_per_worker=args.threads,
                              processes=True, host="127.0.0.1",
                              dashboard_address=None) as cluster, Client(cluster) as client:
                client.wait_for_workers(args.workers, timeout=300)
                startup = time.perf_counter() - started
                address = cluster.scheduler_address
                runs = [_run(f"{name} (cold)", temp / "dask-cold", source, root, address)]
                tries: dict[str, list[dict]] = {local: [], f"{name} (warm)": []}
                for i in range(args.repeat):
                    tries[local].append(_run(local, temp / f"local-{i}", source, root, None))
                    tries[f"{name} (warm)"].append(
                        _run(f"{name} (warm)", temp / f"dask-{i}", source, root, address))
                runs = [min(tries[local], key=lambda r: r["total"]), *runs,
                        min(tries[f"{name} (warm)"], key=lambda r: r["total"])]
    print(f"\nsource: {source} | {os.cpu_count()} CPUs, load average {load_before:.1f} before "
          f"and {os.getloadavg()[0]:.1f} after | ingest shards of {args.ingest_shard_size} "
          f"files, embed shards of {args.embed_shard_size} faces | cluster start-up "
          f"{startup:.1f} s (not counted) | fastest of {args.repeat} for local and warm")
    print(f"{'run':36} {'faces':>6} {'ingest s':>9} {'embed s':>8} {'total s':>8} "
          f"{'faces/s':>8}")
    for run in runs:
        print(f"{run['label']:36} {run['faces']:6d} {run['ingest']:9.1f} {run['embed']:8.1f} "
              f"{run['total']:8.1f} {run['faces'] / run['total']:8.2f}")
    baseline = runs[0]["total"]
    for run in runs[1:]:
        print(f"{run['label']}: {baseline / run['total']:.2f}x the local run's speed")


if __name__ == "__main__":
    main()
