"""Sharded embedding (``tasks.embed_shards``) without a cluster: plan, encode, merge.

The merge must store what ``embed_faces`` stores: one row per face, the same ids, identities,
versions and vectors, bit for bit whatever the shard size (on the same intra-op thread count:
batches do not change a vector). Shard files are reused after a kill and gone after a merge.
The flow on a real two-worker cluster, a killed worker included, is
tests/flows/test_dask_ingest.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from schemas.encoders import EncoderSpec
from tasks import storage
from tasks.embed import embed_faces, vector_matrix
from tasks.embed_shards import (
    SHARDS_DIR,
    describe,
    encode_shard,
    merge_embeddings,
    plan_embedding,
)
from tasks.encoders.base import EncoderError
from tasks.ingest.run import ingest_source
from tasks.storage import Workspace

from .ingest.conftest import good_source  # noqa: F401  (fixture)

SPECS = [EncoderSpec(role="identity", name="sface"), EncoderSpec(role="image",
                                                                 name="effnet-lite0")]


def vectors_by_face(workspace: Workspace, table: str) -> dict[str, tuple]:
    rows = storage.read(workspace, table).sort_by("face_id")
    vectors = vector_matrix(rows.column("vector"), rows.schema.field("vector").type.list_size)
    return {face: (identity, kind, version, vector) for face, identity, kind, version, vector
            in zip(rows.column("face_id").to_pylist(), rows.column("identity_id").to_pylist(),
                   rows.column("kind").to_pylist(), rows.column("encoder_version").to_pylist(),
                   vectors, strict=True)}


def sharded(workspace: Workspace, shard_size: int, specs=SPECS):
    plans = [plan_embedding(workspace, spec, describe(spec), shard_size) for spec in specs]
    done = [encode_shard(workspace, plan.spec, shard)
            for plan in reversed(plans) for shard in reversed(plan.shards)]
    return merge_embeddings(workspace, plans, done, "run")


@pytest.fixture
def two_workspaces(tmp_path: Path, good_source: Path):  # noqa: F811
    spaces = []
    for name in ("local", "spread"):
        workspace = Workspace.open(tmp_path / name)
        ingest_source(workspace, good_source)
        spaces.append(workspace)
    return spaces


@pytest.mark.parametrize("shard_size", [512, 4])
def test_shards_store_the_vectors_a_local_run_stores(two_workspaces, shard_size):
    local, spread = two_workspaces
    expected = embed_faces(local, SPECS, run_id="run")
    report, failed = sharded(spread, shard_size)
    assert not failed
    for role, table in expected.tables.items():
        got = report.tables[role]
        assert got.model_dump(exclude={"parquet"}) == table.model_dump(exclude={"parquet"})
        mine, theirs = vectors_by_face(spread, got.table), vectors_by_face(local, table.table)
        assert mine.keys() == theirs.keys() and len(mine) == 6
        for face, (identity, kind, version, vector) in theirs.items():
            assert mine[face][:3] == (identity, kind, version)
            assert np.array_equal(mine[face][3], vector), face
    assert not list((spread.root / SHARDS_DIR).glob("*"))
    # Nothing left to do: a second plan has no shards.
    assert all(not plan_embedding(spread, spec, describe(spec)).shards for spec in SPECS)


def test_a_rerun_after_a_kill_reuses_finished_shards_and_merges_once(two_workspaces):
    _, workspace = two_workspaces
    spec = SPECS[0]
    plan = plan_embedding(workspace, spec, describe(spec), 2)
    first = encode_shard(workspace, spec, plan.shards[0])  # then the run dies
    again = plan_embedding(workspace, spec, describe(spec), 2)
    assert again.shards == plan.shards
    done = [encode_shard(workspace, spec, shard) for shard in again.shards]
    assert done[0].reused and done[0].rows_sha256 == first.rows_sha256
    # A shard reported twice (Dask ran it again on another worker) is still one row a face.
    report, failed = merge_embeddings(workspace, [again], done + done[:1], "run")
    assert not failed and report.tables["identity"].rows == 6
    assert report.tables["identity"].computed == 6


def test_unfinished_shards_are_named_and_the_others_merged(two_workspaces):
    _, workspace = two_workspaces
    spec = SPECS[0]
    plan = plan_embedding(workspace, spec, describe(spec), 2)
    done = [encode_shard(workspace, spec, shard) for shard in plan.shards[1:]]
    report, failed = merge_embeddings(workspace, [plan], done, "run")
    assert failed == [plan.shards[0].shard_id]
    assert report.tables["identity"].rows == 4 and report.tables["identity"].computed == 4
    rest = plan_embedding(workspace, spec, describe(spec), 2)
    assert [s.items for s in rest.shards] == [2]


def test_a_worker_with_other_weights_refuses_its_shard(two_workspaces):
    _, workspace = two_workspaces
    spec = SPECS[0]
    plan = plan_embedding(workspace, spec, describe(spec), 512)
    shard = plan.shards[0].model_copy(update={"encoder_version": "sface@elsewhere"})
    with pytest.raises(EncoderError, match="same weights"):
        encode_shard(workspace, spec, shard)
