"""Shapes of the validation stage: its tables (metrics, verdicts, dataset versions) and reports.

Metrics and verdicts are separate tables on purpose. A metric (a cosine, a pixel statistic) is
a fact about a sketch that depends only on its pixels and the encoders, so it is stored once
and reused until those change; a verdict applies the reviewed thresholds to the metrics and is
recomputed on every run for pennies, so tightening a threshold never re-encodes a sketch.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.arrow import arrow_schema

SKETCH_METRICS = "sketch_metrics"
SKETCH_VERDICTS = "sketch_verdicts"
DATASET_VERSIONS = "dataset_versions"

VersionStatus = Literal["published", "rejected"]


class Reason(StrEnum):
    """Why a sketch was rejected; stable strings, reviewers filter on them."""

    NAN = "nan"  # the sampler produced NaN/inf: no pixels at all
    MISSING_PNG = "missing_png"
    CHECKSUM_MISMATCH = "checksum_mismatch"  # the PNG is not the one the row recorded
    UNREADABLE_PNG = "unreadable_png"
    BLANK = "blank"
    SATURATED = "saturated"
    LOW_CONTRAST = "low_contrast"
    NOISE = "noise"
    COLOUR = "colour"
    NO_IDENTITY_REFERENCE = "no_identity_reference"  # the source mugshot has no current vector
    LOW_IDENTITY_SIMILARITY = "low_identity_similarity"
    IDENTITY_CONFUSION = "identity_confusion"  # closer to another identity than allowed
    WRONG_STYLE = "wrong_style"  # lost its same-face style comparison (tasks.validate.pairs)


class SketchMetricsRecord(BaseModel):
    """Threshold-free facts about one sketch, valid while ``metrics_version`` and the PNG hold.

    Nulls mean "not measurable" (no pixels, no reference), never zero.
    """

    sketch_id: str
    metrics_version: str
    png_sha256: str | None
    face_id: str
    identity_id: str
    style: str
    generator_version: str
    status: str
    file_problem: str | None  # a Reason value when the PNG cannot be trusted
    pixel_std: float | None
    saturated_share: float | None
    colour_deviation: float | None
    contrast: float | None
    neighbour_correlation: float | None
    identity_similarity: float | None
    impostor_similarity: float | None
    impostor_identity: str | None
    identity_margin: float | None
    style_predicted: str | None
    style_score: float | None
    style_method: str | None
    run_id: str
    computed_at: dt.datetime


class SketchVerdictRecord(BaseModel):
    """The latest verdict on a sketch, so rejected sketches stay queryable with reasons."""

    sketch_id: str
    identity_id: str
    style: str
    accepted: bool
    reasons: list[str]
    dataset_version: str
    thresholds_sha256: str
    run_id: str
    judged_at: dt.datetime


class DatasetVersionRecord(BaseModel):
    """One validated dataset version; ``published`` rows are immutable."""

    version: str
    status: VersionStatus
    created_at: dt.datetime
    run_id: str
    sketches: int
    accepted: int
    rejected: int
    acceptance_rate: float
    identities: int
    per_style: str  # JSON {style: {"sketches": n, "accepted": n}}
    reasons: str  # JSON {reason: n}
    metrics_version: str
    thresholds_sha256: str
    inputs: str  # JSON fingerprint of the inputs the contracts saw (table versions)
    sketches_table_version: int | None
    manifest_path: str | None  # relative to the workspace; only when published
    verdicts_path: str
    report_path: str
    data_docs: str | None
    contracts: str  # JSON of the ContractReport
    dataset_metrics: str  # JSON of DatasetMetrics


SKETCH_METRICS_SCHEMA = arrow_schema(SketchMetricsRecord)
SKETCH_VERDICTS_SCHEMA = arrow_schema(SketchVerdictRecord)
DATASET_VERSIONS_SCHEMA = arrow_schema(DatasetVersionRecord)


# --------------------------------------------------------------------------- reports


class Scope(BaseModel):
    """Which sketches form the dataset being validated (None: all of them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    generator_version: str | None = None
    styles: tuple[str, ...] | None = None


class MetricsReport(BaseModel):
    """What the metrics stage did: small, passed between Prefect tasks."""

    run_id: str
    metrics_version: str
    sketches: int
    computed: int
    reused: int
    rescored: int = 0  # only the gallery changed: identity margins taken again, no decoding
    # Only faces were added to the gallery, and none beats the row's impostor: the stored row
    # holds as it is (tasks.validate.galleries); ``carried_versions``: the versions they keep.
    carried: int = 0
    carried_versions: list[str] = Field(default_factory=list)
    encoded: dict[str, int] = Field(default_factory=dict)  # by role: vectors computed
    vectors_reused: dict[str, int] = Field(default_factory=dict)
    style_method: str | None = None
    style_classifier: str | None = None  # "trained", "cached" or None (not needed)
    style_classes: list[str] = Field(default_factory=list)
    style_fingerprint: str | None = None
    classifier_cv_accuracy: float | None = None
    sources: dict[str, dict[str, str | int]] = Field(default_factory=dict)  # role: table...
    metrics_table_version: int | None = None
    seconds: float = 0.0
    # Where the seconds went (reading the scope, the gallery and what is stored; checking
    # carried rows against the new faces; rescoring; measuring new drawings; tagging), as
    # the prune records its own: a night's run record says which part grows.
    step_seconds: dict[str, float] = Field(default_factory=dict)


class GroupDiversity(BaseModel):
    identity_id: str
    style: str
    samples: int
    mean_pairwise_similarity: float | None


PairingMode = Literal["pairs", "render fallback", "pairs + render fallback", "not judged"]


class StylePairs(BaseModel):
    """The style contract of one style, judged by pairs of drawings of the same face.

    For every face drawn in this style S and in another style T, the style judge must give S
    a higher score on the S drawing than on the T drawing; a face drawn in S only is compared
    with its start render instead (the render fallback). The face is in both images of a
    comparison, so what the judge reads in the people drawn cancels out (``tasks.validate.
    pairs``). ``share`` is None when nothing could be compared; the gate then counts it as
    nothing won, so a style no comparison could judge never passes by default.
    """

    mode: PairingMode
    pairing: str  # the reviewer's line: "pairs (12 faces)", "render fallback (1 drawing)", ...
    pairs: int = 0  # (face, other style) comparisons
    pairs_won: int = 0
    renders: int = 0  # (face, start render) comparisons: the fallback
    renders_won: int = 0
    share: float | None = None  # won / compared
    threshold: float
    passed: bool
    # (won, pairs) against each other style: which comparison a failing style loses, e.g. a
    # drawing that stayed near the look of the style it is compared with.
    against: dict[str, tuple[int, int]] = Field(default_factory=dict)
    # Figures beside the verdict, not gates: the share of this style's drawings the judge
    # calls this style (the old absolute contract), and the judge's mean score for this style
    # on the drawings and on their faces' start renders (the render control: how much of
    # that score the faces and the start image already get without the drawing), in
    # ``score_kind`` units (the classifier's log-probability, or CLIP's cosine).
    score_kind: str | None = None
    absolute_share: float | None = None
    drawing_score: float | None = None
    render_score: float | None = None

    @property
    def compared(self) -> int:
        return self.pairs + self.renders

    @property
    def won(self) -> int:
        return self.pairs_won + self.renders_won

    @property
    def gate_share(self) -> float:
        """What the contract compares with its threshold: nothing compared, nothing won."""
        return 0.0 if self.share is None else self.share


IdentityMode = Literal["artists", "absolute"]


def _headroom(share: float | None, artists: float | None, ratio: float | None
              ) -> float | None:
    """share − ratio × the artists' share; None unless all three are known."""
    if share is None or artists is None or ratio is None:
        return None
    return share - ratio * artists


class IdentityBar(BaseModel):
    """The identity contract of one style (``tasks.validate.artists``).

    "artists": a drawn style, judged face for face against its artists' own sketches in the
    same gallery: on the faces they drew, its shares of sketches reaching the per-sketch
    identity thresholds must reach ``ratio`` of theirs (``headroom`` = share − ratio × the
    artists' share, ≥ 0 to pass). "absolute": the metrics suite's shares over every drawing
    of the style. The ``*_all`` figures are over every drawing of the style, whichever gate.
    """

    @property
    def headroom_identity(self) -> float | None:
        return _headroom(self.share_identity, self.artist_share_identity, self.ratio)

    @property
    def headroom_margin(self) -> float | None:
        return _headroom(self.share_margin, self.artist_share_margin, self.ratio)

    mode: IdentityMode
    line: str  # the reviewer's line: what it was compared with
    faces: int  # faces judged
    drawings: int  # drawings judged
    share_identity: float | None = None  # share with similarity ≥ min_identity_similarity
    share_margin: float | None = None  # share with margin ≥ min_identity_margin
    artist_sketches: int = 0
    artist_share_identity: float | None = None
    artist_share_margin: float | None = None
    ratio: float | None = None
    passed: bool
    drawings_all: int = 0
    share_identity_all: float | None = None
    share_margin_all: float | None = None


class StyleFigures(BaseModel):
    sketches: int = 0
    accepted: int = 0
    identities: int = 0
    mean_identity_similarity: float | None = None
    mean_identity_margin: float | None = None
    wrong_style: int = 0
    # What the style judge called this style's sketches (judged ones only), most first: a
    # wrong-style count says that they fail, this says what they look like instead.
    style_calls: dict[str, int] = Field(default_factory=dict)
    frechet: float | None = None
    frechet_reference: str | None = None  # "real" (paired sketches) or "rendered"
    frechet_samples: tuple[int, int] | None = None  # (generated, reference)
    # The style contract's verdict (pairs of drawings of the same face); None where the
    # figures were computed without one.
    pair_verdict: StylePairs | None = None
    # The identity contract's verdict (against the artists, or absolute); None where the
    # figures were computed without one.
    identity_bar: IdentityBar | None = None


class DiversitySummary(BaseModel):
    groups: int = 0  # (identity, style) groups with 2+ samples
    in_band: int = 0
    too_similar: int = 0
    drifting: int = 0
    single_sample: int = 0


class DatasetMetrics(BaseModel):
    """Dataset-level figures, small enough to pass between tasks; the per-identity counts and
    per-group diversity behind them are in the version folder's ``dataset.json``."""

    sketches: int
    accepted: int
    rejected: int
    acceptance_rate: float
    identities: int
    per_style: dict[str, StyleFigures]
    accepted_per_identity: tuple[int, int, int]  # min, median, max
    reasons: dict[str, int]
    diversity: DiversitySummary


class ValidationReport(BaseModel):
    """The validate stage's outcome, as the flow returns it and the run record keeps it."""

    run_id: str
    workspace: str
    version: str
    status: VersionStatus
    published: bool
    current_version: str | None
    reused_contracts: bool
    metrics: MetricsReport
    dataset: DatasetMetrics
    contracts_success: bool
    failed_expectations: list[str] = Field(default_factory=list)
    report_path: str
    data_docs: str | None = None
    manifest_path: str | None = None
    verdicts_path: str | None = None
    run_record: str | None = None
    seconds: dict[str, float] = Field(default_factory=dict)
    # The assess step's parts: reading the rows, the style pairs, verdicts and diversity,
    # the Fréchet figures, the content hash that names the version.
    assess_seconds: dict[str, float] = Field(default_factory=dict)
