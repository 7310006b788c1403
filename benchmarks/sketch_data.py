"""A small ``sketches`` table without a trained generator, plus deliberately broken sketches.

The "generated" sketches are what a perfect generator of the registry's render styles would
draw: the renderer's drawing of each aligned demo mugshot, slightly jittered per sample (so a
face's samples differ) and shrunk to 64 px like the CPU generator's output. Broken ones are
mixed in on purpose: a blank page, noise, another identity's sketch and a colour photo.

Building the embedded workspace costs ~15 s on 2 busy cores, so it is built once per session
and copied per test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from schemas.encoders import EncoderSpec
from schemas.records import SKETCHES_SCHEMA
from tasks import storage
from tasks.demo.faces import make_demo_source
from tasks.ingest.align import decode_png
from tasks.storage import FACES, SKETCHES, Workspace
from tasks.styles.registry import load_styles
from tasks.styles.rendering import render

IDENTITY = EncoderSpec(role="identity", name="sface")
IMAGE = EncoderSpec(role="image", name="effnet-lite0")
IDENTITIES = 6
PHOTOS = 2
SIZE = 64
GENERATOR = "test-gen-1"
STYLES = ("pencil-dodge", "xdog-lines")
RENDERERS = {"pencil-dodge": ("pencil-dodge", {"blur_sigma": 6.0}), "xdog-lines": ("xdog", {})}


def build_workspace(root: Path) -> Path:
    """6 demo identities x 2 photos (+ 1 paired demo-pencil sketch each), embedded."""
    # Imported here, not at the top: tasks.embed, tasks.ingest.run load prefect, which reads the
    # environment set above.
    from tasks.embed import embed_faces
    from tasks.ingest.run import ingest_source

    source = make_demo_source(root / "source", identities=IDENTITIES,
                              photos_per_identity=PHOTOS)
    workspace = Workspace.open(root / "workspace")
    ingest_source(workspace, source / "photos")
    ingest_source(workspace, source / "pairs.csv")
    embed_faces(workspace, [IDENTITY, IMAGE])
    return workspace.root


def copy_workspace(template: Path, target: Path) -> Workspace:
    shutil.copytree(template, target)
    return Workspace.open(target)


@dataclass(frozen=True)
class Photo:
    face_id: str
    identity_id: str
    crop: np.ndarray


def photos(workspace: Workspace) -> list[Photo]:
    rows = storage.read(workspace, FACES, columns=["face_id", "identity_id", "kind",
                                                   "aligned_png"], where="kind = 'photo'")
    return sorted((Photo(r["face_id"], r["identity_id"], decode_png(r["aligned_png"]))
                   for r in rows.to_pylist()), key=lambda p: (p.identity_id, p.face_id))


def jitter(crop: np.ndarray, sample: int) -> np.ndarray:
    """A small, deterministic pose change per sample: samples of one face must differ (with
    less, SFace finds a demo identity's samples more alike than the diversity band allows)."""
    angle = (-6.0, 4.8, -3.0, 6.0)[sample % 4]
    shift = ((-3.0, 2.1), (3.0, -2.1), (0.9, 3.0), (-2.1, -3.0))[sample % 4]
    scale = (0.96, 1.04, 1.02, 0.98)[sample % 4]
    matrix = cv2.getRotationMatrix2D((56, 56), angle, scale)
    matrix[:, 2] += shift
    return cv2.warpAffine(crop, matrix, (112, 112), borderMode=cv2.BORDER_REPLICATE)


def drawn(style: str, crop: np.ndarray, sample: int = 0) -> np.ndarray:
    renderer, params = RENDERERS[style]
    grey = render(renderer, jitter(crop, sample), **params)
    return cv2.resize(grey, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class Sketch:
    face_id: str
    identity_id: str
    style: str
    sample_index: int
    image: np.ndarray | None  # None: the sampler produced NaN (no PNG)
    status: str = "ok"
    generator: str = GENERATOR
    # The generator config its row names. "demo" is the bundled bridge that starts from a
    # pencil-dodge render, which validation compares a face drawn in one style only with;
    # a name no config has ("test") leaves it no start render.
    config: str = "demo"

    @property
    def sketch_id(self) -> str:
        key = "|".join([self.face_id, self.style, str(self.sample_index), self.generator])
        return hashlib.sha256(key.encode()).hexdigest()[:32]


def clean_sketches(workspace: Workspace, samples: int = 2,
                   styles: tuple[str, ...] = STYLES) -> list[Sketch]:
    return [Sketch(p.face_id, p.identity_id, style, k, drawn(style, p.crop, k))
            for p in photos(workspace) for style in styles for k in range(samples)]


def broken_sketches(workspace: Workspace) -> dict[str, Sketch]:
    """One sketch per failure, each claiming to be a sample of some mugshot."""
    faces = photos(workspace)
    first, other = faces[0], next(p for p in faces if p.identity_id != faces[0].identity_id)
    third = faces[2]
    rng = np.random.default_rng(7)
    colour = cv2.resize(faces[3].crop, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return {
        "blank": Sketch(first.face_id, first.identity_id, "pencil-dodge", 10,
                        np.full((SIZE, SIZE), 236, np.uint8)),
        "noise": Sketch(third.face_id, third.identity_id, "pencil-dodge", 10,
                        rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)),
        # Drawn from ``other``'s mugshot but filed under ``first``'s.
        "other_identity": Sketch(first.face_id, first.identity_id, "pencil-dodge", 11,
                                 drawn("pencil-dodge", other.crop, 0)),
        "colour": Sketch(faces[3].face_id, faces[3].identity_id, "pencil-dodge", 10, colour),
        # The sampler diverged: the generator wrote the row without a PNG.
        "nan": Sketch(faces[4].face_id, faces[4].identity_id, "xdog-lines", 10, None, "nan"),
    }


def write_sketches(workspace: Workspace, sketches: list[Sketch]) -> pa.Table:
    """PNGs under ``sketches/<generator>/<style>/`` and rows with the SketchRecord schema."""
    now = dt.datetime.now(dt.UTC)
    rows = []
    for s in sketches:
        png_path = sha = None
        width = height = SIZE
        std = None
        if s.image is not None:
            ok, data = cv2.imencode(".png", s.image)
            assert ok
            png_path = f"sketches/{s.generator}/{s.style}/{s.sketch_id}.png"
            storage.write_bytes_atomic(data.tobytes(), workspace.root / png_path)
            sha = hashlib.sha256(data.tobytes()).hexdigest()
            height, width = s.image.shape[:2]
            std = float(s.image.std())
        rows.append({
            "sketch_id": s.sketch_id, "face_id": s.face_id, "identity_id": s.identity_id,
            "style": s.style, "style_text": f"{s.style} prompt", "sample_index": s.sample_index,
            "seed": int(hashlib.sha256(s.sketch_id.encode()).hexdigest()[:15], 16),
            "generator_version": s.generator, "generator_config": s.config,
            "identity_encoder_version": "sface", "image_encoder_version": "effnet",
            "text_encoder_version": "minilm", "scheduler": "{}", "steps": 2, "guidance": 2.0,
            "eta": 0.0, "batch_size": 4, "device": "cpu", "precision": "fp32",
            "torch_version": "test", "diffusers_version": "test", "png_path": png_path,
            "png_sha256": sha, "width": width, "height": height, "pixel_std": std,
            "status": s.status, "reason": None if s.status == "ok" else s.status,
            "shard_id": "test-shard", "run_id": "test", "generated_at": now,
        })
    table = pa.Table.from_pylist(rows, schema=SKETCHES_SCHEMA)
    storage.upsert(workspace, SKETCHES, table, "sketch_id")
    return table


_templates: dict[str, Path] = {}


def validated_template(factory) -> Path:
    """Session template: the embedded workspace with the clean sketches and their metrics
    (so the style classifier and the sketch vectors are cached); tests copy it."""
    if "clean" not in _templates:
        # Imported here, not at the top: tasks.validate.compute loads prefect, which reads the
        # environment set above.
        from tasks.validate.compute import compute_metrics

        root = build_workspace(factory.mktemp("validate-template"))
        workspace = Workspace.open(root)
        write_sketches(workspace, clean_sketches(workspace))
        compute_metrics(workspace, IDENTITY, IMAGE, load_styles())
        _templates["clean"] = root
    return _templates["clean"]


def validate_version(workspace: Workspace, run: str, scope=None,
                     thresholds: Path | None = None):
    """What ``clip4sketch validate`` does, in-process: metrics, contracts and the report of
    ``scope`` (default: the sketches of generator version ``run``); returns the outcome."""
    # Imported here: these load prefect and great-expectations' settings (see above).
    from data_contracts.thresholds import load_thresholds
    from schemas.validation import Scope
    from tasks.validate.compute import compute_metrics
    from tasks.validate.judge import judge_dataset
    from tasks.validate.report import write_report

    registry = load_styles()
    scope = scope or Scope(generator_version=run)
    metrics = compute_metrics(workspace, IDENTITY, IMAGE, registry, scope=scope, run_id=run)
    outcome = judge_dataset(workspace, metrics, registry, IDENTITY, IMAGE, scope=scope,
                            thresholds_path=thresholds, run_id=run,
                            report_path=str(workspace.reports_dir / f"validate-{run}.html"))
    write_report(workspace, outcome, load_thresholds(thresholds))
    return outcome


def stored_suite(workspace: Workspace, outcome, name: str):
    """The validated version's stored great-expectations outcome of one suite."""
    # Imported here: tasks.validate loads prefect, which reads the environment set above.
    from data_contracts.run import ContractReport
    from tasks.validate import publish

    folder = workspace.root / Path(outcome.verdicts_path).parent
    report = ContractReport.model_validate_json((folder / publish.CONTRACTS_JSON).read_text())
    return next(s for s in report.suites if s.suite == name)
