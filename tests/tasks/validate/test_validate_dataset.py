"""The validate stage end to end, without Prefect: metrics, contracts, publish, report.

The workspace holds 48 clean "generated" sketches (renderer drawings of 6 demo identities);
the broken ones are a blank page, noise, another identity's sketch, a colour photo and a NaN
row (5 of 53, above the 5 % unhealthy share the thresholds allow).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from benchmarks.sketch_data import (
    IDENTITY,
    IMAGE,
    broken_sketches,
    copy_workspace,
    write_sketches,
)
from data_contracts.thresholds import THRESHOLDS_FILE, load_thresholds
from schemas.validation import DATASET_VERSIONS, SKETCH_VERDICTS
from tasks import storage
from tasks.digests import FileDigests
from tasks.storage import SKETCHES, Workspace
from tasks.styles.registry import load_styles
from tasks.validate import compute, galleries, judge, publish
from tasks.validate.compute import compute_metrics
from tasks.validate.judge import judge_dataset
from tasks.validate.report import write_report
from tasks.validate.vectors import resolve_source, stored_sketch_vectors

from .chromium import find_chromium, open_page

# What each broken sketch must be rejected for (its first reason: the one to act on).
EXPECTED = {"blank": "blank", "noise": "noise", "other_identity": "identity_confusion",
            "colour": "colour", "nan": "nan"}


def validate(workspace: Workspace, run_id: str, thresholds: Path | None = None):
    registry = load_styles()
    metrics = compute_metrics(workspace, IDENTITY, IMAGE, registry, run_id=run_id)
    outcome = judge_dataset(workspace, metrics, registry, IDENTITY, IMAGE,
                            thresholds_path=thresholds, run_id=run_id,
                            report_path=str(workspace.reports_dir / f"validate-{run_id}.html"))
    write_report(workspace, outcome, load_thresholds(thresholds))
    return metrics, outcome


def verdicts(workspace: Workspace) -> dict[str, list[str]]:
    rows = storage.read(workspace, SKETCH_VERDICTS, columns=["sketch_id", "reasons"])
    return dict(zip(rows.column("sketch_id").to_pylist(), rows.column("reasons").to_pylist(),
                    strict=True))


@pytest.fixture(scope="module")
def broken_run(validate_template: Path, tmp_path_factory: pytest.TempPathFactory):
    workspace = copy_workspace(validate_template, tmp_path_factory.mktemp("broken") / "ws")
    broken = broken_sketches(workspace)
    write_sketches(workspace, list(broken.values()))
    metrics, outcome = validate(workspace, "broken")
    return workspace, broken, metrics, outcome


def test_each_broken_sketch_is_rejected_for_its_reason(broken_run):
    workspace, broken, metrics, outcome = broken_run
    assert metrics.computed == 5 and metrics.reused == 48  # clean metrics came with the copy
    found = verdicts(workspace)
    for name, sketch in broken.items():
        assert found[sketch.sketch_id][:1] == [EXPECTED[name]], (name, found[sketch.sketch_id])
    clean = {sid for sid in found} - {s.sketch_id for s in broken.values()}
    assert all(found[sid] == [] for sid in clean)
    assert outcome.dataset.rejected == 5 and outcome.dataset.accepted == 48


def test_too_many_broken_sketches_block_publication(broken_run):
    workspace, _, _, outcome = broken_run
    assert outcome.status == "rejected" and not outcome.published
    assert outcome.current_version is None and publish.current_version(workspace) is None
    assert "sketch_metrics: expect_column_values_to_be_in_set(healthy)" in (
        outcome.failed_expectations)
    # Rejected for health alone: the broken sketches do not cost either style its pairs.
    assert not any(f.startswith("style_pairs") for f in outcome.failed_expectations)
    assert outcome.manifest_path is None
    assert not (workspace.root / publish.PUBLISHED_DIR / outcome.version).exists()
    (row,) = publish.list_versions(workspace)
    assert (row["version"], row["status"], row["current"]) == (outcome.version, "rejected",
                                                                False)
    # Rejected sketches stay queryable with their reasons, in the table and the version folder.
    rejected = storage.read(workspace, SKETCH_VERDICTS, where="accepted = false")
    assert rejected.num_rows == 5
    folder = storage.read_parquet(workspace.root / outcome.verdicts_path)
    assert folder.filter(pc.invert(folder.column("accepted"))).num_rows == 5


def test_the_report_renders_offline_in_chromium(broken_run):
    workspace, broken, _, outcome = broken_run
    report = Path(outcome.report_path)
    html = report.read_text()
    assert "judge called" in html  # what each style's sketches were called (per style table)
    assert 'id="style-contract"' in html and "pairs (12 faces drawn in another style too)" in html
    # Each suite says the thresholds it was judged with (its run's parameters).
    healthy = 1.0 - load_thresholds().sketches.max_share_unhealthy
    assert "judged with: min_identity_similarity = " in html
    assert f"min_share_healthy = {healthy:.4g}" in html
    assert "REJECTED" in html and "identity_confusion" in html and "http" not in html.replace(
        "http://www.w3.org/2000/svg", "")
    if find_chromium() is None:
        pytest.skip("headless check needs Debian's chromium: apt-get install -y chromium")
    screenshot = workspace.reports_dir / "validate-broken.png"
    page = open_page(report, screenshot)
    assert page.console_errors == [] and page.exceptions == [], page
    assert page.network_requests == [] and page.failed_loads == []
    assert page.images and all(image["ok"] for image in page.images)
    assert page.sections == ["summary", "histograms", "contact-sheets", "worst", "rejected",
                             "contracts"]
    assert page.svgs >= 8 and outcome.version in page.title
    assert screenshot.stat().st_size > 10_000


def test_a_clean_dataset_is_published_revalidated_for_free_exported_and_kept_current(
        sketch_workspace: Workspace, tmp_path: Path):
    workspace = sketch_workspace
    _, first = validate(workspace, "clean")
    assert first.published and first.status == "published", first.failed_expectations
    for style in ("pencil-dodge", "xdog-lines"):  # 12 faces, each drawn in both styles
        verdict = first.dataset.per_style[style].pair_verdict
        assert (verdict.mode, verdict.pairs, verdict.pairs_won, verdict.passed) == (
            "pairs", 12, 12, True)
        assert verdict.absolute_share == 1.0  # the old share: a figure beside the verdict
    assert publish.current_version(workspace) == first.version
    manifest = storage.read_parquet(workspace.root / first.manifest_path)
    assert manifest.num_rows == 48 and set(manifest.column("dataset_version").to_pylist()) == {
        first.version}
    assert first.version in storage.tags(workspace, SKETCHES)
    docs = Path(first.data_docs.removeprefix("file://"))
    assert docs.is_file() and docs.is_relative_to(workspace.root / "gx")

    # Unchanged: nothing is recomputed, encoded or re-checked, and the version is the same.
    metrics, again = validate(workspace, "again")
    assert (metrics.computed, metrics.reused) == (0, 48)
    assert metrics.encoded == {"identity": 0, "image": 0} and metrics.style_classifier is None
    assert again.reused_contracts and again.version == first.version and again.published
    assert storage.count(workspace, DATASET_VERSIONS) == 1

    # Export: image folders plus a manifest a recognition trainer reads.
    exported = publish.export_version(workspace, first.version, tmp_path / "export")
    assert exported.sketches == 48 and exported.mugshots == 12
    from tasks.recognize.data import read_synthetic_sketches

    rows, provenance = read_synthetic_sketches(Workspace.open(tmp_path / "export"),
                                               exported.manifest)
    assert rows.num_rows == 48 and provenance["usable"] == 48
    assert all((tmp_path / "export" / p).is_file() for p in rows.column("png_path").to_pylist())
    with pytest.raises(publish.VersionError, match="unknown"):
        publish.export_version(workspace, "ds-000000000000", tmp_path / "nope")

    # Broken sketches arrive: rejected, and the published version stays current.
    write_sketches(workspace, list(broken_sketches(workspace).values()))
    metrics, rejected = validate(workspace, "broken")
    assert metrics.computed == 5 and not rejected.published
    assert rejected.current_version == first.version == publish.current_version(workspace)
    with pytest.raises(publish.VersionError, match="rejected"):
        publish.export_version(workspace, rejected.version, tmp_path / "rejected")

    # A reviewed looser threshold publishes the same sketches without measuring them again;
    # the bad ones are left out of the manifest with their reasons.
    loose = yaml.safe_load(THRESHOLDS_FILE.read_text())
    loose["sketches"].update(max_share_unhealthy=0.10, min_share_identity=0.90)
    path = tmp_path / "loose.yaml"
    path.write_text(yaml.safe_dump(loose))
    metrics, published = validate(workspace, "loose", thresholds=path)
    assert metrics.computed == 0 and metrics.encoded == {"identity": 0, "image": 0}
    assert published.published, published.failed_expectations
    assert published.version not in (first.version, rejected.version)
    assert publish.current_version(workspace) == published.version
    manifest = storage.read_parquet(workspace.root / published.manifest_path)
    assert manifest.num_rows == 48
    listed = {r["version"]: (r["status"], r["current"]) for r in publish.list_versions(workspace)}
    assert listed == {first.version: ("published", False),
                      rejected.version: ("rejected", False),
                      published.version: ("published", True)}
    text = publish.versions_table(publish.list_versions(workspace))
    assert f"* {published.version}" in text and rejected.version in text


def test_nothing_to_validate_fails_at_once(workspace: Workspace):
    with pytest.raises(LookupError, match="no sketches to validate"):
        compute_metrics(workspace, IDENTITY, IMAGE, load_styles())


def test_a_changed_png_is_measured_again(sketch_workspace: Workspace):
    workspace = sketch_workspace
    row = storage.read(workspace, SKETCHES, columns=["sketch_id", "png_path"]).to_pylist()[0]
    path = workspace.root / row["png_path"]
    path.write_bytes(path.read_bytes() + b"tampered")
    metrics = compute_metrics(workspace, IDENTITY, IMAGE, load_styles())
    assert (metrics.computed, metrics.reused) == (1, 47)
    stored = storage.read(workspace, "sketch_metrics", columns=["file_problem"],
                          where=f"sketch_id = '{row['sketch_id']}'").to_pylist()
    assert stored == [{"file_problem": "checksum_mismatch"}]


def test_a_png_changed_under_a_warm_digest_cache_is_still_caught(sketch_workspace: Workspace,
                                                                  monkeypatch):
    """The second night trusts the stat of files it hashed before; a rewrite of the same
    length with the old mtime put back still changes the ctime, and is caught."""
    monkeypatch.setattr("tasks.digests.RACY_SECONDS", 0.0)  # the test's files are new
    workspace = sketch_workspace
    rows = storage.read(workspace, SKETCHES, columns=["sketch_id", "png_path"]).to_pylist()
    old = time.time() - 3600
    for row in rows:
        os.utime(workspace.root / row["png_path"], (old, old))
    compute_metrics(workspace, IDENTITY, IMAGE, load_styles())
    assert FileDigests(workspace.root).sha256(rows[1]["png_path"]) is not None
    path = workspace.root / rows[0]["png_path"]
    data = path.read_bytes()
    path.write_bytes(data[:-8] + b"tampered")
    os.utime(path, (old, old))
    metrics = compute_metrics(workspace, IDENTITY, IMAGE, load_styles())
    assert (metrics.computed, metrics.reused) == (1, len(rows) - 1)
    stored = storage.read(workspace, "sketch_metrics", columns=["file_problem"],
                          where=f"sketch_id = '{rows[0]['sketch_id']}'").to_pylist()
    assert stored == [{"file_problem": "checksum_mismatch"}]
    digests = FileDigests(workspace.root)
    digests.sha256(rows[1]["png_path"])
    assert digests.hashed == 0  # the untouched drawings were not read again


def test_measurements_build_the_judge_validate_used(broken_run):
    # Benchmarks that report "what the validate stage's judge calls them" go through
    # validate_judge; it must be the same classifier (examples, encoder, resolution).
    from schemas.validation import Scope
    from tasks.validate.compute import read_scope, sketch_resolution, validate_judge

    workspace, _, metrics, _ = broken_run
    rows = read_scope(workspace, Scope()).to_pylist()
    judge = validate_judge(workspace, sketch_resolution(rows), IMAGE)
    assert metrics.style_method == "classifier" and judge.method == metrics.style_method
    assert judge.fingerprint == metrics.style_fingerprint
    assert judge.classifier is not None and judge.source == "cached"


def _add_lookalike(workspace: Workspace) -> dict:
    """A mugshot of a new person who looks exactly like one of the sketches; returns that
    sketch's row."""
    source = resolve_source(workspace, IDENTITY)
    target = storage.read(workspace, SKETCHES, columns=["sketch_id", "png_sha256"],
                          where="status = 'ok'").to_pylist()[0]
    vector = stored_sketch_vectors(workspace, source,
                                   [(target["sketch_id"], target["png_sha256"])])
    photos = storage.read(workspace, source.table, where="kind = 'photo'")
    lookalike = photos.slice(0, 1).to_pylist()[0]
    lookalike.update(face_id="lookalike-face", identity_id="lookalike",
                     vector=vector[target["sketch_id"]].tolist())
    storage.upsert(workspace, source.table,
                   pa.Table.from_pylist([lookalike], schema=photos.schema), "face_id")
    return target


