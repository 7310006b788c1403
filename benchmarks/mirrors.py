"""Parquet mirrors of a workspace's tables: the cost of a mirror that is current (left as it
is) beside the cost of writing it, table by table.

Every stage that writes a table mirrors it to ``datasets/<table>.parquet``; a mirror records
the table version it holds and is written again only when that changed
(``tasks.storage.export_parquet``). Each table's mirror is written once (to be current),
timed as it stands, then removed and timed as it is written again; it ends current.

    .venv/bin/python -m benchmarks.mirrors WORKSPACE
"""

from __future__ import annotations

import argparse
import time

from tasks import storage
from tasks.storage import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    args = parser.parse_args()
    workspace = Workspace.open(args.workspace)
    names = sorted(n for n in storage.table_names(workspace)
                   if (workspace.datasets_dir / f"{n}.parquet").is_file())
    print(f"{'table':34} {'mirror MB':>10} {'current':>10} {'written':>10}")
    for name in names:
        path = storage.export_parquet(workspace, name)
        started = time.perf_counter()
        storage.export_parquet(workspace, name)
        current = time.perf_counter() - started
        path.unlink()
        started = time.perf_counter()
        storage.export_parquet(workspace, name)
        written = time.perf_counter() - started
        print(f"{name:34} {path.stat().st_size / 1e6:10.1f} {current:9.3f}s {written:9.3f}s")


if __name__ == "__main__":
    main()
