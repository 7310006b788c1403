"""The benchmark behind the feature-matching figures reads a workspace's paired sketches."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.sface_feature_distance import distances

from ..tasks.generate.demo_data import demo_template


def test_each_artist_style_gets_both_statistics_for_each_comparison(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    workspace = demo_template(tmp_path_factory)
    found = distances(workspace, pairs=3, blocks=(2, 4), seed=0)
    assert set(found) == {"demo-pencil"}
    rows = found["demo-pencil"]
    assert set(rows) == {"grey photo", "pencil render", "another person's sketch, same artist"}
    for value in rows.values():
        assert set(value) == {"activations", "gram"}
        assert all(v > 0 for v in value.values())


def test_a_workspace_without_paired_sketches_says_what_to_run(tmp_path: Path) -> None:
    from tasks import storage

    with pytest.raises(SystemExit, match="is no workspace"):
        distances(tmp_path / "typo", pairs=3, blocks=(2,), seed=0)
    assert not (tmp_path / "typo").exists()
    storage.Workspace.open(tmp_path / "ws")
    with pytest.raises(SystemExit, match="no paired sketches.*experiments/real-data.sh"):
        distances(tmp_path / "ws", pairs=3, blocks=(2,), seed=0)
