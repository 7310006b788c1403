"""Fuzzed ingestion: mutated images and manifests become stored faces, skips, quarantine rows
or a ``ManifestError`` naming the problem; never a crash, never a change to stored rows.

A bounded number of hypothesis examples each (derandomized, so every run tries the same
cases and a failure reproduces); ``benchmarks/fuzz_ingest.py`` runs >= 10,000 files. Cases that
once failed are kept as plain tests in ``test_fuzz_corpus.py``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from benchmarks.fuzzing import (
    HEADERS,
    PATH_TOKENS,
    FileCase,
    ManifestCase,
    ManifestRoot,
    changed_rows,
    file_cases,
    manifest_cases,
    seed_workspace,
    stored_rows,
    unaccounted,
    write_files,
    write_manifest,
)
from schemas.records import QuarantineReason
from schemas.settings import IngestSettings
from tasks import storage
from tasks.ingest.decode import DecodedImage, ImageRejected, decode_image
from tasks.ingest.run import ingest_source, locate_face
from tasks.ingest.sources import ManifestError, SourceItem
from tasks.storage import FACES, QUARANTINE, Workspace

REASONS = {r.value for r in QuarantineReason}
# Lower limits than the defaults so the fuzzer reaches the size checks with small files, and
# quick: a mutated header declaring 60 M pixels is refused before any pixel is decoded.
LIMITS = IngestSettings(max_pixels=4_000_000, max_file_bytes=2_000_000)
FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with stored faces and quarantine rows; examples work on copies of it."""
    return seed_workspace(tmp_path_factory.mktemp("fuzz-seed"))


@pytest.fixture(scope="module")
def manifest_root(tmp_path_factory: pytest.TempPathFactory) -> ManifestRoot:
    return ManifestRoot.build(tmp_path_factory.mktemp("fuzz-manifests"))


@settings(FUZZ, max_examples=200)
@given(case=file_cases())
@example(case=FileCase(base="png-palette", exif=b"Exif\x00\x00MM\x00*"))
@example(case=FileCase(base="png-rgb", canvas=(70000, 32)))
def test_decode_and_detect_give_pixels_or_a_reason(case: FileCase):
    data = case.build()
    try:
        decoded = decode_image(data, max_pixels=LIMITS.max_pixels, min_side=LIMITS.min_side)
    except ImageRejected as rejected:
        assert rejected.reason in QuarantineReason and rejected.detail
        return
    assert isinstance(decoded, DecodedImage)
    assert decoded.bgr.dtype == np.uint8 and decoded.bgr.ndim == 3 and decoded.bgr.shape[2] == 3
    assert sorted(decoded.bgr.shape[:2]) == sorted((decoded.width, decoded.height))
    assert decoded.width * decoded.height <= LIMITS.max_pixels
    try:
        record = locate_face(decoded, SourceItem("fuzz", "photo", Path("/fuzz.png")), "id",
                             "pixels", "run", LIMITS, False)
    except ImageRejected as rejected:
        assert rejected.reason == QuarantineReason.NO_FACE
        return
    assert record.aligned_png.startswith(b"\x89PNG") and record.n_faces >= 1


@settings(FUZZ, max_examples=30)
@given(cases=st.lists(file_cases(identities=("fuzz-a", "fuzz-b", "stored-0")), min_size=1,
                      max_size=10))
def test_ingest_of_mutated_files_keeps_every_stored_row(stored: Path, cases: list[FileCase]):
    with tempfile.TemporaryDirectory() as temp:
        workspace = Workspace.open(shutil.copytree(stored, Path(temp) / "workspace"))
        before = stored_rows(workspace)
        write_files(cases, Path(temp) / "source")

        report = ingest_source(workspace, Path(temp) / "source", settings=LIMITS, run_id="fuzz")

        after = stored_rows(workspace)
        assert changed_rows(before, after) == []
        assert report.seen == len(cases) and unaccounted(report) == 0
        assert set(report.quarantined) <= REASONS
        assert storage.count(workspace, FACES) == 3 + report.n_ingested


