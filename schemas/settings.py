"""Settings: one place for every knob, overridable by CLIP4SKETCH_* environment variables.

Defaults are the embedded set-up: a ``./workspace`` folder and Prefect's temporary
local server, so the pipeline runs on a laptop with nothing configured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeFloat
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    """Limits that decide what counts as a usable image."""

    model_config = SettingsConfigDict(env_prefix="CLIP4SKETCH_INGEST_")

    detection_threshold: float = Field(0.6, ge=0.0, le=1.0)
    # Detection runs on a copy shrunk to this longest side: YuNet's cost grows with the
    # pixel count and mugshots are face-dominated, so little is lost.
    detection_max_side: int = Field(1024, ge=64)
    min_side: int = Field(32, ge=8)
    max_pixels: int = Field(64_000_000, ge=1)
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1)
    # Rows are written to the store every this many files, so a killed run keeps its work.
    write_every: int = Field(256, ge=1)
    # On a Dask cluster (``dask_address``): files a task decodes, detects and aligns.
    shard_size: int = Field(256, ge=1)
    # How a night learns a source file's sha256 (its face id): "changed" reads and hashes only
    # files whose stat (size, mtime, ctime, inode) moved since the source's last ingest; "all"
    # reads every file, which also sees bytes a disk changed by itself (tasks/digests.py).
    verify_files: Literal["changed", "all"] = "changed"


class GenerationSettings(BaseSettings):
    """How the nightly run and ``backfill`` draw sketches (``generate`` takes them as options).

    ``dask_address`` sends the shards to an existing Dask cluster (one worker per GPU); unset,
    ``CLIP4SKETCH_DASK_ADDRESS`` (every stage's cluster) decides, and without either they run
    on this machine.
    """

    model_config = SettingsConfigDict(env_prefix="CLIP4SKETCH_GENERATE_")

    # A saved generator folder; default <workspace>/generators/default/final.
    generator: Path | None = None
    samples_per_face: int = Field(2, ge=1)
    shard_size: int = Field(256, ge=1)
    # None: the generator's own defaults (a bridge samples in a few steps, DDIM in ~50).
    steps: int | None = Field(None, ge=1)
    guidance: float | None = Field(None, ge=0.0)
    # Sampling noise per style, over the generator's own per-style noise (e.g.
    # CLIP4SKETCH_GENERATE_STYLE_ETA='{"cufsf-artist": 3}'); an explicit --eta overrides both.
    style_eta: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    batch_size: int = Field(16, ge=1)
    device: str = "auto"
    dask_address: str | None = None
    # Intra-op threads of CPU sampling, set inside every shard (torch.set_num_threads, restored
    # after): CPU convolutions round differently with another thread count, and Dask workers
    # start with one (OMP_NUM_THREADS=1), so without one count for all a local run and a Dask
    # run draw different pixels. None: the count of the process that plans the run.
    cpu_threads: int | None = Field(None, ge=1)


class RetentionSettings(BaseSettings):
    """What the nightly run keeps (``clip4sketch prune`` takes the same two as options).

    ``keep_published`` unset: nights remove nothing. Set, each night ends with a prune that
    keeps the current, the newest ``keep_published`` published and every pinned version, and
    what is younger than ``keep_days`` (rejected versions, run tags, galleries, LanceDB's old
    table versions); see tasks/retention.py.
    """

    model_config = SettingsConfigDict(env_prefix="CLIP4SKETCH_RETENTION_")

    keep_published: int | None = Field(None, ge=1)
    keep_days: float = Field(14.0, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLIP4SKETCH_")

    workspace: Path = Path("workspace")
    identity_encoder: str = "sface"
    image_encoder: str = "effnet-lite0"
    text_encoder: str = "minilm"
    embed_batch_size: int = Field(64, ge=1)
    # The Dask scheduler (tcp://HOST:8786) that ingest, embed and generate send their shards
    # to; unset, everything runs on this machine. CLIP4SKETCH_GENERATE_DASK_ADDRESS still sets
    # generate's own, and wins over this one for generate.
    dask_address: str | None = None
    # On a Dask cluster: faces a task embeds (the local run encodes 512 at a time, too).
    embed_shard_size: int = Field(512, ge=1)
    # How long a flow waits for another run holding the same workspace before refusing.
    lock_timeout_seconds: float = Field(60.0, ge=0)
    # Whether a night's or a backfill's stages (generate, validate, train, evaluate: subflows in
    # the parent's process) send heartbeats of their own. Off, the parent's heartbeat alone says
    # the process lives; on, a zombie-detection automation can mark a stage's run crashed too,
    # and each stage pays up to a second at its end (see flows/common.py).
    stage_heartbeats: bool = False
    # How a night checks each stored sketch PNG against its recorded sha256: "changed" hashes
    # only files whose stat (size, mtime, ctime, inode) changed since they were last hashed;
    # "all" hashes every file every time, which also catches a disk changing bytes by itself
    # (tasks/digests.py).
    verify_pngs: Literal["changed", "all"] = "changed"
    # Extra style files (JSON, one style each) on top of the bundled registry and
    # <workspace>/styles/; see tasks/styles/registry.py.
    styles_dir: Path | None = None
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    generate: GenerationSettings = Field(default_factory=GenerationSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)


def load_settings(workspace: str | Path | None = None) -> Settings:
    settings = Settings()
    if workspace is not None:
        settings.workspace = Path(workspace)
    settings.workspace = settings.workspace.expanduser().resolve()
    return settings
