"""Ingest and embed in shards on a two-worker Dask cluster: the local run's tables, and a
worker killed mid-embed costs nothing but time.

The cluster is a ``distributed.LocalCluster`` of two one-thread worker processes (spawned,
each with a nanny that restarts it, as ``dask worker`` runs them), reporting to the session's
Prefect server. The source mixes demo mugshots, a pairs manifest and files that must be
quarantined, so every decision ingestion makes is exercised. The address comes only from
``CLIP4SKETCH_DASK_ADDRESS``, the way a deployment sets it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from distributed import Client, LocalCluster

from flows.embed import embed
from flows.ingest import ingest
from tasks import storage
from tasks.demo.faces import MANIFEST_NAME, PHOTO_DIR, draw_face, make_demo_source
from tasks.embed import vector_matrix
from tasks.storage import FACES, QUARANTINE, Workspace

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

# Columns that say when a row was written, not what it holds.
WHEN = ("ingested_at", "quarantined_at", "embedded_at")
# SFace (onnxruntime) gives the same bits on any thread count. EfficientNet's convolutions
# (torch) round differently on a worker's one intra-op thread than on this process's two
# (measured: 2.5e-7; the batches do not matter): equal to float tolerance.
EXACT = ("emb_identity_sface_128",)
VECTOR_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 demo identities x 3 photos + their sketches (a manifest), and three bad files."""
    root = make_demo_source(tmp_path_factory.mktemp("demo"), identities=5,
                            photos_per_identity=3)
    photos = root / PHOTO_DIR
    bad = photos / "person-bad"
    bad.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    ok, blur = cv2.imencode(".png", cv2.GaussianBlur(noise, (31, 31), 8))
    (bad / "noface.png").write_bytes(blur.tobytes())
    (bad / "empty.jpg").write_bytes(b"")
    first = sorted(p for p in photos.iterdir() if p != bad)[0]
    shutil.copy(first / "0.png", bad / "stolen.png")  # the same bytes, another identity
    ok, bmp = cv2.imencode(".bmp", draw_face(1, 1))
    (bad / "reencoded.bmp").write_bytes(bmp.tobytes())  # the same pixels, another identity
    return root


def _sources(root: Path) -> list[str]:
    return [str(root / PHOTO_DIR), str(root / MANIFEST_NAME)]


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Client]]:
    """Two one-thread worker processes on loopback, pointed at the test's Prefect server
    (without it each would start a temporary server of its own)."""
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    assert api_url, "the Prefect test harness exposes no API URL for the workers"
    monkeypatch.setenv("PREFECT_API_URL", api_url)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as local, Client(local) as client:
        client.wait_for_workers(2, timeout=180)
        client.get_task_stream()  # installs the scheduler's task-stream plugin
        yield local.scheduler_address, client


def _rows(workspace: Workspace, table: str, key: str) -> list[dict]:
    rows = storage.read(workspace, table).sort_by(key)
    return rows.drop_columns([c for c in (*WHEN, "run_id", "vector")
                              if c in rows.column_names]).to_pylist()


def _vectors(workspace: Workspace, table: str) -> np.ndarray:
    rows = storage.read(workspace, table).sort_by("face_id")
    return vector_matrix(rows.column("vector"), rows.schema.field("vector").type.list_size)


def _local_run(root: Path, source: Path) -> Workspace:
    workspace = Workspace.open(root)
    ingest(sources=_sources(source), workspace=str(root))
    embed(workspace=str(root))
    return workspace


@pytest.fixture(scope="module")
def local_tables(source: Path, tmp_path_factory: pytest.TempPathFactory,
                 prefect_harness) -> Workspace:
    return _local_run(tmp_path_factory.mktemp("local") / "ws", source)


