"""deployments/prefect.yaml stays in step with the flows in flows/."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import yaml
from prefect import Flow
from prefect.client.schemas.schedules import construct_schedule

REPO = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())


def _flows_in_package() -> set[str]:
    """Every @flow-decorated function in flows/, found without importing the modules."""
    found = set()
    for path in (REPO / "flows").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for decorator in node.decorator_list:
                    target = decorator.func if isinstance(decorator, ast.Call) else decorator
                    if getattr(target, "id", None) == "flow":
                        found.add(f"flows/{path.name}:{node.name}")
    return found


def test_every_entrypoint_imports_a_flow():
    for deployment in SPEC["deployments"]:
        path, _, name = deployment["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, name), Flow), deployment["name"]


# Flows that only run inside another flow (to pick a task runner), never on their own.
SUBFLOWS = {
    "flows/generate.py:generate_shards",
    "flows/synthesize.py:synthesize_shards",
    "flows/sharded.py:ingest_shards",
    "flows/sharded.py:embed_shards",
}


def test_every_flow_has_a_deployment():
    entrypoints = {d["entrypoint"] for d in SPEC["deployments"]}
    assert _flows_in_package() - SUBFLOWS == entrypoints


def test_parameters_are_parameters_of_the_flow():
    for deployment in SPEC["deployments"]:
        path, _, name = deployment["entrypoint"].partition(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
        assert set(deployment.get("parameters", {})) <= set(flow.parameters.properties)


def test_nightly_is_scheduled_and_never_overlaps():
    nightly = next(d for d in SPEC["deployments"] if d["name"] == "nightly")
    schedule = construct_schedule(cron=nightly["schedules"][0]["cron"], timezone="UTC")
    assert schedule.cron == "0 2 * * *"
    assert nightly["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}


def test_prune_is_weekly_and_never_runs_beside_a_night():
    prune = next(d for d in SPEC["deployments"] if d["name"] == "prune")
    schedule = construct_schedule(cron=prune["schedules"][0]["cron"], timezone="UTC")
    assert schedule.cron == "0 5 * * 0"
    assert prune["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    # A scheduled prune must carry its own policy: without one it would refuse every week.
    assert prune["parameters"]["keep_published"] >= 1
