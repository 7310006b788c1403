"""Faults, each one a test: a killed run, a full disk, damaged files, bad configuration.

Each test breaks one thing the way it breaks in operation (SIGKILL, ENOSPC from a real file
system, bytes changed on disk, a wrong file given) and checks the promise that goes with it:
a resumed run publishes what an uninterrupted one publishes, nothing half-written is ever
visible and the published version survives, damaged work is redone bit-for-bit, and bad
configuration is refused before any work with a message that says what to fix.

Every run uses the tiny random-init generator; the thresholds are loosened (a copy of the
reviewed file, written per session) so that its noise-like sketches can be published.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from flows.generate import generate
from flows.validate import validate
from schemas.encoders import EncoderSpec
from schemas.generation import GenerationContext, SamplingParams
from schemas.validation import SKETCH_METRICS
from tasks import storage
from tasks.encoders.base import EncoderError
from tasks.generate.conditions import condition_sources
from tasks.generate.networks import SketchGenerator
from tasks.generate.plan import plan_generation
from tasks.generate.saved import MANIFEST_FILE, UNET_WEIGHTS, GeneratorLoadError, read_manifest
from tasks.generate.shard import run_shard
from tasks.storage import SKETCHES, Workspace
from tasks.styles.registry import StyleError
from tasks.validate import publish

from ..tasks.generate.conftest import STEPS, STYLES, copy_workspace, workspace_encoders
from .conftest import accept_all_thresholds

pytestmark = pytest.mark.usefixtures("prefect_harness")

REPO = Path(__file__).resolve().parents[2]
# 3 identities x 2 photos x 2 styles x 2 samples = 24 sketches in 6 shards of 2 batches.
OPTIONS = {"styles": list(STYLES), "samples_per_face": 2, "shard_size": 4, "steps": STEPS,
           "batch_size": 2, "device": "cpu"}
SHARDS = 6
# Loosened so that the random generator's sketches pass: identity, style, health, diversity.
DISK_FULL = "disk full: no space left on device"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def thresholds(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The reviewed thresholds file with the sketch numbers loosened for a random generator."""
    return str(accept_all_thresholds(tmp_path_factory.mktemp("thresholds") / "accept.yaml"))


