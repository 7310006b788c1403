"""The expectation suites, one per table, built in Python from the reviewed thresholds.

Each suite names the key column its failing rows are reported by. Columns that GX cannot
check directly (a vector's norm, an image's health) are derived into the frame before
validation by the validate stage; the suites only state what must hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from data_contracts.thresholds import Thresholds

HEX64 = r"^[0-9a-f]{64}$"


@dataclass(frozen=True)
class SuiteSpec:
    """A suite as data: its name, the key failing rows are reported by, its expectations."""

    name: str
    key: str
    expectations: list[tuple[str, dict[str, Any]]]

    def build(self):
        import great_expectations as gx

        suite = gx.ExpectationSuite(name=self.name)
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
                                           "min_value": t.min_detection_score,
                                           "max_value": 1.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "n_faces", "min_value": 1}),
        ("ExpectColumnValuesToNotBeNull", {"column": "aligned_png"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "style",
                                           "row_condition": 'kind=="sketch"',
                                           "condition_parser": "pandas"}),
    ])


def embeddings_suite(name: str, dim: int, thresholds: Thresholds,
                     face_ids: list[str]) -> SuiteSpec:
    """Expects the frame to carry ``vector_dim`` and ``vector_norm`` derived columns."""
    tolerance = thresholds.embeddings.unit_norm_tolerance
    return SuiteSpec(name, "face_id", [
        ("ExpectColumnValuesToNotBeNull", {"column": "face_id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "face_id"}),
        ("ExpectColumnValuesToBeInSet", {"column": "face_id", "value_set": face_ids}),
        ("ExpectColumnUniqueValueCountToBeBetween", {"column": "encoder_version",
                                                     "min_value": 1, "max_value": 1}),
        ("ExpectColumnValuesToBeBetween", {"column": "vector_dim", "min_value": dim,
                                           "max_value": dim}),
        ("ExpectColumnValuesToBeBetween", {"column": "vector_norm",
                                           "min_value": 1 - tolerance,
                                           "max_value": 1 + tolerance}),
    ])