def assert_same_tables(spread: Workspace, local: Workspace) -> None:
    assert _rows(spread, FACES, "face_id") == _rows(local, FACES, "face_id")
    assert _rows(spread, QUARANTINE, "quarantine_id") == _rows(local, QUARANTINE,
                                                               "quarantine_id")
    tables = [t for t in storage.table_names(local) if t.startswith("emb_")]
    assert sorted(tables) == sorted(t for t in storage.table_names(spread)
                                    if t.startswith("emb_"))
    faces = set(storage.read(local, FACES, columns=["face_id"]).column("face_id").to_pylist())
    for table in tables:
        ids = storage.read(spread, table, columns=["face_id"]).column("face_id").to_pylist()
        assert len(ids) == len(set(ids)) == len(faces) and set(ids) == faces, table
        assert _rows(spread, table, "face_id") == _rows(local, table, "face_id")
        difference = np.abs(_vectors(spread, table) - _vectors(local, table)).max()
        print(f"{table}: largest difference to the local run {difference:.2e}")
        assert difference == 0 if table in EXACT else difference <= VECTOR_TOLERANCE, table
    for kind in ("ingest", "embed"):  # the merged shard files are gone
        assert not (spread.root / "shards" / kind).exists()


def test_ingest_and_embed_on_dask_store_the_local_tables(
        cluster, source, local_tables, tmp_path, monkeypatch):
    address, client = cluster
    monkeypatch.setenv("CLIP4SKETCH_DASK_ADDRESS", address)
    monkeypatch.setenv("CLIP4SKETCH_INGEST_SHARD_SIZE", "4")  # 19 files: 5 shards
    monkeypatch.setenv("CLIP4SKETCH_EMBED_SHARD_SIZE", "8")  # 20 faces: 3 shards a role
    root = tmp_path / "on-dask"
    started = time.perf_counter()
    reports = ingest(sources=_sources(source), workspace=str(root))
    report = embed(workspace=str(root))
    print(f"dask ingest + embed: {time.perf_counter() - started:.1f} s")

    assert [r.n_ingested for r in reports] == [15, 5]
    assert reports[0].quarantined == {"duplicate_identity": 2, "empty_file": 1,
                                      "no_face": 1}
    assert {role: t.computed for role, t in report.tables.items()} == {"identity": 20,
                                                                       "image": 20}
    assert_same_tables(Workspace.open(root), local_tables)
    # The work ran on the cluster, on both workers: the shards, and each encoder named once.
    ran: dict[str, set[str]] = {}
    for task in client.get_task_stream():
        ran.setdefault(str(task["key"]).split("-")[0], set()).add(task["worker"])
    assert set(ran) == {"analyse_shard_task", "describe_encoder_task", "encode_shard_task"}, ran
    assert len(set().union(*ran.values())) == 2, ran


def _die_once_in_sface(marker: Path):
    """A worker plugin: the first SFace batch encoded anywhere on the cluster kills its
    worker process (``os._exit``, no clean-up, as an OOM kill or a lost node would).

    Built in a function so that Dask pickles the class by value: the workers never import
    this test module.
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    class DieOnceInSFace(WorkerPlugin):
        name = "die-once-in-sface"

        def __init__(self, marker: str) -> None:
            self.marker = marker

        def setup(self, worker) -> None:
            from tasks.encoders.sface import SFaceEncoder

            encode, marker = SFaceEncoder.encode, self.marker

            def encode_or_die(encoder, batch):
                try:
                    handle = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return encode(encoder, batch)
                os.write(handle, str(os.getpid()).encode())
                os.close(handle)
                os._exit(1)

            SFaceEncoder.encode = encode_or_die

    return DieOnceInSFace(str(marker))


def test_a_worker_killed_mid_embed_has_its_shard_redone(
        cluster, source, local_tables, tmp_path, monkeypatch):
    address, client = cluster
    monkeypatch.setenv("CLIP4SKETCH_DASK_ADDRESS", address)  # default shards: one a role
    root = tmp_path / "killed"
    ingest(sources=_sources(source), workspace=str(root))
    marker = tmp_path / "died"
    pids = set(client.run(os.getpid).values())
    client.register_plugin(_die_once_in_sface(marker))

    report = embed(workspace=str(root))

    dead = int(marker.read_text())
    assert dead in pids  # a worker process did die, mid-shard
    client.wait_for_workers(2, timeout=180)  # its nanny started a new one
    assert dead not in set(client.run(os.getpid).values())
    assert {role: t.computed for role, t in report.tables.items()} == {"identity": 20,
                                                                       "image": 20}
    assert_same_tables(Workspace.open(root), local_tables)
