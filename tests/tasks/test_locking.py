"""The workspace lock: a second holder waits, then refuses naming the first."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.locking import WorkspaceBusyError, workspace_lock

HOLD = """
import sys, time
from pathlib import Path
from tasks.locking import workspace_lock
with workspace_lock(Path(sys.argv[1]), "nightly run abc"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold(root: Path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(seconds)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_second_holder_refuses_naming_the_first(tmp_path: Path):
    holder = _hold(tmp_path, 30)
    try:
        with pytest.raises(WorkspaceBusyError, match="nightly run abc"):
            with workspace_lock(tmp_path, "second", timeout=0.2, poll=0.05):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_second_holder_waits_for_the_first(tmp_path: Path):
    holder = _hold(tmp_path, 1.0)
    started = time.monotonic()
    with workspace_lock(tmp_path, "second", timeout=30, poll=0.05):
        assert holder.poll() is not None or time.monotonic() - started > 0.5
    holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path):
    holder = _hold(tmp_path, 60)
    holder.kill()
    holder.wait()
    with workspace_lock(tmp_path, "after kill"):
        pass


def test_nested_flows_in_one_process_share_the_hold(tmp_path: Path):
    """nightly holds the lock and runs generate/validate, which take it again."""
    with workspace_lock(tmp_path, "nightly", timeout=0, reentrant=True):
        with workspace_lock(tmp_path, "generate", timeout=0, reentrant=True):
            pass
        # A strict lock (a generator's training folder) refuses even its own process.
        with pytest.raises(WorkspaceBusyError, match="in use by nightly"):
            with workspace_lock(tmp_path, "strict", timeout=0):
                pass
        # Still held by the outer block after the inner one left: another process refuses.
        probe = subprocess.run(
            [sys.executable, "-c",
             "import sys; from pathlib import Path; from tasks.locking import workspace_lock\n"
             "with workspace_lock(Path(sys.argv[1]), 'other', timeout=0): pass",
             str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "in use by nightly" in probe.stderr
    with workspace_lock(tmp_path, "after", timeout=0):
        pass
