"""The storage module's keyed upsert: how many commits a write costs, and what it leaves."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import storage

SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.int64())])


def _rows(*pairs: tuple[str, int]) -> pa.Table:
    return pa.Table.from_pylist([{"key": k, "value": v} for k, v in pairs], schema=SCHEMA)


def _versions(workspace, name: str) -> int:
    return len(workspace.db().open_table(name).list_versions())


def test_upsert_on_a_missing_table_commits_once_with_its_rows(workspace):
    result = storage.upsert(workspace, "t", _rows(("a", 1), ("b", 2)), "key")
    assert _versions(workspace, "t") == 1 and result.version == 1
    assert (result.inserted, result.rows) == (2, 2)
    stored = storage.read(workspace, "t").sort_by("key")
    assert stored.schema.equals(SCHEMA)
    assert stored.to_pylist() == [{"key": "a", "value": 1}, {"key": "b", "value": 2}]


def test_upsert_of_no_rows_creates_an_empty_table_in_one_commit(workspace):
    result = storage.upsert(workspace, "t", _rows(), "key")
    assert _versions(workspace, "t") == 1 and result.rows == 0
    assert storage.read(workspace, "t").schema.equals(SCHEMA)


def test_later_upserts_commit_once_each_and_merge_by_key(workspace):
    storage.upsert(workspace, "t", _rows(("a", 1)), "key")
    result = storage.upsert(workspace, "t", _rows(("a", 10), ("c", 3)), "key")
    assert _versions(workspace, "t") == 2 and result.version == 2
    assert (result.inserted, result.updated, result.rows) == (1, 1, 2)
    assert storage.read(workspace, "t").sort_by("key").to_pylist() == [
        {"key": "a", "value": 10}, {"key": "c", "value": 3}]
    storage.upsert(workspace, "t", _rows(), "key")  # nothing to write: no commit
    assert _versions(workspace, "t") == 2


@pytest.mark.parametrize("scan_share", [0.25, 2.0], ids=["scan", "in-filters"])
def test_rows_by_key_are_the_same_read_in_one_scan_or_in_filters(workspace, scan_share):
    """A key request reads the table once when it asks for a good share of it, by ``IN``
    filters of 500 ids otherwise; either way the same rows, the extra filter applied."""
    storage.upsert(workspace, "t", _rows(*((f"k{i:04d}", i % 3) for i in range(1200))), "key")
    wanted = [f"k{i:04d}" for i in range(0, 1200, 2)] + ["absent"]  # 600: two IN chunks

    def keys(ids, where=None):
        rows = storage.read_ids(workspace, "t", "key", ids, columns=["key", "value"],
                                where=where, scan_share=scan_share)
        assert rows.column_names == ["key", "value"]
        return sorted(rows.column("key").to_pylist())

    assert keys(wanted) == wanted[:-1]
    assert keys(wanted, where="value = 0") == [k for k in wanted[:-1] if int(k[1:]) % 3 == 0]
    assert keys(["k0007", "k0007", None]) == ["k0007"]
    assert keys([]) == []
    missing = storage.read_ids(workspace, "nothing", "key", ["k0001"], columns=["key"])
    assert missing.num_rows == 0 and missing.column_names == ["key"]


def test_a_parquet_mirror_is_written_again_only_when_its_table_changed(workspace):
    storage.upsert(workspace, "t", _rows(("a", 1)), "key")
    path = storage.export_parquet(workspace, "t")
    written = path.stat()
    assert storage.export_parquet(workspace, "t") == path
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)

    storage.upsert(workspace, "t", _rows(("b", 2)), "key")
    storage.export_parquet(workspace, "t")
    assert sorted(pq.read_table(path).column("key").to_pylist()) == ["a", "b"]

    # A table made again is numbered from 1 again: at the mirror's own version number (2),
    # the commit time still tells them apart.
    storage.drop_table(workspace, "t")
    storage.upsert(workspace, "t", _rows(("c", 3)), "key")
    storage.upsert(workspace, "t", _rows(("d", 4)), "key")
    assert workspace.db().open_table("t").version == 2
    storage.export_parquet(workspace, "t")
    assert sorted(pq.read_table(path).column("key").to_pylist()) == ["c", "d"]

    path.write_bytes(b"not parquet")  # a damaged mirror is replaced
    storage.export_parquet(workspace, "t")
    assert pq.read_table(path).num_rows == 2


def test_page_checksums_catch_every_flipped_bit(tmp_path):
    """The large caches' check (tasks/digests.py): Parquet's own CRC of each page, verified
    on read, in place of the row-by-row sha256. Without it about a third of single-bit flips
    in the data pages read back as other values, silently (64 of 211 when this was written)."""
    rows = pa.table({"path": [f"person-{i}/0.jpg" for i in range(5000)],
                     "sha256": [f"{i:064x}" for i in range(5000)]})
    path = storage.write_parquet_atomic(rows, tmp_path / "cache.parquet", page_checksums=True)
    assert storage.read_verified_parquet(path).equals(rows)
    written = path.read_bytes()
    for at in range(len(written) // 10, len(written) * 8 // 10, len(written) // 60):
        data = bytearray(written)
        data[at] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(storage.CorruptFileError, match="damaged"):
            storage.read_verified_parquet(path)


def test_a_checksummed_file_with_list_columns_reads_back_verified(tmp_path):
    """Arrow names list items ``item``, Parquet ``element``: the checksum must not care."""
    rows = pa.table({"id": ["a", "b"], "reasons": [["blank"], []],
                     "vector": pa.array([[0.5, 1.0], [2.0, 3.0]], pa.list_(pa.float32(), 2))})
    path = storage.write_parquet_atomic(rows, tmp_path / "shard.parquet", checksum=True)
    back = storage.read_verified_parquet(path)
    assert back.column("reasons").to_pylist() == [["blank"], []]
    damaged = rows.set_column(0, "id", pa.array(["a", "c"]))
    metadata = pq.read_schema(path).metadata
    pq.write_table(damaged.replace_schema_metadata(metadata), tmp_path / "tampered.parquet")
    with pytest.raises(storage.CorruptFileError, match="do not match"):
        storage.read_verified_parquet(tmp_path / "tampered.parquet")
