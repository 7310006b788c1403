"""CLIP4SKETCH_GENERATE_CPU_THREADS makes a local CPU run and a Dask CPU run draw the same pixels.

A Dask worker starts with one intra-op thread (its nanny sets OMP_NUM_THREADS=1) while a local
run has the process's own count, and CPU convolutions round differently with another count. The
setting is applied inside every shard, wherever it runs, and recorded in the ``device`` column.
Kept cheap: one style, one sample per face (6 sketches in 2 shards), one worker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flows.generate import generate
from tasks import storage
from tasks.storage import SKETCHES, Workspace

from ..tasks.generate.conftest import STEPS, STYLES, copy_workspace

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

OPTIONS = {"styles": list(STYLES)[:1], "samples_per_face": 1, "shard_size": 3, "steps": STEPS,
           "batch_size": 2, "device": "cpu"}


def _rows(workspace: Workspace) -> dict[str, tuple[str, str]]:
    rows = storage.read(workspace, SKETCHES, columns=["sketch_id", "png_sha256", "device"])
    return {r["sketch_id"]: (r["png_sha256"], r["device"]) for r in rows.to_pylist()}


def test_local_and_dask_cpu_runs_draw_identical_pixels(embedded: Path, generator: Path,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    from distributed import Client, LocalCluster
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("CLIP4SKETCH_GENERATE_CPU_THREADS", "2")
    before = torch.get_num_threads()
    local = copy_workspace(embedded, tmp_path / "local")
    report = generate(workspace=str(local.root), generator=str(generator), **OPTIONS)
    assert report.shards == 2 and not report.failed_shards
    assert torch.get_num_threads() == before  # the shard gave its thread its count back

    spread = copy_workspace(embedded, tmp_path / "dask")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      env={"PREFECT_API_URL": PREFECT_API_URL.value()}) as cluster, \
            Client(cluster) as client:
        # Left to itself the worker would sample with one thread.
        assert client.submit(torch.get_num_threads, pure=False).result() == 1
        on_dask = generate(workspace=str(spread.root), generator=str(generator), **OPTIONS,
                           dask_address=cluster.scheduler_address)
    assert on_dask.task_runner.startswith("dask:") and not on_dask.failed_shards

    local_rows, dask_rows = _rows(local), _rows(spread)
    assert len(local_rows) == 6 and dask_rows == local_rows  # same ids, checksums, device
    assert {device for _, device in local_rows.values()} == {"cpu (2 threads)"}
