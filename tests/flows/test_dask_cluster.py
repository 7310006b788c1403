"""Scale-out: shards on a Dask cluster started the way a user starts one, picked by the settings.

A ``dask scheduler`` and two ``dask worker`` processes run as real subprocesses on loopback
(not an in-process ``LocalCluster``), so the test covers what a user meets: workers import the
project from their own interpreter, take their environment from the shell, and get Dask's
defaults (one intra-op thread: the nanny sets OMP/MKL_NUM_THREADS=1). The address comes only
from ``CLIP4SKETCH_GENERATE_DASK_ADDRESS``. The dataset published from that run must equal the
one published from a local thread-pool run, sketch for sketch and checksum for checksum.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from distributed import Client

from flows.generate import generate
from flows.validate import validate
from tasks import storage
from tasks.generate.shard import cpu_threads
from tasks.storage import SKETCHES, Workspace
from tasks.validate import publish

from ..conftest import REPO
from ..tasks.generate.conftest import STEPS, STYLES, copy_workspace
from .conftest import accept_all_thresholds

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

DASK = Path(sys.executable).with_name("dask")
# 24 sketches in 3 shards of 2 batches: enough for both workers to get a shard.
OPTIONS = {"styles": list(STYLES), "samples_per_face": 2, "shard_size": 8, "steps": STEPS,
           "batch_size": 4, "device": "cpu"}
# Dask's nanny gives each worker process one intra-op thread; CPU convolutions round
# differently with another thread count, so the local run is pinned to the same.
THREADS = 1
STARTUP_SECONDS = 180.0


def _worker_environment() -> dict[str, str]:
    """What a user exports before ``dask worker``: the offline switches, the project on the
    path, and the Prefect server to report to (without it each worker process starts a
    temporary server of its own, ~25 s apiece on this machine)."""
    from prefect.settings import PREFECT_API_URL

    from flows.cli import OFFLINE_ENVIRONMENT

    env = {**os.environ, **OFFLINE_ENVIRONMENT}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    api_url = PREFECT_API_URL.value()
    assert api_url, "the Prefect test harness exposes no API URL for the workers"
    env["PREFECT_API_URL"] = api_url
    # Dask's defaults, not whatever the shell running the tests happens to set.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.pop(variable, None)
    return env


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to all (a worker's nanny then closes its worker process), then SIGKILL to the
    process groups we created, so nothing outlives the test."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _scheduler_address(scheduler_file: Path, process: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dask scheduler exited ({process.returncode}):\n{_tail(log)}")
        try:
            return json.loads(scheduler_file.read_text())["address"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            time.sleep(0.2)
    raise TimeoutError(f"dask scheduler wrote no {scheduler_file}:\n{_tail(log)}")


@dataclass
class Cluster:
    address: str
    client: Client
    workers: dict[str, str]  # worker address -> name

    def task_workers(self) -> dict[str, set[str]]:
        """``{task key: names of the workers that ran it}`` from the scheduler's task stream
        (recorded since the fixture installed the plugin)."""
        ran: dict[str, set[str]] = {}
        for task in self.client.get_task_stream():
            ran.setdefault(str(task["key"]), set()).add(
                self.workers.get(task["worker"], task["worker"]))
        return ran


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """``dask scheduler`` plus two one-thread ``dask worker`` processes on 127.0.0.1.

    Started with the commands a user types; every process is stopped afterwards.
    """
    folder = tmp_path / "cluster"
    folder.mkdir()
    env = _worker_environment()
    processes: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> Path:
        log = folder / f"{name}.log"
        with log.open("wb") as out:
            processes.append(subprocess.Popen(
                [str(DASK), *args], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True))
        return log

    client = None
    try:
        scheduler_file = folder / "scheduler.json"
        log = start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0",
                    "--scheduler-file", str(scheduler_file), "--no-dashboard")
        address = _scheduler_address(scheduler_file, processes[0], log)
        names = ("worker-a", "worker-b")
        logs = [start(name, "worker", address, "--name", name, "--host", "127.0.0.1",
                      "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                      "--local-directory", str(folder / name))
                for name in names]
        client = Client(address, timeout=60)
        try:
            client.wait_for_workers(len(names), timeout=STARTUP_SECONDS)
        except TimeoutError as error:
            raise TimeoutError("dask workers did not register:\n" + "\n---\n".join(
                _tail(log) for log in logs)) from error
        workers = {addr: info["name"]
                   for addr, info in client.scheduler_info()["workers"].items()}
        assert sorted(workers.values()) == sorted(names)
        client.get_task_stream()  # installs the scheduler's task-stream plugin
        yield Cluster(address, client, workers)
    finally:
        if client is not None:
            client.close()
        _stop(processes[1:])  # the workers first: they would retry a vanished scheduler
        _stop(processes[:1])


def _published(workspace: Workspace, thresholds: Path) -> dict[str, tuple[str, bool, tuple]]:
    """``{sketch_id: (png_sha256, accepted, reasons)}`` of the version validate published."""
    outcome = validate(workspace=str(workspace.root), thresholds=str(thresholds))
    assert outcome.published and publish.current_version(workspace) == outcome.version
    version = workspace.root / publish.version_dir("published", outcome.version)
    verdicts = storage.read_parquet(version / publish.VERDICTS).to_pylist()
    manifest = storage.read_parquet(workspace.root / outcome.manifest_path)
    assert set(manifest.column("sketch_id").to_pylist()) == {
        v["sketch_id"] for v in verdicts if v["accepted"]}
    return {v["sketch_id"]: (v["png_sha256"], v["accepted"], tuple(v["reasons"]))
            for v in verdicts}


def _devices(workspace: Workspace) -> set[str]:
    return set(storage.read(workspace, SKETCHES, columns=["device"]).column("device")
               .to_pylist())


def test_shards_on_a_dask_cluster_publish_the_local_dataset(
        dask_cluster: Cluster, embedded: Path, generator: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    address = dask_cluster.address
    thresholds = accept_all_thresholds(tmp_path / "thresholds.yaml")
    # One thread count for the whole run, set in every shard wherever it runs (otherwise
    # each run takes its planning process's count, and pixels may differ by a grey level).
    monkeypatch.setenv("CLIP4SKETCH_GENERATE_CPU_THREADS", str(THREADS))

    local = copy_workspace(embedded, tmp_path / "local")
    with cpu_threads(THREADS, "cpu"):  # what a fresh one-thread process would use
        local_report = generate(workspace=str(local.root), generator=str(generator), **OPTIONS)
    assert local_report.task_runner == "threads:1" and not local_report.failed_shards

    spread = copy_workspace(embedded, tmp_path / "on-dask")
    monkeypatch.setenv("CLIP4SKETCH_GENERATE_DASK_ADDRESS", address)
    started = time.perf_counter()
    report = generate(workspace=str(spread.root), generator=str(generator), **OPTIONS)
    print(f"dask run: {time.perf_counter() - started:.1f} s")
    assert report.task_runner == f"dask:{address}"
    assert report.shards == 3 and not report.failed_shards and report.merge.rows == 24
    # Nothing else runs on this cluster: its task stream holds exactly the shards, and both
    # worker processes drew some of them.
    ran = dask_cluster.task_workers()
    assert len(ran) == report.shards, ran
    assert set().union(*ran.values()) == set(dask_cluster.workers.values()), ran

    # Provenance says both ran on the same kind of device, so equal pixels are expected.
    assert _devices(spread) == _devices(local) == {f"cpu ({THREADS} threads)"}
    monkeypatch.delenv("CLIP4SKETCH_GENERATE_DASK_ADDRESS")
    local_dataset = _published(local, thresholds)
    dask_dataset = _published(spread, thresholds)
    assert len(local_dataset) == 24 and any(a for _, a, _ in local_dataset.values())
    assert dask_dataset == local_dataset
