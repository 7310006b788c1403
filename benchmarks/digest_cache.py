"""What a digest cache (tasks/digests.py) costs a night when it remembers many files: its
load and its save, with the row-by-row sha256 the caches were first written with (the
baseline, ``checksum=True``) beside Parquet's page CRCs (``page_checksums=True``, now).

A source of a million images, or a workspace of a million drawings, loads its cache every
night and writes it back whenever a file came or went. The entries are made up (no files):
only the cache's own costs are measured.

    .venv/bin/python -m benchmarks.digest_cache --entries 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from tasks import storage
from tasks.digests import SCHEMA, FileDigests


def _entries(count: int) -> pa.Table:
    return pa.table({
        "path": [f"person-{i // 10:07d}/{i % 10}.jpg" for i in range(count)],
        "size": [50_000 + i % 997 for i in range(count)],
        "mtime_ns": [1_700_000_000_000_000_000 + i for i in range(count)],
        "ctime_ns": [1_700_000_000_000_000_000 + i for i in range(count)],
        "inode": [1_000_000 + i for i in range(count)],
        "sha256": [hashlib.sha256(str(i).encode()).hexdigest() for i in range(count)],
    }, schema=SCHEMA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args()

    rows = _entries(args.entries)
    print(f"{args.entries:,} entries")
    print(f"{'':22} {'save':>9} {'load':>9} {'file MB':>9}")
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        for label, options in (("row sha256 (before)", {"checksum": True}),
                               ("page CRCs (now)", {"page_checksums": True})):
            path = root / "cache.parquet"
            started = time.perf_counter()
            storage.write_parquet_atomic(rows, path, **options)
            saved = time.perf_counter() - started
            started = time.perf_counter()
            loaded = FileDigests(root, cache=Path("cache.parquet"))
            load = time.perf_counter() - started
            assert len(loaded) == args.entries
            print(f"{label:22} {saved:7.2f} s {load:7.2f} s {path.stat().st_size / 1e6:9.1f}")


if __name__ == "__main__":
    main()
