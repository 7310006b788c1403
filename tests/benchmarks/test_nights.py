"""The hundred-nights benchmark compares like nights with like."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.nights import add_stage_seconds, like_for_like, same_work_ratio

REPO = Path(__file__).resolve().parents[2]


def _night(night: int, seconds: float, outcome: str = "published", new_style: bool = False):
    return {"night": night, "seconds": seconds, "outcome": outcome, "new_style": new_style}


def test_like_for_like_leaves_out_night_one_new_style_and_rejected_nights():
    rows = [_night(1, 100.0)] + [_night(n, 10.0) for n in range(2, 5)]
    rows += [_night(5, 50.0, new_style=True), _night(6, 40.0, outcome="rejected")]
    rows += [_night(n, 12.0) for n in range(7, 10)]
    first, last = like_for_like(rows, "seconds", count=3)
    assert (first, last) == (10.0, 12.0)


def test_like_for_like_takes_the_median_of_each_end():
    seconds = [1, 9, 2, 3, 30, 4]
    rows = [_night(1, 0.0)] + [_night(n, s) for n, s in zip(range(2, 8), seconds, strict=True)]
    assert like_for_like(rows, "seconds", count=3) == (2, 4)



def test_same_work_ratio_takes_each_workspace_median_of_the_same_nights():
    rows = [{"long": {"seconds": s}, "fresh": {"seconds": f}}
            for s, f in ((7.0, 6.0), (30.0, 5.0), (8.0, 6.5))]
    assert same_work_ratio(rows, "seconds") == (8.0, 6.0)


def test_stored_nights_get_their_stage_seconds_from_their_stage_timings():
    rows = [{"stages": {"ingest": 0.5, "validate": 2.0}},
            {"stages": {"ingest": 1.0}, "stage_seconds": 9.0},  # measured: kept
            {"seconds": 3.0}]  # timed before stage timings were kept: left without
    same = [{"long": {"stages": {"generate": 1.0, "prune": 0.25}}, "fresh": {"stages": {}}}]
    add_stage_seconds(rows, same)
    assert [r.get("stage_seconds") for r in rows] == [2.5, 9.0, None]
    assert same_work_ratio([{"long": same[0]["long"], "fresh": {"stage_seconds": 1.0}}],
                           "stage_seconds") == (1.25, 1.0)
    assert same[0]["fresh"]["stage_seconds"] == 0


def test_importing_the_benchmark_leaves_the_environment_alone():
    """Tests import helpers from here: the import must not turn their Prefect logging down."""
    code = ("import os; before = dict(os.environ); import benchmarks.nights; "
            "assert dict(os.environ) == before, set(os.environ) ^ set(before)")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_LOGGING_LEVEL"}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True)
