"""CPU shards sample with the run's thread count, record it, and give the thread its own back."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from schemas.generation import GenerationContext, SamplingParams, planned_cpu_threads
from tasks import storage
from tasks.generate.conditions import condition_sources
from tasks.generate.merge import finished_shards, merge_shards
from tasks.generate.plan import plan_generation
from tasks.generate.saved import read_manifest
from tasks.generate.shard import cpu_threads, run_shard
from tasks.storage import SKETCHES, Workspace

from .conftest import STEPS, STYLES, copy_workspace


def test_the_setting_decides_the_count_else_the_planning_process(monkeypatch):
    monkeypatch.delenv("CLIP4SKETCH_GENERATE_CPU_THREADS", raising=False)
    assert planned_cpu_threads() == torch.get_num_threads()
    monkeypatch.setenv("CLIP4SKETCH_GENERATE_CPU_THREADS", "3")
    assert planned_cpu_threads() == 3


def test_cpu_threads_is_set_inside_and_restored_after_and_gpu_shards_are_left_alone():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with cpu_threads(other, "cpu"):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with cpu_threads(other, "cuda:0"):
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), cpu_threads(other, "cpu"):
        raise RuntimeError("a failing shard")
    assert torch.get_num_threads() == before


def test_a_shard_samples_with_the_context_count_and_records_it(base_workspace: Path,
                                                               tiny_generator: Path,
                                                               tmp_path: Path):
    """Run in a fresh thread (as a task runner would) whose own default differs."""
    workspace = copy_workspace(base_workspace, tmp_path / "ws")
    manifest = read_manifest(tiny_generator)
    sources = condition_sources(workspace, manifest)
    plan = plan_generation(workspace, manifest["version"], sources, list(STYLES)[:1],
                           samples_per_face=1, shard_size=8)
    threads = 1 if torch.get_num_threads() != 1 else 2
    context = GenerationContext(
        workspace=str(workspace.root), generator_path=str(tiny_generator),
        generator_version=manifest["version"], generator_config=manifest["config_name"],
        conditions=sources, sampling=SamplingParams(steps=STEPS, batch_size=4),
        devices=["cpu"], run_id="test", cpu_threads=threads)
    seen: dict[str, int] = {}

    def shard_thread() -> None:
        seen["before"] = torch.get_num_threads()
        for shard in plan.shard_refs:
            run_shard(context, shard)
        seen["after"] = torch.get_num_threads()

    worker = threading.Thread(target=shard_thread)
    worker.start()
    worker.join()
    assert seen["before"] == seen["after"] != threads
    merge_shards(Workspace.open(workspace.root), finished_shards(workspace, plan.plan_path),
                 "test")
    devices = storage.read(workspace, SKETCHES, columns=["device"]).column("device").to_pylist()
    assert devices and set(devices) == {f"cpu ({threads} threads)"}
