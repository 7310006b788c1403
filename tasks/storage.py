"""The one module that reads and writes the workspace's stores (LanceDB and Parquet).

Every other module goes through here so there is a single writer per table: stages
hand over Arrow tables, this module upserts them by key (``merge_insert``), tags the
table version with the run, and exports Parquet atomically (temp name, then rename)
so a reader never sees half a file and a crash never leaves one behind.

Two faults get a name of their own, because the user's next step depends on them:
- a full disk (ENOSPC from Python, pyarrow or LanceDB's Rust core) becomes ``DiskFullError``
  naming the file and the space left: retrying cannot help until space is freed;
- a Parquet file written with ``checksum=True`` records a sha256 of its rows in its own
  metadata, and ``read_verified_parquet`` refuses it (``CorruptFileError``) when it is
  truncated, unparsable or its rows no longer match, so damaged work is redone, not trusted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FACES = "faces"
QUARANTINE = "quarantine"
SKETCHES = "sketches"

CHECKSUM_KEY = b"clip4sketch.rows_sha256"
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How a full disk reads when it comes back from a library instead of as an errno: LanceDB
# raises RuntimeError("lance error: LanceError(IO): No space left on device (os error 28)").
_FULL_MARKERS = ("No space left on device", "os error 28", "Disk quota exceeded",
                 "os error 122")


class DiskFullError(OSError):
    """The disk holding the workspace is full: nothing more can be written until space is
    freed, so callers fail at once (``errno`` is ENOSPC) instead of retrying.

    Raise as ``DiskFullError(errno.ENOSPC, message)``, OSError's own two-argument form, so
    the error survives pickling between processes (Dask workers, Prefect states).
    """


class CorruptFileError(ValueError):
    """A stored file that cannot be parsed or no longer matches its recorded checksum."""


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC/EDQUOT, whether raised as an OSError or reported in a library's message."""
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
        return True
    text = str(error)
    return any(marker in text for marker in _FULL_MARKERS)


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


@contextlib.contextmanager
def disk_space(target: Path, action: str) -> Iterator[None]:
    """Turn a full disk met while ``action``-ing ``target`` into a ``DiskFullError`` that says
    what happened and what to do; every other error passes through unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as error:
        if not is_disk_full(error):
            raise
        free = _free_bytes(Path(target))
        left = f"{free:,} bytes left" if free is not None else "space left unknown"
        raise DiskFullError(
            errno.ENOSPC,
            f"disk full: no space left on device while {action} {target} ({left} there). "
            "Tables and dataset files are written whole or not at all, so none is left "
            "half-written: free some space (or move the workspace) and run again; finished "
            "work is kept and the run resumes where it stopped",
        ) from error


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
    if rows.num_rows and len(set(rows.column(key).to_pylist())) != rows.num_rows:
        raise ValueError(f"duplicate {key} values in one write to {name!r}")
    with disk_space(_table_dir(workspace, name), "writing the table"):
        return _upsert(workspace, name, rows, key)


def _table_dir(workspace: Workspace, name: str) -> Path:
    return workspace.lancedb_dir / f"{name}.lance"


def _upsert(workspace: Workspace, name: str, rows: pa.Table, key: str) -> WriteResult:
    db = workspace.db()
    table = _open(workspace, name)
    if table is None:
        # One commit: the table is born holding its rows. Creating it empty and then adding
        # would commit twice, leaving an empty first version that a crash between the two
        # could make the table's only one, and a version history off by one.
        table = db.create_table(name, data=rows, schema=rows.schema)
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
        with disk_space(_table_dir(workspace, name), "creating the table"):
            workspace.db().create_table(name, schema=schema)


def quote(value: str) -> str:
    """A string literal for a LanceDB filter (single quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def where_in(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(quote(v) for v in values)})"


FILTER_CHUNK = 500  # ids per IN (...) filter: keeps the query string small


def id_chunks(values: Sequence[str], size: int = FILTER_CHUNK) -> Iterator[Sequence[str]]:
    """``values`` in runs short enough for one :func:`where_in` filter each."""
    for start in range(0, len(values), size):
        yield values[start:start + size]


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


# A request for more ids than this, or for at least this share of a table's rows, reads the
# table in one scan.
SCAN_IDS = 2000
SCAN_SHARE = 0.25


