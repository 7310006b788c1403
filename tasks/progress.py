"""Progress of long stages, shown where the user looks: a bar in the terminal, an artifact
in Prefect's UI.

One ``Progress`` per stage. The terminal bar appears only on an interactive terminal (a
scheduled run's log would fill with carriage returns otherwise); the Prefect progress
artifact appears only inside a flow or task run, and is updated at most every
``ARTIFACT_EVERY_SECONDS`` so a stage of many small steps does not flood the API.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from types import TracebackType
from typing import Any

ARTIFACT_EVERY_SECONDS = 2.0


def _artifact_key(label: str) -> str:
    # Prefect artifact keys: lowercase letters, digits and dashes.
    return re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-") or "progress"


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


class Progress:
    """``with Progress("generate shards", total=n) as p: ... p.advance()``.

    Also a ``(done, total)`` callback, the form ``ingest_source`` and ``embed_faces`` take: a
    call with a new ``total`` starts the next round (e.g. the next encoder's faces).
    """

    def __init__(self, label: str, total: int = 0, unit: str = "it",
                 terminal: bool | None = None, artifact: bool = True) -> None:
        self.label, self.unit, self.total, self.done = label, unit, 0, 0
        self._terminal = sys.stderr.isatty() if terminal is None else terminal
        self._want_artifact = artifact
        self._bar: Any = None
        self._artifact_id: Any = None
        self._last_update = 0.0
        self.start(total)

    def start(self, total: int) -> None:
        """(Re)start at zero of ``total``."""
        self.close()
        self.total, self.done = max(int(total), 0), 0
        if not self.total:
            return
        if self._terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.label, unit=self.unit,
                             file=sys.stderr, leave=False, dynamic_ncols=True)
        if self._want_artifact and self._artifact_id is None and _in_prefect_run():
            # Progress is advisory: a failing artifact call must never fail the stage.
            with contextlib.suppress(Exception):
                from prefect.artifacts import create_progress_artifact

                self._artifact_id = create_progress_artifact(
                    0.0, key=_artifact_key(self.label), description=self.label)
        self._publish(force=True)

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, done: int) -> None:
        step = max(min(int(done), self.total) - self.done, 0)
        self.done += step
        if self._bar is not None and step:
            self._bar.update(step)
        self._publish(force=self.done >= self.total)

    def __call__(self, done: int, total: int) -> None:
        if total != self.total or done < self.done:
            self.start(total)
        self.update(done)

    def _publish(self, force: bool) -> None:
        now = time.monotonic()
        if self._artifact_id is None or not (
                force or now - self._last_update >= ARTIFACT_EVERY_SECONDS):
            return
        self._last_update = now
        with contextlib.suppress(Exception):
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self._artifact_id, self.percent)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
