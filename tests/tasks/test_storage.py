"""The storage module's keyed upsert: how many commits a write costs, and what it leaves."""

from __future__ import annotations

import pyarrow as pa

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
