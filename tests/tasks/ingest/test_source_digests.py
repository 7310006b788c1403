"""A night does not read a source's unchanged files again: the digest cache of each source
(tasks/digests.py), and what it must still see."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from schemas.settings import IngestSettings
from tasks import storage
from tasks.demo.faces import draw_face
from tasks.digests import SOURCE_DIGESTS_DIR, source_digests
from tasks.ingest import run, shards
from tasks.ingest.run import ingest_source
from tasks.storage import FACES, QUARANTINE

from .conftest import png_bytes

OLD = time.time() - 3600  # an mtime an hour ago


@pytest.fixture(autouse=True)
def no_racy_window(monkeypatch):
    """The fixtures' files are milliseconds old; the racy window (tests/tasks/test_digests.py)
    would keep every one of them out of the cache."""
    monkeypatch.setattr("tasks.digests.RACY_SECONDS", 0.0)


def _faces(workspace) -> pa.Table:
    return storage.read(workspace, FACES).sort_by("face_id")


def _caches(workspace) -> list[Path]:
    """The digest caches, not the duplicate pictures' memos beside them."""
    return sorted(p for p in (workspace.root / SOURCE_DIGESTS_DIR).glob("*.parquet")
                  if not p.name.endswith(".pictures.parquet"))


def test_an_unchanged_source_is_not_read_again(workspace, good_source):
    first = ingest_source(workspace, good_source)
    assert first.ingested == {"photo": 6} and len(source_digests(workspace.root, good_source)) == 6
    assert first.files_read == 6
    before = _faces(workspace)
    digests = source_digests(workspace.root, good_source)
    again = ingest_source(workspace, good_source, digests=digests)
    assert again.skipped == {"unchanged": 6} and digests.hashed == 0 and again.files_read == 0
    assert _faces(workspace).equals(before)


def test_a_file_rewritten_with_its_old_mtime_put_back_is_read_and_ingested(workspace,
                                                                          good_source):
    ingest_source(workspace, good_source)
    path = good_source / "person-0" / "0.png"
    time.sleep(0.01)  # a ctime tick on any file system with ns timestamps
    path.write_bytes(png_bytes(draw_face(0, 5)))
    os.utime(path, (OLD, OLD))
    digests = source_digests(workspace.root, good_source)
    report = ingest_source(workspace, good_source, digests=digests)
    assert report.ingested == {"photo": 1} and report.skipped == {"unchanged": 5}
    assert digests.hashed == 1


def test_verify_files_all_reads_every_file_and_sees_what_a_stat_cannot(workspace,
                                                                       good_source):
    """A cache that disagrees with a file whose stat did not move (a disk that changed its
    bytes, or a damaged cache written as valid): trusted by default, the file's new "content"
    is read to be decoded, found not to hash as recorded, and skipped with no row touched and
    its entry forgotten; ``verify_files="all"`` reads every file and finds it unchanged."""
    ingest_source(workspace, good_source)
    before = _faces(workspace)
    cache = _caches(workspace)[0]
    rows = storage.read_verified_parquet(cache)
    shas = rows.column("sha256").to_pylist()
    shas[0] = "0" * 64
    storage.write_parquet_atomic(rows.set_column(rows.schema.get_field_index("sha256"),
                                                 "sha256", pa.array(shas)),
                                 cache, checksum=True)

    trusted = ingest_source(workspace, good_source)
    assert trusted.skipped == {"unchanged": 5, "changed_during_ingest": 1}
    assert trusted.n_ingested == 0 and trusted.n_quarantined == 0
    assert _faces(workspace).equals(before)
    assert "0" * 64 not in storage.read_verified_parquet(cache).column("sha256").to_pylist()

    shas[1] = "1" * 64
    storage.write_parquet_atomic(rows.set_column(rows.schema.get_field_index("sha256"),
                                                 "sha256", pa.array(shas)),
                                 cache, checksum=True)
    every = ingest_source(workspace, good_source, settings=IngestSettings(verify_files="all"))
    assert every.skipped == {"unchanged": 6} and _faces(workspace).equals(before)


def test_the_cache_holds_only_the_files_the_source_lists(workspace, good_source):
    ingest_source(workspace, good_source)
    (good_source / "person-2" / "1.png").unlink()
    ingest_source(workspace, good_source)
    assert len(source_digests(workspace.root, good_source)) == 5


def test_a_source_through_a_link_shares_its_real_path_cache(workspace, good_source, tmp_path):
    ingest_source(workspace, good_source)
    link = tmp_path / "linked"
    link.symlink_to(good_source, target_is_directory=True)
    digests = source_digests(workspace.root, link)
    report = ingest_source(workspace, link, digests=digests)
    assert report.skipped == {"unchanged": 6} and digests.hashed == 0
    assert len(_caches(workspace)) == 1


def test_a_damaged_cache_means_reading_everything_once_more(workspace, good_source):
    ingest_source(workspace, good_source)
    cache = _caches(workspace)[0]
    cache.write_bytes(cache.read_bytes()[:40])
    digests = source_digests(workspace.root, good_source)
    report = ingest_source(workspace, good_source, digests=digests)
    assert report.skipped == {"unchanged": 6} and digests.hashed == 6
    assert len(source_digests(workspace.root, good_source)) == 6  # written anew


