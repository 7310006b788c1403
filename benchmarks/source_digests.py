"""A night's ingest of sources that brought nothing new: every file read and hashed, and
every known duplicate picture decoded again (the baseline: what a night did before the
caches; ``CLIP4SKETCH_INGEST_VERIFY_FILES=all`` with the pictures memo removed) beside the
sources' digest caches and memos (tasks/digests.py, ``tasks.ingest.run.known_pictures``),
with the page cache cold and warm.

A face's id is the sha256 of its file, so without the cache each night reads every image of
every source to learn that nothing changed; on mounted storage a night a day after the last
finds them out of memory, which is the cold case. Cold runs drop the kernel's page cache
first (``/proc/sys/vm/drop_caches``, root only; without it only the warm figures are
printed). The workspace should already hold the sources (e.g. a copy of the real-data
night's, ``experiments/night-at-scale.sh``); the caches are built first when missing.

    .venv/bin/python -m benchmarks.source_digests WORKSPACE SOURCE[,ROOT] ...
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks.png_digests import drop_page_cache
from tasks.storage import Workspace

os.environ.setdefault("LANCEDB_LOG", "error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    parser.add_argument("sources", nargs="+", help="a folder or manifest, ',ROOT' after it "
                        "for the folder its files must stay in")
    args = parser.parse_args()

    # Imported here, not at the top: tasks.ingest.run loads prefect, which reads the
    # environment set above.
    from schemas.settings import IngestSettings
    from tasks.digests import SOURCE_DIGESTS_DIR, source_digests
    from tasks.ingest.run import ingest_source
    from tasks.ingest.sources import read_source

    workspace = Workspace.open(args.workspace)
    sources = [(s.split(",", 1) + [None])[:2] for s in args.sources]

    def night(verify: str) -> tuple[float, int, int]:
        if verify == "all":  # the baseline decodes duplicates too, as before the memo
            for memo in (workspace.root / SOURCE_DIGESTS_DIR).glob("*.pictures.parquet"):
                memo.unlink()
        started, hashed, new = time.perf_counter(), 0, 0
        for source, root in sources:
            digests = source_digests(workspace.root, source, root, trust_stat=verify != "all")
            report = ingest_source(workspace, source, root=root, digests=digests,
                                   settings=IngestSettings(verify_files=verify))
            hashed, new = hashed + digests.hashed, new + report.n_ingested
        return time.perf_counter() - started, hashed, new

    listing = []
    for _ in range(5):
        started = time.perf_counter()
        files = sum(len(read_source(source, root)) for source, root in sources)
        listing.append(time.perf_counter() - started)
    print(f"listing the sources ({files:,} files, each checked to stay inside its source): "
          f"{min(listing):.3f} s, best of 5")

    _, _, new = night("changed")  # builds the caches, and stores anything not stored yet
    seen = sum(len(source_digests(workspace.root, s, r)) for s, r in sources)
    print(f"{len(sources)} sources, {seen:,} files remembered ({new} new faces on the first "
          f"pass) in {workspace.root}")
    print(f"{'':16} {'read and decode':>18} {'digest caches':>18}")
    for label, cold in (("page cache cold", True), ("page cache warm", False)):
        figures = []
        if not cold:
            night("all")  # every file read once: in memory for both runs below
        for verify in ("all", "changed"):  # the second finds the memo the first wrote
            if cold and not drop_page_cache():
                break
            figures.append(night(verify))
        if len(figures) < 2:
            print(f"{label:16} (cannot drop the page cache here: not root)")
            continue
        (a, _, _), (b, hashed, _) = figures
        print(f"{label:16} {a:16.3f} s {b:16.3f} s  ({a / b:.1f}x; {hashed} files read "
              f"again)")


if __name__ == "__main__":
    main()
