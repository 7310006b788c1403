"""Sharded ingestion (``tasks.ingest.shards``) without a cluster: plan, analyse, merge.

The shards run here one after another, in any order; what is checked is the promise the
Dask runs rest on: the merge stores exactly what a local ``ingest_source`` stores (faces,
crops, quarantine rows and reasons, pairs, report counts), whatever the shard size, and it
leaves no shard file behind. The flow on a real two-worker cluster is
tests/flows/test_dask_ingest.py.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import pyarrow as pa
import pytest

from schemas.settings import IngestSettings
from tasks import storage
from tasks.demo.faces import draw_face, draw_sketch
from tasks.ingest.run import ingest_source
from tasks.ingest.shards import SHARDS_DIR, analyse_shard, merge_source, plan_source
from tasks.storage import FACES, QUARANTINE, Workspace

from .conftest import png_bytes
from .test_run import EXPECTED_FOLDER_REASONS, _write_bad_files

# Columns that differ between any two runs (when they ran), not what they stored.
WHEN = ("ingested_at", "quarantined_at")


def table_rows(workspace: Workspace, name: str, key: str) -> list[dict]:
    rows = storage.read(workspace, name).sort_by(key)
    return rows.drop_columns([c for c in WHEN if c in rows.column_names]).to_pylist()


def sharded(workspace: Workspace, source: Path, shard_size: int, *, reverse: bool = False,
            run_id: str = "run", **options) -> object:
    settings = IngestSettings()
    plan = plan_source(workspace, source, root=None, is_pre_aligned=False, settings=settings,
                       run_id=run_id, retry_quarantined=False, shard_size=shard_size)
    order = list(reversed(plan.shards)) if reverse else plan.shards
    done = [analyse_shard(workspace, shard, settings, False) for shard in order]
    return merge_source(workspace, plan, done, is_pre_aligned=False, settings=settings,
                        run_id=run_id, retry_quarantined=False, **options)


def _report(report) -> dict:
    return report.model_dump(exclude={"seconds", "faces_version", "quarantine_version"})


@pytest.fixture
def messy_source(good_source: Path, tmp_path: Path) -> Path:
    """The three demo identities, every kind of bad file, and a pairs manifest beside them."""
    _write_bad_files(good_source, tmp_path / "outside")
    return good_source


@pytest.fixture
def pairs_manifest(tmp_path: Path) -> Path:
    root = tmp_path / "pairs"
    root.mkdir()
    rows = []
    for identity in range(3):
        (root / f"p{identity}.png").write_bytes(png_bytes(draw_face(identity, 3)))
        ok, sketch = cv2.imencode(".png", draw_sketch(identity))
        (root / f"s{identity}.png").write_bytes(sketch.tobytes())
        rows.append({"identity_id": f"person-{identity}", "photo_path": f"p{identity}.png",
                     "sketch_path": f"s{identity}.png", "style": "pencil"})
    # A photo listed twice: its second line is the same bytes again.
    rows.append(dict(rows[0], sketch_path="", style=""))
    with open(root / "pairs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "pairs.csv"


@pytest.mark.parametrize("shard_size", [1, 4, 1000])
def test_shards_store_what_a_local_run_stores(tmp_path, messy_source, pairs_manifest,
                                               shard_size):
    local = Workspace.open(tmp_path / "local")
    spread = Workspace.open(tmp_path / "spread")
    expected = [ingest_source(local, source, run_id="run")
                for source in (messy_source, pairs_manifest)]
    # Shards finishing in another order than planned change nothing either.
    got = [sharded(spread, source, shard_size, reverse=True)
           for source in (messy_source, pairs_manifest)]

    assert [_report(r) for r in got] == [_report(r) for r in expected]
    assert table_rows(spread, FACES, "face_id") == table_rows(local, FACES, "face_id")
    assert (table_rows(spread, QUARANTINE, "quarantine_id")
            == table_rows(local, QUARANTINE, "quarantine_id"))
    reasons = {Path(r["source_path"]).name: r["reason"]
               for r in storage.read(spread, QUARANTINE).to_pylist()}
    assert reasons == EXPECTED_FOLDER_REASONS
    faces = storage.read(spread, FACES)
    assert pa.compute.sum(pa.compute.is_valid(faces.column("paired_face_id"))).as_py() == 3
    # The merge removed every shard file it used.
    assert not list((spread.root / SHARDS_DIR).glob("*"))


def test_rerun_reuses_finished_shards_and_plans_nothing_new(tmp_path, good_source):
    workspace = Workspace.open(tmp_path / "ws")
    settings = IngestSettings()
    plan = plan_source(workspace, good_source, root=None, is_pre_aligned=False,
                       settings=settings, run_id="a", retry_quarantined=False, shard_size=2)
    assert len(plan.shards) == 3
    first = analyse_shard(workspace, plan.shards[0], settings, False)
    # The run is killed here; the next one plans the same shards and keeps the finished one.
    again = plan_source(workspace, good_source, root=None, is_pre_aligned=False,
                        settings=settings, run_id="b", retry_quarantined=False, shard_size=2)
    assert again.shards == plan.shards
    done = [analyse_shard(workspace, shard, settings, False) for shard in again.shards]
    assert done[0].reused and done[0].rows_sha256 == first.rows_sha256
    assert not any(d.reused for d in done[1:])
    report = merge_source(workspace, again, done, is_pre_aligned=False, settings=settings,
                          run_id="b", retry_quarantined=False)
    assert report.ingested == {"photo": 6}
    nothing = plan_source(workspace, good_source, root=None, is_pre_aligned=False,
                          settings=settings, run_id="c", retry_quarantined=False,
                          shard_size=2)
    assert nothing.shards == []


def test_a_file_changed_after_planning_is_left_for_the_next_run(tmp_path, good_source):
    workspace = Workspace.open(tmp_path / "ws")
    settings = IngestSettings()
    plan = plan_source(workspace, good_source, root=None, is_pre_aligned=False,
                       settings=settings, run_id="a", retry_quarantined=False, shard_size=10)
    changed = good_source / "person-1" / "0.png"
    changed.write_bytes(png_bytes(draw_face(1, 7)))
    (good_source / "person-2" / "1.png").unlink()
    done = [analyse_shard(workspace, shard, settings, False) for shard in plan.shards]
    report = merge_source(workspace, plan, done, is_pre_aligned=False, settings=settings,
                          run_id="a", retry_quarantined=False)
    # Neither is refused for what happened to the file; the next run reads them afresh.
    assert report.ingested == {"photo": 4}
    assert report.skipped == {"changed_during_ingest": 2} and report.quarantined == {}
    assert ingest_source(workspace, good_source).ingested == {"photo": 1}


def test_a_shard_that_did_not_finish_writes_nothing(tmp_path, good_source):
    workspace = Workspace.open(tmp_path / "ws")
    settings = IngestSettings()
    plan = plan_source(workspace, good_source, root=None, is_pre_aligned=False,
                       settings=settings, run_id="a", retry_quarantined=False, shard_size=2)
    done = [analyse_shard(workspace, shard, settings, False) for shard in plan.shards[1:]]
    with pytest.raises(RuntimeError, match="1 of 3 ingest shards"):
        merge_source(workspace, plan, done, is_pre_aligned=False, settings=settings,
                     run_id="a", retry_quarantined=False)
    assert storage.count(workspace, FACES) == 0
