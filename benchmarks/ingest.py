"""Ingest cost: a first run over a source beside a second run over the same source.

Run: .venv/bin/python -m benchmarks.ingest [--source DIR_OR_MANIFEST] [--root DIR]
Default source: the CUHK pairs in ../shared/data (a manifest is written to a temp
folder), else 40 demo identities x 5 photos. The second run only hashes files and
finds them stored, so it should cost a small fraction of the first.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tasks.demo.faces import make_demo_source
from tasks.ingest.sources import write_cuhk_manifest
from tasks.storage import Workspace

os.environ.setdefault("LANCEDB_LOG", "error")

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None)
    parser.add_argument("--root", default=None)
    args = parser.parse_args()

    # Imported here, not at the top: tasks.ingest.run loads prefect, which reads the environment set
    # above.
    from tasks.ingest.run import ingest_source

    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        source, root = args.source, args.root
        cuhk = (REPO / ".." / "shared" / "data" / "cuhk").resolve()
        if source is None and cuhk.is_dir():
            write_cuhk_manifest(cuhk, temp / "cuhk.csv")
            source, root = temp / "cuhk.csv", cuhk
        elif source is None:

            source = make_demo_source(temp / "demo", identities=40,
                                      photos_per_identity=5) / "photos"
        workspace = Workspace.open(temp / "workspace")
        timings = []
        for label in ("first run", "second run"):
            started = time.perf_counter()
            report = ingest_source(workspace, source, root=root)
            timings.append(time.perf_counter() - started)
            print(f"{label:11} {timings[-1]:7.2f} s  ingested {report.ingested} "
                  f"skipped {report.skipped} quarantined {report.quarantined}")
        print(f"\nsecond / first = {timings[1] / timings[0]:.1%} (goal: under 20 %)")


if __name__ == "__main__":
    main()
