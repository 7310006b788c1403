"""A writer killed mid-file leaves a hidden temp file; the next writing flow run sweeps it, and
keeps the temp file of a write still in flight in another process."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.fuzzing import base_file
from flows.ingest import ingest
from tasks.storage import LEFTOVER_NAME

pytestmark = pytest.mark.usefixtures("prefect_harness")

REPO = Path(__file__).resolve().parents[2]

# A real writer (tasks.storage's atomic write) that stops halfway through its file: it prints
# the temp file's name, then waits for a line on stdin before writing the rest.
WRITER = """
import sys
from pathlib import Path
from tasks import storage

def write(temp):
    with open(temp, "wb") as handle:
        handle.write(b"first half;")
        handle.flush()
        print(temp, flush=True)
        sys.stdin.readline()
        handle.write(b"second half")

storage._write_atomic(Path(sys.argv[1]), write)
print("renamed", flush=True)
"""


def _start_writer(target: Path) -> tuple[subprocess.Popen, Path]:
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=REPO,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    temp = Path(process.stdout.readline().strip())
    assert temp.parent == target.parent and LEFTOVER_NAME.match(temp.name), temp
    return process, temp


def test_next_run_sweeps_a_killed_writers_leftover_and_keeps_a_live_ones(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    workspace = tmp_path / "ws"
    killed, leftover = _start_writer(workspace / "datasets" / "faces.parquet")
    live, in_flight = _start_writer(workspace / "generators" / "g" / "checkpoints" / "step.pt")
    try:
        killed.send_signal(signal.SIGKILL)
        assert killed.wait() == -signal.SIGKILL
        assert leftover.read_bytes() == b"first half;"  # the crash's leftover

        source = tmp_path / "source" / "someone"
        source.mkdir(parents=True)
        (source / "0.png").write_bytes(base_file("png-rgb", 0))
        with caplog.at_level(logging.INFO):
            reports = ingest(sources=[str(source.parent)], workspace=str(workspace))

        assert reports[0].ingested == {"photo": 1}
        assert not leftover.exists()
        assert in_flight.read_bytes() == b"first half;"  # the live run's file is untouched
        (record_path,) = (workspace / "runs").glob("ingest-*.json")
        swept = json.loads(record_path.read_text())["leftovers_swept"]
        assert swept["removed"] == 1 and swept["kept_live"] == 1
        assert swept["paths"] == [str(leftover.relative_to(workspace))]
        assert swept["bytes_freed"] == len(b"first half;")
        assert "swept 1 temp file(s) left by killed writers" in caplog.text

        # The live writer finishes normally: its file is whole, its temp name gone.
        live.stdin.write("go on\n")
        live.stdin.flush()
        assert live.stdout.readline().strip() == "renamed" and live.wait() == 0
        target = workspace / "generators" / "g" / "checkpoints" / "step.pt"
        assert target.read_bytes() == b"first half;second half"
        assert not in_flight.exists()

        # A run with nothing left over says so.
        ingest(sources=[str(source.parent)], workspace=str(workspace))
        records = sorted((workspace / "runs").glob("ingest-*.json"), key=os.path.getmtime)
        assert json.loads(records[-1].read_text())["leftovers_swept"]["removed"] == 0
    finally:
        for process in (killed, live):
            if process.poll() is None:
                process.kill()
                process.wait()
