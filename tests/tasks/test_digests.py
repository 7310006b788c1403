"""Sketch PNG digests remembered by stat: what is hashed again, and what a stat cannot see."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from tasks.digests import DIGESTS_FILE, FileDigests

OLD = time.time() - 3600  # an mtime an hour ago


@pytest.fixture(autouse=True)
def no_racy_window(monkeypatch):
    """Files written by a test are milliseconds old; the racy window (tested on its own
    below) would keep every one of them out of the cache."""
    monkeypatch.setattr("tasks.digests.RACY_SECONDS", 0.0)


def _write(root: Path, relative: str, data: bytes, mtime: float | None = OLD) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _next_night(root: Path, **kwargs) -> FileDigests:
    return FileDigests(root, **kwargs)


def test_an_unchanged_file_is_hashed_once_across_runs(tmp_path: Path):
    _write(tmp_path, "sketches/a.png", b"first drawing")
    digests = FileDigests(tmp_path)
    assert digests.sha256("sketches/a.png") == _sha(b"first drawing") and digests.hashed == 1
    digests.save()
    later = _next_night(tmp_path)
    assert later.sha256("sketches/a.png") == _sha(b"first drawing")
    assert later.hashed == 0


def test_new_bytes_are_seen_even_with_the_old_size_and_mtime_put_back(tmp_path: Path):
    """The attack a stat cache invites: same size, mtime restored. ctime moves anyway."""
    path = _write(tmp_path, "sketches/a.png", b"first drawing")
    digests = FileDigests(tmp_path)
    digests.sha256("sketches/a.png")
    digests.save()
    time.sleep(0.01)  # a ctime tick on any file system with ns timestamps
    path.write_bytes(b"other drawing")  # the same length
    os.utime(path, (OLD, OLD))
    later = _next_night(tmp_path)
    assert later.sha256("sketches/a.png") == _sha(b"other drawing") and later.hashed == 1


def test_a_file_put_in_the_place_of_another_is_hashed_again(tmp_path: Path):
    _write(tmp_path, "sketches/a.png", b"first drawing")
    digests = FileDigests(tmp_path)
    digests.sha256("sketches/a.png")
    digests.save()
    replacement = _write(tmp_path, "elsewhere.png", b"other drawing")
    os.replace(replacement, tmp_path / "sketches/a.png")
    assert _next_night(tmp_path).sha256("sketches/a.png") == _sha(b"other drawing")


def test_a_file_written_just_now_is_not_remembered(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("tasks.digests.RACY_SECONDS", 60.0)
    _write(tmp_path, "sketches/a.png", b"fresh")  # an old mtime, but its ctime is now
    digests = FileDigests(tmp_path)
    assert digests.sha256("sketches/a.png") == _sha(b"fresh")
    digests.save()
    later = _next_night(tmp_path)
    later.sha256("sketches/a.png")
    assert later.hashed == 1


def test_verify_all_hashes_every_file_every_time_and_keeps_no_cache(tmp_path: Path,
                                                                     monkeypatch):
    _write(tmp_path, "sketches/a.png", b"first drawing")
    monkeypatch.setenv("CLIP4SKETCH_VERIFY_PNGS", "all")
    for _ in range(2):
        digests = FileDigests.for_workspace(tmp_path)
        assert not digests.trust_stat
        digests.sha256("sketches/a.png")
        assert digests.hashed == 1
        digests.save()
    assert not (tmp_path / DIGESTS_FILE).exists()
    monkeypatch.setenv("CLIP4SKETCH_VERIFY_PNGS", "sometimes")
    with pytest.raises(ValueError, match="verify_pngs"):
        FileDigests.for_workspace(tmp_path)


def test_a_damaged_cache_means_hashing_again_and_a_good_cache_after(tmp_path: Path):
    _write(tmp_path, "sketches/a.png", b"first drawing")
    _write(tmp_path, DIGESTS_FILE.as_posix(), b"PAR1 not really parquet", mtime=None)
    digests = FileDigests(tmp_path)
    assert digests.sha256("sketches/a.png") == _sha(b"first drawing") and digests.hashed == 1
    digests.save()
    later = _next_night(tmp_path)
    assert later.sha256("sketches/a.png") == _sha(b"first drawing") and later.hashed == 0


def test_a_missing_file_has_no_digest_and_forgotten_files_leave_the_cache(tmp_path: Path):
    for name in ("a", "b"):
        _write(tmp_path, f"sketches/{name}.png", name.encode())
    digests = FileDigests(tmp_path)
    assert digests.sha256("sketches/none.png") is None
    digests.sha256("sketches/a.png"), digests.sha256("sketches/b.png")
    digests.save()
    pruning = FileDigests(tmp_path)
    pruning.forget(["sketches/a.png"])
    pruning.save()
    later = _next_night(tmp_path)
    later.sha256("sketches/a.png"), later.sha256("sketches/b.png")
    assert later.hashed == 1  # a was forgotten, b remembered