def read_ids(workspace: Workspace, name: str, key: str, ids: Iterable[str],
             columns: list[str], where: str | None = None,
             schema: pa.Schema | None = None, scan_share: float = SCAN_SHARE) -> pa.Table:
    """The rows whose ``key`` is one of ``ids`` (and that match ``where``), in no set order.

    Few ids go as ``IN`` filters of ``FILTER_CHUNK`` ids each; many (over ``SCAN_IDS``, or
    ``scan_share`` of the table) as one scan, kept by a set lookup in Arrow. Each ``IN``
    query scans the table again: the validate stage's read of every sketch's vector took
    0.8 s as 25 of them on a 12,000-drawing workspace, 0.03 s as one scan.
    """
    wanted = sorted({i for i in ids if i is not None})  # a null id matches no stored key
    table = _open(workspace, name)
    if not wanted or table is None:
        known = schema or (table.schema if table is not None else None)
        return (known.empty_table().select(columns) if known is not None
                else pa.table({c: pa.array([], pa.null()) for c in columns}))
    if len(wanted) > SCAN_IDS or len(wanted) >= scan_share * table.count_rows():
        rows = read(workspace, name, columns=columns, where=where, schema=schema)
        return rows.filter(pc.is_in(rows.column(key), value_set=pa.array(wanted, pa.string())))
    parts = [read(workspace, name, columns=columns, schema=schema,
                  where=where_in(key, chunk) + (f" AND {where}" if where else ""))
             for chunk in id_chunks(wanted)]
    return pa.concat_tables(parts)


def delete(workspace: Workspace, name: str, where: str) -> int:
    """Delete the rows matching ``where``; returns how many went (0 if no table)."""
    table = _open(workspace, name)
    if table is None:
        return 0
    before = table.count_rows()
    with disk_space(_table_dir(workspace, name), "deleting rows of"):
        table.delete(where)
    return before - table.count_rows()


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
    with disk_space(_table_dir(workspace, name), "tagging"):
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


