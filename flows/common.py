"""What every flow does first (resolve settings and workspace) and last (a run record)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.encoders import EncoderSpec
from schemas.settings import Settings, load_settings
from tasks.locking import workspace_lock
from tasks.storage import Workspace, write_bytes_atomic


def resolve(workspace: str | None) -> tuple[Settings, Workspace]:
    settings = load_settings(workspace)
    return settings, Workspace.open(settings.workspace)


def hold_workspace(settings: Settings, workspace: Workspace, flow: str, run_id: str):
    """The workspace lock for this run (see tasks.locking): one writer per workspace."""
    return workspace_lock(workspace.root, f"{flow} run {run_id}",
                          timeout=settings.lock_timeout_seconds, reentrant=True)


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
    from tasks import storage

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
    path = workspace.root / "runs" / f"{flow}-{run_id}.json"
    return write_bytes_atomic(json.dumps(record, indent=2, default=str).encode(), path)
