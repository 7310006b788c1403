"""The seeded corpus: inputs the fuzzer found crashing ingestion, kept as plain tests.

Each case is a recipe (``FileCase``/``ManifestCase`` or a few lines of set-up), never a stored
file, and says what it crashed with before it was fixed. Add a case here whenever
``benchmarks/fuzz_ingest.py`` or the fuzz tests find a new crash.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.fuzzing import (
    FileCase,
    ManifestCase,
    ManifestRoot,
    base_file,
    changed_rows,
    seed_workspace,
    stored_rows,
    unaccounted,
    write_files,
    write_manifest,
)
from schemas.settings import IngestSettings
from tasks import storage
from tasks.demo.faces import draw_face
from tasks.ingest.align import align_face, detect_faces, similarity_transform
from tasks.ingest.decode import ImageRejected, decode_image
from tasks.ingest.run import ingest_source
from tasks.ingest.sources import ManifestError
from tasks.storage import FACES, QUARANTINE, Workspace

LIMITS = IngestSettings()


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seed_workspace(tmp_path_factory.mktemp("corpus-seed"))


@pytest.fixture
def workspace(stored: Path, tmp_path: Path) -> Workspace:
    return Workspace.open(shutil.copytree(stored, tmp_path / "workspace"))


@pytest.fixture(scope="module")
def manifest_root(tmp_path_factory: pytest.TempPathFactory) -> ManifestRoot:
    return ManifestRoot.build(tmp_path_factory.mktemp("corpus-manifests"))


def _quarantined(workspace: Workspace, run_id: str) -> dict[str, tuple[str, str]]:
    rows = storage.read(workspace, QUARANTINE, where=f"run_id = {storage.quote(run_id)}")
    return {r["source_path"]: (r["reason"], r["detail"]) for r in rows.to_pylist()}


# --------------------------------------------------------------------------- image files


def test_junk_exif_keeps_the_picture(workspace: Workspace, tmp_path: Path):
    """Was: struct.error from Pillow's EXIF parser (ImageOps.exif_transpose) crashed the run.
    EXIF is metadata beside intact pixels: the face is ingested as stored."""
    case = FileCase(base="png-palette", exif=b"Exif\x00\x00MM\x00*")
    write_files([case], tmp_path / "source")
    report = ingest_source(workspace, tmp_path / "source", run_id="corpus")
    assert report.ingested == {"photo": 1}
    row = storage.read(workspace, FACES, where="run_id = 'corpus'").to_pylist()[0]
    assert not row["exif_transposed"] and row["image_mode"] == "P"


@pytest.mark.parametrize("orientation", [0, 9, 255, 65535])
def test_nonsense_orientation_means_as_stored(orientation: int):
    """Was: orientation 0 or 9 recorded ``exif_transposed`` though nothing was turned."""
    decoded = decode_image(base_file("jpeg-rgb", 0, orientation), max_pixels=10**8, min_side=32)
    assert not decoded.exif_transposed and decoded.bgr.shape[:2] == (160, 128)


def test_long_strip_is_no_face_not_a_crash(workspace: Workspace, tmp_path: Path):
    """Was: cv2.error twice. Shrinking a 70000x32 strip for the detector rounded its height
    to 0 (resize assertion); at height 1, YuNet answered with an infinite box at score 1.0 and
    warpAffine refused the 70000-px source. Now: no plausible face, quarantined."""
    write_files([FileCase(base="png-rgb", canvas=(70000, 32)),
                 FileCase(base="png-grey", canvas=(32, 70000))], tmp_path / "source")
    report = ingest_source(workspace, tmp_path / "source", run_id="corpus")
    assert report.quarantined == {"no_face": 2} and report.n_ingested == 0


def test_faces_in_images_wider_than_opencv_can_warp_are_aligned_exactly():
    """A real face in a 40000-px-wide image: warped from the window the crop can see, so the
    crop equals the one warped from a small cut-out of the same place."""
    big = np.full((300, 40000, 3), 200, np.uint8)
    big[30:270, 20000:20192] = draw_face(0, 0)
    found = detect_faces(big[:, 19900:20300], 0.6, 1024)
    assert found
    landmarks = found[0].landmarks
    crop = align_face(big, landmarks + np.array([19900.0, 0.0]))
    reference = cv2.warpAffine(big[:, 19000:21000],
                               similarity_transform(landmarks + np.array([900.0, 0.0])),
                               (112, 112), flags=cv2.INTER_LINEAR)
    assert np.array_equal(crop, reference) and crop.std() > 10


def test_decoder_exceptions_of_any_type_are_corrupt_images():
    """Pillow answers hostile bytes with struct.error, IndexError, TypeError...; each is a
    quarantine reason, never an exception out of decode_image."""
    case = FileCase(base="png-rgb", ops=(("png_header", 1, 3, True),))  # RGB data, palette type
    with pytest.raises(ImageRejected) as caught:
        decode_image(case.build(), max_pixels=10**8, min_side=32)
    assert caught.value.reason.value in ("corrupt_image", "truncated_image")


# --------------------------------------------------------------------------- folder names


def test_non_utf8_names_are_quarantined_with_escaped_text(workspace: Workspace, tmp_path: Path):
    """Was: UnicodeEncodeError ('surrogates not allowed') from Arrow when a folder or file
    name was not UTF-8. Now each such file is a quarantine row whose path and identity keep
    the undecodable bytes as \\xNN text, and the other files are ingested."""
    before = stored_rows(workspace)
    root = os.fsencode(tmp_path / "source")
    for identity, name, face in ((b"id\xe9", b"a.png", 0), (b"ok", b"\xff\xfe.png", 1),
                                 (b"ok", b"fine.png", 2)):
        os.makedirs(root + b"/" + identity, exist_ok=True)
        with open(root + b"/" + identity + b"/" + name, "wb") as handle:
            handle.write(base_file("png-rgb", face, canvas=(150, 170)))
    report = ingest_source(workspace, tmp_path / "source", run_id="corpus")
    assert report.ingested == {"photo": 1} and report.quarantined == {"unreadable_file": 2}
    rows = storage.read(workspace, QUARANTINE, where="run_id = 'corpus'").to_pylist()
    by_identity = {r["identity_id"]: r for r in rows}
    assert set(by_identity) == {"id\\xe9", "ok"}
    assert by_identity["id\\xe9"]["source_path"].endswith("/id\\xe9/a.png")
    assert "not valid UTF-8" in by_identity["id\\xe9"]["detail"]
    assert by_identity["ok"]["source_path"].endswith("/ok/\\xff\\xfe.png")
    assert changed_rows(before, stored_rows(workspace)) == []
    # The next night refuses them again without a crash, and stores nothing twice.
    again = ingest_source(workspace, tmp_path / "source", run_id="corpus-2")
    assert again.quarantined == {"unreadable_file": 2} and again.skipped == {"unchanged": 1}


# --------------------------------------------------------------------------- manifests


@pytest.mark.parametrize(("token", "reason", "detail"), [
    ("nul", "unreadable_file", "NUL byte"),  # was ValueError: embedded null byte
    ("long-name", "unreadable_file", "File name too long"),  # was OSError ENAMETOOLONG
    ("long-path", "unreadable_file", "File name too long"),
    ("symlink-loop", "missing_file", "leads nowhere"),
    ("dangling", "missing_file", "leads nowhere"),
    ("fifo", "unreadable_file", "not a regular file"),
    ("dir", "unreadable_file", "not a regular file"),
    ("symlink-out", "path_outside_root", "symlink"),
    ("deep-dotdot", "path_outside_root", "outside"),
    ("empty-file", "empty_file", "zero bytes"),
])
def test_bad_manifest_paths_are_rows_naming_their_line(workspace: Workspace,
                                                       manifest_root: ManifestRoot, token: str,
                                                       reason: str, detail: str):
    before = stored_rows(workspace)
    manifest = write_manifest(ManifestCase(rows=(("id-a", "ok", "", ""), ("id-b", token, "", ""))),
                              manifest_root.root, manifest_root.outside, name=f"corpus-{token}")
    report = ingest_source(workspace, manifest, run_id="corpus")
    assert report.quarantined == {reason: 1} and unaccounted(report) == 0
    row = storage.read(workspace, QUARANTINE, where="run_id = 'corpus'").to_pylist()[0]
    assert row["manifest_line"] == 3 and detail in row["detail"]
    row["source_path"].encode("utf-8")
    assert changed_rows(before, stored_rows(workspace)) == []


@pytest.mark.parametrize(("case", "message"), [
    (ManifestCase(header=("identity_id", "identity_id", "photo_path")),
     "identity_id appear more than once"),
    (ManifestCase(rows=(("id-a", "ok", "", ""), ("nul\x00id", "ok", "", ""))),
     "line 3: identity_id 'nul\\x00id' contains a control character"),
    (ManifestCase(rows=(("id-a", "ok", "", ""), ("id-b", "non-utf8", "", ""))),
     "line 3: not UTF-8 text (byte 0xe9"),
    (ManifestCase(rows=(("caf\u00e9", "ok", "", ""),), encoding="latin-1"),
     "line 2: not UTF-8 text"),
    (ManifestCase(rows=(("id-a", "ok", "", ""),) * 3, huge_line=140_000, newline="\r\n"),
     "line 4: malformed CSV (field larger than field limit"),
    (ManifestCase(encoding="utf-8-double-bom"), "missing column(s) identity_id"),
])
def test_malformed_manifests_stop_with_the_line_to_fix(workspace: Workspace,
                                                       manifest_root: ManifestRoot,
                                                       case: ManifestCase, message: str):
    before = stored_rows(workspace)
    manifest = write_manifest(case, manifest_root.root, manifest_root.outside,
                              name=f"corpus-bad-{abs(hash(case)) % 10**6}")
    with pytest.raises(ManifestError) as caught:
        ingest_source(workspace, manifest, run_id="corpus")
    assert message in str(caught.value) and str(manifest) in str(caught.value)
    assert changed_rows(before, stored_rows(workspace)) == []


def test_crlf_bom_and_quoted_fields_are_a_good_manifest(workspace: Workspace,
                                                        manifest_root: ManifestRoot):
    case = ManifestCase(rows=(("id-a", "ok", "", ""), ("id, \"b\"", "ok-jpeg", "", "")),
                        encoding="utf-8-sig", newline="\r\n", quoting="all")
    manifest = write_manifest(case, manifest_root.root, manifest_root.outside, name="corpus-crlf")
    report = ingest_source(workspace, manifest, run_id="corpus")
    identities = set(storage.read(workspace, FACES, where="run_id = 'corpus'")
                     .column("identity_id").to_pylist())
    assert report.ingested == {"photo": 2} and identities == {"id-a", 'id, "b"'}