def test_a_refused_file_retried_is_read_when_it_must_be_decoded(workspace, tmp_path):
    """The cache vouches for a file's digest without reading it; a file that must be decoded
    again (here: retrying the quarantine) is read then, and refused for the same reason."""
    source = tmp_path / "src"
    (source / "person-0").mkdir(parents=True)
    (source / "person-0" / "0.png").write_bytes(png_bytes(draw_face(0, 0)))
    (source / "person-0" / "blank.png").write_bytes(
        png_bytes(np.full((160, 160, 3), 128, np.uint8)))
    first = ingest_source(workspace, source)
    assert first.quarantined == {"no_face": 1}
    digests = source_digests(workspace.root, source)
    again = ingest_source(workspace, source, retry_quarantined=True, digests=digests)
    assert digests.hashed == 0 and again.quarantined == {"no_face": 1}
    assert again.skipped == {"unchanged": 1}
    assert storage.read(workspace, QUARANTINE).num_rows == 1


def test_a_known_picture_in_another_encoding_is_not_decoded_every_night(workspace, tmp_path,
                                                                        monkeypatch):
    """A PNG copy of a stored PGM is a `duplicate_picture`; learning that takes decoding it,
    once: later nights skip it from its bytes' digest (AT&T: 280 such files, 0.56 s a night)."""
    source = tmp_path / "src"
    (source / "person-0").mkdir(parents=True)
    face = draw_face(0, 0)
    assert cv2.imwrite(str(source / "person-0" / "0.pgm"), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    assert cv2.imwrite(str(source / "person-0" / "0.png"), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    first = ingest_source(workspace, source)
    assert first.ingested == {"photo": 1} and first.skipped == {"duplicate_picture": 1}
    decoded = []
    real = run.analyse
    monkeypatch.setattr(run, "analyse", lambda data, *a: decoded.append(data) or real(data, *a))
    again = ingest_source(workspace, source)
    assert again.skipped == {"unchanged": 1, "duplicate_picture": 1} and decoded == []

    # The memo names pixels no stored face has (e.g. damaged into another valid file): the
    # file is decoded, found to be the same picture, and the memo is right again.
    memo = next((workspace.root / SOURCE_DIGESTS_DIR).glob("*.pictures.parquet"))
    rows = storage.read_verified_parquet(memo)
    storage.write_parquet_atomic(
        rows.set_column(1, "pixel_sha256", pa.array(["f" * 64])), memo, checksum=True)
    third = ingest_source(workspace, source)
    assert third.skipped == {"unchanged": 1, "duplicate_picture": 1} and len(decoded) == 1
    assert storage.read_verified_parquet(memo).equals(rows)

    # A damaged memo (cut short) is read as no memo: decoded once more, and written anew.
    memo.write_bytes(memo.read_bytes()[:30])
    fourth = ingest_source(workspace, source)
    assert fourth.skipped == {"unchanged": 1, "duplicate_picture": 1} and len(decoded) == 2
    assert storage.read_verified_parquet(memo).equals(rows)


def test_a_sharded_plan_reads_only_the_files_that_changed(workspace, good_source, monkeypatch):
    """The planning process of a Dask ingest (tasks.ingest.shards) hashes the same way: an
    unchanged file is not read, a changed one is, and only it goes to a worker."""
    ingest_source(workspace, good_source)
    made = []

    def remembered(*args, **kwargs):
        made.append(source_digests(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(shards, "source_digests", remembered)
    path = good_source / "person-0" / "0.png"
    time.sleep(0.01)
    path.write_bytes(png_bytes(draw_face(0, 5)))
    plan = shards.plan_source(workspace, good_source, root=None, is_pre_aligned=False,
                              settings=IngestSettings(), run_id="b", retry_quarantined=False,
                              shard_size=4)
    assert made[0].hashed == 1 and [s.items for s in plan.shards] == [1]
    done = [shards.analyse_shard(workspace, shard, IngestSettings(), False)
            for shard in plan.shards]
    report = shards.merge_source(workspace, plan, done, is_pre_aligned=False,
                                 settings=IngestSettings(), run_id="b", retry_quarantined=False)
    assert report.ingested == {"photo": 1} and report.files_read == 1


def test_a_sharded_plan_sends_no_known_duplicate_picture_to_a_worker(workspace, tmp_path):
    source = tmp_path / "src"
    (source / "person-0").mkdir(parents=True)
    grey = cv2.cvtColor(draw_face(0, 0), cv2.COLOR_BGR2GRAY)
    assert cv2.imwrite(str(source / "person-0" / "0.pgm"), grey)
    assert cv2.imwrite(str(source / "person-0" / "0.png"), grey)
    settings = IngestSettings()

    def night(run_id: str):
        plan = shards.plan_source(workspace, source, root=None, is_pre_aligned=False,
                                  settings=settings, run_id=run_id, retry_quarantined=False,
                                  shard_size=4)
        done = [shards.analyse_shard(workspace, shard, settings, False) for shard in plan.shards]
        return plan, shards.merge_source(workspace, plan, done, is_pre_aligned=False,
                                         settings=settings, run_id=run_id,
                                         retry_quarantined=False)

    plan, first = night("a")
    assert [s.items for s in plan.shards] == [2]
    assert first.ingested == {"photo": 1} and first.skipped == {"duplicate_picture": 1}
    plan, again = night("b")
    assert plan.shards == [] and again.files_read == 0
    assert again.skipped == {"unchanged": 1, "duplicate_picture": 1}
