"""Flows run by Prefect (one temporary server for the session): nightly, ingest, embed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.cli import main
from flows.embed import embed
from flows.ingest import ingest
from flows.nightly import nightly
from tasks import storage
from tasks.demo.faces import make_demo_source
from tasks.ingest.sources import ManifestError

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def demo_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_source(tmp_path_factory.mktemp("demo"), identities=3,
                            photos_per_identity=2)


async def _artifacts(key: str):
    """Artifacts of ``key``, newest first: other flow tests of the session (any ``ingest``)
    publish under the same keys on the shared test server."""
    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC)


def test_nightly_ingests_embeds_and_reports(demo_source: Path, tmp_path: Path):
    workspace = tmp_path / "ws"
    report = nightly(sources=[str(demo_source / "photos"), str(demo_source / "pairs.csv")],
                     workspace=str(workspace))
    assert report.ingest[0].ingested == {"photo": 6}
    # The pairs manifest repeats the first photos (same bytes) and adds the sketches.
    assert report.ingest[1].ingested == {"sketch": 3}
    assert report.ingest[1].skipped == {"unchanged": 3}
    assert {t.computed for t in report.embed.tables.values()} == {9}

    summary = asyncio.run(_artifacts("nightly-summary"))
    assert summary and "## Ingest" in summary[0].data and "## Embeddings" in summary[0].data
    assert asyncio.run(_artifacts("nightly-summary-quarantine"))
    record = json.loads(Path(report.run_record).read_text())
    assert record["flow"] == "nightly" and record["run_id"] == report.run_id
    assert set(storage.tags(storage.Workspace.open(workspace), "faces")) == {
        f"run-{report.run_id}"}

    again = nightly(sources=[str(demo_source / "photos"), str(demo_source / "pairs.csv")],
                    workspace=str(workspace))
    assert sum(r.n_ingested for r in again.ingest) == 0
    assert {t.computed for t in again.embed.tables.values()} == {0}


def test_quarantine_table_artifact_lists_refused_files(demo_source: Path, tmp_path: Path):
    source = tmp_path / "src"
    (source / "someone").mkdir(parents=True)
    (source / "someone" / "broken.jpg").write_bytes(b"")
    ingest(sources=[str(source)], workspace=str(tmp_path / "ws"))
    rows = asyncio.run(_artifacts("ingest-summary-quarantine"))[0].data
    assert "empty_file" in rows and "broken.jpg" in rows


def test_bad_manifest_fails_the_flow_without_retrying(tmp_path: Path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("identity_id,photo\nx,y.png\n")
    with pytest.raises(ManifestError, match="missing column"):
        ingest(sources=[str(manifest)], workspace=str(tmp_path / "ws"))


def test_embed_flow_alone(demo_source: Path, tmp_path: Path):
    ingest(sources=[str(demo_source / "photos")], workspace=str(tmp_path / "ws"))
    report = embed(workspace=str(tmp_path / "ws"))
    assert report.tables["identity"].computed == 6
    assert report.tables["image"].table == "emb_image_effnet_lite0_1280"


def test_cli_reports_a_bad_source_clearly(tmp_path: Path, capsys):
    code = main(["--workspace", str(tmp_path / "ws"), "ingest", str(tmp_path / "nothing")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_second_run_on_a_busy_workspace_refuses_clearly(demo_source: Path, tmp_path: Path,
                                                          monkeypatch, capsys):
    from tests.tasks.test_locking import _hold

    monkeypatch.setenv("CLIP4SKETCH_LOCK_TIMEOUT_SECONDS", "0")
    workspace = tmp_path / "ws"
    holder = _hold(workspace, 60)
    try:
        code = main(["--workspace", str(workspace), "nightly", str(demo_source / "photos")])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    assert "is in use by nightly run abc" in capsys.readouterr().err
    assert not (workspace / "lancedb" / "faces.lance").exists()
