"""Shapes of the synthetic-mugshot source: its request, shard references and report.

A synthetic source is a folder of new, drawn people that ``ingest`` reads like any other
folder source. What decides the pixels (generator weights, seed, truncation, image size,
nudge sigma) is frozen in ``SynthesisParams`` and written into the folder's manifest, so a
later run can extend or resume the folder only with the same values, and any face can be
drawn again bit-for-bit. Shard tasks exchange these small models, never images.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Why a drawn face did not become an identity (or an extra image of one). The first two
# are ingestion's own reason strings, so a reviewer filters both kinds of refusal alike.
SynthRefusal = Literal["no_face", "duplicate_identity", "bad_alignment", "low_detection_score"]
REFUSALS: tuple[SynthRefusal, ...] = (
    "no_face", "duplicate_identity", "bad_alignment", "low_detection_score")

# SFace's match threshold (OpenCV's FaceRecognizerSF cosine): impostor pairs above it would
# count as one person. The report gives the share of kept-identity pairs above it.
SFACE_MATCH_THRESHOLD = 0.363

MANIFEST_NAME = "synthetic-manifest.json"
WORK_DIR = ".synthesize"  # hidden: a folder source skips dot-folders


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HygieneThresholds(_Frozen):
    """When a drawn face is refused. Defaults are the reviewed values (data_contracts/
    thresholds.yaml, section ``synthetic``); a request may override them."""

    # SFace cosine to an identity already drawn or stored above this: the same person twice.
    max_identity_similarity: float = Field(0.5, ge=-1.0, le=1.0)
    # RMS distance (pixels of the 112x112 crop) between the five landmarks after the
    # similarity fit and the ArcFace template: a face turned or distorted enough that its
    # crop is not the frontal template every identity encoder expects.
    max_alignment_error: float = Field(8.0, gt=0.0)
    # YuNet's score below this: a broken face (0 turns the check off; ingestion still
    # refuses below its own detection threshold).
    min_detection_score: float = Field(0.0, ge=0.0, le=1.0)


class SynthesisParams(_Frozen):
    """Everything that decides a source's pixels and identity ids; fixed per folder."""

    generator: str = "mobilestylegan-ffhq (random-face 2021.7.21.1, OpenVINO IR)"
    weights_sha256: str
    seed: int = Field(0, ge=0)
    truncation: float = Field(0.7, gt=0.0, le=2.0)
    size: int = Field(512, ge=64, le=1024)  # saved side in pixels (the model draws 1024)
    sigma: float = Field(0.3, ge=0.0, le=2.0)  # latent nudge for images 2..K of an identity
    threads: int = Field(1, ge=1)  # OpenVINO threads per worker (recorded: pixels may vary)

    def key(self) -> str:
        """The part of identity ids that tells sources apart: same weights, seed and
        truncation give the same people; size, sigma and threads do not change who."""
        import hashlib

        text = f"{self.weights_sha256}|{self.seed}|{self.truncation!r}"
        return hashlib.sha256(text.encode()).hexdigest()[:8]


class SynthesizeRequest(_Frozen):
    out: str
    identities: int = Field(ge=1)
    images_per_identity: int = Field(1, ge=1, le=64)
    params: SynthesisParams
    hygiene: HygieneThresholds = HygieneThresholds()
    shard_size: int = Field(32, ge=1)
    # Compare new faces with the photos of this workspace's identity table (SFace), too.
    workspace: str | None = None
    detection_threshold: float = Field(0.6, ge=0.0, le=1.0)  # ingestion's, so both agree
    detection_max_side: int = Field(1024, ge=64)


class SynthShardRef(_Frozen):
    """Candidates ``first .. first+count-1`` of a source; paths relative to the source."""

    shard_id: str
    first: int
    count: int
    result_path: str


class SynthShardResult(BaseModel):
    shard_id: str
    candidates: int
    drawn: int = 0  # images drawn by this call (0 when the shard was finished before)
    reused: int = 0  # candidates found finished on disk
    skipped: bool = False
    draw_seconds: float = 0.0  # inside the generator only
    seconds: float = 0.0


class ImpostorStats(BaseModel):
    """SFace cosine between the first images of different kept identities."""

    identities: int = 0
    pairs: int = 0
    median: float | None = None
    p99: float | None = None
    max: float | None = None
    share_above_match: float | None = None  # above SFACE_MATCH_THRESHOLD
    nudge_median: float | None = None  # image 2..K to its identity's first image


class SynthesizeReport(BaseModel):
    run_id: str
    out: str
    manifest: str
    requested: int
    kept: int  # identities in the folder now
    kept_new: int  # identities this run added
    images: int  # face images in the folder now
    candidates_drawn: int  # candidates whose images this run drew
    candidates_judged: int  # candidates this run accepted or refused
    surplus: int  # drawn but not needed (kept for a later, larger request)
    refused: dict[str, int] = Field(default_factory=dict)  # identities, by reason, this run
    images_refused: dict[str, int] = Field(default_factory=dict)  # extra images, by reason
    shards: int = 0
    shards_skipped: int = 0
    failed_shards: dict[str, str] = Field(default_factory=dict)
    task_runner: str = ""
    seconds_per_image: float | None = None  # generator time per drawn image
    seconds_per_candidate: float | None = None  # shard wall time per candidate (all checks)
    impostor: ImpostorStats = ImpostorStats()
    short_by: int = 0  # identities still missing after the candidate budget ran out
    seconds: float = 0.0
