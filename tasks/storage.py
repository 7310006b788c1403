"""The one module that reads and writes the workspace's stores (LanceDB and Parquet).

Every other module goes through here so there is a single writer per table: stages
hand over Arrow tables, this module upserts them by key (``merge_insert``), tags the
table version with the run, and exports Parquet atomically (temp name, then rename)
so a reader never sees half a file and a crash never leaves one behind.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

FACES = "faces"
QUARANTINE = "quarantine"


@dataclass(frozen=True)
class Workspace:
    """A workspace folder: LanceDB database, Parquet datasets, reports and logs."""

    root: Path
    _db: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def open(cls, root: str | Path) -> Workspace:
        root = Path(root).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(f"workspace {root} exists and is not a folder")
        workspace = cls(root)
        for folder in (workspace.lancedb_dir, workspace.datasets_dir, workspace.reports_dir,
                       workspace.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return workspace

    @property
    def lancedb_dir(self) -> Path:
        return self.root / "lancedb"

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def db(self):
        """The LanceDB connection, opened once per process and workspace."""
        if "db" not in self._db:
            import lancedb

            self._db["db"] = lancedb.connect(str(self.lancedb_dir))
        return self._db["db"]


@dataclass(frozen=True)
class WriteResult:
    """What an upsert did: small enough to pass between Prefect tasks."""

    table: str
    version: int
    inserted: int
    updated: int
    rows: int


def table_names(workspace: Workspace) -> list[str]:
    names: list[str] = []
    token = None
    while True:
        page = workspace.db().list_tables(page_token=token)
        names.extend(page.tables)
        token = page.page_token
        if not token:
            return names


def _open(workspace: Workspace, name: str):
    if name not in table_names(workspace):
        return None
    return workspace.db().open_table(name)


def upsert(workspace: Workspace, name: str, rows: pa.Table, key: str) -> WriteResult:
    """Insert new keys and update existing ones; creates the table on first write.

    ``merge_insert`` commits atomically, so a crash leaves the previous version intact.
    """
    db = workspace.db()
    table = _open(workspace, name)
    if rows.num_rows and len(set(rows.column(key).to_pylist())) != rows.num_rows:
        raise ValueError(f"duplicate {key} values in one write to {name!r}")
    if table is None:
        table = db.create_table(name, schema=rows.schema)
        if rows.num_rows:
            table.add(rows)
        return WriteResult(name, table.version, rows.num_rows, 0, table.count_rows())
    if rows.num_rows == 0:
        return WriteResult(name, table.version, 0, 0, table.count_rows())
    if not rows.schema.equals(table.schema):
        raise ValueError(
            f"rows for {name!r} do not match its stored schema:\n"
            f"stored: {table.schema}\ngiven: {rows.schema}"
        )
    result = (
        table.merge_insert(key)
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute(rows)
    )
    return WriteResult(
        name, result.version, result.num_inserted_rows, result.num_updated_rows,
        table.count_rows(),
    )


def ensure_table(workspace: Workspace, name: str, schema: pa.Schema) -> None:
    if _open(workspace, name) is None:
        workspace.db().create_table(name, schema=schema)


def read(
    workspace: Workspace,
    name: str,
    columns: list[str] | None = None,
    where: str | None = None,
    schema: pa.Schema | None = None,
) -> pa.Table:
    """A table's rows (optionally filtered); an empty table when it does not exist yet."""
    table = _open(workspace, name)
    if table is None:
        if schema is None:
            return pa.table({})
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    query = table.search()
    if where:
        query = query.where(where)
    if columns:
        query = query.select(columns)
    # search() without a limit would stop at 10 rows.
    return query.limit(max(table.count_rows(), 1)).to_arrow()


def count(workspace: Workspace, name: str) -> int:
    table = _open(workspace, name)
    return 0 if table is None else table.count_rows()


def column_values(workspace: Workspace, name: str, column: str) -> list:
    table = _open(workspace, name)
    if table is None:
        return []
    return table.to_arrow().column(column).to_pylist()


_TAG = re.compile(r"[^A-Za-z0-9._-]+")


def tag(workspace: Workspace, name: str, label: str) -> str | None:
    """Tag the table's current version (e.g. with a run id) so it can be checked out later."""
    table = _open(workspace, name)
    if table is None:
        return None
    label = _TAG.sub("-", label)
    if label in table.tags.list():
        table.tags.update(label, table.version)
    else:
        table.tags.create(label, table.version)
    return label


def tags(workspace: Workspace, name: str) -> dict[str, int]:
    table = _open(workspace, name)
    if table is None:
        return {}
    return {label: info["version"] for label, info in table.tags.list().items()}


def _write_atomic(path: Path, write) -> Path:
    """Write to a temp file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temp)
        with open(temp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def write_parquet_atomic(rows: pa.Table, path: Path) -> Path:
    return _write_atomic(path, lambda temp: pq.write_table(rows, temp))


def write_bytes_atomic(data: bytes, path: Path) -> Path:
    return _write_atomic(path, lambda temp: Path(temp).write_bytes(data))


def export_parquet(workspace: Workspace, name: str) -> Path | None:
    """Mirror a LanceDB table to ``datasets/<name>.parquet`` for readers without LanceDB."""
    table = _open(workspace, name)
    if table is None:
        return None
    return write_parquet_atomic(table.to_arrow(), workspace.datasets_dir / f"{name}.parquet")


def compact(workspace: Workspace, names: Iterable[str]) -> None:
    """Merge the small fragments that chunked upserts leave behind."""
    for name in names:
        table = _open(workspace, name)
        if table is not None:
            table.optimize()
