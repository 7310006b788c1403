"""What every flow does first (resolve settings and workspace), where its shards run (a
cluster address, a task runner), and what it does last (a run record)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect.settings import temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel

from schemas.encoders import EncoderSpec
from schemas.settings import Settings, load_settings
from tasks import storage
from tasks.locking import LockHold, workspace_lock
from tasks.storage import SweepReport, Workspace, sweep_leftovers, write_bytes_atomic


def resolve(workspace: str | None) -> tuple[Settings, Workspace]:
    settings = load_settings(workspace)
    return settings, Workspace.open(settings.workspace)


# What each run's sweep removed, by (workspace, run id), until its run record takes it.
_SWEEPS: dict[tuple[str, str], SweepReport] = {}


@contextlib.contextmanager
def hold_workspace(settings: Settings, workspace: Workspace, flow: str,
                   run_id: str) -> Iterator[LockHold]:
    """The workspace lock for this run (see tasks.locking): one writer per workspace.

    Taking it, a run first sweeps the temp files that killed writers left behind (older than
    the lock and held by no live process; see ``tasks.storage.sweep_leftovers``), logs how
    many, and its run record says so (``leftovers_swept``). A sub-flow re-entering its
    parent's hold does not sweep again.
    """
    with workspace_lock(workspace.root, f"{flow} run {run_id}",
                        timeout=settings.lock_timeout_seconds, reentrant=True) as hold:
        if hold.outermost:
            swept = sweep_leftovers(workspace.root, older_than=hold.acquired_at)
            _SWEEPS[(str(workspace.root), run_id)] = swept
            _logger().info(
                "swept %d temp file(s) left by killed writers (%d bytes); kept %d held by a "
                "live process and %d newer than this run's lock", len(swept.removed),
                swept.bytes_freed, swept.kept_live, swept.kept_recent)
        yield hold


@contextlib.contextmanager
def parent_heartbeat_only(settings: Settings) -> Iterator[None]:
    """Subflows started inside this block send no heartbeats of their own, unless
    ``settings.stage_heartbeats``.

    A stage of a night runs in its parent flow's process, so the parent's heartbeat already
    tells Prefect that the process lives. Each flow run's heartbeat thread sleeps in whole
    seconds and is joined when the run ends (``_send_heartbeats`` in prefect/flow_engine.py),
    so every subflow ended up to a second late: a small night took 5.1 s with those waits
    and 3.1 s without, and each stage's seconds were its work rounded up to a whole second.
    The parent's own heartbeat is untouched: it started before this block, with its own
    settings.
    """
    if settings.stage_heartbeats:
        yield
        return
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger (its lines reach Prefect's UI), or a plain one outside a run."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def cluster_address(settings: Settings, given: str | None, stage: str) -> str | None:
    """The Dask scheduler a stage sends its shards to; None runs them on this machine.

    The option given, else for ``generate`` its own ``CLIP4SKETCH_GENERATE_DASK_ADDRESS``
    (kept from before the other stages could use a cluster), else ``CLIP4SKETCH_DASK_ADDRESS``.
    """
    if given:
        return given
    if stage == "generate" and settings.generate.dask_address:
        return settings.generate.dask_address
    return settings.dask_address


def task_runner(dask_address: str | None, workers: int = 1) -> TaskRunner:
    """Where a stage's shard tasks run: the Dask cluster at ``dask_address`` (through
    prefect-dask; each worker loads its model once), else ``workers`` threads here."""
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    return ThreadPoolTaskRunner(max_workers=workers)


def encoder_spec(settings: Settings, role: str, given: EncoderSpec | dict | None) -> EncoderSpec:
    if given is None:
        return EncoderSpec(role=role, name=getattr(settings, f"{role}_encoder"))
    spec = given if isinstance(given, EncoderSpec) else EncoderSpec(role=role, **given)
    if spec.role != role:
        raise ValueError(f"{spec.label()} given where a {role} encoder is expected")
    return spec


def code_version() -> dict[str, str | None]:
    """The package version and, in a checkout, the commit: which code made a dataset."""
    import importlib.metadata
    import subprocess

    try:
        package = importlib.metadata.version("clip4sketch")
    except importlib.metadata.PackageNotFoundError:
        package = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"clip4sketch": package, "commit": commit or None}


def table_versions(workspace: Workspace) -> dict[str, int | None]:
    return {name: storage.table_version(workspace, name)
            for name in sorted(storage.table_names(workspace))}


def write_run_record(workspace: Workspace, flow: str, run_id: str, parameters: dict[str, Any],
                     reports: dict[str, BaseModel],
                     summary: dict[str, Any] | None = None) -> Path:
    """The run manifest, ``runs/<flow>-<run id>.json``: inputs, code and table versions,
    status, counts and seconds per stage (``summary``), and each stage's full report."""
    record = {
        "flow": flow,
        "run_id": run_id,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(),
        "parameters": parameters,
        "code": code_version(),
        "table_versions": table_versions(workspace),
        "summary": summary,
        "stages": {name: report.model_dump(mode="json") for name, report in reports.items()},
    }
    swept = _SWEEPS.pop((str(workspace.root), run_id), None)
    # None: this run held no lock of its own (a sub-flow, or a flow that takes none).
    record["leftovers_swept"] = swept.summary() if swept is not None else None
    path = workspace.root / "runs" / f"{flow}-{run_id}.json"
    return write_bytes_atomic(json.dumps(record, indent=2, default=str).encode(), path)
