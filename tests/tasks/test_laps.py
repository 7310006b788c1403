"""A stage's step seconds, as its run record keeps them."""

import time

from tasks.runtime import Laps


def test_steps_never_add_up_to_more_than_the_stages_own_clock():
    # Many short steps: rounded one by one, their sum crept past the stage's clock.
    for _ in range(200):
        started, laps = time.perf_counter(), Laps()
        for step in ("read", "plan", "remove", "compact", "mirrors"):
            sum(range(200))
            laps.lap(step)
        total = time.perf_counter() - started
        assert 0 < sum(laps.seconds.values()) <= total


def test_a_step_named_twice_adds_up():
    laps = Laps()
    time.sleep(0.01)
    laps.lap("measure")
    first = laps.seconds["measure"]
    laps.lap("plan")
    time.sleep(0.01)
    laps.lap("measure")
    assert list(laps.seconds) == ["measure", "plan"]
    assert laps.seconds["measure"] > first
