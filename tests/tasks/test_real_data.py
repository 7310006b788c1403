"""Real faces from ../shared/data: the figures the Foundation issue promises.

Marked slow (a minute or two); CI runs them. Nothing read here is written into the
repository: the workspace lives in pytest's temporary folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from schemas.encoders import EncoderSpec
from tasks import storage
from tasks.embed import embed_faces
from tasks.evaluate.metrics import cmc, similarity_matrix
from tasks.ingest.run import ingest_source
from tasks.ingest.sources import write_cuhk_manifest
from tasks.storage import FACES, Workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cuhk_workspace(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cuhk")
    workspace = Workspace.open(root / "workspace")
    manifest = write_cuhk_manifest(shared_data / "cuhk", root / "cuhk.csv")
    assert manifest == 188
    report = ingest_source(workspace, root / "cuhk.csv", root=shared_data / "cuhk")
    return workspace, report, root / "cuhk.csv"


def test_cuhk_pairs_ingest_completely(cuhk_workspace):
    workspace, report, _ = cuhk_workspace
    assert report.ingested == {"photo": 188, "sketch": 188}
    assert report.quarantined == {}
    faces = storage.read(workspace, FACES, columns=["kind", "paired_face_id"])
    sketches = faces.filter(pc.equal(faces.column("kind"), "sketch"))
    assert sketches.column("paired_face_id").null_count == 0


def test_cuhk_second_run_ingests_nothing(cuhk_workspace, shared_data):
    workspace, _, manifest = cuhk_workspace
    again = ingest_source(workspace, manifest, root=shared_data / "cuhk")
    assert again.n_ingested == 0 and again.skipped == {"unchanged": 376}


def test_cuhk_sketch_to_photo_rank1_from_stored_sface_vectors(cuhk_workspace):
    workspace, _, _ = cuhk_workspace
    table = embed_faces(workspace, [EncoderSpec(role="identity", name="sface")]).tables[
        "identity"].table
    rows = storage.read(workspace, table, columns=["identity_id", "kind", "vector"])
    kinds = np.array(rows.column("kind").to_pylist())
    ids = np.array(rows.column("identity_id").to_pylist())
    vectors = np.stack(rows.column("vector").to_numpy(zero_copy_only=False))
    probes, gallery = kinds == "sketch", kinds == "photo"
    scores = similarity_matrix(vectors[probes], vectors[gallery])
    curve = cmc(scores, ids[probes], ids[gallery], max_rank=10)
    print(f"CUHK sketch->photo SFace rank-1 {curve[0]:.3f}, rank-10 {curve[9]:.3f}")
    assert probes.sum() == 188 and gallery.sum() == 188
    assert curve[0] >= 0.70


def test_orl_folder_gives_400_photos_of_40_identities(shared_data, workspace):
    report = ingest_source(workspace, shared_data / "orl")
    assert report.ingested == {"photo": 400} and report.quarantined == {}
    # The dataset copy also holds PNG re-encodings of 280 PGMs: same pictures, one face each.
    assert report.skipped == {"duplicate_picture": 280}
    faces = storage.read(workspace, FACES, columns=["identity_id"])
    assert len(set(faces.column("identity_id").to_pylist())) == 40
