"""Ingestion end to end on small sources: counts, re-runs, and every bad input.

Each bad input must land in quarantine with its reason, and the rows stored before
it must come out of the store unchanged.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from tasks import storage
from tasks.demo.faces import draw_face, draw_sketch
from tasks.ingest.align import decode_png
from tasks.ingest.run import ingest_source
from tasks.ingest.sources import ManifestError
from tasks.storage import FACES, QUARANTINE

from .conftest import face_pil, jpeg_bytes, png_bytes
from .test_decode import png_with_declared_size


def _faces(workspace) -> pa.Table:
    return storage.read(workspace, FACES).sort_by("face_id")


def _reasons(workspace) -> dict[str, str]:
    rows = storage.read(workspace, QUARANTINE).to_pylist()
    return {Path(r["source_path"]).name: r["reason"] for r in rows}


def test_folder_source_is_ingested_and_aligned(workspace, good_source):
    report = ingest_source(workspace, good_source)
    assert report.ingested == {"photo": 6} and report.n_quarantined == 0
    faces = _faces(workspace)
    assert faces.num_rows == 6
    assert set(faces.column("identity_id").to_pylist()) == {"person-0", "person-1", "person-2"}
    crop = decode_png(faces.column("aligned_png")[0].as_py())
    assert crop.shape == (112, 112, 3)
    assert all(s >= 0.6 for s in faces.column("det_score").to_pylist())
    assert (workspace.datasets_dir / "faces.parquet").is_file()
    assert "run-local" in storage.tags(workspace, FACES)


def test_rerun_ingests_nothing_and_reports_skips(workspace, good_source):
    ingest_source(workspace, good_source)
    before = _faces(workspace)
    again = ingest_source(workspace, good_source)
    assert again.n_ingested == 0 and again.skipped == {"unchanged": 6}
    assert _faces(workspace).equals(before)


def test_new_and_changed_files_are_ingested_on_rerun(workspace, good_source):
    ingest_source(workspace, good_source)
    (good_source / "person-0" / "0.png").write_bytes(png_bytes(draw_face(0, 5)))  # changed
    (good_source / "person-3").mkdir()
    (good_source / "person-3" / "0.png").write_bytes(png_bytes(draw_face(3, 0)))  # new
    report = ingest_source(workspace, good_source)
    assert report.ingested == {"photo": 2} and report.skipped == {"unchanged": 5}


def test_same_picture_in_two_formats_is_one_face(workspace, good_source):
    picture = draw_face(0, 0)
    ok, bmp = cv2.imencode(".bmp", picture)
    (good_source / "person-0" / "0-copy.bmp").write_bytes(bmp.tobytes())
    report = ingest_source(workspace, good_source)
    assert report.ingested == {"photo": 6} and report.skipped == {"duplicate_picture": 1}


def _write_bad_files(root: Path, outside: Path) -> None:
    bad = root / "person-bad"
    bad.mkdir()
    face = face_pil(4)
    jpeg = jpeg_bytes(face)
    gif = io.BytesIO()
    face.save(gif, "GIF")
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (bad / "text.png").write_bytes(b"this is a text file, not a picture\n" * 20)
    (bad / "animated.gif").write_bytes(gif.getvalue())
    (bad / "tiny.png").write_bytes(png_bytes(np.full((20, 20, 3), 200, np.uint8)))
    (bad / "bomb.png").write_bytes(png_with_declared_size(20_000, 20_000))
    noise = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    (bad / "noface.png").write_bytes(png_bytes(cv2.GaussianBlur(noise, (31, 31), 8)))
    # The same bytes as person-0's first photo, filed under another identity.
    shutil.copy(root / "person-0" / "0.png", bad / "stolen.png")
    # The same picture re-encoded: different bytes, same pixels, another identity.
    ok, bmp = cv2.imencode(".bmp", draw_face(1, 0))
    (bad / "stolen-reencoded.bmp").write_bytes(bmp.tobytes())
    outside.mkdir(exist_ok=True)
    (outside / "elsewhere.png").write_bytes(png_bytes(draw_face(5, 0)))
    (bad / "escape.png").symlink_to(outside / "elsewhere.png")


EXPECTED_FOLDER_REASONS = {
    "empty.jpg": "empty_file",
    "truncated.jpg": "truncated_image",
    "text.png": "not_an_image",
    "animated.gif": "unsupported_format",
    "tiny.png": "image_too_small",
    "bomb.png": "decompression_bomb",
    "noface.png": "no_face",
    "stolen.png": "duplicate_identity",
    "stolen-reencoded.bmp": "duplicate_identity",
    "escape.png": "path_outside_root",
}


def test_every_bad_file_is_quarantined_and_stored_rows_survive(workspace, good_source, tmp_path):
    ingest_source(workspace, good_source)
    before = _faces(workspace)
    _write_bad_files(good_source, tmp_path / "outside")

    report = ingest_source(workspace, good_source)

    assert _reasons(workspace) == EXPECTED_FOLDER_REASONS
    assert report.n_ingested == 0 and report.skipped == {"unchanged": 6}
    assert sum(report.quarantined.values()) == len(EXPECTED_FOLDER_REASONS)
    assert _faces(workspace).equals(before)
    assert (workspace.datasets_dir / "quarantine.parquet").is_file()
    # Bad files already refused are not decoded again on the next run.
    third = ingest_source(workspace, good_source)
    assert third.skipped.get("already_quarantined", 0) >= 7
    assert storage.count(workspace, QUARANTINE) == len(EXPECTED_FOLDER_REASONS)
    assert _faces(workspace).equals(before)


def _manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["identity_id", "photo_path", "sketch_path",
                                                    "style"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def pair_root(tmp_path: Path) -> Path:
    root = tmp_path / "pairs"
    root.mkdir()
    for identity in range(2):
        (root / f"p{identity}.png").write_bytes(png_bytes(draw_face(identity, 0)))
        ok, sketch = cv2.imencode(".png", draw_sketch(identity))
        (root / f"s{identity}.png").write_bytes(sketch.tobytes())
    return root


def test_manifest_pairs_sketches_with_their_photos(workspace, pair_root):
    manifest = _manifest(pair_root / "pairs.csv", [
        {"identity_id": f"id{i}", "photo_path": f"p{i}.png", "sketch_path": f"s{i}.png",
         "style": "pencil"} for i in range(2)])
    report = ingest_source(workspace, manifest)
    assert report.ingested == {"photo": 2, "sketch": 2}
    faces = {r["face_id"]: r for r in storage.read(workspace, FACES).to_pylist()}
    sketches = [r for r in faces.values() if r["kind"] == "sketch"]
    assert all(r["style"] == "pencil" for r in sketches)
    for sketch in sketches:
        photo = faces[sketch["paired_face_id"]]
        assert photo["kind"] == "photo" and photo["identity_id"] == sketch["identity_id"]


def test_manifest_bad_paths_are_quarantined_with_their_line(workspace, pair_root, tmp_path):
    ok = _manifest(pair_root / "ok.csv", [{"identity_id": "id0", "photo_path": "p0.png"}])
    ingest_source(workspace, ok)
    before = _faces(workspace)
    (tmp_path / "outside.png").write_bytes(png_bytes(draw_face(7, 0)))
    manifest = _manifest(pair_root / "bad.csv", [
        {"identity_id": "id0", "photo_path": "p0.png"},
        {"identity_id": "id8", "photo_path": "../outside.png"},
        {"identity_id": "id9", "photo_path": str(tmp_path / "outside.png")},
        {"identity_id": "id1", "photo_path": "missing.png"},
    ])
    report = ingest_source(workspace, manifest)
    rows = {r["manifest_line"]: r for r in storage.read(workspace, QUARANTINE).to_pylist()}
    assert {line: r["reason"] for line, r in rows.items()} == {
        3: "path_outside_root", 4: "path_outside_root", 5: "missing_file"}
    assert report.skipped == {"unchanged": 1}
    assert _faces(workspace).equals(before)


def test_root_option_admits_files_outside_the_manifest_folder(workspace, pair_root, tmp_path):
    elsewhere = tmp_path / "manifests"
    elsewhere.mkdir()
    manifest = _manifest(elsewhere / "m.csv", [
        {"identity_id": "id0", "photo_path": str(pair_root / "p0.png")}])
    assert ingest_source(workspace, manifest).quarantined == {"path_outside_root": 1}
    assert ingest_source(workspace, manifest, root=pair_root).ingested == {"photo": 1}


@pytest.mark.parametrize(("text", "message"), [
    ("identity_id,sketch_path\nid0,s0.png\n", "missing column(s) photo_path"),
    ("identity_id,photo_path\nid0,p0.png\n,p1.png\n", "line 3: empty identity_id"),
    ("identity_id,photo_path\nid0,p0.png,extra\n", "line 2: more fields"),
    ("identity_id,photo_path\n", "no rows"),
])
def test_malformed_manifest_fails_fast_naming_the_line(workspace, pair_root, text, message):
    ingest_source(workspace, _manifest(pair_root / "ok.csv",
                                       [{"identity_id": "id0", "photo_path": "p0.png"}]))
    before = _faces(workspace)
    manifest = pair_root / "broken.csv"
    manifest.write_text(text)
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ingest_source(workspace, manifest)
    assert _faces(workspace).equals(before)


def test_parquet_manifest(workspace, pair_root):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"identity_id": ["id0", "id1"], "photo_path": ["p0.png", "p1.png"]}),
                   pair_root / "m.parquet")
    assert ingest_source(workspace, pair_root / "m.parquet").ingested == {"photo": 2}


def test_pre_aligned_skips_detection(workspace, tmp_path):
    root = tmp_path / "aligned" / "someone"
    root.mkdir(parents=True)
    crop = np.random.default_rng(1).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    (root / "crop.png").write_bytes(png_bytes(crop))
    report = ingest_source(workspace, root.parent, is_pre_aligned=True)
    assert report.ingested == {"photo": 1}
    row = storage.read(workspace, FACES).to_pylist()[0]
    assert row["alignment"] == "pre-aligned"
    assert np.array_equal(decode_png(row["aligned_png"]), crop)


def test_largest_face_is_taken_and_the_count_recorded(workspace, tmp_path):
    small = cv2.resize(draw_face(1, 0), None, fx=0.5, fy=0.5)
    big = draw_face(0, 0)
    canvas = np.full((big.shape[0], big.shape[1] + small.shape[1] + 20, 3), 230, np.uint8)
    canvas[:, : big.shape[1]] = big
    canvas[: small.shape[0], big.shape[1] + 20:] = small
    folder = tmp_path / "group" / "who"
    folder.mkdir(parents=True)
    (folder / "two.png").write_bytes(png_bytes(canvas))
    ingest_source(workspace, folder.parent)
    row = storage.read(workspace, FACES).to_pylist()[0]
    assert row["n_faces"] == 2
    assert row["det_box"][0] < big.shape[1]  # the big face is on the left


def test_rgba_grey_and_rotated_photos_are_all_found(workspace, tmp_path):
    folder = tmp_path / "modes" / "one"
    folder.mkdir(parents=True)
    image = face_pil(3)
    image.convert("L").save(folder / "grey.png")
    image.convert("RGBA").save(folder / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    (folder / "rotated.jpg").write_bytes(jpeg_bytes(image.rotate(-90, expand=True),
                                                    exif=exif.tobytes()))
    report = ingest_source(workspace, folder.parent)
    assert report.ingested == {"photo": 3}, report
    rotated = [r for r in storage.read(workspace, FACES).to_pylist()
               if r["source_path"].endswith("rotated.jpg")][0]
    assert rotated["exif_transposed"]