def _write_atomic(path: Path, write: Callable[[str], object]) -> Path:
    """Write to a temp file in the same folder, fsync, then rename over ``path``.

    On any failure (a full disk included) the temp file is removed and ``path`` keeps its
    previous content, so no half-written file is ever visible under a final name. Only a
    killed process leaves its temp file (``.<name>.<8 random>.tmp``) behind; the writer holds
    an ``flock`` on it until the rename, so ``sweep_leftovers`` can tell a dead writer's file
    (unlocked: the kernel drops the lock with the process) from a live one's.
    """
    with disk_space(path, "writing"):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = _locked_temp(path)
        try:
            write(temp)
            with open(temp, "rb") as written:
                os.fsync(written.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        finally:
            os.close(handle)  # releases the flock, after the rename
    return path


def _locked_temp(path: Path) -> tuple[int, str]:
    """A new temp file beside ``path``, open and flock-ed by this process.

    A sweeper that lists the file between its creation and the lock would find it unlocked;
    it only removes files older than its own workspace lock, so that takes a writer stalled
    across another run's start, and then this notices the file is gone and makes another.
    """
    while True:
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        fcntl.flock(handle, fcntl.LOCK_EX)
        if os.fstat(handle).st_nlink:
            return handle, temp
        os.close(handle)


# What ``_write_atomic`` names its temp files: mkstemp's 8 characters between name and suffix.
LEFTOVER_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
# Folders a sweep never enters: LanceDB manages its own files, Prefect its home.
_NOT_SWEPT = frozenset({"lancedb", ".prefect"})


@dataclass(frozen=True)
class SweepReport:
    """What ``sweep_leftovers`` did: small, for run records and logs."""

    removed: list[str] = field(default_factory=list)  # paths relative to the root
    kept_live: int = 0  # temp files a live process still holds (another run's write)
    kept_recent: int = 0  # unlocked but not older than the lock: left for a later sweep
    bytes_freed: int = 0

    def summary(self) -> dict[str, object]:
        return {"removed": len(self.removed), "kept_live": self.kept_live,
                "kept_recent": self.kept_recent, "bytes_freed": self.bytes_freed,
                "paths": self.removed[:50]}


def sweep_leftovers(root: Path, older_than: float) -> SweepReport:
    """Remove temp files that killed writers left under ``root``: those named like
    ``_write_atomic``'s, last modified before ``older_than`` (the time the caller took the
    workspace lock) and held by no process.

    Both conditions guard another run's work: a live writer holds an flock on its temp file
    (a training run writing a checkpoint, a Dask worker still drawing an orphaned shard), and
    a file touched since the lock was taken may be a write that just began. Symlinks, FIFOs
    and anything not a regular file are never opened or removed.
    """
    removed: list[str] = []
    kept_live = kept_recent = freed = 0
    for folder, dirs, files in os.walk(root):
        if Path(folder) == root:
            dirs[:] = [d for d in dirs if d not in _NOT_SWEPT]
        for name in files:
            if not LEFTOVER_NAME.match(name):
                continue
            path = Path(folder) / name
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            if info.st_mtime >= older_than:
                kept_recent += 1
                continue
            try:
                handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
            except OSError:
                continue  # gone meanwhile, or not ours to open
            try:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    kept_live += 1
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(str(path.relative_to(root)))
                    freed += info.st_size
            finally:
                os.close(handle)
    return SweepReport(sorted(removed), kept_live, kept_recent, freed)


def rows_sha256(rows: pa.Table) -> str:
    """A sha256 of a table's column names, types and values (not of its file encoding), so
    the same rows hash the same after a Parquet round trip."""
    digest = hashlib.sha256()
    digest.update(json.dumps([(f.name, _type_name(f.type)) for f in rows.schema]).encode())
    for batch in rows.to_batches():
        for row in batch.to_pylist():
            digest.update(json.dumps(row, sort_keys=True, default=str).encode())
            digest.update(b"\n")
    return digest.hexdigest()


def _type_name(kind: pa.DataType) -> str:
    """A type as text without the names of list items: Arrow names them ``item`` and a
    Parquet round trip ``element``, so ``str(type)`` of a list column changes on disk and its
    checksum could never match. Other types read as ``str`` does (older checksums hold)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"list<{_type_name(kind.value_type)}>"
    if pa.types.is_fixed_size_list(kind):
        return f"fixed_size_list<{_type_name(kind.value_type)}>[{kind.list_size}]"
    return str(kind)


def write_parquet_atomic(rows: pa.Table, path: Path, checksum: bool = False,
                         page_checksums: bool = False) -> Path:
    """``checksum=True`` records ``rows_sha256`` in the file's metadata, for small files whose
    damage must be noticed (shard files): ``read_verified_parquet`` checks it.
    ``page_checksums=True`` has Parquet write a CRC of every page instead, which
    ``read_verified_parquet`` checks in Arrow's C++: for large files (the digest caches), where
    ``rows_sha256``'s row-by-row JSON cost 4.8 s a write and a read at a million rows, against
    0.23 / 0.36 s."""
    if checksum:
        metadata = {**(rows.schema.metadata or {}), CHECKSUM_KEY: rows_sha256(rows).encode()}
        rows = rows.replace_schema_metadata(metadata)
    return _write_atomic(path, lambda temp: pq.write_table(
        rows, temp, write_page_checksum=page_checksums))


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)


def read_verified_parquet(path: Path) -> pa.Table:
    """Every row of a Parquet file, checked against the checksum it was written with.

    Raises FileNotFoundError when it is absent and CorruptFileError when it is truncated,
    unparsable, a page fails its CRC or its rows differ from the recorded sha256; a file
    written with neither is only checked for being readable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        rows = pq.read_table(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError, ValueError, MemoryError) as error:
        raise CorruptFileError(f"{path} is damaged: cannot read it as Parquet ({error})"
                               ) from error
    metadata = dict(rows.schema.metadata or {})
    recorded = metadata.pop(CHECKSUM_KEY, None)
    rows = rows.replace_schema_metadata(metadata or None)
    if recorded is not None and recorded.decode(errors="replace") != rows_sha256(rows):
        raise CorruptFileError(f"{path} is damaged: its rows do not match the sha256 "
                               "recorded when it was written")
    return rows


def write_bytes_atomic(data: bytes, path: Path) -> Path:
    return _write_atomic(path, lambda temp: Path(temp).write_bytes(data))


# The table version a Parquet mirror holds, in its metadata: "<version>@<commit time>" (the
# time too, so a table dropped and made again, numbered from 1 again, is not taken for it).
MIRROR_KEY = b"clip4sketch.table_version"


def _mirror_stamp(table) -> bytes:
    latest = max(table.list_versions(), key=lambda v: int(v["version"]))
    return f"{latest['version']}@{latest['timestamp'].isoformat()}".encode()


def export_parquet(workspace: Workspace, name: str) -> Path | None:
    """Mirror a LanceDB table to ``datasets/<name>.parquet`` for readers without LanceDB.

    A mirror that already holds the table's current version is left as it is: a night with
    nothing new rewrote the faces mirror (every aligned crop) once per source, 0.4 s each on
    the real-data workspace."""
    table = _open(workspace, name)
    if table is None:
        return None
    path = workspace.datasets_dir / f"{name}.parquet"
    stamp = _mirror_stamp(table)
    if path.is_file():
        try:
            if (pq.read_schema(path).metadata or {}).get(MIRROR_KEY) == stamp:
                return path
        except (pa.ArrowException, OSError):
            pass  # unreadable: written again
    rows = table.to_arrow()
    rows = rows.replace_schema_metadata({**(rows.schema.metadata or {}), MIRROR_KEY: stamp})
    return write_parquet_atomic(rows, path)


# LanceDB's own default for removing old versions while it compacts.
DEFAULT_CLEANUP = dt.timedelta(days=7)


def compact(workspace: Workspace, names: Iterable[str],
            older_than: dt.timedelta = DEFAULT_CLEANUP) -> int:
    """Merge the small fragments that chunked upserts leave behind, and remove the files of
    versions older than ``older_than`` that no tag holds; returns the bytes this freed.

    ``optimize()`` refuses outright ("tagged version(s) have been marked for cleanup") when
    a tagged version is older than its window, and every published dataset version tags
    ``sketches``: with LanceDB's 7-day default, every merge a week after the first
    publication would fail. The window is widened to spare the oldest tagged version.
    Unverified files (a failed transaction's) are removed only under the workspace lock,
    which every writer takes, so no transaction can be in flight.
    """
    freed = 0
    for name in names:
        table = _open(workspace, name)
        if table is None:
            continue
        folder = _table_dir(workspace, name)
        before = folder_bytes(folder)
        with disk_space(folder, "compacting"), warnings.catch_warnings():
            # "cleanup_older_than=0 removes every version": meant, under the workspace lock.
            warnings.filterwarnings("ignore", message="optimize.cleanup_older_than=0")
            table.optimize(cleanup_older_than=cleanup_window(table, older_than),
                           delete_unverified=older_than < DEFAULT_CLEANUP)
        freed += max(0, before - folder_bytes(folder))
    return freed


def cleanup_window(table, older_than: dt.timedelta) -> dt.timedelta:
    """``older_than``, widened so that no tagged version is older than it (plus a minute:
    the versions' clock and this one are read a moment apart)."""
    tagged = {info["version"] for info in table.tags.list().values()}
    if not tagged:
        return older_than
    stamps = [v["timestamp"] for v in table.list_versions() if v["version"] in tagged]
    if not stamps:
        return older_than
    oldest = min(stamps)
    now = dt.datetime.now(oldest.tzinfo) if oldest.tzinfo else dt.datetime.now()
    return max(older_than, now - oldest + dt.timedelta(minutes=1))


def version_times(workspace: Workspace, name: str) -> dict[int, dt.datetime]:
    """When each stored version of a table was committed (LanceDB's clock: naive local)."""
    table = _open(workspace, name)
    return {} if table is None else {int(v["version"]): v["timestamp"]
                                     for v in table.list_versions()}


def delete_tags(workspace: Workspace, name: str, labels: Iterable[str]) -> list[str]:
    """Remove tags (not the versions: a later clean-up may, once nothing holds them)."""
    table = _open(workspace, name)
    if table is None:
        return []
    existing = table.tags.list()
    removed = []
    for label in labels:
        if label in existing:
            table.tags.delete(label)
            removed.append(label)
    return removed


def folder_mtime(path: Path) -> float:
    """The newest modification time of the files under ``path`` (0.0 when absent)."""
    newest = 0.0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
    return newest


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed); 0 when absent."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(folder, name))
                if stat.S_ISREG(info.st_mode):
                    total += info.st_size
    return total


