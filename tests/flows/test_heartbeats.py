"""A night's stages share their parent's heartbeat (flows.common.parent_heartbeat_only).

Counted as Prefect runs them: the heartbeat threads alive inside a real subflow, started by a
real parent flow on the temporary server.
"""

from __future__ import annotations

import threading

from prefect import flow
from prefect.settings import get_current_settings

from flows.common import parent_heartbeat_only
from schemas.settings import Settings


def _heartbeat_threads() -> int:
    """Prefect's flow engine runs each flow run's heartbeat loop in a thread of its own
    (``heartbeat_loop`` in prefect/flow_engine.py)."""
    return sum(1 for t in threading.enumerate()
               if t.is_alive() and any(getattr(a, "__name__", "") == "heartbeat_loop"
                                       for a in getattr(t, "_args", ())))


@flow
def _stage() -> tuple[int, int | None]:
    return _heartbeat_threads(), get_current_settings().flows.heartbeat_frequency


@flow
def _night(stage_heartbeats: bool) -> dict[str, tuple[int, int | None]]:
    seen = {"parent": (_heartbeat_threads(), get_current_settings().flows.heartbeat_frequency)}
    with parent_heartbeat_only(Settings(stage_heartbeats=stage_heartbeats)):
        seen["stage"] = _stage()
    seen["after"] = _stage()
    return seen


def test_stages_send_no_heartbeat_of_their_own_unless_asked():
    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None  # Prefect's default: every flow run beats

    seen = _night(False)
    assert seen["parent"] == (1, default)
    assert seen["stage"] == (1, None)  # the parent's thread only
    assert seen["after"] == (2, default)  # outside the block, a subflow beats again

    seen = _night(True)
    assert seen["stage"] == (2, default)
    assert get_current_settings().flows.heartbeat_frequency == default


def test_the_setting_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CLIP4SKETCH_STAGE_HEARTBEATS", "true")
    assert Settings().stage_heartbeats
    monkeypatch.delenv("CLIP4SKETCH_STAGE_HEARTBEATS")
    assert not Settings().stage_heartbeats
