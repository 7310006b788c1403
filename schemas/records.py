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
# ok: usable; nan: the sampler produced NaN/inf (no PNG is written); blank: a near-constant
# image (PNG kept so a reviewer can look, but never counted as a good sketch).
SketchStatus = Literal["ok", "nan", "blank"]

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


class SketchRecord(BaseModel):
    """One generated sketch, with everything needed to regenerate it bit-for-bit.

    The key is (face_id, style, sample_index, generator_version); ``sketch_id`` and ``seed``
    are both derived from it. Sampling settings, scheduler config, encoder and library
    versions and the device are recorded because each of them changes the pixels.
    """

    sketch_id: str
    face_id: str
    identity_id: str
    style: str
    style_text: str
    sample_index: int
    seed: int
    generator_version: str
    generator_config: str
    identity_encoder_version: str
    image_encoder_version: str
    text_encoder_version: str
    scheduler: str  # JSON of the DDIM scheduler config
    steps: int
    guidance: float
    eta: float
    # Batched convolutions round differently from batch to batch; an item is reproduced
    # bit-for-bit by regenerating its shard batch, so the batch size is provenance too.
    batch_size: int
    device: str
    precision: str
    torch_version: str
    diffusers_version: str
    png_path: str | None  # relative to the workspace; None when status is "nan"
    png_sha256: str | None
    width: int
    height: int
    pixel_std: float | None
    status: SketchStatus
    reason: str | None
    shard_id: str
    run_id: str
    generated_at: dt.datetime


FACES_SCHEMA = arrow_schema(FaceRecord)
QUARANTINE_SCHEMA = arrow_schema(QuarantineRecord)
SKETCHES_SCHEMA = arrow_schema(SketchRecord)


def embedding_schema(dim: int):
    return arrow_schema(EmbeddingRecord, vector=dim)