def _from_scratch(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """Every row measured again (another code version invalidates every part)."""
    monkeypatch.setattr(compute, "CODE_VERSION", "metrics-from-scratch")
    fresh = compute_metrics(workspace, IDENTITY, IMAGE, load_styles(), run_id="scratch")
    assert (fresh.computed, fresh.rescored, fresh.carried) == (48, 0, 0)
    return {r["sketch_id"]: r for r in storage.read(workspace, "sketch_metrics").to_pylist()}


def _same_margins(found: dict[str, dict], scratch: dict[str, dict]) -> None:
    for sid, row in scratch.items():
        assert row["impostor_identity"] == found[sid]["impostor_identity"], sid
        for column in ("identity_similarity", "impostor_similarity", "identity_margin"):
            assert row[column] == pytest.approx(found[sid][column], abs=1e-6), (sid, column)


def test_a_new_mugshot_rescores_only_the_margins_it_beats_without_measuring_any_sketch_again(
        sketch_workspace: Workspace, monkeypatch: pytest.MonkeyPatch):
    """A night's new faces change the gallery and nothing else: a sketch whose stored
    impostor is closer than every new face keeps its stored row untouched (carried), the
    others have their margins taken again from their stored vectors, and every figure the
    judge reads equals what measuring it from scratch gives."""
    workspace = sketch_workspace
    target = _add_lookalike(workspace)
    before = {r["sketch_id"]: r for r in storage.read(workspace, "sketch_metrics").to_pylist()}
    metrics = compute_metrics(workspace, IDENTITY, IMAGE, load_styles(), run_id="new-face")
    assert metrics.computed == 0 and metrics.reused == 0
    assert metrics.rescored + metrics.carried == 48 and metrics.carried > 0
    assert metrics.encoded == {"identity": 0, "image": 0}
    after = {r["sketch_id"]: r for r in storage.read(workspace, "sketch_metrics").to_pylist()}
    moved = after[target["sketch_id"]]
    assert moved["impostor_identity"] == "lookalike"
    assert moved["impostor_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert moved["identity_margin"] < before[target["sketch_id"]]["identity_margin"]
    assert moved["metrics_version"] == metrics.metrics_version
    carried = [sid for sid, row in after.items()
               if row["metrics_version"] != metrics.metrics_version]
    assert len(carried) == metrics.carried
    assert metrics.carried_versions == sorted({before[sid]["metrics_version"] for sid in carried})
    for sid in carried:  # not written again: what the new face did not beat holds as stored
        assert after[sid] == before[sid]
    for sid, row in after.items():  # what does not depend on the gallery stays as measured
        for column in ("pixel_std", "contrast", "identity_similarity", "style_predicted",
                       "style_score"):
            assert row[column] == before[sid][column], (sid, column)
    # The judge reads every row as current: carried rows say today's version.
    sketches = storage.read(workspace, SKETCHES)
    merged = judge.merge_metrics(workspace, sketches, metrics.metrics_version,
                                 metrics.carried_versions)
    assert {r["metrics_version"] for r in merged if r["status"] == "ok"} == {
        metrics.metrics_version}
    _same_margins(after, _from_scratch(workspace, monkeypatch))


def test_a_mugshot_that_leaves_the_gallery_rescores_every_margin(sketch_workspace: Workspace):
    """A gallery that lost a face is no longer a growth of the one the rows were scored
    against: nothing is carried, every margin is taken again."""
    workspace = sketch_workspace
    source = resolve_source(workspace, IDENTITY)
    photos = storage.read(workspace, source.table, columns=["face_id"], where="kind = 'photo'")
    storage.delete(workspace, source.table,
                   f"face_id = {storage.quote(photos.column('face_id')[0].as_py())}")
    metrics = compute_metrics(workspace, IDENTITY, IMAGE, load_styles(), run_id="face-gone")
    assert (metrics.computed, metrics.rescored, metrics.carried) == (0, 48, 0)
    after = {r["sketch_id"]: r for r in storage.read(workspace, "sketch_metrics").to_pylist()}
    assert {r["metrics_version"] for r in after.values()} == {metrics.metrics_version}


def test_a_mugshot_whose_vector_comes_back_gives_its_sketches_their_similarity_again(
        sketch_workspace: Workspace, monkeypatch: pytest.MonkeyPatch):
    """The gallery only grows when a face's vector returns, yet that face's own sketches are
    not carried: their similarity to their own mugshot is taken again."""
    workspace = sketch_workspace
    source = resolve_source(workspace, IDENTITY)
    photos = storage.read(workspace, source.table, where="kind = 'photo'")
    face = photos.slice(0, 1)
    face_id = face.column("face_id")[0].as_py()
    storage.delete(workspace, source.table, f"face_id = {storage.quote(face_id)}")
    compute_metrics(workspace, IDENTITY, IMAGE, load_styles(), run_id="face-gone")
    gone = [r for r in storage.read(workspace, "sketch_metrics").to_pylist()
            if r["face_id"] == face_id and r["status"] == "ok"]
    assert gone and all(r["identity_similarity"] is None for r in gone)
    storage.upsert(workspace, source.table, face, "face_id")
    metrics = compute_metrics(workspace, IDENTITY, IMAGE, load_styles(), run_id="face-back")
    assert metrics.rescored >= len(gone)
    after = {r["sketch_id"]: r for r in storage.read(workspace, "sketch_metrics").to_pylist()}
    assert all(after[r["sketch_id"]]["identity_similarity"] is not None for r in gone)
    _same_margins(after, _from_scratch(workspace, monkeypatch))


@pytest.mark.parametrize("damage", ["missing", "garbage", "other format"])
def test_a_lost_or_damaged_gallery_lineage_rescores_every_margin_and_is_written_again(
        sketch_workspace: Workspace, monkeypatch: pytest.MonkeyPatch, damage: str):
    workspace = sketch_workspace
    path = galleries.lineage_path(workspace, resolve_source(workspace, IDENTITY))
    assert path.is_file()  # the first validation recorded its gallery
    if damage == "missing":
        path.unlink()
    else:
        path.write_text("{not json" if damage == "garbage" else '{"format": "other"}')
    _add_lookalike(workspace)
    metrics = compute_metrics(workspace, IDENTITY, IMAGE, load_styles(), run_id="new-face")
    assert (metrics.computed, metrics.rescored, metrics.carried) == (0, 48, 0)
    lineage = galleries.load(path)
    assert lineage is not None and lineage.current == compute.version_parts(
        metrics.metrics_version)[2]
    after = {r["sketch_id"]: r for r in storage.read(workspace, "sketch_metrics").to_pylist()}
    _same_margins(after, _from_scratch(workspace, monkeypatch))


def test_a_refitted_style_judge_judges_again_from_stored_vectors_without_decoding(
        sketch_workspace: Workspace, monkeypatch: pytest.MonkeyPatch):
    """A judge refitted on a grown style's examples re-judges every sketch, from the image
    vectors already stored: no PNG is decoded or measured again."""
    workspace = sketch_workspace
    before = {r["sketch_id"]: r for r in storage.read(workspace, "sketch_metrics").to_pylist()}
    calls: list[int] = []
    real = compute.StyleJudge.for_workspace

    def refitted(*args, **kwargs):
        judge = real(*args, **kwargs)
        judge.fingerprint = f"refitted-{judge.fingerprint}"
        judging = judge.judge

        def counted(vectors, styles):
            calls.append(len(styles))
            return judging(vectors, styles)

        judge.judge = counted
        return judge

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("a sketch was decoded again")

    monkeypatch.setattr(compute.StyleJudge, "for_workspace", refitted)
    monkeypatch.setattr(compute, "read_image", no_decoding)
    metrics = compute_metrics(workspace, IDENTITY, IMAGE, load_styles(), run_id="refit")
    assert (metrics.computed, metrics.rescored, metrics.reused) == (0, 48, 0)
    assert metrics.encoded == {"identity": 0, "image": 0}
    assert sum(calls) == 48  # every sketch judged again
    after = {r["sketch_id"]: r for r in storage.read(workspace, "sketch_metrics").to_pylist()}
    old_parts = compute.version_parts(next(iter(before.values()))["metrics_version"])
    new_parts = compute.version_parts(metrics.metrics_version)
    assert (new_parts[0], new_parts[2]) == (old_parts[0], old_parts[2])
    assert new_parts[1] != old_parts[1]
    for sid, row in after.items():  # the same classifier, so the same calls and scores
        assert row["metrics_version"] == metrics.metrics_version
        assert row["style_predicted"] == before[sid]["style_predicted"]
        assert row["style_score"] == pytest.approx(before[sid]["style_score"], abs=1e-9)
        assert row["pixel_std"] == before[sid]["pixel_std"]
