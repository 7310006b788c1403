"""Planning: deterministic keys, seeds and shards; what is skipped, and why."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from tasks import storage
from tasks.generate.conditions import ConditionError, condition_sources
from tasks.generate.plan import (
    SKIP_NO_IDENTITY,
    SKIP_STALE_IMAGE,
    plan_generation,
    read_plan,
    sketch_id,
    sketch_key,
    sketch_seed,
)
from tasks.generate.saved import GeneratorMismatchError, read_manifest
from tasks.storage import Workspace

from .conftest import STYLES, TABLES, build_generator


def _plan(workspace: Workspace, generator: Path, **options):
    manifest = read_manifest(generator)
    sources = condition_sources(workspace, manifest)
    options = {"styles": list(STYLES), "samples_per_face": 2, "shard_size": 8, **options}
    return plan_generation(workspace, manifest["version"], sources, **options)


def test_key_gives_stable_distinct_ids_and_seeds():
    key = sketch_key("face", "pencil", 0, "gen-1")
    assert sketch_id(key) == sketch_id(sketch_key("face", "pencil", 0, "gen-1"))
    assert len(sketch_id(key)) == 32 and 0 <= sketch_seed(key) < 2**63
    others = [sketch_key("face2", "pencil", 0, "gen-1"), sketch_key("face", "ink", 0, "gen-1"),
              sketch_key("face", "pencil", 1, "gen-1"), sketch_key("face", "pencil", 0, "gen-2")]
    assert len({sketch_id(k) for k in [key, *others]}) == 5
    assert len({sketch_seed(k) for k in [key, *others]}) == 5
    assert format(sketch_seed(key), "x") not in sketch_id(key)  # not the id's own bits


def test_plan_cuts_deterministic_shards(gen_workspace: Workspace, tiny_generator: Path):
    plan = _plan(gen_workspace, tiny_generator)
    assert plan.faces_considered == 6 and plan.faces_eligible == 6
    assert plan.items_todo == 6 * 2 * 2 and [s.items for s in plan.shard_refs] == [8, 8, 8]
    assert {c.planned for c in plan.per_style.values()} == {12}
    again = _plan(gen_workspace, tiny_generator)
    assert [s.shard_id for s in again.shard_refs] == [s.shard_id for s in plan.shard_refs]
    assert again.plan_path == plan.plan_path
    assert read_plan(plan.plan_path).shard_refs == plan.shard_refs
    items = [storage.read_parquet(gen_workspace.root / s.items_path) for s in plan.shard_refs]
    ids = [i for t in items for i in t.column("sketch_id").to_pylist()]
    assert len(ids) == len(set(ids)) == 24
    # A different shard size is a different cut of the same items.
    assert {s.shard_id for s in _plan(gen_workspace, tiny_generator, shard_size=5).shard_refs
            }.isdisjoint(s.shard_id for s in plan.shard_refs)


def test_faces_without_current_vectors_are_skipped_with_a_reason(
        gen_workspace: Workspace, tiny_generator: Path):
    faces = storage.read(gen_workspace, "faces", columns=["face_id"]).column("face_id")
    lost, stale = sorted(faces.to_pylist())[:2]
    assert storage.delete(gen_workspace, TABLES["identity"], f"face_id = '{lost}'") == 1
    image = storage.read(gen_workspace, TABLES["image"], where=f"face_id = '{stale}'")
    column = image.schema.get_field_index("encoder_version")
    image = image.set_column(column, image.schema.field(column),
                             pa.array(["effnet-lite0@old"], pa.string()))
    storage.upsert(gen_workspace, TABLES["image"], image, "face_id")
    plan = _plan(gen_workspace, tiny_generator)
    assert plan.skipped_faces == {SKIP_NO_IDENTITY: 1, SKIP_STALE_IMAGE: 1}
    assert plan.faces_eligible == 4 and plan.items_todo == 4 * 2 * 2
    assert {c.skipped_no_vectors for c in plan.per_style.values()} == {2 * 2}
    planned = {f for s in plan.shard_refs for f in storage.read_parquet(
        gen_workspace.root / s.items_path).column("face_id").to_pylist()}
    assert lost not in planned and stale not in planned


def test_faces_filter_takes_face_or_identity_ids(gen_workspace: Workspace,
                                                 tiny_generator: Path):
    plan = _plan(gen_workspace, tiny_generator, faces=["demo-001", "nobody"])
    assert plan.faces_considered == 2 and plan.items_todo == 2 * 2 * 2
    assert plan.unmatched_filters == ["nobody"]


def test_a_style_without_a_text_vector_fails(gen_workspace: Workspace, tiny_generator: Path):
    with pytest.raises(ConditionError, match="style.*watercolour"):
        _plan(gen_workspace, tiny_generator, styles=["test-pencil", "watercolour"])
    with pytest.raises(ValueError, match="slugs"):
        _plan(gen_workspace, tiny_generator, styles=["../escape"])


def test_generator_from_other_encoders_is_refused(base_workspace: Path, tmp_path: Path):
    wide = build_generator(base_workspace, tmp_path / "wide", dims={"identity": 512})
    with pytest.raises(GeneratorMismatchError, match="identity: expected encoder") as err:
        condition_sources(Workspace.open(base_workspace), read_manifest(wide))
    assert err.value.roles == ["identity"]