# --------------------------------------------------------------------------- vector search
# Evaluation galleries: whole tables written per run, an optional ANN index, top-k queries.
# Kept in one block so the rest of this module stays about keyed tables.

VECTOR_INDEX_TYPES = ("IVF_PQ", "IVF_FLAT", "IVF_HNSW_SQ")


def write_table(workspace: Workspace, name: str, rows: pa.Table) -> WriteResult:
    """Create ``name`` from ``rows``, replacing any table of that name (not an upsert).

    For tables that belong to one run (a gallery): a rerun under the same run id must not
    keep rows of the earlier attempt, which a keyed upsert would.
    """
    with disk_space(_table_dir(workspace, name), "writing the table"):
        table = workspace.db().create_table(name, data=rows, mode="overwrite")
    return WriteResult(name, table.version, rows.num_rows, 0, table.count_rows())


def drop_table(workspace: Workspace, name: str) -> bool:
    if _open(workspace, name) is None:
        return False
    workspace.db().drop_table(name)
    return True


def create_vector_index(
    workspace: Workspace,
    name: str,
    *,
    index_type: str = "IVF_PQ",
    distance: str = "cosine",
    num_partitions: int | None = None,
    num_sub_vectors: int | None = None,
    column: str = "vector",
) -> dict:
    """Build (or rebuild) an ANN index on ``column``; returns its statistics.

    LanceDB 0.40 quirks this hides: IVF_PQ trains nothing below 256 rows (the index stays
    empty and every search scans), IVF partitions are capped near rows/256, and rows added
    after the build stay unindexed until ``optimize()``; the returned ``num_indexed_rows``
    and ``num_unindexed_rows`` say which happened.
    """
    from lancedb.index import HnswSq, IvfFlat, IvfPq

    table = _open(workspace, name)
    if table is None:
        raise LookupError(f"no table {name!r} to index")
    kind = index_type.upper()
    if kind == "IVF_PQ":
        config = IvfPq(distance_type=distance, num_partitions=num_partitions,
                       num_sub_vectors=num_sub_vectors)
    elif kind == "IVF_FLAT":
        config = IvfFlat(distance_type=distance, num_partitions=num_partitions)
    elif kind == "IVF_HNSW_SQ":
        config = HnswSq(distance_type=distance, num_partitions=num_partitions)
    else:
        raise ValueError(f"unknown index type {index_type!r}; known: "
                         f"{', '.join(VECTOR_INDEX_TYPES)}")
    index_name = f"{column}_idx"
    # The unified API: column first (positional), then the config object.
    with disk_space(_table_dir(workspace, name), "indexing"):
        table.create_index(column, config=config, replace=True, name=index_name)
    stats = table.index_stats(index_name)
    return {
        "index_type": stats.index_type,
        "distance_type": stats.distance_type,
        "num_indexed_rows": int(stats.num_indexed_rows),
        "num_unindexed_rows": int(stats.num_unindexed_rows),
    }


