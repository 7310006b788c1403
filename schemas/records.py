"""Record models: one row of each table the pipeline stores.

Ids are content addresses (sha256 of the file's bytes) so that the same photo
arriving twice, renamed or from another source, is recognised as the same face.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from schemas.arrow import Vector, arrow_schema

FaceKind = Literal["photo", "sketch"]
Alignment = Literal["detected", "pre-aligned"]

ALIGNED_SIZE = 112
# The five-point ArcFace template (eyes, nose tip, mouth corners) in a 112x112 crop,
# in image order: the subject's right eye is on the image's left.
ARCFACE_TEMPLATE: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)


class QuarantineReason(StrEnum):
    """Why a file was not ingested; stable strings, reviewers filter on them."""

    EMPTY_FILE = "empty_file"
    FILE_TOO_LARGE = "file_too_large"
    TRUNCATED_IMAGE = "truncated_image"
    CORRUPT_IMAGE = "corrupt_image"
    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    IMAGE_TOO_SMALL = "image_too_small"
    DECOMPRESSION_BOMB = "decompression_bomb"
    NO_FACE = "no_face"
    DUPLICATE_IDENTITY = "duplicate_identity"
    PATH_OUTSIDE_ROOT = "path_outside_root"
    MISSING_FILE = "missing_file"
    UNREADABLE_FILE = "unreadable_file"


class FaceRecord(BaseModel):
    """An ingested photo or sketch: where it came from, how it was found, its aligned crop."""

    face_id: str
    identity_id: str
    kind: FaceKind
    style: str | None = None
    paired_face_id: str | None = None
    source_path: str
    pixel_sha256: str
    width: int
    height: int
    image_format: str
    image_mode: str
    exif_transposed: bool
    alignment: Alignment
    det_box: Annotated[list[float], Vector(4)]
    det_landmarks: Annotated[list[float], Vector(10)]
    det_score: float
    n_faces: int
    aligned_png: bytes
    run_id: str
    ingested_at: dt.datetime


class QuarantineRecord(BaseModel):
    """A file that was refused, with a reason a reviewer can act on."""

    quarantine_id: str
    source_path: str
    identity_id: str | None
    kind: FaceKind
    sha256: str | None
    reason: str
    detail: str
    manifest_line: int | None
    run_id: str
    quarantined_at: dt.datetime


class EmbeddingRecord(BaseModel):
    """One face's vector from one encoder; ``encoder_version`` decides staleness."""

    face_id: str
    identity_id: str
    kind: FaceKind
    encoder: str
    encoder_version: str
    vector: list[float] = Field(repr=False)
    run_id: str
    embedded_at: dt.datetime


FACES_SCHEMA = arrow_schema(FaceRecord)
QUARANTINE_SCHEMA = arrow_schema(QuarantineRecord)


def embedding_schema(dim: int):
    return arrow_schema(EmbeddingRecord, vector=dim)
