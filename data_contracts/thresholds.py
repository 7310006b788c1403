"""The thresholds file as a validated model, so a typo in a reviewed number fails loudly."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from schemas.synthesize import HygieneThresholds

THRESHOLDS_FILE = Path(__file__).with_name("thresholds.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FaceThresholds(_Strict):
    min_detection_score: float = Field(ge=0, le=1)
    aligned_size: int = Field(gt=0)


class EmbeddingThresholds(_Strict):
    unit_norm_tolerance: float = Field(gt=0)


class SketchThresholds(_Strict):
    min_identity_similarity: float = Field(ge=-1, le=1)
    min_share_identity: float = Field(ge=0, le=1)
    min_identity_margin: float = Field(ge=-2, le=2)
    min_share_margin: float = Field(ge=0, le=1)
    # A drawn (paired) style with its artists' sketches of at least ``min_artist_faces`` of
    # its faces is judged against them instead of the two shares above: on those faces, its
    # shares must reach ``min_ratio_to_artists`` of the artists' (``tasks.validate.artists``).
    min_ratio_to_artists: float = Field(gt=0, le=2)
    min_artist_faces: int = Field(ge=1)
    # Per style: share of its same-face comparisons the style judge must win (the style
    # contract, ``tasks.validate.pairs``). It replaced ``max_share_wrong_style``, an absolute
    # share that read the people drawn as much as the drawing (issue 20); a file that still
    # names it fails to load, so a reviewer sees that the gate changed.
    min_share_pairs_won: float = Field(ge=0, le=1)
    min_pixel_std: float = Field(ge=0)
    max_saturated_share: float = Field(ge=0, le=1)
    max_colour_deviation: float = Field(ge=0)
    min_contrast: float = Field(ge=0, le=255)
    min_neighbour_correlation: float = Field(ge=-1, le=1)
    max_share_unhealthy: float = Field(ge=0, le=1)
    max_mean_pairwise_similarity: float = Field(ge=-1, le=1)
    min_mean_pairwise_similarity: float = Field(ge=-1, le=1)
    min_share_diverse_groups: float = Field(ge=0, le=1)


class Thresholds(_Strict):
    faces: FaceThresholds
    embeddings: EmbeddingThresholds
    sketches: SketchThresholds
    # When a drawn (synthetic) face becomes an identity; optional so older files still load.
    synthetic: HygieneThresholds = HygieneThresholds()


def load_thresholds(path: str | Path | None = None) -> Thresholds:
    path = Path(path) if path else THRESHOLDS_FILE
    try:
        return Thresholds.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValueError) as error:
        raise ValueError(f"{path}: invalid thresholds: {error}") from error


# Every per-sketch limit and every share opened up. Pipelines that draw with random-init
# generators (flow tests, the nights benchmark) need a dataset that passes to test
# publishing and retention; the quality gate itself is tested with the reviewed file.
ACCEPT_ALL = {
    "min_identity_similarity": -1.0, "min_share_identity": 0.0, "min_identity_margin": -2.0,
    "min_share_margin": 0.0, "min_share_pairs_won": 0.0, "min_pixel_std": 0.0,
    "max_saturated_share": 1.0, "max_colour_deviation": 255.0, "min_contrast": 0.0,
    "min_neighbour_correlation": -1.0, "max_share_unhealthy": 1.0,
    "max_mean_pairwise_similarity": 1.0, "min_mean_pairwise_similarity": -1.0,
    "min_share_diverse_groups": 0.0,
}


def accept_all_thresholds(path: Path) -> Path:
    """The reviewed thresholds file with ``ACCEPT_ALL`` applied, written to ``path``."""
    reviewed = yaml.safe_load(THRESHOLDS_FILE.read_text())
    reviewed["sketches"].update(ACCEPT_ALL)
    path.write_text(yaml.safe_dump(reviewed))
    return path
