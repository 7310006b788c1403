"""The whole nightly DAG and the style backfill, run by Prefect on demo faces.

A random-init tiny generator draws noise, so these tests validate against a thresholds file
that accepts any healthy-or-not sketch: the point here is the DAG (what runs, what is
skipped, what is published, what the manifest says), not the quality gate, which has its
own tests in test_validate.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.backfill import backfill
from flows.nightly import NightlyRejectedError, nightly
from flows.validate import ContractsFailedError
from tasks import storage
from tasks.demo.faces import MANIFEST_NAME, PHOTO_DIR, make_demo_source
from tasks.embed import embed_texts
from tasks.generate.catalog import GeneratorNotFoundError
from tasks.storage import SKETCHES, Workspace
from tasks.styles.registry import StyleError
from tasks.validate import publish

from ..tasks.generate.conftest import STYLES, TEXT_SPEC, build_generator, write_style_files
from .conftest import accept_all_thresholds

pytestmark = pytest.mark.usefixtures("prefect_harness")

NIGHT_STYLE, BACKFILL_STYLE = sorted(STYLES)  # test-charcoal drawn nightly, test-pencil later


@pytest.fixture(autouse=True)
def _fast_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generation settings as a deployment would set them: through the environment."""
    for key, value in {"STEPS": "2", "BATCH_SIZE": "4", "SHARD_SIZE": "8", "DEVICE": "cpu",
                       "SAMPLES_PER_FACE": "2"}.items():
        monkeypatch.setenv(f"CLIP4SKETCH_GENERATE_{key}", value)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_source(tmp_path_factory.mktemp("night-src"), identities=3,
                            photos_per_identity=2)


def _sources(source: Path) -> list[str]:
    return [str(source / PHOTO_DIR)]


def _first_night(source: Path, root: Path) -> Workspace:
    """A workspace after a night without a generator, with a tiny one saved as default."""
    report = nightly(sources=_sources(source), workspace=str(root))
    assert report.stages.records["generate"].status == "skipped"
    workspace = Workspace.open(root)
    write_style_files(root)
    embed_texts(workspace, STYLES, TEXT_SPEC)
    build_generator(root, root / "generators" / "default" / "final")
    return workspace


def _versions(workspace: Workspace) -> dict[str, int | None]:
    return {name: storage.table_version(workspace, name)
            for name in storage.table_names(workspace)}


def _sketch_keys(workspace: Workspace) -> set[tuple[str, str]]:
    rows = storage.read(workspace, SKETCHES, columns=["face_id", "style"]).to_pylist()
    return {(r["face_id"], r["style"]) for r in rows}


def test_a_night_without_generator_ingests_embeds_and_says_how_to_continue(
        source: Path, tmp_path: Path):
    report = nightly(sources=_sources(source), workspace=str(tmp_path / "ws"))
    records = report.stages.records
    assert [records[s].status for s in ("ingest", "embed")] == ["done", "done"]
    assert records["generate"].status == "skipped"
    assert "train-generator" in records["generate"].detail
    manifest = json.loads(Path(report.run_record).read_text())
    assert manifest["summary"]["ingest"]["detail"].startswith("6 new faces")
    assert manifest["summary"]["ingest"]["seconds"] > 0
    assert manifest["table_versions"]["faces"] is not None
    assert manifest["code"]["clip4sketch"]


