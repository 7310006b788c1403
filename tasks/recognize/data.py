"""The recognizer's training set: examples from several sources, identity-balanced batches.

An example is one face image of a known identity: a mugshot, a real sketch, or a generated
(synthetic) sketch. Source adapters turn each store into the same ``Example`` shape: a
reference to the pixels (a stored face, a PNG on disk) or the pixels or vector themselves.
So the trainer does not care whether a sketch came from a pairs manifest, the ``sketches``
table, a Parquet export or a published dataset version.

Held-out identities are dropped in ``assemble`` before any pixel or vector is read: with a
split, only identities marked ``train`` pass (``test`` and unlisted ones are counted and
refused, as for the generator), so a test probe's identity cannot reach training by any path.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.records import ALIGNED_SIZE, FACES_SCHEMA
from tasks import storage
from tasks.faces import crop_stack, encoder_vectors, rows_by_id, to_aligned
from tasks.storage import FACES, SKETCHES, Workspace
from tasks.validate import publish

ExampleKind = Literal["photo", "sketch", "synthetic"]
SKETCH_KINDS: tuple[ExampleKind, ...] = ("sketch", "synthetic")
# The columns of a generated-sketch table this module relies on, nothing more, so the
# generator's schema can grow without breaking training.
SYNTHETIC_COLUMNS = ("sketch_id", "face_id", "identity_id", "style", "png_path", "status")
# Read where a source has it (Parquet exports written by hand may not): see Example.content.
OPTIONAL_COLUMNS = ("png_sha256",)
# Salt so batch sampling's stream is unrelated to the per-step torch seed (same (seed, step)).
_BATCH_SALT = 0xBA7C_4EC0


class DataError(ValueError):
    """No usable training set: no sources, too few identities, a source that cannot be read."""


@dataclass(frozen=True)
class Example:
    """One training image by reference (``face_id`` / ``png_path``) or by value."""

    identity_id: str
    kind: ExampleKind
    key: str  # unique per image: face id, sketch id, or a caller's key
    origin: str  # which source produced it, for reports
    face_id: str | None = None
    png_path: Path | None = None
    crop: np.ndarray | None = field(default=None, repr=False, compare=False)
    vector: np.ndarray | None = field(default=None, repr=False, compare=False)
    style: str | None = None  # a sketch's drawing style, where its source records one
    # The image's checksum where the key does not fix the pixels: a sketch id names a
    # drawing (face, style, sample, generator), and the same generator at another sampling
    # noise draws other pixels under it. Face ids are content hashes already.
    content: str | None = None


# --------------------------------------------------------------------------- sources


def face_examples(workspace: Workspace, face_ids: Iterable[str], kind: ExampleKind,
                  origin: str) -> list[Example]:
    """Stored faces (photos or real sketches) by id; identities come from the faces table."""
    ids = list(dict.fromkeys(face_ids))
    found = rows_by_id(workspace, FACES, "face_id", ids, ["identity_id"])
    return [Example(found[f]["identity_id"], kind, f, origin, face_id=f) for f in ids
            if f in found]


def photos_of(workspace: Workspace, identities: Iterable[str],
              origin: str = "faces") -> list[Example]:
    """Every stored mugshot of these identities: the photo side of each training identity."""
    wanted = set(identities)
    if not wanted:
        return []
    faces = storage.read(workspace, FACES, columns=["face_id", "identity_id", "kind"],
                         schema=FACES_SCHEMA)
    faces = faces.filter(pc.equal(faces.column("kind"), "photo"))
    return [Example(identity, "photo", face, origin, face_id=face)
            for face, identity in zip(faces.column("face_id").to_pylist(),
                                      faces.column("identity_id").to_pylist(), strict=True)
            if identity in wanted]


def read_synthetic_sketches(workspace: Workspace,
                            dataset: str | None = None) -> tuple[pa.Table, dict[str, Any]]:
    """Usable generated sketches and where exactly they came from.

    ``dataset``: a published dataset version (``ds-...``: its manifest, accepted sketches
    only), None or a table name (the workspace's ``sketches`` table, before anything is
    published), or a ``.parquet`` export. Only rows with status ``ok`` and a PNG count; PNG
    paths are relative to the workspace. A name that is none of these is an error, never an
    empty training set.
    """

    source = dataset or SKETCHES
    record = None if source.endswith(".parquet") else publish.get_version(workspace, source)
    if record is not None:
        if record["status"] != "published":
            raise DataError(f"dataset version {source} was {record['status']}, not published: "
                            "train on a published version")
        path = workspace.root / record["manifest_path"]
        rows = storage.read_parquet(path)
        provenance = {"kind": "dataset_version", "version": source, "manifest": str(path),
                      "sha256": _file_sha(path)}
    elif source.endswith(".parquet"):
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise DataError(f"sketch dataset {path} does not exist")
        rows = storage.read_parquet(path)
        provenance = {"kind": "parquet", "path": str(path), "sha256": _file_sha(path)}
    elif source == SKETCHES or source in storage.table_names(workspace):
        rows = storage.read(workspace, source)
        provenance = {"kind": "table", "table": source,
                      "version": storage.table_version(workspace, source)}
    else:
        published = [r["version"] for r in publish.list_versions(workspace)
                     if r["status"] == "published"]
        raise DataError(f"no dataset {source!r} in {workspace.root}: give a published version "
                        f"({', '.join(published) or 'none yet'}), a table or a .parquet file")
    missing = [c for c in SYNTHETIC_COLUMNS if c not in rows.column_names]
    if rows.num_rows and missing:
        raise DataError(f"sketch dataset {source!r} lacks column(s) {', '.join(missing)}")
    if rows.num_rows == 0:
        return pa.table({c: pa.array([], pa.string()) for c in SYNTHETIC_COLUMNS}), {
            **provenance, "rows": 0, "usable": 0}
    rows = rows.select(list(SYNTHETIC_COLUMNS) + [c for c in OPTIONAL_COLUMNS
                                                  if c in rows.column_names])
    usable = rows.filter(pc.and_(pc.equal(rows.column("status"), "ok"),
                                 pc.is_valid(rows.column("png_path"))))
    provenance.update(rows=rows.num_rows, usable=usable.num_rows)
    return usable, provenance


def synthetic_source(workspace: Workspace, source: str | None,
                     styles: Sequence[str] | None = None,
                     ) -> tuple[list[Example], dict[str, Any]]:
    """Examples of one synthetic (or rendered) sketch source, wherever it lives.

    ``source`` is what ``read_synthetic_sketches`` takes (a published version, a table,
    a ``.parquet`` file; PNG paths relative to the workspace, else to the Parquet's folder),
    or a folder: an ``export`` of a published version (``manifest.parquet`` with
    ``png_path`` and ``face_png_path`` relative to it: sketches *and* the mugshots they were
    drawn from), or another workspace (its ``sketches`` table and the photos in its faces
    table). A folder brings its own photos, so sketches generated elsewhere train here
    without re-ingesting their mugshots. ``styles`` keeps only sketches of those styles
    (a generator draws several; a comparison row wants one); the others are counted in
    the provenance as ``other_styles``.
    """
    examples, provenance = _source_examples(workspace, source)
    if styles:
        wanted = set(styles)
        kept = [e for e in examples if e.kind != "synthetic" or e.style in wanted]
        sketched = {e.identity_id for e in kept if e.kind == "synthetic"}
        kept = [e for e in kept if e.kind == "synthetic" or e.identity_id in sketched]
        provenance = {**provenance, "styles": sorted(wanted),
                      "other_styles": sum(1 for e in examples if e.kind == "synthetic")
                      - sum(1 for e in kept if e.kind == "synthetic")}
        examples = kept
    return examples, provenance


def _source_examples(workspace: Workspace, source: str | None,
                     ) -> tuple[list[Example], dict[str, Any]]:
    folder = Path(source).expanduser() if source else None
    if folder is not None and folder.is_dir():
        if (folder / "manifest.parquet").is_file():
            return _export_examples(folder.resolve())
        if (folder / "lancedb").is_dir():
            return _workspace_examples(Workspace.open(folder))
        raise DataError(f"{folder} is a folder but neither an export (manifest.parquet) nor "
                        "a workspace (lancedb/)")
    rows, provenance = read_synthetic_sketches(workspace, source)
    base = workspace.root
    if provenance["kind"] == "parquet" and rows.num_rows:
        first = rows.column("png_path")[0].as_py()
        beside = Path(provenance["path"]).parent
        if not (base / first).is_file() and (beside / first).is_file():
            base = beside
    examples = [Example(r["identity_id"], "synthetic", r["sketch_id"], str(source or SKETCHES),
                        png_path=base / r["png_path"], style=r["style"],
                        content=r.get("png_sha256"))
                for r in rows.to_pylist()]
    return examples, provenance


def _export_examples(folder: Path) -> tuple[list[Example], dict[str, Any]]:
    manifest = folder / "manifest.parquet"
    rows = storage.read_parquet(manifest)
    missing = [c for c in ("sketch_id", "identity_id", "png_path") if c not in rows.column_names]
    if missing:
        raise DataError(f"{manifest} lacks column(s) {', '.join(missing)}")
    examples: list[Example] = []
    photos: dict[str, Example] = {}
    for r in rows.to_pylist():
        if r.get("status", "ok") != "ok" or not r["png_path"]:
            continue
        examples.append(Example(r["identity_id"], "synthetic", r["sketch_id"], str(folder),
                                png_path=folder / r["png_path"], style=r.get("style"),
                                content=r.get("png_sha256")))
        if r.get("face_png_path") and r.get("face_id"):
            photos[r["face_id"]] = Example(r["identity_id"], "photo", r["face_id"], str(folder),
                                           png_path=folder / r["face_png_path"])
    return examples + list(photos.values()), {
        "kind": "export", "path": str(folder), "sha256": _file_sha(manifest),
        "rows": rows.num_rows, "usable": len(examples), "photos": len(photos)}


def _workspace_examples(other: Workspace) -> tuple[list[Example], dict[str, Any]]:
    rows, provenance = read_synthetic_sketches(other, None)
    examples = [Example(r["identity_id"], "synthetic", r["sketch_id"], str(other.root),
                        png_path=other.root / r["png_path"], style=r["style"],
                        content=r.get("png_sha256"))
                for r in rows.to_pylist()]
    photos = photos_of(other, {e.identity_id for e in examples}, origin=str(other.root))
    crops = crop_stack(other, [p.face_id for p in photos]) if photos else []
    photos = [Example(p.identity_id, "photo", p.key, p.origin, crop=crop)
              for p, crop in zip(photos, crops, strict=True)]
    return examples + photos, {**provenance, "kind": "workspace", "workspace": str(other.root),
                               "photos": len(photos)}


def _file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- assembly


@dataclass
class TrainingSet:
    """Examples grouped by label; pixels or vectors are attached by ``materialise``."""

    identities: tuple[str, ...]  # label -> identity id
    labels: np.ndarray  # (N,) int64
    kinds: np.ndarray  # (N,) str
    examples: tuple[Example, ...]
    skipped: dict[str, int]
    crops: np.ndarray | None = None  # (N, 112, 112, 3) uint8
    vectors: np.ndarray | None = None  # (N, D) float32
    # label -> (photo rows, sketch rows by kind); built on first use by ``batch_indices``
    groups: list[tuple[list[int], dict[str, list[int]]]] | None = field(default=None,
                                                                        repr=False)

    def __len__(self) -> int:
        return len(self.examples)

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.kinds.tolist()).items()))

    def fingerprint(self) -> str:
        """Digest of exactly which images, labels and kinds: resume refuses other data."""
        digest = hashlib.sha256()
        for e, label in zip(self.examples, self.labels.tolist(), strict=True):
            content = f"\0{e.content}" if e.content else ""
            digest.update(f"{e.key}\0{e.kind}\0{label}\0{e.identity_id}{content}\n".encode())
        return digest.hexdigest()


def assemble(examples: Iterable[Example], split: Mapping[str, str] | None = None,
             min_identities: int = 2) -> TrainingSet:
    """Filter by split, keep identities that have both a photo and a sketch, label them.

    An identity with only photos (or only sketches) teaches nothing about crossing the
    sketch/photo gap, and a margin loss needs at least two classes. Order is canonical
    (identity, kind, key, checksum) so the same data gives the same labels and batches on any
    run.
    """
    skipped: Counter[str] = Counter()
    kept: dict[tuple[str, str | None], Example] = {}
    for example in examples:
        if split is not None:
            where = split.get(example.identity_id)
            if where != "train":
                skipped["held_out" if where == "test" else "not_in_split"] += 1
                continue
        same = (example.key, example.content)  # one drawing twice; not two under one id
        if same in kept:
            skipped["duplicate"] += 1
            continue
        kept[same] = example
    by_identity: dict[str, list[Example]] = {}
    for example in kept.values():
        by_identity.setdefault(example.identity_id, []).append(example)
    chosen: list[Example] = []
    for identity in sorted(by_identity):
        members = by_identity[identity]
        kinds = {e.kind for e in members}
        if "photo" not in kinds:
            skipped["identity_without_photo"] += len(members)
            continue
        if not kinds & set(SKETCH_KINDS):
            skipped["identity_without_sketch"] += len(members)
            continue
        chosen.extend(sorted(members, key=lambda e: (e.kind, e.key, e.content or "")))
    identities = tuple(dict.fromkeys(e.identity_id for e in chosen))
    if len(identities) < min_identities:
        raise DataError(
            f"{len(identities)} identities have both a photo and a sketch "
            f"(skipped: {dict(skipped) or 'none'}); training needs at least {min_identities}")
    label_of = {identity: i for i, identity in enumerate(identities)}
    return TrainingSet(
        identities=identities,
        labels=np.array([label_of[e.identity_id] for e in chosen], dtype=np.int64),
        kinds=np.array([e.kind for e in chosen]),
        examples=tuple(chosen),
        skipped=dict(sorted(skipped.items())),
    )


def load_crops(workspace: Workspace, examples: Sequence[Example]) -> np.ndarray:
    """Aligned crops for the examples, in order, whichever way each one holds its pixels."""
    import cv2

    crops = np.zeros((len(examples), ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8)
    stored = [i for i, e in enumerate(examples) if e.crop is None and e.face_id]
    if stored:
        crops[stored] = crop_stack(workspace, [examples[i].face_id for i in stored])
    for i, example in enumerate(examples):
        if example.crop is not None:
            crops[i] = to_aligned(example.crop)
        elif example.face_id is None:
            if example.png_path is None:
                raise DataError(f"example {example.key} has neither pixels nor a reference")
            image = cv2.imread(str(example.png_path), cv2.IMREAD_COLOR)
            if image is None:
                raise DataError(f"cannot read sketch {example.png_path} ({example.key})")
            crops[i] = to_aligned(image)
    return crops


def load_vectors(workspace: Workspace, encoder: Any, examples: Sequence[Example],
                 run_id: str = "local") -> np.ndarray:
    """Identity-encoder vectors: stored faces from the embedding table, others encoded now."""
    vectors = np.zeros((len(examples), encoder.dim), np.float32)
    stored = [i for i, e in enumerate(examples)
              if e.vector is None and e.crop is None and e.face_id]
    if stored:
        vectors[stored] = encoder_vectors(workspace, encoder,
                                          [examples[i].face_id for i in stored], run_id)
    given = [i for i, e in enumerate(examples) if e.vector is not None]
    for i in given:
        vector = np.asarray(examples[i].vector, dtype=np.float32).reshape(-1)
        if vector.shape != (encoder.dim,):
            raise DataError(f"example {examples[i].key} carries a {vector.shape} vector; "
                            f"the encoder gives {encoder.dim}")
        vectors[i] = vector
    rest = [i for i in range(len(examples)) if i not in set(stored) | set(given)]
    for start in range(0, len(rest), 256):
        chunk = rest[start:start + 256]
        crops = load_crops(workspace, [examples[i] for i in chunk])
        vectors[chunk] = encoder.encode(crops)
    return vectors


# --------------------------------------------------------------------------- batches


def batch_indices(training: TrainingSet, seed: int, step: int, identities_per_batch: int,
                  samples_per_identity: int) -> np.ndarray:
    """Example indices of one P x K batch: a pure function of (seed, step).

    That is what makes a resumed run replay the very batches an uninterrupted one sees.
    Each identity's K samples are split between its photos and its sketches, so every
    batch holds sketch-photo positives; among sketches a kind (real, synthetic) is picked
    first, so one real sketch is not drowned by dozens of generated ones.
    """
    rng = np.random.default_rng([int(seed), int(step), _BATCH_SALT])
    groups = _groups(training)
    n = len(groups)
    chosen = rng.choice(n, size=identities_per_batch, replace=identities_per_batch > n)
    out: list[int] = []
    for label in chosen:
        photos, sketches = groups[label]
        n_photo = samples_per_identity // 2 if sketches else samples_per_identity
        if not photos:
            n_photo = 0
        for _ in range(n_photo):
            out.append(int(photos[rng.integers(len(photos))]))
        kinds = sorted(sketches)
        for _ in range(samples_per_identity - n_photo):
            members = sketches[kinds[rng.integers(len(kinds))]]
            out.append(int(members[rng.integers(len(members))]))
    return np.asarray(out, dtype=np.int64)


def _groups(training: TrainingSet) -> list[tuple[list[int], dict[str, list[int]]]]:
    if training.groups is not None:
        return training.groups
    groups: list[tuple[list[int], dict[str, list[int]]]] = [
        ([], {}) for _ in training.identities]
    for i, (label, kind) in enumerate(zip(training.labels.tolist(), training.kinds.tolist(),
                                          strict=True)):
        photos, sketches = groups[label]
        if kind == "photo":
            photos.append(i)
        else:
            sketches.setdefault(kind, []).append(i)
    training.groups = groups
    return groups
