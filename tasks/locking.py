"""One writer per workspace: an advisory lock held for the length of a flow run.

Two nightly runs on one workspace would race on the same tables and shard files. The
second run waits up to ``timeout`` seconds for the first, then refuses with a message that
names the holder, so a scheduler retry or an operator knows what is running. The lock is
``flock`` on a file: the kernel releases it when the holder dies, so a ``kill -9`` never
leaves a stale lock behind.

``reentrant=True`` (the workspace lock of flows) lets a holder's own process take it again:
the nightly flow holds it and runs ``generate`` and ``validate`` as sub-flows, which must not
wait on their own parent. Other locks (a generator's training folder) stay strict.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class WorkspaceBusyError(RuntimeError):
    """Another run holds the workspace."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return f"{info.get('what', 'a run')} (pid {info.get('pid')}, since {info.get('since')})"


@dataclass(frozen=True)
class LockHold:
    """What a holder gets: when the lock was taken (the lock file's mtime, on the same clock
    as the files the run will meet) and whether this ``with`` took it or re-entered it.

    Files left by killed writers are the ones older than ``acquired_at``: while the lock is
    held no other run of a writing flow can have begun (see ``tasks.storage.sweep_leftovers``).
    """

    path: Path
    acquired_at: float
    outermost: bool


_held: dict[Path, int] = {}  # lock file -> nesting depth, in this process
_acquired: dict[Path, float] = {}  # lock file -> when this process took it
_held_guard = threading.Lock()


def _enter_held(path: Path) -> bool:
    with _held_guard:
        if path in _held:
            _held[path] += 1
            return True
        return False


def _leave_held(path: Path) -> None:
    with _held_guard:
        _held[path] -= 1
        if not _held[path]:
            del _held[path]


@contextlib.contextmanager
def workspace_lock(root: Path, what: str, timeout: float = 0.0,
                   poll: float = 0.5, reentrant: bool = False) -> Iterator[LockHold]:
    root.mkdir(parents=True, exist_ok=True)
    path = (root / ".lock").resolve()
    if reentrant and _enter_held(path):
        try:
            yield LockHold(path, _acquired.get(path, time.time()), outermost=False)
        finally:
            _leave_held(path)
        return
    handle = open(path, "a+")  # noqa: SIM115  (held open for the lock's lifetime)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WorkspaceBusyError(
                        f"workspace {root} is in use by {_holder(path)}; wait for it to "
                        f"finish or use another --workspace"
                    ) from None
                time.sleep(poll)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"what": what, "pid": os.getpid(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
        handle.flush()
        acquired_at = os.fstat(handle.fileno()).st_mtime
        if reentrant:
            with _held_guard:
                _held[path] = 1
                _acquired[path] = acquired_at
        try:
            yield LockHold(path, acquired_at, outermost=True)
        finally:
            if reentrant:
                with _held_guard:
                    _held.pop(path, None)
                    _acquired.pop(path, None)
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
