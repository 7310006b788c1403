"""Sources reached through symbolic links: data on mounted or linked storage is the common
case for the people who run the nightly job, so a linked source must ingest as its real path
does, while a link *inside* a source that leads out of it is still refused."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tasks import storage
from tasks.demo.faces import draw_face
from tasks.ingest.run import ingest_source
from tasks.ingest.sources import ManifestError, SourceLoopError, read_source
from tasks.storage import FACES, QUARANTINE, Workspace

from .conftest import png_bytes


def _refusals(items) -> dict[str, str]:
    return {item.path.name: item.refusal[0] for item in items if item.refusal}


def test_a_folder_reached_through_links_ingests_as_its_real_path(tmp_path, good_source):
    # ../shared -> real folder, the way the data mounts of the people who run this look.
    (tmp_path / "mounts").mkdir()
    shared = tmp_path / "mounts" / "shared"
    shared.symlink_to(good_source.parent)
    linked = shared / good_source.name
    via_link, via_real = read_source(linked), read_source(good_source)
    assert _refusals(via_link) == {}
    assert len(via_link) == len(via_real) == 6
    real_ws, link_ws = Workspace.open(tmp_path / "ws-real"), Workspace.open(tmp_path / "ws-link")
    assert ingest_source(real_ws, good_source).ingested == {"photo": 6}
    report = ingest_source(link_ws, linked)
    assert report.ingested == {"photo": 6} and report.n_quarantined == 0
    columns = ["face_id", "identity_id", "aligned_png"]
    assert (storage.read(link_ws, FACES, columns=columns).sort_by("face_id")
            .equals(storage.read(real_ws, FACES, columns=columns).sort_by("face_id")))


def test_a_source_that_is_itself_a_link_ingests(tmp_path, good_source):
    link = tmp_path / "orl"
    link.symlink_to(good_source)
    assert _refusals(read_source(link)) == {}
    assert len(read_source(link)) == 6


def test_a_link_inside_a_linked_source_that_leads_out_is_still_refused(tmp_path, good_source):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "elsewhere.png").write_bytes(png_bytes(draw_face(7, 0)))
    (good_source / "person-0" / "escape.png").symlink_to(outside / "elsewhere.png")
    (good_source / "person-9").symlink_to(outside)  # an identity folder that leads out
    link = tmp_path / "linked"
    link.symlink_to(good_source)
    for source in (link, good_source):
        items = read_source(source)
        refusals = _refusals(items)
        assert refusals == {"escape.png": "path_outside_root", "person-9": "path_outside_root"}
        escape = next(i for i in items if i.path.name == "escape.png")
        assert "symlink" in escape.refusal[1] and str(outside) in escape.refusal[1]


def test_a_link_inside_the_source_to_another_of_its_files_is_allowed(tmp_path, good_source):
    (good_source / "person-1" / "alias.png").symlink_to(good_source / "person-0" / "0.png")
    link = tmp_path / "linked"
    link.symlink_to(good_source)
    assert _refusals(read_source(link)) == {}


def test_a_manifest_in_a_linked_folder_and_a_linked_root(tmp_path, good_source):
    manifest = good_source / "pairs.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identity_id", "photo_path"])
        writer.writerow(["person-0", "person-0/0.png"])  # relative to the manifest
        writer.writerow(["person-1", str(good_source / "person-1" / "0.png")])  # real path
    link = tmp_path / "linked"
    link.symlink_to(good_source)
    # The manifest through the link, its root given as the link and as the real folder.
    for root in (None, link, good_source):
        items = read_source(link / "pairs.csv", root=root)
        assert _refusals(items) == {} and len(items) == 2
    # A manifest whose paths name the files through the link, root the real folder.
    linked_rows = tmp_path / "linked-rows.csv"
    linked_rows.write_text(f"identity_id,photo_path\nperson-2,{link}/person-2/1.png\n")
    assert _refusals(read_source(linked_rows, root=good_source)) == {}
    # ...and one that leaves the root through the link's parent is refused.
    linked_rows.write_text(f"identity_id,photo_path\nperson-2,{link}/../linked-rows.csv\n")
    assert _refusals(read_source(linked_rows, root=link)) == {
        "linked-rows.csv": "path_outside_root"}


def test_a_source_link_that_loops_is_refused_with_a_reason(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(SourceLoopError, match="loops back on itself"):
        read_source(a)
    assert issubclass(SourceLoopError, ManifestError)  # the CLI's one-line user error


def test_an_identity_folder_link_that_loops_is_quarantined_not_skipped(tmp_path, good_source):
    (good_source / "person-8").symlink_to(good_source / "person-8")
    workspace = Workspace.open(tmp_path / "ws")
    report = ingest_source(workspace, good_source)
    assert report.ingested == {"photo": 6}
    rows = storage.read(workspace, QUARANTINE).to_pylist()
    assert [(Path(r["source_path"]).name, r["reason"]) for r in rows] == [
        ("person-8", "missing_file")]
    assert "leads nowhere" in rows[0]["detail"]
