"""Prefect glue shared by the task wrappers and the flows: retry policy, run identity, and
waiting for a stage's submitted tasks (``settle``).

Only errors that can pass on their own (IO hiccups, a LanceDB commit conflict) are
retried; a bad manifest, a misconfigured encoder or a full disk fails at once, because
retrying it only delays the message the user needs.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field
from typing import Any

from tasks.progress import Progress

PERMANENT = (ValueError, TypeError, KeyError, LookupError, FileNotFoundError,
             NotADirectoryError, PermissionError, ImportError, NotImplementedError)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except PERMANENT:
        return False
    except OSError as error:
        # A full disk does not empty itself between retries (tasks.storage.DiskFullError).
        return error.errno not in (errno.ENOSPC, errno.EDQUOT)
    except Exception:
        return True
    return False


def current_run_id(default: str = "local") -> str:
    """The Prefect flow run id when inside a flow, so stores can be tagged with it."""
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    return str(run_id) if run_id else default


@dataclass
class Settled:
    """What one submitted task came to: its result, or why it did not finish."""

    future: Any
    result: Any = None
    error: str | None = None  # the final state's message; None when the task completed

    @property
    def ok(self) -> bool:
        return self.error is None

    def raised(self) -> BaseException | None:
        """The exception the task failed with, where Prefect kept it."""
        if self.ok:
            return None
        try:
            error = self.future.result(raise_on_failure=False)
        except Exception as raised:  # a crashed or cancelled future may raise its own error
            error = raised
        return error if isinstance(error, BaseException) else None


def settle(futures: list[Any], label: str) -> list[Settled]:
    """Wait for every future, a progress step as each finishes; then, in the futures' order,
    what each returned or why it failed. Failures are collected, not raised, so the caller
    still merges every shard that finished."""
    from prefect.futures import as_completed, wait

    with Progress(label, total=len(futures), unit="shard") as progress:
        for _ in as_completed(futures):
            progress.advance()
    wait(futures)
    settled = []
    for future in futures:
        state = future.state
        settled.append(Settled(future, result=future.result()) if state.is_completed()
                       else Settled(future, error=state.message or state.name))
    return settled


@dataclass
class Laps:
    """Seconds by step of a stage, for its run record: ``lap(name)`` closes the step that
    began at the last lap (or at creation); a name used twice adds up. Kept unrounded: steps
    rounded one by one can add up to more than the stage's own clock."""

    seconds: dict[str, float] = field(default_factory=dict)
    _mark: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._mark
        self._mark = now
