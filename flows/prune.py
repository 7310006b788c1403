"""The ``prune`` flow: retention under the workspace lock (see tasks/retention.py).

A prune during a night waits for the night's lock (``wait`` seconds, default the settings'
``lock_timeout_seconds``), then refuses naming the holder: it never removes files under a
running night.
"""

from __future__ import annotations

from prefect import flow

from flows.artifacts import prune_markdown, publish
from flows.common import hold_workspace, resolve, write_run_record
from tasks.retention import PruneReport, prune, resolve_policy
from tasks.runtime import current_run_id


@flow(name="prune", log_prints=True)
def prune_workspace(workspace: str | None = None, keep_published: int | None = None,
                    keep_days: float | None = None, dry_run: bool = False,
                    wait: float | None = None) -> PruneReport:
    """Keep the newest ``keep_published`` published versions (and pinned, current and
    recent ones); remove what only pruned versions used. ``dry_run`` lists it and the bytes."""
    settings, ws = resolve(workspace)
    keep, days = resolve_policy(keep_published, keep_days, settings.retention)
    if wait is not None:
        settings = settings.model_copy(update={"lock_timeout_seconds": wait})
    run_id = current_run_id()
    with hold_workspace(settings, ws, "prune", run_id):
        report = prune(ws, keep, days, dry_run=dry_run)
        publish("prune-summary", prune_markdown(report))
        if not dry_run:
            write_run_record(ws, "prune", run_id, {"keep_published": keep, "keep_days": days},
                             {"prune": report})
    print("\n".join(report.lines()))
    return report