def vector_search(
    workspace: Workspace,
    name: str,
    queries,
    k: int,
    *,
    columns: list[str],
    distance: str = "cosine",
    exact: bool = False,
    nprobes: int | None = None,
    refine_factor: int | None = None,
    chunk: int = 256,
) -> pa.Table:
    """Top-``k`` rows per query vector: ``query_index``, ``columns`` and ``_distance``.

    ``exact=True`` scans every row (brute force) even when an index exists; that is the
    ground truth an index's recall is measured against. ``nprobes`` is a minimum: more
    partitions are searched when the first ones hold fewer than ``k`` rows, so a small or
    skewed index still returns ``k`` results. Queries go in chunks of ``chunk`` vectors so a
    probe set of any size keeps LanceDB's per-call memory bounded.
    """
    import numpy as np
    import pyarrow.compute as pc

    table = _open(workspace, name)
    if table is None:
        raise LookupError(f"no table {name!r} to search")
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2:
        raise ValueError(f"queries must be (Q, dim), got shape {queries.shape}")
    parts: list[pa.Table] = []
    for start in range(0, len(queries), chunk):
        block = queries[start:start + chunk]
        query = table.search(list(block) if len(block) > 1 else block[0])
        query = query.distance_type(distance).select(columns).limit(k)
        if exact:
            query = query.bypass_vector_index()
        else:
            if nprobes:
                query = query.minimum_nprobes(nprobes).maximum_nprobes(0)
            if refine_factor:
                query = query.refine_factor(refine_factor)
        found = query.to_arrow()
        if "query_index" not in found.column_names:  # a single query has no index column
            found = found.add_column(0, "query_index",
                                     pa.array(np.zeros(found.num_rows, np.int32)))
        offset = pa.array(np.full(found.num_rows, start, np.int32))
        shifted = pc.add(found.column("query_index").cast(pa.int32()), offset)
        found = found.set_column(found.column_names.index("query_index"), "query_index", shifted)
        parts.append(found.select(["query_index", *columns, "_distance"]))
    if not parts:
        return pa.table({"query_index": pa.array([], pa.int32()),
                         **{c: pa.array([]) for c in columns},
                         "_distance": pa.array([], pa.float32())})
    return pa.concat_tables(parts)


def table_version(workspace: Workspace, name: str) -> int | None:
    """The table's current version, recorded as the exact input a model was trained on."""
    table = _open(workspace, name)
    return None if table is None else int(table.version)