def test_full_night_publishes_and_a_quiet_night_does_nothing_new(source: Path, tmp_path: Path):
    workspace = _first_night(source, tmp_path / "ws")
    thresholds = str(accept_all_thresholds(tmp_path / "t.yaml"))

    night = nightly(sources=_sources(source), workspace=str(workspace.root),
                    styles=[NIGHT_STYLE], thresholds=thresholds)
    records = night.stages.records
    assert list(records) == ["ingest", "embed", "generate", "validate"]
    assert {r.status for r in records.values()} == {"done"}
    assert night.published.generation.per_style[NIGHT_STYLE].generated == 6 * 2
    version = night.published.validation.version
    assert night.published.validation.published and publish.current_version(workspace) == version
    manifest = json.loads(Path(night.run_record).read_text())
    assert set(manifest["summary"]) == set(records)
    assert manifest["stages"]["validate"]["version"] == version
    assert manifest["parameters"]["generation"]["steps"] == 2  # from the settings

    quiet = nightly(sources=_sources(source), workspace=str(workspace.root),
                    styles=[NIGHT_STYLE], thresholds=thresholds)
    assert quiet.ingest[0].n_ingested == 0
    assert quiet.published.generation.per_style[NIGHT_STYLE].generated == 0
    assert quiet.published.validation.version == version  # same content, same version
    assert len(publish.list_versions(workspace)) == 1

    # Dry run: says what it would do and changes nothing.
    before = _versions(workspace)
    dry = nightly(sources=_sources(source), workspace=str(workspace.root),
                  styles=[NIGHT_STYLE, BACKFILL_STYLE], dry_run=True)
    assert _versions(workspace) == before
    assert {r.status for r in dry.stages.records.values()} == {"planned"}
    assert "0 new" in dry.stages.records["ingest"].detail
    assert "12 missing sketches" in dry.stages.records["generate"].detail

    # Backfill a style: only its (face, style) items, then a new published version.
    dry_fill = backfill(styles=[BACKFILL_STYLE], workspace=str(workspace.root), dry_run=True)
    assert "12 missing sketches" in dry_fill.stages.records["generate"].detail
    assert _versions(workspace) == before
    keys_before = _sketch_keys(workspace)
    filled = backfill(styles=[BACKFILL_STYLE], workspace=str(workspace.root),
                      generator=night.published.generation.generator_version,
                      thresholds=thresholds)
    assert filled.published.generation.per_style[BACKFILL_STYLE].generated == 12
    assert _sketch_keys(workspace) - keys_before == {
        (face, BACKFILL_STYLE) for face, _ in keys_before}
    new_version = filled.published.validation.version
    assert new_version != version and publish.current_version(workspace) == new_version
    assert json.loads(Path(filled.run_record).read_text())["summary"]["generate"]["status"] \
        == "done"


def test_a_rejected_night_fails_after_writing_its_manifest(source: Path, tmp_path: Path):
    workspace = _first_night(source, tmp_path / "ws")
    with pytest.raises(NightlyRejectedError, match="not published"):
        nightly(sources=_sources(source), workspace=str(workspace.root),
                styles=[NIGHT_STYLE])  # the reviewed thresholds refuse noise
    manifests = sorted((workspace.root / "runs").glob("nightly-*.json"),
                       key=lambda p: p.stat().st_mtime)
    manifest = json.loads(manifests[-1].read_text())
    summary = manifest["summary"]
    assert summary["generate"]["status"] == "done"
    assert summary["validate"]["status"] == "rejected"
    # The rejected version's figures are in the manifest, for the morning's reader.
    assert manifest["stages"]["validate"]["published"] is False
    assert manifest["stages"]["validate"]["dataset"]["rejected"] > 0
    assert publish.current_version(workspace) is None
    assert issubclass(NightlyRejectedError, RuntimeError)
    assert not issubclass(ContractsFailedError, NightlyRejectedError)


def test_backfill_refuses_unknown_style_or_generator_before_any_work(
        source: Path, tmp_path: Path):
    workspace = _first_night(source, tmp_path / "ws")
    before = _versions(workspace)
    with pytest.raises(StyleError, match=BACKFILL_STYLE):
        backfill(styles=["no-such-style"], workspace=str(workspace.root))
    with pytest.raises(GeneratorNotFoundError, match="Saved: tiny-"):
        backfill(styles=[BACKFILL_STYLE], generator="tiny-000000000000",
                 workspace=str(workspace.root))
    assert _versions(workspace) == before
    assert not (workspace.root / "shards").exists()


def test_night_trains_and_evaluates_when_configured(source: Path, tmp_path: Path):
    workspace = _first_night(source, tmp_path / "ws")
    thresholds = str(accept_all_thresholds(tmp_path / "t.yaml"))
    night = nightly(sources=_sources(source), workspace=str(workspace.root),
                    styles=[NIGHT_STYLE], thresholds=thresholds, train_recognizer_steps=3,
                    evaluate_pairs=str(source / MANIFEST_NAME))
    assert night.stages.records["train"].status == "done"
    metrics = json.loads(Path(night.evaluation).read_text())
    assert set(metrics["recognizers"]) >= {"baseline"} and len(metrics["recognizers"]) == 2
