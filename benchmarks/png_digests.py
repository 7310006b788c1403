"""Checking every stored sketch PNG against its sha256: hashing each file against the stat
cache (tasks/digests.py), on a workspace's sketches, with the page cache cold and warm.

A night checks every drawing twice (generate's plan, then validate); a night a day apart
finds them evicted from memory on a busy machine, which is the case the cache is for. Cold
runs drop the kernel's page cache first (``/proc/sys/vm/drop_caches``, root only; without
it only the warm figures are printed). The workspace's cache is used as it stands, and
built first if it is empty.

    .venv/bin/python -m benchmarks.png_digests WORKSPACE
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import time
from pathlib import Path

from tasks import storage
from tasks.digests import FileDigests
from tasks.storage import SKETCHES, Workspace


def drop_page_cache() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    args = parser.parse_args()

    workspace = Workspace.open(args.workspace)
    paths = [r["png_path"] for r in storage.read(workspace, SKETCHES, columns=["png_path"])
             .to_pylist() if r["png_path"]]
    if not len(FileDigests(workspace.root)):
        built = FileDigests(workspace.root)
        for path in paths:
            built.sha256(path)
        built.save()

    def plain() -> tuple[float, int]:
        started = time.perf_counter()
        for path in paths:
            hashlib.sha256((workspace.root / path).read_bytes()).hexdigest()
        return time.perf_counter() - started, len(paths)

    def cached() -> tuple[float, int]:
        started = time.perf_counter()
        digests = FileDigests(workspace.root)
        for path in paths:
            digests.sha256(path)
        return time.perf_counter() - started, digests.hashed

    print(f"{len(paths):,} sketch PNGs under {workspace.root}")
    print(f"{'':16} {'hash every file':>18} {'stat cache':>18}")
    for label, cold in (("page cache cold", True), ("page cache warm", False)):
        figures = []
        if not cold:
            plain()  # every file read once: in memory for both runs below
        for run in (plain, cached):
            if cold and not drop_page_cache():
                break
            figures.append(run())
        if len(figures) < 2:
            print(f"{label:16} (cannot drop the page cache here: not root)")
            continue
        (a, _), (b, hashed) = figures
        print(f"{label:16} {a:16.3f} s {b:16.3f} s  ({a / b:.1f}x; {hashed} files hashed "
              f"again)")


if __name__ == "__main__":
    main()
