"""Rendered (image-processing) sketches as a recognizer's training set."""

from __future__ import annotations

import pytest

from tasks import storage
from tasks.demo.faces import make_demo_source
from tasks.ingest.run import ingest_source
from tasks.recognize.data import read_synthetic_sketches
from tasks.storage import Workspace
from tasks.styles.registry import load_styles
from tasks.styles.rendered_dataset import RenderError, render_dataset


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("render")
    source = make_demo_source(root / "demo", identities=3, photos_per_identity=2)
    workspace = Workspace.open(root / "ws")
    ingest_source(workspace, source / "photos")
    return workspace


def test_every_photo_in_every_style_readable_by_the_recognizer(workspace: Workspace):
    styles = load_styles()
    path, rows = render_dataset(workspace, [styles["pencil-dodge"], styles["xdog-lines"]])
    assert rows == 2 * 6
    usable, provenance = read_synthetic_sketches(workspace, str(path))
    assert usable.num_rows == 12 and provenance["kind"] == "parquet"
    table = storage.read_parquet(path).to_pylist()
    assert {r["style"] for r in table} == {"pencil-dodge", "xdog-lines"}
    for row in table:
        assert (workspace.root / row["png_path"]).stat().st_size > 0

    # Same faces, same styles: same files, same dataset.
    again, _ = render_dataset(workspace, [styles["pencil-dodge"], styles["xdog-lines"]])
    assert again == path


def test_one_identity_only(workspace: Workspace):
    styles = load_styles()
    _, rows = render_dataset(workspace, [styles["xdog-lines"]], faces=["demo-001"])
    assert rows == 2


def test_artist_styles_and_unknown_faces_are_refused(workspace: Workspace):
    styles = load_styles()
    with pytest.raises(RenderError, match="drawn by artists"):
        render_dataset(workspace, [styles["forensic-artist"]])
    with pytest.raises(RenderError, match="not stored photos"):
        render_dataset(workspace, [styles["xdog-lines"]], faces=["nobody"])
