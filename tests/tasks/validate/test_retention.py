"""Retention on a real workspace: three validations (published, rejected, published), then
``prune``. What a kept version needs must survive bit for bit; what only pruned versions
used must go, rows and PNGs both; a dry run changes nothing."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.sketch_data import IDENTITY, IMAGE, broken_sketches, copy_workspace, write_sketches
from data_contracts.thresholds import load_thresholds
from schemas.validation import SKETCH_METRICS, Scope
from tasks import storage
from tasks.digests import FileDigests
from tasks.generate.plan import SHARDS_DIR
from tasks.retention import (
    GX_PAGES,
    GX_RESULTS,
    RetentionError,
    _shard_leftovers,
    plan_prune,
    prune,
)
from tasks.storage import SKETCHES, Workspace
from tasks.styles.registry import load_styles
from tasks.validate import publish
from tasks.validate.compute import compute_metrics
from tasks.validate.judge import judge_dataset
from tasks.validate.report import write_report


def _validate(workspace: Workspace, run_id: str, styles: tuple[str, ...] | None = None):
    scope = Scope(styles=styles)
    registry = load_styles()
    metrics = compute_metrics(workspace, IDENTITY, IMAGE, registry, scope=scope, run_id=run_id)
    outcome = judge_dataset(workspace, metrics, registry, IDENTITY, IMAGE, scope=scope,
                            run_id=run_id,
                            report_path=str(workspace.reports_dir / f"validate-{run_id}.html"))
    write_report(workspace, outcome, load_thresholds(None))
    return outcome


@pytest.fixture(scope="module")
def three_versions_template(validate_template: Path, tmp_path_factory):
    """v1: every clean sketch, published; r1: pencil-dodge with four broken drawings,
    rejected; v2: xdog-lines (one NaN row among 25), published and current."""
    workspace = copy_workspace(validate_template, tmp_path_factory.mktemp("retention") / "ws")
    v1 = _validate(workspace, "v1")
    write_sketches(workspace, list(broken_sketches(workspace).values()))
    r1 = _validate(workspace, "r1", ("pencil-dodge",))
    v2 = _validate(workspace, "v2", ("xdog-lines",))
    assert (v1.status, r1.status, v2.status) == ("published", "rejected", "published")
    return workspace.root, v1.version, r1.version, v2.version


@pytest.fixture
def three_versions(three_versions_template, tmp_path: Path):
    """A private copy of the template (prune changes it)."""
    root, *versions = three_versions_template
    return (copy_workspace(root, tmp_path / "ws"), *versions)


def _file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _export_digests(workspace: Workspace, version: str, out: Path) -> dict[str, str]:
    publish.export_version(workspace, version, out)
    return _file_digests(out)


def _version_rows(workspace: Workspace, table: str, tag: str) -> pa.Table:
    lance = workspace.db().open_table(table)
    lance.checkout(tag)
    return lance.to_arrow().sort_by("sketch_id")


def test_prune_keeps_what_kept_versions_need_bit_for_bit(three_versions, tmp_path):
    workspace, v1, r1, v2 = three_versions
    folder = workspace.root / publish.version_dir("published", v2)
    before_files = _file_digests(folder)
    before_export = _export_digests(workspace, v2, tmp_path / "before")
    before_rows = _version_rows(workspace, SKETCHES, v2)
    verdicts = storage.read_parquet(folder / publish.VERDICTS)
    pruned_pngs = {r["png_path"] for r in storage.read_parquet(
        workspace.root / publish.version_dir("published", v1) / publish.VERDICTS).to_pylist()
        if r["style"] == "pencil-dodge" and r["png_path"]}

    report = prune(workspace, keep_published=1, keep_days=0)

    assert report.kept_versions == [v2]
    assert report.pruned_versions == {r1: "rejected", v1: "published"}
    # 24 clean pencil-dodge drawings (v1 only) and the 4 broken ones (r1 only).
    assert len(report.sketches) == 28
    assert report.bytes_after < report.bytes_before
    # The run record says where the prune's seconds went, every step of it.
    assert set(report.step_seconds) == {"measure", "plan", "remove", "compact", "mirrors"}
    assert 0 < sum(report.step_seconds.values()) <= report.seconds
    # The kept version: its folder, its export (every PNG checked against its sha256) and
    # its tagged table version are what they were, bit for bit.
    assert _file_digests(folder) == before_files
    assert _export_digests(workspace, v2, tmp_path / "after") == before_export
    assert _version_rows(workspace, SKETCHES, v2).equals(before_rows)
    kept = set(verdicts.column("sketch_id").to_pylist())
    stored = set(storage.column_values(workspace, SKETCHES, "sketch_id"))
    assert stored == kept and set(storage.column_values(workspace, SKETCH_METRICS,
                                                        "sketch_id")) == kept
    assert not any((workspace.root / p).exists() for p in pruned_pngs)
    # The pruned versions stay listed as history; their files are gone and say so.
    listed = {r["version"]: (r["status"], r["pruned"]) for r in publish.list_versions(workspace)}
    assert listed == {v1: ("published", True), r1: ("rejected", True), v2: ("published", False)}
    with pytest.raises(publish.VersionError, match="pruned"):
        publish.export_version(workspace, v1, tmp_path / "gone")
    assert v1 not in storage.tags(workspace, SKETCHES) and v2 in storage.tags(workspace, SKETCHES)
    assert "pruned" in publish.versions_table(publish.list_versions(workspace))

    # A second prune finds nothing more to remove.
    again = plan_prune(workspace, keep_published=1, keep_days=0)
    assert again.pruned_versions == {} and again.sketches == [] and again.files == []

    # Validating the kept version's scope again regenerates it: the same version id, and
    # the same manifest, bit for bit, from what the prune left.
    manifest = (folder / publish.MANIFEST).read_bytes()
    redone = _validate(workspace, "again", ("xdog-lines",))
    assert redone.version == v2 and redone.published
    verdicts = storage.read_parquet(folder / publish.VERDICTS)
    assert publish.manifest_table(verdicts).equals(
        storage.read_parquet(folder / publish.MANIFEST))
    assert (folder / publish.MANIFEST).read_bytes() == manifest


def test_the_digests_of_pruned_pngs_go_with_them(three_versions, monkeypatch):
    workspace, v1, r1, v2 = three_versions
    monkeypatch.setattr("tasks.digests.RACY_SECONDS", 0.0)  # the fixture's PNGs are new
    pngs = [r["png_path"] for r in storage.read(workspace, SKETCHES, columns=["png_path"])
            .to_pylist() if r["png_path"]]
    digests = FileDigests(workspace.root)
    for path in pngs:
        digests.sha256(path)
    digests.save()
    assert len(FileDigests(workspace.root)) == len(pngs)
    prune(workspace, keep_published=1, keep_days=0)
    kept = {p for p in pngs if (workspace.root / p).is_file()}
    assert kept and len(kept) < len(pngs)
    remembered = FileDigests(workspace.root)
    assert len(remembered) == len(kept)
    for path in kept:
        remembered.sha256(path)
    assert remembered.hashed == 0


def test_a_pinned_version_is_kept_whatever_its_age(three_versions):
    workspace, v1, r1, v2 = three_versions
    publish.pin_version(workspace, v1, note="paper")
    plan = plan_prune(workspace, keep_published=1, keep_days=0)
    assert set(plan.kept_versions) == {v1, v2} and plan.pinned == [v1]
    assert plan.pruned_versions == {r1: "rejected"}
    assert len(plan.sketches) == 4  # only the broken drawings: r1 alone named them
    with pytest.raises(publish.VersionError, match="rejected"):
        publish.pin_version(workspace, r1)
    assert publish.unpin_version(workspace, v1) and not publish.unpin_version(workspace, v1)


def test_a_dry_run_lists_what_would_go_and_changes_nothing(three_versions):
    workspace, v1, r1, v2 = three_versions
    before = _file_digests(workspace.root / "datasets")
    sketches = storage.count(workspace, SKETCHES)
    report = prune(workspace, keep_published=1, keep_days=0, dry_run=True)
    assert report.dry_run and len(report.sketches) == 28 and report.bytes > 0
    assert set(report.step_seconds) == {"measure", "plan"}  # nothing applied
    assert any("version folders" in line for line in report.lines())
    assert _file_digests(workspace.root / "datasets") == before
    assert storage.count(workspace, SKETCHES) == sketches
    assert all(not r["pruned"] for r in publish.list_versions(workspace))


def test_keep_days_keeps_a_recent_rejected_version(three_versions):
    workspace, v1, r1, v2 = three_versions
    plan = plan_prune(workspace, keep_published=2, keep_days=14)
    assert set(plan.kept_versions) == {v1, r1, v2} and plan.sketches == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=15)
    assert plan_prune(workspace, keep_published=2, keep_days=14,
                      now=later).pruned_versions == {r1: "rejected"}


@pytest.mark.parametrize("keep, days", [(0, 14), (-1, 14), (1, -1)])
def test_a_policy_that_would_remove_everything_is_refused(sketch_workspace, keep, days):
    with pytest.raises(RetentionError):
        prune(sketch_workspace, keep_published=keep, keep_days=days)


def test_orphan_pngs_of_a_killed_prune_are_found_next_time(three_versions):
    workspace, v1, r1, v2 = three_versions
    orphan = workspace.root / "sketches" / "old-gen" / "pencil-dodge" / "deadbeef.png"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"\x89PNG not named by any row")
    plan = plan_prune(workspace, keep_published=3, keep_days=14)
    assert [f.path for f in plan.files if f.why == "orphan sketch PNGs"] == [
        "sketches/old-gen/pencil-dodge/deadbeef.png"]
    prune(workspace, keep_published=3, keep_days=14)
    assert not orphan.exists() and not orphan.parent.exists()


def test_an_item_list_goes_only_with_every_sketch_it_names(tmp_path: Path):
    """A shard's item list (a damaged kept PNG is redrawn from it, bit for bit) goes once
    all its sketches are pruned, not before; on a night that prunes no sketch none can go,
    so none is read: a damaged one is not even opened."""
    workspace = Workspace.open(tmp_path / "ws")
    run = workspace.root / SHARDS_DIR / "run-1"
    run.mkdir(parents=True)
    for name, ids in (("a", ["s1", "s2"]), ("b", ["s3"])):
        pq.write_table(pa.table({"sketch_id": ids}), run / f"shard-{name}.items.parquet")
    (run / "shard-c.items.parquet").write_bytes(b"not parquet")

    def going_lists(going: set[str]) -> list[str]:
        return [Path(r.path).name for r in _shard_leftovers(workspace, going)
                if r.why == "item lists of pruned sketches"]

    assert going_lists(set()) == []
    (run / "shard-c.items.parquet").unlink()
    assert going_lists({"s1"}) == []
    assert going_lists({"s1", "s2"}) == ["shard-a.items.parquet"]
    assert going_lists({"s1", "s2", "s3"}) == ["shard-a.items.parquet", "shard-b.items.parquet"]


def test_compaction_spares_tagged_versions_older_than_its_window(tmp_path):
    """LanceDB refuses a clean-up that would remove a tagged version; a merge a week after
    the first publication must not fail for it."""
    workspace = Workspace.open(tmp_path / "ws")
    storage.upsert(workspace, "t", pa.table({"k": ["a"]}), "k")
    storage.tag(workspace, "t", "ds-old")
    for key in "bcd":
        storage.upsert(workspace, "t", pa.table({"k": [key]}), "k")
    storage.compact(workspace, ["t"], older_than=dt.timedelta(0))
    table = workspace.db().open_table("t")
    table.checkout("ds-old")
    assert table.to_arrow().column("k").to_pylist() == ["a"]
    assert storage.count(workspace, "t") == 4


def test_per_run_outputs_past_retention_go_and_the_data_docs_stop_linking_them(
        three_versions):
    workspace, v1, r1, v2 = three_versions
    root = workspace.root
    results = {suite: sorted(p.name for p in suite.iterdir())
               for suite in (root / GX_RESULTS).glob("*/*")}
    assert max(len(runs) for runs in results.values()) >= 2
    assert len(list((root / "reports").glob("validate-*.html"))) == 3
    report = prune(workspace, keep_published=1, keep_days=0)
    (kept_report,) = (root / "reports").glob("validate-*.html")
    assert kept_report.name == "validate-v2.html"  # the kept version's
    index = (root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").read_text()
    for suite, runs in results.items():
        left = sorted(p.name for p in suite.iterdir())
        assert left == runs[-1:]  # the newest result of each suite stays
        pages = root / GX_PAGES / suite.relative_to(root / GX_RESULTS)
        assert sorted(p.name for p in pages.iterdir()) == left
        for gone in runs[:-1]:
            assert gone not in index
        assert runs[-1] in index  # only the index is rebuilt: the kept pages stay linked
    assert any(f.why == "great-expectations results" for f in report.files)


def _classifier_file(path: Path, feature_caches: tuple[str, ...] | None) -> None:
    """A cached style classifier; ``None``: one written before it named its feature caches."""
    import io
    import json

    import numpy as np

    from tasks.validate.style_classifier import StyleClassifier

    zeros = np.zeros((2, 3))
    classifier = StyleClassifier(["a", "b"], zeros[0], zeros[0] + 1, zeros.T, zeros[0, :2],
                                 zeros, np.array([0, 1]), np.array([0, 1]), {}, None, "fp",
                                 feature_caches or ())
    data = classifier.to_bytes()
    if feature_caches is None:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            arrays = dict(stored)
        meta = json.loads(str(arrays["meta"]))
        del meta["feature_caches"]
        arrays["meta"] = np.array(json.dumps(meta))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize("recorded", [True, False])
def test_feature_caches_a_kept_classifier_uses_stay_however_old(tmp_path: Path, recorded: bool):
    """One feature file a style, grown night by night: removing one that the newest classifier
    reads made every later night encode all that style's examples again."""
    import os

    from tasks.retention import STYLE_CACHE_DIR, _old_outputs

    workspace = Workspace.open(tmp_path / "ws")
    cache = workspace.root / STYLE_CACHE_DIR
    _classifier_file(cache / "newest.npz", ("pencil.npz", "ink.npz") if recorded else None)
    features = cache / "features"
    features.mkdir(parents=True)
    long_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=30)).timestamp()
    for name in ("pencil.npz", "ink.npz", "dropped-style.npz"):
        (features / name).write_bytes(b"features")
        os.utime(features / name, (long_ago, long_ago))

    removals = _old_outputs(workspace, [], dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    removed = {Path(r.path).name for r in removals}
    # Recorded: only the file no kept classifier reads goes. Not recorded (a classifier from
    # before the record): nothing can be known unused, so every feature file stays.
    assert removed == ({"dropped-style.npz"} if recorded else set())