@pytest.fixture(scope="module")
def reference(embedded: Path, generator: Path, thresholds: str,
              tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """An uninterrupted generate + validate: the published dataset every fault must match."""
    workspace = copy_workspace(embedded, tmp_path_factory.mktemp("reference") / "ws")
    generate(workspace=str(workspace.root), generator=str(generator), **OPTIONS)
    assert validate(workspace=str(workspace.root), thresholds=thresholds).published
    return workspace


def checksums(workspace: Workspace) -> dict[str, str]:
    """``{sketch_id: png_sha256}`` of the ``sketches`` table."""
    rows = storage.read(workspace, SKETCHES, columns=["sketch_id", "png_sha256"])
    return dict(zip(rows.column("sketch_id").to_pylist(), rows.column("png_sha256").to_pylist(),
                    strict=True))


def published(workspace: Workspace) -> dict[str, str]:
    """``{sketch_id: png_sha256}`` of the current published version's manifest."""
    record = publish.get_version(workspace, publish.current_version(workspace))
    rows = storage.read_parquet(workspace.root / record["manifest_path"],
                                columns=["sketch_id", "png_sha256"])
    return dict(zip(rows.column("sketch_id").to_pylist(), rows.column("png_sha256").to_pylist(),
                    strict=True))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def result_files(workspace: Workspace) -> list[Path]:
    """Finished shard Parquets (item lists and hidden journals excluded)."""
    return sorted(p for p in (workspace.root / "shards").rglob("*.parquet")
                  if not p.name.endswith(".items.parquet") and not p.name.startswith("."))


def plan_and_context(workspace: Workspace, generator: Path):
    """The plan and shard context the flow builds for ``OPTIONS`` (same shards, same pixels)."""
    manifest = read_manifest(generator)
    sources = condition_sources(workspace, manifest)
    plan = plan_generation(workspace, manifest["version"], sources, OPTIONS["styles"],
                           OPTIONS["samples_per_face"], OPTIONS["shard_size"])
    context = GenerationContext(
        workspace=str(workspace.root), generator_path=str(generator),
        generator_version=manifest["version"], generator_config=manifest["config_name"],
        conditions=sources, devices=["cpu"], run_id="earlier-run",
        sampling=SamplingParams(steps=STEPS, batch_size=OPTIONS["batch_size"]))
    return plan, context


class Snapshot:
    """What "before any work" compares: shard files, sketch rows, dataset versions, metrics."""

    def __init__(self, workspace: Workspace):
        self.shards = sorted(p.name for p in (workspace.root / "shards").rglob("*"))
        self.sketches = storage.count(workspace, SKETCHES)
        self.versions = [(v["version"], v["status"]) for v in publish.list_versions(workspace)]
        self.current = publish.current_version(workspace)
        self.metrics = storage.table_version(workspace, SKETCH_METRICS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Snapshot) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"Snapshot({vars(self)})"


# --------------------------------------------------------------------------- kill -9


@pytest.mark.slow
def test_a_killed_generation_resumes_to_the_published_dataset_of_an_uninterrupted_run(
        reference: Workspace, embedded: Path, generator: Path, thresholds: str,
        tmp_path: Path):
    """SIGKILL leaves no chance to clean up: finished shards, a journal and maybe a temp file
    stay behind. The rerun must neither duplicate nor lose a sketch, and its pixels must be
    the uninterrupted run's, so the published manifests are identical."""
    import torch
    from prefect.settings import PREFECT_API_URL

    workspace = copy_workspace(embedded, tmp_path / "ws")
    call = (f"from flows.generate import generate\n"
            f"generate(workspace={str(workspace.root)!r}, generator={str(generator)!r}, "
            f"**{OPTIONS!r})\n")
    environment = {
        **os.environ,  # the offline settings of tests/conftest.py
        # Report to the session's test server instead of starting one (~25 s); own home.
        "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(tmp_path / "home"),
        # CPU pixels depend on the intra-op thread count: match this process's.
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
        "MKL_NUM_THREADS": str(torch.get_num_threads()),
    }
    (tmp_path / "home").mkdir()
    log = tmp_path / "killed-run.log"
    with open(log, "wb") as out:
        run = subprocess.Popen([sys.executable, "-c", call], cwd=REPO, env=environment,
                               stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not result_files(workspace):
            assert run.poll() is None, f"the run ended before a shard finished:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no shard finished in time:\n{log.read_text()}"
            time.sleep(0.02)
        run.send_signal(signal.SIGKILL)
        assert run.wait(timeout=30) == -signal.SIGKILL
    finally:
        if run.poll() is None:  # a failed assertion above must not leave the run behind
            run.kill()
            run.wait(timeout=30)
    finished = len(result_files(workspace))
    assert 1 <= finished < SHARDS, log.read_text()
    assert storage.count(workspace, SKETCHES) == 0  # killed before the merge

    report = generate(workspace=str(workspace.root), generator=str(generator), **OPTIONS)
    assert report.shards == SHARDS and not report.failed_shards
    assert report.shards_skipped == finished  # whole shard files: nothing of them is redone
    assert report.merge.inserted == report.merge.rows == 24
    assert checksums(workspace) == checksums(reference)
    outcome = validate(workspace=str(workspace.root), thresholds=thresholds)
    assert outcome.published and outcome.dataset.accepted == 24
    assert published(workspace) == published(reference)


# --------------------------------------------------------------------------- full disk


def _unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs: a real file system that runs out of space (ENOSPC), not a mock."""
    folder = tmp_path / "disk"
    folder.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs",
                                  str(folder)], capture_output=True, text=True)
    except OSError as error:
        pytest.skip(f"cannot mount a tmpfs to fill up: {error}")
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root or CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        _unmount(folder)


def fill(disk: Path, leave: int) -> Path:
    """Take the disk's free space down to about ``leave`` bytes with a filler file."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "ab") as handle:
        handle.write(b"\0" * max(free - leave, 0))
    return filler


def assert_intact(workspace: Workspace, version: str, files: dict[str, str]) -> None:
    """The published version is still current and its files are byte for byte the same;
    no temp file is left behind and every file under a final name is whole."""
    assert publish.current_version(workspace) == version
    assert publish.get_version(workspace, version)["status"] == "published"
    assert {name: sha256(workspace.root / name) for name in files} == files
    assert not [p for p in workspace.root.rglob("*.tmp")], "temp files left behind"
    for path in (workspace.root / "shards").rglob("*.parquet"):
        storage.read_verified_parquet(path)
    for path in workspace.datasets_dir.rglob("*.parquet"):
        storage.read_parquet(path)
    rows = storage.read(workspace, SKETCHES, columns=["png_path", "png_sha256"]).to_pylist()
    assert all(sha256(workspace.root / r["png_path"]) == r["png_sha256"] for r in rows)
    for path in (workspace.root / "sketches").rglob("*.png"):  # merged or not, each is whole
        assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None, path


def test_a_full_disk_fails_clearly_and_keeps_the_published_version(
        reference: Workspace, generator: Path, thresholds: str, small_disk: Path):
    """ENOSPC can hit any write: a PNG, a shard file, a LanceDB commit, a report. Whatever it
    hits, the run must say the disk is full, leave nothing half-written under a final name,
    and leave the published version current and untouched; freeing space lets it resume."""
    workspace = Workspace.open(shutil.copytree(reference.root, small_disk / "ws"))
    version = publish.current_version(workspace)
    record = publish.get_version(workspace, version)
    folder = publish.version_dir("published", version)
    files = {str(name): sha256(workspace.root / name) for name in (
        publish.CURRENT_FILE, record["manifest_path"], record["verdicts_path"],
        folder / publish.DATASET_JSON, folder / publish.CONTRACTS_JSON)}
    more = {**OPTIONS, "samples_per_face": 4}  # 24 new sketches in 6 new shards

    filler = fill(small_disk, leave=96 * 1024)
    with pytest.raises(OSError, match=DISK_FULL):
        generate(workspace=str(workspace.root), generator=str(generator), **more)
    assert_intact(workspace, version, files)

    filler.unlink()  # space comes back: the same run resumes and finishes
    report = generate(workspace=str(workspace.root), generator=str(generator), **more)
    assert report.merge.rows == 48 and not report.failed_shards

    fill(small_disk, leave=160 * 1024)
    with pytest.raises(OSError, match=DISK_FULL):
        validate(workspace=str(workspace.root), thresholds=thresholds)
    assert_intact(workspace, version, files)
    assert [v["version"] for v in publish.list_versions(workspace)] == [version]


# --------------------------------------------------------------------------- damaged files


def flip_value(path: Path, old: bytes, new: bytes) -> None:
    """Change bytes inside a stored value: the file still parses, only its content lies."""
    data = path.read_bytes()
    assert data.count(old) >= 1, f"{old!r} not found in {path}"
    path.write_bytes(data.replace(old, new, 1))


def test_damaged_shard_files_are_found_by_checksum_and_drawn_again_identically(
        reference: Workspace, embedded: Path, generator: Path, tmp_path: Path):
    """Disks and copies damage files silently. A shard Parquet that still parses but whose
    rows changed, a truncated one, and a truncated PNG must each be noticed on the rerun and
    their sketches drawn again, bit-for-bit the uninterrupted run's; so must a PNG damaged
    after the merge, which is drawn again in its original shard (same batch, same pixels)."""
    workspace = copy_workspace(embedded, tmp_path / "ws")
    plan, context = plan_and_context(workspace, generator)
    for shard in plan.shard_refs:  # an earlier run finished every shard, then died unmerged
        run_shard(context, shard)
    lying, truncated, with_bad_png = (workspace.root / s.result_path
                                      for s in plan.shard_refs[:3])
    flip_value(lying, b"earlier-run", b"earlier-rum")  # the run id column: parses fine
    truncated.write_bytes(truncated.read_bytes()[:-100])
    png = workspace.root / storage.read_parquet(with_bad_png).column("png_path")[1].as_py()
    png.write_bytes(png.read_bytes()[: len(png.read_bytes()) // 2])

    report = generate(workspace=str(workspace.root), generator=str(generator), **OPTIONS)
    assert report.shards == SHARDS and report.shards_skipped == SHARDS - 3
    assert sum(c.generated for c in report.per_style.values()) == 4 + 4 + 1
    assert checksums(workspace) == checksums(reference)

    merged = storage.read(workspace, SKETCHES, columns=["sketch_id", "png_path", "shard_id"])
    damaged = merged.slice(5, 1).to_pylist()[0]
    path = workspace.root / damaged["png_path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    again = generate(workspace=str(workspace.root), generator=str(generator), **OPTIONS)
    assert again.shards == 1 and sum(c.generated for c in again.per_style.values()) == 1
    assert sha256(path) == checksums(reference)[damaged["sketch_id"]]
    assert checksums(workspace) == checksums(reference)

    # Without its shard's item list the sketch is still redrawn, in a shard of its own (its
    # batch differs, so only the row and the file are promised to agree, not the pixels).
    (workspace.root / plan.shard_refs[0].items_path).unlink()
    lost = storage.read_parquet(workspace.root / plan.shard_refs[0].result_path).to_pylist()[0]
    (workspace.root / lost["png_path"]).unlink()
    third = generate(workspace=str(workspace.root), generator=str(generator), **OPTIONS)
    assert third.shards == 1 and third.merge.rows == 24
    row = storage.read(workspace, SKETCHES, where=f"sketch_id = '{lost['sketch_id']}'")
    assert sha256(workspace.root / lost["png_path"]) == row.column("png_sha256")[0].as_py()


# --------------------------------------------------------------------------- configuration


def bad_style(kind: str) -> tuple[dict, str]:
    """A style file with one bad field, and the words its error must contain."""
    base = {"name": "ink-wash", "prompt": "an ink wash drawing of a face"}
    if kind == "unknown renderer":
        return ({**base, "source": {"kind": "render", "renderer": "watercolour"}},
                "source.renderer: unknown renderer 'watercolour'; known:")
    return ({**base, "source": {"kind": "paired", "sketch_style": "ink-wash"},
             "active": "sometimes"}, "active: Input should be a valid boolean")


@pytest.mark.parametrize(("kind", "where", "flow"), [
    ("unknown renderer", "CLIP4SKETCH_STYLES_DIR", "generate"),
    ("wrong-typed field", "<workspace>/styles", "generate"),
    ("unknown renderer", "<workspace>/styles", "validate"),
])
def test_a_bad_style_file_fails_before_any_work_naming_file_and_field(
        kind: str, where: str, flow: str, reference: Workspace, generator: Path,
        thresholds: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Styles are hand-written data: a typo must stop the run before it draws, measures or
    publishes anything, with the file and the field to fix."""
    workspace = copy_workspace(reference.root, tmp_path / "ws")
    folder = workspace.root / "styles"
    if where == "CLIP4SKETCH_STYLES_DIR":
        folder = tmp_path / "my-styles"
        folder.mkdir()
        monkeypatch.setenv("CLIP4SKETCH_STYLES_DIR", str(folder))
    style, expected = bad_style(kind)
    (folder / "ink-wash.json").write_text(json.dumps(style))
    before = Snapshot(workspace)
    with pytest.raises(StyleError) as error:
        if flow == "generate":
            generate(workspace=str(workspace.root), generator=str(generator),
                     **{**OPTIONS, "samples_per_face": 3})
        else:
            validate(workspace=str(workspace.root), thresholds=thresholds)
    assert str(folder / "ink-wash.json") in str(error.value)
    assert expected in str(error.value)
    assert Snapshot(workspace) == before


def test_a_generator_with_weights_of_another_shape_fails_before_any_shard(
        embedded: Path, generator: Path, tmp_path: Path):
    """A unet file copied from a generator of another config, with the manifest's checksums
    rewritten to match: checksums pass, so only the tensor shapes can tell. The flow must
    refuse it before planning, naming a tensor and both shapes, not fail in every shard."""
    dims, versions = workspace_encoders(embedded)
    other = SketchGenerator.build("tiny", dims, versions, seed=0)
    config = other.config.model_copy(update={"unet": other.config.unet.model_copy(
        update={"block_out_channels": (32, 64)})})
    wider = SketchGenerator.build(config, dims, versions).save_pretrained(tmp_path / "wider")
    mixed = Path(shutil.copytree(generator, tmp_path / "mixed"))
    shutil.copyfile(wider / UNET_WEIGHTS, mixed / UNET_WEIGHTS)
    manifest = json.loads((mixed / MANIFEST_FILE).read_text())
    manifest["files"][UNET_WEIGHTS] = sha256(mixed / UNET_WEIGHTS)
    (mixed / MANIFEST_FILE).write_text(json.dumps(manifest))

    workspace = copy_workspace(embedded, tmp_path / "ws")
    before = Snapshot(workspace)
    with pytest.raises(GeneratorLoadError, match=r"weights do not fit its config 'tiny'") as err:
        generate(workspace=str(workspace.root), generator=str(mixed), **OPTIONS)
    assert f"{UNET_WEIGHTS}: class_embedding.linear_1.bias is [128], the config expects [64]" \
        in str(err.value)
    assert Snapshot(workspace) == before and SKETCHES not in storage.table_names(workspace)


@pytest.mark.parametrize("flow", ["generate", "validate"])
def test_a_missing_encoder_weights_path_fails_before_any_work_naming_it(
        flow: str, reference: Workspace, generator: Path, thresholds: str, tmp_path: Path):
    """Encoder weights come from local paths only; a wrong path must be named before any
    sketch is drawn or measured, not after an hour of work."""
    workspace = copy_workspace(reference.root, tmp_path / "ws")
    missing = tmp_path / "weights" / "nowhere.onnx"
    before = Snapshot(workspace)
    with pytest.raises(EncoderError) as error:
        if flow == "generate":
            generate(workspace=str(workspace.root), generator=str(generator),
                     **{**OPTIONS, "samples_per_face": 3},
                     text_encoder=EncoderSpec(role="text", name="minilm", weights=str(missing)))
        else:
            validate(workspace=str(workspace.root), thresholds=thresholds,
                     identity_encoder=EncoderSpec(role="identity", name="sface",
                                                  weights=str(missing)))
    assert str(missing) in str(error.value)
    assert Snapshot(workspace) == before
