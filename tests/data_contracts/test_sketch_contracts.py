"""The sketches, metrics and diversity suites on small frames: shares, failing keys, schema."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_contracts.run import run_suites
from data_contracts.suites import (
    diversity_suite,
    metrics_suite,
    sketches_suite,
    style_pairs_suite,
)
from data_contracts.thresholds import load_thresholds

THRESHOLDS = load_thresholds()
N = 40


def _sketches() -> pd.DataFrame:
    return pd.DataFrame({
        "sketch_id": [f"{i:032x}" for i in range(N)],
        "face_id": [f"{i // 4:064x}" for i in range(N)],
        "identity_id": [f"id{i // 8}" for i in range(N)],
        "style": ["pencil-dodge", "xdog-lines"] * (N // 2),
        "sample_index": [i % 2 for i in range(N)],
        "seed": [i * 7919 for i in range(N)],
        "generator_version": ["g1"] * N,
        "png_path": [f"sketches/g1/{i}.png" for i in range(N)],
        "png_sha256": [f"{i:064x}" for i in range(N)],
        "width": [64] * N, "height": [64] * N,
        "pixel_std": [30.0] * N,
        "status": ["ok"] * N,
        "face_known": [True] * N,
        "identity_matches_face": [True] * N,
    })


def _metrics(bad_identity: int = 0, unhealthy: int = 0) -> pd.DataFrame:
    frame = pd.DataFrame({
        "sketch_id": [f"{i:032x}" for i in range(N)],
        "metrics_version": ["m1"] * N,
        "has_metrics": [True] * N,
        "identity_similarity": [0.7] * N,
        "identity_margin": [0.1] * N,
        "healthy": [True] * N,
        "style_score": [0.9] * N,
        "saturated_share": [0.5] * N, "contrast": [150.0] * N,
        "neighbour_correlation": [0.8] * N,
    })
    frame.loc[: bad_identity - 1, "identity_similarity"] = 0.05
    frame.loc[N - unhealthy:, "healthy"] = False
    return frame


def test_thresholds_are_shares_not_absolutes(tmp_path: Path):
    # 1 of 40 below the identity threshold (97.5 % >= 95 %) passes; 3 of 40 do not.
    report = run_suites(tmp_path, [(metrics_suite(THRESHOLDS), _metrics(bad_identity=1)),
                                   (sketches_suite(THRESHOLDS, list(_sketches().columns),
                                                   ["pencil-dodge", "xdog-lines"]),
                                    _sketches())])
    assert report.success, report.failures()
    identity = next(e for e in report.suites[0].expectations if e.column == "identity_similarity")
    assert identity.failing_keys == [f"{0:032x}"] and identity.mostly == 0.95
    report = run_suites(tmp_path, [(metrics_suite(THRESHOLDS),
                                    _metrics(bad_identity=3, unhealthy=3))])
    assert not report.success
    assert set(report.failures()) == {
        "sketch_metrics: expect_column_values_to_be_between(identity_similarity)",
        "sketch_metrics: expect_column_values_to_be_in_set(healthy)"}


def test_sketches_suite_reports_bad_rows_by_sketch_id(tmp_path: Path):
    frame = _sketches()
    frame.loc[1, "sketch_id"] = "not-a-key"
    frame.loc[2, "status"] = "exploded"
    frame.loc[3, "png_path"] = None  # an ok sketch without its PNG
    frame.loc[4, "face_known"] = False
    frame.loc[5, "style"] = "unregistered"
    frame.loc[7, "seed"] = -1
    spec = sketches_suite(THRESHOLDS, list(_sketches().columns) + ["extra"],
                          ["pencil-dodge", "xdog-lines"])
    outcome = run_suites(tmp_path, [(spec, frame)]).suites[0]
    failed = {(e.expectation, e.column): e.failing_keys for e in outcome.failures()}
    key = frame["sketch_id"]
    assert failed[("expect_column_values_to_match_regex", "sketch_id")] == ["not-a-key"]
    assert failed[("expect_column_values_to_be_in_set", "status")] == [key[2]]
    assert failed[("expect_column_values_to_not_be_null", "png_path")] == [key[3]]
    assert failed[("expect_column_values_to_be_in_set", "face_known")] == [key[4]]
    assert failed[("expect_column_values_to_be_in_set", "style")] == [key[5]]
    assert failed[("expect_column_values_to_be_between", "seed")] == [key[7]]
    assert ("expect_table_columns_to_match_set", None) in failed  # "extra" is missing


def test_diversity_suite_bounds_the_share_of_groups_out_of_band(tmp_path: Path):
    values = [0.8] * 9 + [0.99]  # one group of copies in ten: 90 % in band passes
    frame = pd.DataFrame({"group": [f"id{i}|pencil" for i in range(10)], "samples": [4] * 10,
                          "mean_pairwise_similarity": values})
    assert run_suites(tmp_path, [(diversity_suite(THRESHOLDS), frame)]).success
    frame.loc[0, "mean_pairwise_similarity"] = 0.05  # plus one drifting group: 80 %
    outcome = run_suites(tmp_path, [(diversity_suite(THRESHOLDS), frame)]).suites[0]
    (failure,) = outcome.failures()
    assert failure.failing_keys == ["id0|pencil", "id9|pencil"]


def test_style_pairs_suite_holds_each_style_to_the_share_and_names_the_failing_ones(
        tmp_path: Path):
    # One row per style: the share of its same-face comparisons won. A style nothing could
    # be compared for arrives as 0 (nothing won) and fails like one that lost every pair.
    frame = pd.DataFrame({"style": ["ink", "pencil", "charcoal", "crayon"],
                          "mode": ["pairs", "render fallback", "pairs", "not judged"],
                          "compared": [20, 4, 10, 0], "won": [18, 4, 5, 0],
                          "share_won": [0.90, 1.0, 0.5, 0.0]})
    outcome = run_suites(tmp_path, [(style_pairs_suite(THRESHOLDS), frame)]).suites[0]
    (failure,) = outcome.failures()
    assert failure.column == "share_won" and failure.failing_keys == ["charcoal", "crayon"]
    assert run_suites(tmp_path, [(style_pairs_suite(THRESHOLDS), frame[:2])]).success
