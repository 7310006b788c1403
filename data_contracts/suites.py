"""The expectation suites, one per table, built in Python; the reviewed thresholds reach
them as GX suite parameters.

Each suite names the key column its failing rows are reported by. Columns that GX cannot
check directly (a vector's norm, an image's health) are derived into the frame before
validation by the validate stage; the suites only state what must hold.

A threshold is a ``{"$PARAMETER": name}`` in the stored suite and its value is given with
each run (``SuiteSpec.parameters``): the suite states what is checked, the run what it was
checked against, and the validation result records the values used. A thresholds file that
differs from the last night's (a reviewer's change, a backfill judged by other thresholds) or
a new style then rewrites no suite, checkpoint or Data Docs suite page.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from data_contracts.thresholds import Thresholds

HEX64 = r"^[0-9a-f]{64}$"


def parameter(name: str) -> dict[str, str]:
    """A value given at run time (GX suite parameter), named in the stored suite."""
    return {"$PARAMETER": name}


@dataclass(frozen=True)
class SuiteSpec:
    """A suite as data: its name, the key failing rows are reported by, its expectations,
    and the values of the parameters they name (the thresholds of this run)."""

    name: str
    key: str
    expectations: list[tuple[str, dict[str, Any]]]
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        named = {v["$PARAMETER"] for _, kwargs in self.expectations for v in kwargs.values()
                 if isinstance(v, dict) and "$PARAMETER" in v}
        if named != set(self.parameters):
            raise ValueError(f"suite {self.name!r}: parameters named {sorted(named)} but "
                             f"given {sorted(self.parameters)}")

    def sha256(self) -> str:
        """What the suite states, as a digest: an unchanged suite is not written again.
        The parameters' values are not part of it: they are the run's."""
        text = json.dumps([self.name, self.key, self.expectations], sort_keys=True,
                          default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def build(self):
        import great_expectations as gx

        suite = gx.ExpectationSuite(name=self.name, meta={"spec_sha256": self.sha256()})
        for kind, kwargs in self.expectations:
            suite.add_expectation(getattr(gx.expectations, kind)(**kwargs))
        return suite


def faces_suite(thresholds: Thresholds) -> SuiteSpec:
    t = thresholds.faces
    return SuiteSpec("faces", "face_id", [
        ("ExpectColumnValuesToNotBeNull", {"column": "face_id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "face_id"}),
        ("ExpectColumnValuesToMatchRegex", {"column": "face_id", "regex": HEX64}),
        ("ExpectColumnValuesToNotBeNull", {"column": "identity_id"}),
        ("ExpectColumnValuesToBeInSet", {"column": "kind", "value_set": ["photo", "sketch"]}),
        ("ExpectColumnValuesToBeBetween", {"column": "det_score",
                                           "min_value": parameter("min_detection_score"),
                                           "max_value": 1.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "n_faces", "min_value": 1}),
        ("ExpectColumnValuesToNotBeNull", {"column": "aligned_png"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "style",
                                           "row_condition": 'kind=="sketch"',
                                           "condition_parser": "pandas"}),
    ], {"min_detection_score": t.min_detection_score})


def embeddings_suite(name: str, dim: int, thresholds: Thresholds) -> SuiteSpec:
    """Expects the frame to carry ``vector_dim``, ``vector_norm`` and ``face_known`` (the
    vector's face is stored) derived columns. Whether a face is known is derived rather than
    checked against every face id as a value set: that set made the suite grow with the
    workspace, so it was rewritten, re-rendered and re-read every night."""
    tolerance = thresholds.embeddings.unit_norm_tolerance
    return SuiteSpec(name, "face_id", [
        ("ExpectColumnValuesToNotBeNull", {"column": "face_id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "face_id"}),
        ("ExpectColumnValuesToBeInSet", {"column": "face_known", "value_set": [True]}),
        ("ExpectColumnUniqueValueCountToBeBetween", {"column": "encoder_version",
                                                     "min_value": 1, "max_value": 1}),
        ("ExpectColumnValuesToBeBetween", {"column": "vector_dim", "min_value": dim,
                                           "max_value": dim}),
        ("ExpectColumnValuesToBeBetween", {"column": "vector_norm",
                                           "min_value": parameter("min_vector_norm"),
                                           "max_value": parameter("max_vector_norm")}),
    ], {"min_vector_norm": 1 - tolerance, "max_vector_norm": 1 + tolerance})


SKETCH_ID = r"^[0-9a-f]{32}$"
SKETCH_STATUSES = ["ok", "nan", "blank"]
MAX_SEED = 2**63 - 1


def sketches_suite(thresholds: Thresholds, columns: list[str], styles: list[str]) -> SuiteSpec:
    """The ``sketches`` table as the generator wrote it: schema, keys, provenance, ranges.

    Expects derived boolean columns ``face_known`` (the face is stored) and
    ``identity_matches_face`` (the row's identity is the face's), so the suite does not carry
    every face id as a value set.
    """
    present = {"column": "png_path", "row_condition": 'status!="nan"', "condition_parser": "pandas"}
    return SuiteSpec("sketches", "sketch_id", [
        ("ExpectTableColumnsToMatchSet", {"column_set": columns, "exact_match": False}),
        ("ExpectColumnValuesToNotBeNull", {"column": "sketch_id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "sketch_id"}),
        ("ExpectColumnValuesToMatchRegex", {"column": "sketch_id", "regex": SKETCH_ID}),
        ("ExpectColumnValuesToMatchRegex", {"column": "face_id", "regex": HEX64}),
        ("ExpectColumnValuesToBeInSet", {"column": "face_known", "value_set": [True]}),
        ("ExpectColumnValuesToBeInSet", {"column": "identity_matches_face",
                                         "value_set": [True]}),
        ("ExpectColumnValuesToBeInSet", {"column": "style",
                                         "value_set": parameter("styles")}),
        ("ExpectColumnValuesToBeInSet", {"column": "status", "value_set": SKETCH_STATUSES}),
        ("ExpectColumnValuesToNotBeNull", {"column": "generator_version"}),
        ("ExpectColumnValuesToBeInTypeList", {"column": "sample_index", "type_list": ["int64"]}),
        ("ExpectColumnValuesToBeInTypeList", {"column": "seed", "type_list": ["int64"]}),
        ("ExpectColumnValuesToBeBetween", {"column": "sample_index", "min_value": 0}),
        ("ExpectColumnValuesToBeBetween", {"column": "seed", "min_value": 0,
                                           "max_value": MAX_SEED}),
        ("ExpectColumnValuesToBeBetween", {"column": "width", "min_value": 8,
                                           "max_value": 4096}),
        ("ExpectColumnValuesToBeBetween", {"column": "height", "min_value": 8,
                                           "max_value": 4096}),
        ("ExpectColumnValuesToNotBeNull", present),
        ("ExpectColumnValuesToMatchRegex", {"column": "png_sha256", "regex": HEX64}),
        ("ExpectColumnValuesToBeBetween", {"column": "pixel_std", "min_value": 0,
                                           "max_value": 128}),
    ], {"styles": list(styles)})


def metrics_suite(thresholds: Thresholds) -> SuiteSpec:
    """The reviewed thresholds over the per-sketch metrics ("at least 95 % of sketches ...").

    Expects a frame of every sketch in scope with derived columns: ``has_metrics`` (a current
    metrics row exists) and ``healthy``. A sketch without pixels has no identity: its
    similarity and margin arrive as -1 and -2, so it counts against the shares instead of
    being skipped as null. A sketch of a style judged against its artists arrives with both
    null: ``identity_bar_suite`` judges it. Style is not judged sketch by sketch here:
    ``style_pairs_suite``.
    """
    t = thresholds.sketches
    return SuiteSpec("sketch_metrics", "sketch_id", [
        ("ExpectColumnValuesToNotBeNull", {"column": "sketch_id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "sketch_id"}),
        ("ExpectColumnValuesToBeInSet", {"column": "has_metrics", "value_set": [True]}),
        ("ExpectColumnUniqueValueCountToBeBetween", {"column": "metrics_version",
                                                     "min_value": 1, "max_value": 1}),
        ("ExpectColumnValuesToBeBetween", {"column": "identity_similarity",
                                           "min_value": parameter("min_identity_similarity"),
                                           "max_value": 1.0001,
                                           "mostly": parameter("min_share_identity")}),
        ("ExpectColumnValuesToBeBetween", {"column": "identity_margin",
                                           "min_value": parameter("min_identity_margin"),
                                           "mostly": parameter("min_share_margin")}),
        ("ExpectColumnValuesToBeInSet", {"column": "healthy", "value_set": [True],
                                         "mostly": parameter("min_share_healthy")}),
        ("ExpectColumnValuesToBeBetween", {"column": "saturated_share", "min_value": 0,
                                           "max_value": 1}),
        ("ExpectColumnValuesToBeBetween", {"column": "contrast", "min_value": 0,
                                           "max_value": 255}),
        ("ExpectColumnValuesToBeBetween", {"column": "neighbour_correlation",
                                           "min_value": -1.0001, "max_value": 1.0001}),
        ("ExpectColumnValuesToBeBetween", {"column": "style_score", "min_value": -1.0001,
                                           "max_value": 1.0001}),
    ], {"min_identity_similarity": t.min_identity_similarity,
        "min_share_identity": t.min_share_identity,
        "min_identity_margin": t.min_identity_margin, "min_share_margin": t.min_share_margin,
        "min_share_healthy": 1.0 - t.max_share_unhealthy})


def diversity_suite(thresholds: Thresholds) -> SuiteSpec:
    """Per (identity, style) group of 2+ samples: neither copies of one drawing nor drift."""
    t = thresholds.sketches
    return SuiteSpec("sketch_diversity", "group", [
        ("ExpectColumnValuesToBeUnique", {"column": "group"}),
        ("ExpectColumnValuesToBeBetween", {"column": "samples", "min_value": 2}),
        ("ExpectColumnValuesToBeBetween", {
            "column": "mean_pairwise_similarity",
            "min_value": parameter("min_mean_pairwise_similarity"),
            "max_value": parameter("max_mean_pairwise_similarity"),
            "mostly": parameter("min_share_diverse_groups")}),
    ], {"min_mean_pairwise_similarity": t.min_mean_pairwise_similarity,
        "max_mean_pairwise_similarity": t.max_mean_pairwise_similarity,
        "min_share_diverse_groups": t.min_share_diverse_groups})


def identity_bar_suite() -> SuiteSpec:
    """The identity contract of the drawn styles, one row per style judged against its
    artists (``tasks.validate.artists``): on the faces they drew, its shares of sketches
    reaching the per-sketch identity thresholds minus ``min_ratio_to_artists`` times the
    artists' shares (the headroom) must not be negative. The other styles' identity is the
    metrics suite's. Failing rows are named by style. The ratio is in the headroom (it is
    the artists' measured shares that vary), so the suite itself takes no threshold.
    """
    return SuiteSpec("identity_bar", "style", [
        ("ExpectColumnValuesToNotBeNull", {"column": "style"}),
        ("ExpectColumnValuesToBeUnique", {"column": "style"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "headroom_identity"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "headroom_margin"}),
        ("ExpectColumnValuesToBeBetween", {"column": "headroom_identity", "min_value": 0.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "headroom_margin", "min_value": 0.0}),
    ])


def style_pairs_suite(thresholds: Thresholds) -> SuiteSpec:
    """The style contract, one row per style in scope: the share of its same-face comparisons
    the style judge won (``tasks.validate.pairs``) must reach ``min_share_pairs_won``.

    Expects ``share_won`` to count a style that nothing could be compared for as 0 (nothing
    won), as the metrics suite counts a sketch without pixels against its shares: a style
    the judge could not read must not pass for want of evidence. Failing rows are named by
    style.
    """
    t = thresholds.sketches
    return SuiteSpec("style_pairs", "style", [
        ("ExpectColumnValuesToNotBeNull", {"column": "style"}),
        ("ExpectColumnValuesToBeUnique", {"column": "style"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "share_won"}),
        ("ExpectColumnValuesToBeBetween", {"column": "share_won",
                                           "min_value": parameter("min_share_pairs_won"),
                                           "max_value": 1.0}),
    ], {"min_share_pairs_won": t.min_share_pairs_won})
