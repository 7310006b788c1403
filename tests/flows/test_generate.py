"""The generate flow under Prefect: plan, shards, merge, artifacts; on threads and on Dask."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.generate import generate
from tasks import storage
from tasks.generate.conditions import ConditionError
from tasks.generate.saved import UNET_WEIGHTS, GeneratorLoadError, GeneratorMismatchError
from tasks.storage import SKETCHES, Workspace

from ..tasks.generate.conftest import (
    STEPS,
    STYLES,
    build_generator,
    copy_workspace,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")

OPTIONS = {"styles": list(STYLES), "samples_per_face": 2, "shard_size": 8, "steps": STEPS,
           "batch_size": 4, "device": "cpu"}


@pytest.fixture(scope="module")
def local_run(embedded: Path, generator: Path, tmp_path_factory: pytest.TempPathFactory):
    workspace = copy_workspace(embedded, tmp_path_factory.mktemp("local") / "ws")
    return workspace, generate(workspace=str(workspace.root), generator=str(generator),
                               **OPTIONS)


def _checksums(workspace: Workspace) -> dict[str, str]:
    rows = storage.read(workspace, SKETCHES, columns=["sketch_id", "png_sha256"])
    return dict(zip(rows.column("sketch_id").to_pylist(), rows.column("png_sha256").to_pylist(),
                    strict=True))


async def _artifact(key: str, run_id: str):
    """This run's artifact: the session's server holds every other test's runs too."""
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    mine = [a for a in found if str(a.flow_run_id) == run_id]
    return mine[0].data if mine else None


def test_flow_generates_merges_and_reports(local_run):
    workspace, report = local_run
    assert report.shards == 3 and not report.failed_shards and report.devices == ["cpu"]
    assert {s: (c.planned, c.generated, c.flagged) for s, c in report.per_style.items()} == {
        s: (12, 12, 0) for s in STYLES}
    assert report.merge.rows == 24 == len(_checksums(workspace))
    summary = asyncio.run(_artifact("generate-summary", report.run_id))
    assert "| test-pencil | 12 | 12 |" in summary
    assert "test-charcoal" in asyncio.run(_artifact("generate-summary-styles", report.run_id))
    assert Path(report.run_record).is_file()


def test_rerun_generates_nothing(local_run, generator: Path):
    workspace, _ = local_run
    again = generate(workspace=str(workspace.root), generator=str(generator), **OPTIONS)
    assert again.shards == 0 and again.merge.rows == 24
    assert {c.skipped_existing for c in again.per_style.values()} == {12}


def test_held_out_faces_only(embedded: Path, generator: Path, tmp_path: Path):
    workspace = copy_workspace(embedded, tmp_path / "ws")
    report = generate(workspace=str(workspace.root), generator=str(generator),
                      **{**OPTIONS, "styles": ["test-pencil"]}, faces=["demo-002"])
    assert report.per_style["test-pencil"].generated == 2 * 2
    assert set(storage.read(workspace, SKETCHES, columns=["identity_id"])
               .column("identity_id").to_pylist()) == {"demo-002"}


def test_each_style_draws_with_its_own_noise_unless_one_eta_is_given(
        embedded: Path, generator: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The option's per-style noise over the settings', and an explicit eta over both; each
    row records the noise it was drawn with."""
    def etas(workspace: Workspace) -> dict[str, set[float]]:
        rows = storage.read(workspace, SKETCHES, columns=["style", "eta"]).to_pylist()
        return {s: {r["eta"] for r in rows if r["style"] == s} for s in STYLES}

    monkeypatch.setenv("CLIP4SKETCH_GENERATE_STYLE_ETA",
                       '{"test-pencil": 0.25, "test-charcoal": 0.75}')
    per_style = copy_workspace(embedded, tmp_path / "per-style")
    generate(workspace=str(per_style.root), generator=str(generator), **OPTIONS,
             style_eta={"test-pencil": 1.0})
    assert etas(per_style) == {"test-pencil": {1.0}, "test-charcoal": {0.75}}
    one = copy_workspace(embedded, tmp_path / "one")
    generate(workspace=str(one.root), generator=str(generator), **OPTIONS,
             style_eta={"test-pencil": 1.0}, eta=0.5)
    assert etas(one) == {"test-pencil": {0.5}, "test-charcoal": {0.5}}
    assert _checksums(one) != _checksums(per_style)


def test_bad_generator_fails_before_any_shard(embedded: Path, generator: Path, tmp_path: Path):
    workspace = copy_workspace(embedded, tmp_path / "ws")
    wide = build_generator(embedded, tmp_path / "wide", dims={"image": 512})
    with pytest.raises(GeneratorMismatchError, match="image: expected encoder"):
        generate(workspace=str(workspace.root), generator=str(wide), **OPTIONS)
    truncated = Path(shutil.copytree(generator, tmp_path / "truncated"))
    data = (truncated / UNET_WEIGHTS).read_bytes()
    (truncated / UNET_WEIGHTS).write_bytes(data[: len(data) // 3])
    with pytest.raises(GeneratorLoadError, match="corrupted or truncated"):
        generate(workspace=str(workspace.root), generator=str(truncated), **OPTIONS)
    with pytest.raises(GeneratorLoadError, match="not a saved sketch generator"):
        generate(workspace=str(workspace.root), **OPTIONS)  # no default generator yet
    with pytest.raises(ValueError, match="at most 1"):  # a ddpm generator, eta > 1
        generate(workspace=str(workspace.root), generator=str(generator), **OPTIONS, eta=2.0)
    for bad in (2.0, -1.0):  # one style's, named
        with pytest.raises(ValueError, match=rf"style_eta\['test-pencil'\]: eta {bad}"):
            generate(workspace=str(workspace.root), generator=str(generator), **OPTIONS,
                     style_eta={"test-pencil": bad})
    empty = Workspace.open(tmp_path / "empty")
    with pytest.raises(ConditionError, match="no identity vectors"):
        generate(workspace=str(empty.root), generator=str(generator), **OPTIONS)
    assert not (workspace.root / "shards").exists() and not (workspace.root / "sketches").exists()
    assert SKETCHES not in storage.table_names(workspace)


@pytest.mark.slow
def test_flow_on_a_dask_cluster_matches_the_local_run(local_run, embedded: Path,
                                                      generator: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    import torch
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL

    workspace = copy_workspace(embedded, tmp_path / "ws")
    started = time.perf_counter()
    # Dask starts workers with OMP/MKL_NUM_THREADS=1 unless the environment says otherwise;
    # CPU rounding depends on the thread count, so match the local run's to compare pixels.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(variable, str(torch.get_num_threads()))
    # Workers report to the test server instead of each starting its own (~25 s apiece).
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      env={"PREFECT_API_URL": PREFECT_API_URL.value()}) as cluster:
        report = generate(workspace=str(workspace.root), generator=str(generator),
                          **{**OPTIONS, "device": "auto"}, dask_address=cluster.scheduler_address)
    print(f"dask run: {time.perf_counter() - started:.1f} s")
    assert report.task_runner.startswith("dask:") and report.shards == 3
    devices = set(storage.read(workspace, SKETCHES, columns=["device"]).column("device")
                  .to_pylist())
    assert devices == {f"cpu ({torch.get_num_threads()} threads)"}
    assert _checksums(workspace) == _checksums(local_run[0])