def _run_manifest(stored: Path, root: ManifestRoot, case: ManifestCase):
    """Ingest ``case``'s manifest on a copy of ``stored``: (report or error, rows changed,
    the manifest's file name)."""
    with tempfile.TemporaryDirectory() as temp:
        workspace = Workspace.open(shutil.copytree(stored, Path(temp) / "workspace"))
        before = stored_rows(workspace)
        manifest = write_manifest(case, root.root, root.outside, name=Path(temp).name)
        try:
            outcome = ingest_source(workspace, manifest, settings=LIMITS, run_id="fuzz")
        except ManifestError as error:
            outcome = error
        finally:
            manifest.unlink()
        return outcome, changed_rows(before, stored_rows(workspace)), manifest.name


@settings(FUZZ, max_examples=120)
@given(case=manifest_cases())
@example(case=ManifestCase(rows=(("id-a", "nul", "", ""),)))
@example(case=ManifestCase(rows=(("id-a", "long-name", "long-path", ""),)))
@example(case=ManifestCase(header=HEADERS[4]))
@example(case=ManifestCase(rows=(("nul\x00id", "ok", "", ""),)))
def test_fuzzed_manifest_is_ingested_or_refused_by_name(stored: Path, manifest_root: ManifestRoot,
                                                         case: ManifestCase):
    outcome, changed, name = _run_manifest(stored, manifest_root, case)
    assert changed == []
    if isinstance(outcome, ManifestError):
        assert name in str(outcome)  # names the manifest (and the line, where there is one)
        return
    assert unaccounted(outcome) == 0 and set(outcome.quarantined) <= REASONS


_good_identity = st.sampled_from(("id-a", "id-b", "stored-1", "caf\u00e9", "x" * 500))
# A non-UTF-8 name cannot be in a UTF-8 manifest: that one is the corpus's ManifestError case.
_path = st.sampled_from(sorted(set(PATH_TOKENS) - {"non-utf8"}))


@settings(FUZZ, max_examples=60)
@given(rows=st.lists(st.tuples(_good_identity, _path, st.one_of(st.just(""), _path),
                               st.just("pencil")), min_size=1, max_size=8).map(tuple),
       newline=st.sampled_from(("\n", "\r\n")), quoting=st.sampled_from(("minimal", "all")),
       encoding=st.sampled_from(("utf-8", "utf-8-sig")))
def test_path_tricks_in_a_wellformed_manifest_are_rows_not_errors(
        stored: Path, manifest_root: ManifestRoot, rows, newline, quoting, encoding):
    """A well-formed manifest whose paths are hostile is never refused as a whole: each bad
    path is a quarantine row (the good rows still count), never an exception."""
    def files(row: tuple[str, str, str, str]) -> int:
        return (row[1] != "empty") + (row[2] not in ("", "empty"))

    rows = tuple(r for r in rows if files(r))  # a row with no path at all is malformed
    if not rows:
        return
    case = ManifestCase(rows=rows, encoding=encoding, newline=newline, quoting=quoting)
    outcome, changed, _ = _run_manifest(stored, manifest_root, case)
    assert changed == []
    assert not isinstance(outcome, Exception), outcome
    assert unaccounted(outcome) == 0 and set(outcome.quarantined) <= REASONS
    assert outcome.seen == sum(files(r) for r in rows)


def test_quarantine_rows_of_a_fuzzed_run_are_readable_text(stored: Path, tmp_path: Path):
    """What a reviewer reads back: every stored path and detail is valid UTF-8 text."""
    workspace = Workspace.open(shutil.copytree(stored, tmp_path / "workspace"))
    cases = [FileCase(base=b, ops=(("truncate", 300),)) for b in ("jpeg-rgb", "png-16bit",
                                                                   "pgm-8bit", "webp-lossy")]
    write_files(cases, tmp_path / "source")
    report = ingest_source(workspace, tmp_path / "source", settings=LIMITS, run_id="fuzz")
    assert report.quarantined == {"truncated_image": 4}
    rows = storage.read(workspace, QUARANTINE, where="run_id = 'fuzz'").to_pylist()
    assert len(rows) == 4
    for row in rows:
        row["source_path"].encode("utf-8")
        assert row["detail"] and row["reason"] == "truncated_image"
