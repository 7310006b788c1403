"""Retention run by Prefect: ``clip4sketch prune`` and a night that prunes as it ends.

The policy's own rules (what is kept, bit for bit) are tests/tasks/validate/test_retention.py;
here: the command's refusals, the workspace lock, and the nightly stage on real shards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import main
from flows.nightly import nightly
from tasks.storage import Workspace
from tasks.validate import publish

from ..tasks.test_locking import _hold
from .conftest import accept_all_thresholds
from .test_nightly_dag import BACKFILL_STYLE, NIGHT_STYLE, _first_night, _sources

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(autouse=True)
def _fast_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"STEPS": "2", "BATCH_SIZE": "4", "SHARD_SIZE": "8", "DEVICE": "cpu",
                       "SAMPLES_PER_FACE": "1"}.items():
        monkeypatch.setenv(f"CLIP4SKETCH_GENERATE_{key}", value)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tasks.demo.faces import make_demo_source

    return make_demo_source(tmp_path_factory.mktemp("prune-src"), identities=3,
                            photos_per_identity=2)


@pytest.mark.parametrize("argv, message", [
    (["--keep", "0"], "at least 1"),
    (["--keep", "2", "--keep-days", "-1"], "keep_days must be >= 0"),
    ([], "how many published versions to keep"),
])
def test_a_policy_that_keeps_nothing_is_refused(tmp_path: Path, capsys, argv, message):
    code = main(["--workspace", str(tmp_path / "ws"), "prune", *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_prune_during_a_night_refuses_naming_it(tmp_path: Path, capsys):
    workspace = tmp_path / "ws"
    holder = _hold(workspace, 60)
    try:
        code = main(["--workspace", str(workspace), "prune", "--keep", "1", "--wait", "0.5"])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    assert "is in use by nightly run abc" in capsys.readouterr().err
    assert not (workspace / "runs").exists()


def test_prune_waits_for_a_night_to_finish(tmp_path: Path, capsys):
    workspace = tmp_path / "ws"
    holder = _hold(workspace, 2.0)
    code = main(["--workspace", str(workspace), "prune", "--keep", "1", "--wait", "60"])
    holder.wait()
    assert code == 0
    assert "freed" in capsys.readouterr().out
    assert list((workspace / "runs").glob("prune-*.json"))


def test_a_night_with_retention_prunes_the_older_version_and_finished_shards(
        source: Path, tmp_path: Path, capsys):
    workspace = _first_night(source, tmp_path / "ws")
    thresholds = str(accept_all_thresholds(tmp_path / "t.yaml"))
    first = nightly(sources=_sources(source), workspace=str(workspace.root),
                    styles=[NIGHT_STYLE], thresholds=thresholds, keep_published=1)
    v1 = first.published.validation.version
    assert first.stages.records["prune"].status == "done" and first.prune.pruned_versions == {}
    # A new style: the generator's version now holds both styles' sketches.
    second = nightly(sources=_sources(source), workspace=str(workspace.root),
                     styles=[NIGHT_STYLE, BACKFILL_STYLE], thresholds=thresholds,
                     keep_published=1)
    v2 = second.published.validation.version
    assert v2 != v1 and second.prune.pruned_versions == {v1: "published"}
    assert second.prune.sketches == []  # v2 names every sketch v1 did
    shards = workspace.root / "shards" / "generate"
    assert not list(shards.rglob("plan-*.json"))
    assert not [p for p in shards.rglob("*.parquet") if not p.name.endswith(".items.parquet")]
    assert list(shards.rglob("*.items.parquet"))  # a damaged PNG is redrawn in its batch
    listed = {r["version"]: r["pruned"] for r in publish.list_versions(Workspace.open(
        workspace.root))}
    assert listed == {v1: True, v2: False}
    publish.export_version(workspace, v2, tmp_path / "export")  # every PNG checks out
    record = json.loads(Path(second.run_record).read_text())
    assert record["parameters"]["retention"] == {"keep_published": 1, "keep_days": 14.0}
    assert record["stages"]["prune"]["pruned_versions"] == {v1: "published"}

    # The command on the same workspace: a dry run lists, pins are kept.
    assert main(["--workspace", str(workspace.root), "datasets", "--pin", v2,
                 "--note", "audit"]) == 0
    assert main(["--workspace", str(workspace.root), "prune", "--keep", "1",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"pinned {v2}" in out and "dry run: nothing removed" in out
    assert main(["--workspace", str(workspace.root), "datasets", "--pin", v1]) == 2
    assert "pruned" in capsys.readouterr().err
