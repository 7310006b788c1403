"""The train-recognizer flow: trains a head, reports it, and evaluate loads what it wrote."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.evaluate import evaluate
from flows.train_recognizer import train_recognizer
from tasks.demo.faces import make_demo_source
from tasks.ingest.run import ingest_source
from tasks.storage import Workspace

from ..tasks.recognize.synthetic import write_synthetic_sketches

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def _artifacts(key: str):
    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_train_recognizer_flow_output_is_what_evaluate_loads(tmp_path: Path):
    demo = make_demo_source(tmp_path / "demo", identities=4, photos_per_identity=2)
    workspace = Workspace.open(tmp_path / "ws")
    ingest_source(workspace, demo / "photos")
    write_synthetic_sketches(workspace)

    report = train_recognizer(workspace=str(workspace.root), name="Demo Head", steps=8,
                              batch_size=8, checkpoint_every=4)
    assert Path(report.recognizer_dir) == workspace.root / "recognizers" / "Demo Head"
    assert report.steps_this_run == 8 and report.identities == 4
    summary = asyncio.run(_artifacts("train-recognizer-demo-head-summary"))
    assert summary and "head, adaface" in summary[0].data
    assert list((workspace.root / "runs").glob("train-recognizer-*.json"))

    again = train_recognizer(workspace=str(workspace.root), name="Demo Head", steps=8,
                             batch_size=8, checkpoint_every=4, resume=True)
    assert again.steps_this_run == 0 and again.resumed_from == 8

    evaluated = evaluate(pairs=str(demo / "pairs.csv"), workspace=str(workspace.root),
                         recognizers=["baseline", report.recognizer_dir])
    assert set(evaluated.recognizers) == {"baseline", "Demo Head"}



def test_sketch_side_flow_reports_how_it_chose_and_evaluates(tmp_path: Path):
    demo = make_demo_source(tmp_path / "demo", identities=6, photos_per_identity=2)
    workspace = Workspace.open(tmp_path / "ws")
    ingest_source(workspace, demo / "photos")
    write_synthetic_sketches(workspace)

    report = train_recognizer(workspace=str(workspace.root), name="map", mode="procrustes",
                              real_pairs=[str(demo / "pairs.csv")], dataset=["sketches"])
    assert report.mode == "procrustes" and report.validation["identities"]["validation"] >= 2
    assert report.examples == {"photo": 12, "sketch": 6, "synthetic": 12}
    summary = asyncio.run(_artifacts("train-recognizer-map-summary"))
    assert summary and "chosen on" in summary[0].data and "alpha" in summary[0].data

    evaluated = evaluate(pairs=str(demo / "pairs.csv"), workspace=str(workspace.root),
                         recognizers=["baseline", report.recognizer_dir], bootstrap=50)
    assert evaluated.recognizers["map"]["ci95"]["n_resamples"] == 50
    # photos are the frozen encoder's: the same gallery vectors give the same impostor
    # scores between photos, so only sketch-photo pairs can differ from the baseline
    assert evaluated.recognizers["map"]["n_gallery"] == evaluated.recognizers["baseline"][
        "n_gallery"]


def test_encoder_flow_skips_a_faceless_sketch_reports_speed_and_evaluates(tmp_path: Path):
    """The encoder kind through the Prefect flow, on real pairs one of which is a sketch
    with no face: counted and reported, not trained on; evaluate loads what it wrote."""
    import csv

    import cv2
    import numpy as np

    demo = make_demo_source(tmp_path / "demo", identities=6, photos_per_identity=1)
    workspace = Workspace.open(tmp_path / "ws")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 192, 3), 200, np.uint8))
    with open(demo / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    manifest = tmp_path / "pairs-noface.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            row["photo_path"] = str(demo / row["photo_path"])
            row["sketch_path"] = str(blank if row["identity_id"] == "demo-005"
                                     else demo / row["sketch_path"])
            writer.writerow(row)

    report = train_recognizer(workspace=str(workspace.root), name="sketch blocks",
                              mode="encoder", real_pairs=[str(manifest)],
                              real_pairs_root=[str(tmp_path)], include_synthetic=False,
                              steps=1, batch_size=4)
    assert report.mode == "encoder" and report.validation["chosen"]["blocks"] >= 1
    assert report.skipped["unusable_sketch_no_face"] == 1 and report.examples["sketch"] == 5
    assert report.seconds_per_epoch > 0 and report.probes_per_second > 0
    summary = asyncio.run(_artifacts("train-recognizer-sketch-blocks-summary"))
    assert summary and "probes/s" in summary[0].data and "unusable_sketch_no_face 1" in \
        summary[0].data

    evaluated = evaluate(pairs=str(demo / "pairs.csv"), workspace=str(workspace.root),
                         recognizers=["baseline", report.recognizer_dir], bootstrap=20)
    assert set(evaluated.recognizers) == {"baseline", "sketch blocks"}
    # one step stays below the first validation, so step 0 (the encoder) was kept: the
    # same figures as the baseline
    ours, base = evaluated.recognizers["sketch blocks"], evaluated.recognizers["baseline"]
    assert ours["rank1"] == base["rank1"] and ours["n_probes"] == base["n_probes"]


def test_training_waits_for_a_night_and_refuses_naming_it(tmp_path: Path, monkeypatch):
    """A night must not change the sketches a recognizer trains on: training takes the
    workspace lock, so it refuses (after the lock timeout) while a night holds it."""
    from tasks.locking import WorkspaceBusyError

    from ..tasks.test_locking import _hold

    monkeypatch.setenv("CLIP4SKETCH_LOCK_TIMEOUT_SECONDS", "0")
    workspace = tmp_path / "ws"
    holder = _hold(workspace, 60)
    try:
        with pytest.raises(WorkspaceBusyError, match="nightly run abc"):
            train_recognizer(workspace=str(workspace), name="blocked", steps=1)
    finally:
        holder.kill()
        holder.wait()
    assert not (workspace / "recognizers" / "blocked").exists()
