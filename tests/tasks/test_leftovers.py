"""Temp files of killed writers: what ``sweep_leftovers`` removes, and everything it keeps.

The end-to-end case (a writer killed with SIGKILL mid-file, the next flow run sweeping its
leftover and keeping a live run's temp file) is tests/flows/test_leftovers.py.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from tasks import storage
from tasks.locking import workspace_lock
from tasks.storage import LEFTOVER_NAME, sweep_leftovers


def _leftover(folder: Path, name: str, age: float = 3600.0, size: int = 100) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"x" * size)
    past = time.time() - age
    os.utime(path, (past, past))
    return path


def test_temp_names_match_what_the_atomic_writer_makes(tmp_path: Path):
    seen: list[str] = []
    storage._write_atomic(tmp_path / "faces.parquet",
                          lambda temp: (seen.append(Path(temp).name),
                                        Path(temp).write_bytes(b"ok")))
    assert LEFTOVER_NAME.match(seen[0]) and seen[0].startswith(".faces.parquet.")
    for name in ("faces.parquet", ".lock", ".faces.parquet.tmp", "a.b.c.tmp",
                 ".x.ABCDEFGH.tmp", ".x.abcdefgh.tmp.png"):
        assert not LEFTOVER_NAME.match(name), name


def test_old_unlocked_leftovers_go_and_the_rest_stays(tmp_path: Path):
    root = tmp_path / "ws"
    dead = [_leftover(root / "datasets", ".faces.parquet.k2j3h4g5.tmp", size=1000),
            _leftover(root / "sketches" / "g1" / "pencil", ".abc.png.a_b1c2d3.tmp", size=24)]
    recent = _leftover(root / "datasets", ".quarantine.parquet.zz99yy88.tmp", age=-60)
    live = _leftover(root / "generators" / "g" / "checkpoints", ".step-10.pt.qwertyui.tmp")
    lance = _leftover(root / "lancedb" / "faces.lance", ".data.abcdefgh.tmp")
    other = _leftover(root / "runs", "notes.tmp")
    (root / "reports").mkdir()
    (root / "reports" / ".loop.abcdefgh.tmp").symlink_to(root / "reports" / "nowhere")
    os.mkfifo(root / "reports" / ".pipe.abcdefgh.tmp")
    os.utime(root / "reports" / ".pipe.abcdefgh.tmp", (0, 0))
    outside = _leftover(tmp_path / "elsewhere", ".x.abcdefgh.tmp")
    (root / "linked").symlink_to(tmp_path / "elsewhere")

    with open(live, "rb") as holder:  # another process's write in flight
        fcntl.flock(holder, fcntl.LOCK_EX)
        report = sweep_leftovers(root, older_than=time.time())

    assert report.removed == sorted(str(p.relative_to(root)) for p in dead)
    assert not any(p.exists() for p in dead)
    assert report.bytes_freed == 1024
    assert (report.kept_live, report.kept_recent) == (1, 1)
    for kept in (recent, live, lance, other, outside):
        assert kept.exists(), kept
    assert (root / "reports" / ".loop.abcdefgh.tmp").is_symlink()
    assert (root / "reports" / ".pipe.abcdefgh.tmp").exists()
    assert report.summary()["removed"] == 2


def test_a_live_writers_temp_file_is_locked_until_its_rename(tmp_path: Path):
    """What makes a live write safe from a sweep: the flock held across the write."""
    target = tmp_path / "out.bin"
    found: list[storage.SweepReport] = []

    def write(temp: str) -> None:
        Path(temp).write_bytes(b"half")
        past = time.time() - 3600
        os.utime(temp, (past, past))  # even an old-looking temp file is kept while locked
        found.append(sweep_leftovers(tmp_path, older_than=time.time()))
        Path(temp).write_bytes(b"whole")

    storage._write_atomic(target, write)
    assert found[0].kept_live == 1 and found[0].removed == []
    assert target.read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_the_lock_says_when_it_was_taken_and_by_which_holder(tmp_path: Path):
    before = time.time()
    with workspace_lock(tmp_path, "a", reentrant=True) as outer:
        with workspace_lock(tmp_path, "b", reentrant=True) as inner:
            assert outer.outermost and not inner.outermost
            assert inner.acquired_at == outer.acquired_at
    assert before - 1 <= outer.acquired_at <= time.time() + 1
    assert outer.acquired_at == pytest.approx((tmp_path / ".lock").stat().st_mtime)
