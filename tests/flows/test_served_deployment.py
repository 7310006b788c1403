"""deployments/prefect.yaml served for real: a Prefect server on loopback, a process work pool
and worker, ``prefect deploy`` and ``prefect deployment run`` — what an operator does.

The other deployment tests read the YAML; only a served deployment shows that its templates
resolve, that the pull step finds the checkout, that a worker can import and run the flow
from there, and that the server enforces the concurrency limit. Every Prefect call goes
through the CLI or the REST API of the private server, in subprocesses with their own
``PREFECT_HOME``, so the test touches no profile, no ``~/.prefect`` and no other server.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from flows.cli import OFFLINE_ENVIRONMENT

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# The CLI of the interpreter running the tests (``.venv/bin/prefect`` here, any venv in CI).
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "clip4sketch-process"
# Migrating a fresh SQLite database and importing the server takes 20-60 s on 2 busy cores.
SERVER_START_SECONDS = 180
CLI_SECONDS = 120
RUN_SECONDS = 240
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Served:
    """A running server, and what the commands of this test need to talk to it."""

    url: str
    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        """A long-running Prefect command in its own process group (so stopping it also
        stops what it spawned: uvicorn for the server, flow-run processes for the worker),
        its output in ``logs/<name>.log`` for the failure report."""
        log = (self.logs / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [PREFECT, *args], cwd=REPO, env=env or self.env, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()  # the child holds its own descriptor

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        """One Prefect CLI command from the repository root; its output, or a failure that
        shows it."""
        started = time.monotonic()
        done = subprocess.run([PREFECT, *args], cwd=REPO, env=env or self.env,
                              capture_output=True, text=True, timeout=CLI_SECONDS)
        print(f"prefect {' '.join(args)}: rc {done.returncode}, "
              f"{time.monotonic() - started:.1f} s")
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{output}"
        return output

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call to the private server (JSON in, JSON out): no client settings to
        redirect, so a Prefect harness elsewhere in the session cannot interfere."""
        response = httpx.request(method, f"{self.url}{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def log_tails(self, chars: int = 6000) -> str:
        """The end of every subprocess log: enough to see why a start or a run failed."""
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"----- {path.name} (last {chars} chars) -----\n{text[-chars:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM each process group (worker first, so flow runs end before the API does),
        SIGKILL what is still there after a grace period."""
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group, if any
            process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(home: Path, url: str) -> dict[str, str]:
    """The test's environment without any Prefect setting (a harness elsewhere in the
    session sets PREFECT_HOME), then the offline defaults and the private server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(OFFLINE_ENVIRONMENT)
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_UI_ENABLED": "false",
        # Wide rich output: the flow-run UUID printed by `deployment run` stays on one line.
        "COLUMNS": "200",
    })
    return env


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """``prefect server start`` on a free loopback port, stopped (with the worker) at the end.

    The scheduler service is off: the nightly cron must not fire during the test, whatever
    the hour, and the schedule is checked as stored on the deployment instead.
    """
    port = _free_port()
    home = tmp_path / "prefect-home"
    home.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    url = f"http://127.0.0.1:{port}/api"
    served = Served(url=url, env=_environment(home, url), logs=logs)
    served.start("server", "server", "start", "--host", "127.0.0.1", "--port", str(port),
                 "--no-ui", "--no-scheduler", "--analytics-off")
    try:
        started = time.monotonic()
        while True:
            server = served.processes["server"]
            if server.poll() is not None:
                pytest.fail(f"prefect server exited with {server.returncode}\n"
                            f"{served.log_tails()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() - started > SERVER_START_SECONDS:
                pytest.fail(f"no /api/health after {SERVER_START_SECONDS} s\n"
                            f"{served.log_tails()}")
            time.sleep(1)
        print(f"server healthy after {time.monotonic() - started:.1f} s")
        yield served
    finally:
        served.stop()


@contextlib.contextmanager
def _logs_on_failure(served: Served) -> Iterator[None]:
    """Print the server and worker logs when the test fails: pytest shows captured output of
    failed tests only, and a run that failed in the worker says why only there."""
    try:
        yield
    except BaseException:
        print(served.log_tails())
        raise


def _flow_run_id(output: str) -> UUID:
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", output)
    assert match, f"no flow run id in:\n{output}"
    return UUID(match.group(1))


def _wait_final(served: Served, run_ids: list[UUID]) -> dict[UUID, dict]:
    """Poll the API until every run is in a final state; the worker died or the deadline
    passed: fail with the states so far."""
    deadline = time.monotonic() + RUN_SECONDS
    while True:
        runs = {i: served.api("GET", f"/flow_runs/{i}") for i in run_ids}
        if all(r["state"]["type"] in FINAL for r in runs.values()):
            return runs
        worker = served.processes["worker"]
        states = {str(i): r["state"]["name"] for i, r in runs.items()}
        assert worker.poll() is None, f"worker exited with {worker.returncode}; runs: {states}"
        assert time.monotonic() < deadline, f"runs not final after {RUN_SECONDS} s: {states}"
        time.sleep(2)


def test_nightly_deployment_runs_on_a_served_worker(served: Served, tmp_path: Path):
    from tasks import storage
    from tasks.demo.faces import make_demo_source

    demo = make_demo_source(tmp_path / "demo", identities=2, photos_per_identity=2)
    workspace = tmp_path / "ws"
    # What the YAML's {{ $VAR }} templates read. `prefect deploy` resolves them all (the pull
    # step included); the worker gets them too, as an operator's worker would have them.
    env = served.env | {
        "CLIP4SKETCH_REPO": str(REPO),
        "CLIP4SKETCH_WORKSPACE": str(workspace),
        "CLIP4SKETCH_SOURCE": str(demo / "photos"),
        "CLIP4SKETCH_EVAL_PAIRS": str(demo / "pairs.csv"),
    }
    with _logs_on_failure(served):
        served.cli("work-pool", "create", POOL, "--type", "process")
        # Everything in the file deploys (what the README tells operators to run) ...
        served.cli("--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml",
                   "--all", env=env)
        # ... and one deployment by name, over its earlier self.
        served.cli("--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml",
                   "--name", "nightly", env=env)

        deployments = served.api("POST", "/deployments/filter", json={})
        names = {d["name"] for d in deployments}
        assert {"nightly", "backfill", "ingest", "embed", "generate", "validate",
                "train-generator", "train-recognizer", "evaluate"} <= names
        nightly = served.api("GET", "/deployments/name/nightly/nightly")
        assert nightly["work_pool_name"] == POOL
        assert nightly["parameters"] == {"sources": [str(demo / "photos")],
                                         "workspace": str(workspace)}
        [schedule] = nightly["schedules"]
        assert schedule["active"]
        assert schedule["schedule"]["cron"] == "0 2 * * *"
        assert schedule["schedule"]["timezone"] == "UTC"
        assert nightly["global_concurrency_limit"]["limit"] == 1
        assert nightly["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
        # `prefect deploy` resolves the pull step's template too: runs start in the checkout
        # that was deployed, whatever the worker's environment says.
        assert nightly["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {
            "directory": str(REPO)}}]
        evaluate = served.api("GET", "/deployments/name/evaluate/evaluate")
        assert evaluate["parameters"]["pairs"] == str(demo / "pairs.csv")

        # Two runs wait before any worker polls, so the worker submits both together: the
        # limit of 1 with CANCEL_NEW must run one and cancel the other, never queue or overlap.
        first = _flow_run_id(served.cli("deployment", "run", "nightly/nightly", env=env))
        second = _flow_run_id(served.cli("deployment", "run", "nightly/nightly", env=env))
        served.start("worker", "worker", "start", "--pool", POOL, env=env)
        runs = _wait_final(served, [first, second])

        states = sorted(r["state"]["type"] for r in runs.values())
        assert states == ["CANCELLED", "COMPLETED"], {
            str(i): (r["state"]["name"], r["state"]["message"]) for i, r in runs.items()}
        [cancelled] = [r for r in runs.values() if r["state"]["type"] == "CANCELLED"]
        assert "concurrency limit" in cancelled["state"]["message"]
        [completed] = [r for r in runs.values() if r["state"]["type"] == "COMPLETED"]

        # The completed run did the night's work in the deployment's workspace.
        assert storage.count(storage.Workspace.open(workspace), "faces") == 4
        records = sorted((workspace / "runs").glob("nightly-*.json"))
        assert [r.name for r in records] == [f"nightly-{completed['id']}.json"]
        record = json.loads(records[0].read_text())
        assert record["parameters"]["sources"] == [str(demo / "photos")]
        # No generator is saved in a fresh workspace: the night says so instead of failing.
        assert record["summary"]["generate"]["status"] == "skipped"
