"""Shards and merge: same key same pixels, resumable, self-checking, flags bad samples."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest

from schemas.generation import GenerationContext, Plan, SamplingParams
from tasks import storage
from tasks.generate.conditions import condition_sources
from tasks.generate.merge import finished_shards, merge_shards
from tasks.generate.plan import plan_generation
from tasks.generate.saved import read_manifest
from tasks.generate.shard import (
    SimulatedCrash,
    claim_device,
    classify,
    journal_path,
    run_shard,
)
from tasks.storage import SKETCHES, Workspace

from .conftest import STEPS, STYLES, build_generator, copy_workspace

BATCH = 4


def plan_and_context(workspace: Workspace, generator: Path) -> tuple[Plan, GenerationContext]:
    manifest = read_manifest(generator)
    sources = condition_sources(workspace, manifest)
    plan = plan_generation(workspace, manifest["version"], sources, list(STYLES),
                           samples_per_face=2, shard_size=8)
    context = GenerationContext(
        workspace=str(workspace.root), generator_path=str(generator),
        generator_version=manifest["version"], generator_config=manifest["config_name"],
        conditions=sources, sampling=SamplingParams(steps=STEPS, batch_size=BATCH),
        devices=["cpu"], run_id="test")
    return plan, context


def run_all(workspace: Workspace, generator: Path) -> Plan:
    plan, context = plan_and_context(workspace, generator)
    for shard in plan.shard_refs:
        run_shard(context, shard)
    merge_shards(workspace, finished_shards(workspace, plan.plan_path), "test")
    return plan


def checksums(workspace: Workspace) -> dict[str, str]:
    rows = storage.read(workspace, SKETCHES, columns=["sketch_id", "png_sha256"])
    return dict(zip(rows.column("sketch_id").to_pylist(), rows.column("png_sha256").to_pylist(),
                    strict=True))


@pytest.fixture(scope="module")
def reference(base_workspace: Path, tiny_generator: Path,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Plan, dict]:
    """One clean run in its own copy of the workspace: the pixels every other run must match."""
    workspace = copy_workspace(base_workspace, tmp_path_factory.mktemp("reference") / "ws")
    plan = run_all(workspace, tiny_generator)
    return workspace, plan, checksums(workspace)


def test_shards_write_pngs_rows_and_merge(reference):
    workspace, plan, sums = reference
    rows = storage.read(workspace, SKETCHES)
    assert rows.num_rows == plan.items_todo == 24 and len(sums) == 24
    assert set(rows.column("status").to_pylist()) == {"ok"}
    row = rows.slice(0, 1).to_pylist()[0]
    path = workspace.root / row["png_path"]
    assert row["png_path"] == (f"sketches/{row['generator_version']}/{row['style']}/"
                               f"{row['sketch_id']}.png")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == row["png_sha256"]
    assert (row["steps"], row["batch_size"], row["precision"]) == (STEPS, BATCH, "fp32")
    assert row["device"].startswith("cpu (") and row["device"].endswith(" threads)")
    assert row["identity_encoder_version"].startswith("sface") and '"beta_end"' in row[
        "scheduler"]
    assert row["style_text"] == STYLES[row["style"]]
    assert (workspace.datasets_dir / "sketches.parquet").is_file()
    assert "run-test" in storage.tags(workspace, SKETCHES)


def test_rerun_skips_finished_shards_and_merged_sketches(reference, tiny_generator: Path):
    workspace, plan, _ = reference
    _, context = plan_and_context(workspace, tiny_generator)  # plans nothing: all merged
    pngs = sorted((workspace.root / "sketches").rglob("*.png"))
    before = [p.stat().st_mtime_ns for p in pngs]
    results = [run_shard(context, shard) for shard in plan.shard_refs]
    assert all(r.skipped and r.generated == 0 and r.reused == 8 for r in results)
    assert [p.stat().st_mtime_ns for p in pngs] == before
    again, _ = plan_and_context(workspace, tiny_generator)
    assert again.items_todo == 0 and again.shards == 0
    assert {c.skipped_existing for c in again.per_style.values()} == {12}


def test_same_key_same_pixels_in_a_fresh_workspace(reference, base_workspace: Path,
                                                    tiny_generator: Path, tmp_path: Path):
    workspace = copy_workspace(base_workspace, tmp_path / "ws")
    run_all(workspace, tiny_generator)
    assert checksums(workspace) == reference[2]


def test_killed_mid_shard_resumes_without_duplicates_or_holes(
        reference, base_workspace: Path, tiny_generator: Path, tmp_path: Path):
    workspace = copy_workspace(base_workspace, tmp_path / "ws")
    plan, context = plan_and_context(workspace, tiny_generator)
    first = plan.shard_refs[0]
    with pytest.raises(SimulatedCrash):
        run_shard(context, first, crash_after=BATCH + 1)  # one batch journaled, one PNG more
    result = workspace.root / first.result_path
    assert not result.exists() and journal_path(result).is_file()
    assert len(list((workspace.root / "sketches").rglob("*.png"))) == BATCH + 1

    resumed = [run_shard(context, shard) for shard in plan.shard_refs]
    assert (resumed[0].generated, resumed[0].reused) == (8 - BATCH, BATCH)
    assert not journal_path(result).exists()
    report = merge_shards(workspace, finished_shards(workspace, plan.plan_path), "test")
    assert report.inserted == report.rows == plan.items_todo
    assert checksums(workspace) == reference[2]  # bit-for-bit the uninterrupted run


def test_missing_or_corrupted_png_is_regenerated(reference, base_workspace: Path,
                                                 tiny_generator: Path, tmp_path: Path):
    workspace = copy_workspace(base_workspace, tmp_path / "ws")
    plan = run_all(workspace, tiny_generator)
    shard = plan.shard_refs[1]
    rows = storage.read_parquet(workspace.root / shard.result_path).to_pylist()
    corrupted = workspace.root / rows[1]["png_path"]
    missing = workspace.root / rows[6]["png_path"]
    corrupted.write_bytes(corrupted.read_bytes()[:-7] + b"garbage")
    missing.unlink()

    _, context = plan_and_context(workspace, tiny_generator)
    result = run_shard(context, shard)
    assert (result.skipped, result.repaired, result.not_reproduced) == (False, 2, 0)
    for row in (rows[1], rows[6]):
        data = (workspace.root / row["png_path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["png_sha256"] == reference[2][
            row["sketch_id"]]
    assert run_shard(context, shard).skipped


def test_nan_samples_are_flagged_not_saved_as_good(gen_workspace: Workspace, tmp_path: Path):
    broken = build_generator(gen_workspace.root, tmp_path / "nan", nan=True)
    plan, context = plan_and_context(gen_workspace, broken)
    result = run_shard(context, plan.shard_refs[0])
    assert {s: c.get("nan", 0) for s, c in result.by_style.items()} == {s: 4 for s in STYLES}
    merge_shards(gen_workspace, finished_shards(gen_workspace, plan.plan_path), "test")
    rows = storage.read(gen_workspace, SKETCHES).to_pylist()
    assert len(rows) == 8 and {r["status"] for r in rows} == {"nan"}
    assert all(r["png_path"] is None and "non-finite" in r["reason"] for r in rows)
    assert not list((gen_workspace.root / "sketches").rglob("*.png"))
    assert run_shard(context, plan.shard_refs[0]).skipped  # a NaN row needs no PNG to check


def test_a_spatial_generator_draws_from_each_face_s_photo(base_workspace: Path,
                                                           tmp_path: Path):
    """A generator trained with the mugshot as an extra input channel gets that channel at
    generation too, made the same way as in training, so its sketches are reproducible."""
    runs = []
    for name in ("a", "b"):
        workspace = copy_workspace(base_workspace, tmp_path / name / "ws")
        grey = build_generator(workspace.root, tmp_path / name / "grey", spatial="grey")
        assert read_manifest(grey)["spatial_condition"] == "grey"
        plan = run_all(workspace, grey)
        rows = storage.read(workspace, SKETCHES).to_pylist()
        assert len(rows) == plan.items_todo and {r["status"] for r in rows} <= {"ok", "blank"}
        runs.append(checksums(workspace))
    assert runs[0] == runs[1]


def test_a_bridge_draws_from_each_face_s_rendering_reproducibly(base_workspace: Path,
                                                                 tmp_path: Path):
    """A bridge starts from the start renderer's drawing of each face, made at generation as
    in training; its rows record the formulation, and two runs draw the same pixels."""
    import json

    runs = []
    for name in ("a", "b"):
        workspace = copy_workspace(base_workspace, tmp_path / name / "ws")
        bridge = build_generator(workspace.root, tmp_path / name / "bridge",
                                 config="tiny-bridge")
        manifest = read_manifest(bridge)
        assert (manifest["formulation"], manifest["start"]) == ("bridge", "pencil-dodge")
        plan = run_all(workspace, bridge)
        rows = storage.read(workspace, SKETCHES).to_pylist()
        assert len(rows) == plan.items_todo and {r["status"] for r in rows} <= {"ok", "blank"}
        assert json.loads(rows[0]["scheduler"])["formulation"]["kind"] == "bridge"
        runs.append(checksums(workspace))
    assert runs[0] == runs[1]


def test_blank_images_are_flagged():
    flat = np.full((16, 16), 200, np.uint8)
    assert classify(flat, True, 2.0)[0] == "blank"
    assert classify(flat, False, 2.0)[:2] == ("nan", "sampler produced non-finite values "
                                                     "(NaN/inf)")
    drawn = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
    status, reason, std = classify(drawn, True, 2.0)
    assert status == "ok" and reason is None and std > 50


def test_two_shards_never_share_a_device():
    held: list[str] = []
    gate = threading.Barrier(2)

    def work() -> None:
        with claim_device(["cuda:0", "cuda:1"]) as device:
            held.append(device)
            gate.wait(timeout=5)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(held) == ["cuda:0", "cuda:1"]
