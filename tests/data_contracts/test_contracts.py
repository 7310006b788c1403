"""Contracts run by great-expectations on small frames: pass, fail by key, Data Docs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_contracts.run import run_suites
from data_contracts.suites import SuiteSpec, embeddings_suite, faces_suite
from data_contracts.thresholds import THRESHOLDS_FILE, load_thresholds

THRESHOLDS = load_thresholds()


def _faces(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({
        "face_id": [f"{i:064x}" for i in range(n)],
        "identity_id": [f"id{i // 2}" for i in range(n)],
        "kind": ["photo", "sketch"] * (n // 2),
        "style": [None, "artist"] * (n // 2),
        "det_score": [0.9] * n,
        "n_faces": [1] * n,
        "aligned_png": [b"png"] * n,
    })


def test_clean_faces_pass_and_docs_are_built(tmp_path: Path):
    report = run_suites(tmp_path / "gx", [(faces_suite(THRESHOLDS), _faces())])
    assert report.success, [e for s in report.suites for e in s.failures()]
    assert report.data_docs and Path(report.data_docs.removeprefix("file://")).is_file()


def test_failing_rows_are_reported_by_key(tmp_path: Path):
    frame = _faces()
    frame.loc[1, "style"] = None  # a sketch without a style
    frame.loc[2, "face_id"] = frame.loc[0, "face_id"]  # a duplicate key
    frame.loc[3, "det_score"] = 0.1
    report = run_suites(tmp_path / "gx", [(faces_suite(THRESHOLDS), frame)])
    assert not report.success
    failed = {(e.expectation, e.column): e for e in report.suites[0].failures()}
    assert failed[("expect_column_values_to_not_be_null", "style")].failing_keys == [
        frame.loc[1, "face_id"]]
    assert failed[("expect_column_values_to_be_unique", "face_id")].unexpected_count == 2
    assert failed[("expect_column_values_to_be_between", "det_score")].failing_keys == [
        frame.loc[3, "face_id"]]


def test_embeddings_contract_checks_norms_dims_and_keys(tmp_path: Path):
    vectors = np.eye(3, 8, dtype=np.float32)
    frame = pd.DataFrame({
        "face_id": [f"{i:064x}" for i in range(3)],
        "face_known": [True, True, False],  # the third vector's face is not stored
        "encoder_version": ["sface@x"] * 3,
        "vector_dim": [8, 8, 8],
        "vector_norm": np.linalg.norm(vectors, axis=1),
    })
    frame.loc[2, "vector_norm"] = 0.5
    spec = embeddings_suite("emb", 8, THRESHOLDS)
    outcome = run_suites(tmp_path / "gx", [(spec, frame)]).suites[0]
    failed = {(e.expectation, e.column): e for e in outcome.failures()}
    assert set(failed) == {("expect_column_values_to_be_between", "vector_norm"),
                           ("expect_column_values_to_be_in_set", "face_known")}
    assert failed[("expect_column_values_to_be_in_set", "face_known")].failing_keys == [
        frame.face_id[2]]


def test_an_unchanged_suite_is_reused_and_a_changed_one_rewritten(tmp_path: Path):
    """Night after night the suites are the same: they are read, not written again, and
    each run still gets its own result and Data Docs page."""
    root = tmp_path / "gx"
    spec = faces_suite(THRESHOLDS)
    run_suites(root, [(spec, _faces())])
    stored = root / "gx" / "expectations" / "faces.json"
    config = root / "gx" / "great_expectations.yml"  # the data source and its assets
    written, configured = stored.stat().st_mtime_ns, config.stat().st_mtime_ns
    report = run_suites(root, [(spec, _faces())])
    assert report.success and stored.stat().st_mtime_ns == written
    assert config.stat().st_mtime_ns == configured
    pages = list((root / "gx" / "uncommitted" / "data_docs" / "local_site" / "validations"
                  ).rglob("*.html"))
    assert len(pages) == 2  # one per run
    # A changed statement is a changed suite: written.
    extra = SuiteSpec("faces", "face_id", [*spec.expectations, (
        "ExpectColumnValuesToNotBeNull", {"column": "kind"})], dict(spec.parameters))
    run_suites(root, [(extra, _faces())])
    assert stored.stat().st_mtime_ns != written
    assert '"kind"' in stored.read_text()


def test_a_changed_threshold_is_a_parameter_of_the_run_not_a_new_suite(tmp_path: Path):
    """The stored suite names the threshold; each run gives its value and judges by it, and
    its result says which value that was. A reviewer's change, or a night judged by other
    thresholds than the last, writes no suite (it rewrote and re-rendered them all)."""
    root = tmp_path / "gx"
    run_suites(root, [(faces_suite(THRESHOLDS), _faces())])
    stored = root / "gx" / "expectations" / "faces.json"
    written = stored.stat().st_mtime_ns
    strict = THRESHOLDS.model_copy(update={"faces": THRESHOLDS.faces.model_copy(
        update={"min_detection_score": 0.95})})
    report = run_suites(root, [(faces_suite(strict), _faces())])
    assert not report.success and stored.stat().st_mtime_ns == written
    assert '"$PARAMETER": "min_detection_score"' in stored.read_text()
    (failed,) = report.suites[0].failures()
    assert (failed.column, len(failed.failing_keys)) == ("det_score", 4)
    assert report.suites[0].parameters == {"min_detection_score": 0.95}
    results = sorted((root / "gx" / "uncommitted" / "validations").rglob("*.json"),
                     key=lambda f: f.stat().st_mtime_ns)
    assert '"min_value": 0.95' in results[-1].read_text()  # the value judged by, on record
    back = run_suites(root, [(faces_suite(THRESHOLDS), _faces())])
    assert back.success and stored.stat().st_mtime_ns == written


def test_a_suite_names_exactly_the_parameters_it_is_given():
    spec = faces_suite(THRESHOLDS)
    with pytest.raises(ValueError, match="min_detection_score"):
        SuiteSpec(spec.name, spec.key, spec.expectations, {})
    with pytest.raises(ValueError, match="unused"):
        SuiteSpec(spec.name, spec.key, spec.expectations, {**spec.parameters, "unused": 1})


def test_a_typo_in_the_thresholds_file_fails_loudly(tmp_path: Path):
    text = THRESHOLDS_FILE.read_text()
    bad = tmp_path / "t.yaml"
    bad.write_text(text.replace("min_share_identity", "min_share_identiy"))
    with pytest.raises(ValueError, match="min_share_identiy"):
        load_thresholds(bad)
