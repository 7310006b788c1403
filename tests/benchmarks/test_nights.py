"""The hundred-nights benchmark compares like nights with like."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.nights import (
    CollectorPauses,
    add_stage_seconds,
    like_for_like,
    same_work_ratio,
    stage_steps,
    step_growth,
)

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


def test_a_nights_steps_come_from_its_run_record_and_the_growth_lists_what_moved():
    record = {"validate": {"metrics": {"step_seconds": {"read": 0.05, "carry": 0.01}},
                           "seconds": {"assess": 0.2, "contracts": 0.6, "publish": 0.03},
                           "assess_seconds": {"pairs": 0.1, "read": 0.02}},
              "prune": {"step_seconds": {"compact": 0.04}}, "embed": {"seconds": 0.2}}
    steps = stage_steps(record)
    assert steps == {"validate.metrics.read": 0.05, "validate.metrics.carry": 0.01,
                     "validate.assess.pairs": 0.1, "validate.assess.read": 0.02,
                     "validate.contracts": 0.6, "validate.publish": 0.03,
                     "prune.compact": 0.04}
    assert stage_steps({"validate": None, "prune": None}) == {}  # a night that never got there
    second = {"stages": {"validate": 0.9, "prune": 0.16}, "steps": steps}
    last = {"stages": {"validate": 1.4, "prune": 0.165},
            "steps": {**steps, "validate.assess.pairs": 0.3, "prune.compact": 0.045}}
    assert step_growth(last, second) == [("validate (stage)", 0.9, 1.4),
                                         ("validate.assess.pairs", 0.1, 0.3)]
    assert step_growth({"stages": {}}, {"stages": {}}) == []  # older rows: no steps


def test_collector_pauses_add_up_by_generation_between_two_readings():
    pauses = CollectorPauses()
    before = list(pauses.seconds)
    pauses("start", {"generation": 2})
    time.sleep(0.001)
    pauses("stop", {"generation": 2})
    pauses("start", {"generation": 0})
    pauses("stop", {"generation": 0})
    pauses("stop", {"generation": 1})  # a stop without its start counts nothing
    found = pauses.since(before)
    assert pauses.seconds[1] == 0.0
    assert found["gc_full_seconds"] == pauses.seconds[2] > 0
    assert found["gc_seconds"] == sum(pauses.seconds) >= found["gc_full_seconds"]


def test_importing_the_benchmark_leaves_the_environment_alone():
    """Tests import helpers from here: the import must not turn their Prefect logging down."""
    code = ("import os; before = dict(os.environ); import benchmarks.nights; "
            "assert dict(os.environ) == before, set(os.environ) ^ set(before)")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_LOGGING_LEVEL"}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True)
