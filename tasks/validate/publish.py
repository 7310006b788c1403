"""Dataset versions: recorded for every validation, published only when every contract holds.

A version's id is a hash of what it contains (the sketches in scope, their metrics version and
the thresholds file), so validating the same data twice names the same version. Every version
gets a row in ``dataset_versions`` and a folder with its verdicts (accepted or not, and why),
so rejected sketches stay queryable. A published version also gets a manifest of its accepted
sketches, LanceDB tags on ``sketches`` and ``sketch_metrics`` at the versions it was built
from, and becomes ``CURRENT``; a rejected one changes none of these, so the previous published
version stays current. Published rows are never rewritten.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from schemas.validation import (
    DATASET_VERSIONS,
    DATASET_VERSIONS_SCHEMA,
    SKETCH_METRICS,
    SKETCH_VERDICTS,
    SKETCH_VERDICTS_SCHEMA,
    DatasetVersionRecord,
)
from tasks import storage
from tasks.digests import sha256_file
from tasks.storage import FACES, SKETCHES, Workspace

PUBLISHED_DIR = Path("datasets") / "published"
REJECTED_DIR = Path("datasets") / "rejected"
CURRENT_FILE = PUBLISHED_DIR / "CURRENT"
MANIFEST = "manifest.parquet"
VERDICTS = "verdicts.parquet"
DATASET_JSON = "dataset.json"
CONTRACTS_JSON = "contracts.json"

_METRIC_FIELDS = [
    ("identity_similarity", pa.float64()), ("identity_margin", pa.float64()),
    ("impostor_identity", pa.string()), ("style_predicted", pa.string()),
    ("style_score", pa.float64()), ("pixel_std", pa.float64()), ("contrast", pa.float64()),
    ("saturated_share", pa.float64()), ("colour_deviation", pa.float64()),
    ("neighbour_correlation", pa.float64()), ("metrics_version", pa.string()),
]
MANIFEST_SCHEMA = pa.schema([
    ("sketch_id", pa.string()), ("face_id", pa.string()), ("identity_id", pa.string()),
    ("style", pa.string()), ("sample_index", pa.int64()), ("seed", pa.int64()),
    ("generator_version", pa.string()), ("png_path", pa.string()),
    ("png_sha256", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
    ("status", pa.string()), *_METRIC_FIELDS, ("dataset_version", pa.string()),
])
VERDICTS_SCHEMA = pa.schema([*MANIFEST_SCHEMA, ("file_problem", pa.string()),
                             ("accepted", pa.bool_()), ("reasons", pa.list_(pa.string()))])


class VersionError(LookupError):
    """An unknown version, or one that cannot be exported (not published)."""


def version_dir(status: str, version: str) -> Path:
    """Relative to the workspace."""
    return (PUBLISHED_DIR if status == "published" else REJECTED_DIR) / version


def current_version(workspace: Workspace) -> str | None:
    path = workspace.root / CURRENT_FILE
    return path.read_text().strip() or None if path.is_file() else None


# --------------------------------------------------------------------------- pins
# A pinned version is kept by retention whatever its age (an audit, a paper, a model in
# production): ``clip4sketch datasets --pin VERSION``.

PINS_FILE = PUBLISHED_DIR / "PINNED.json"


def pinned_versions(workspace: Workspace) -> dict[str, str]:
    """Pinned version -> the note given when it was pinned."""
    path = workspace.root / PINS_FILE
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")))


def pin_version(workspace: Workspace, version: str, note: str = "") -> None:
    record = get_version(workspace, version)
    if record is None or record["status"] != "published" or is_pruned(workspace, record):
        state = ("unknown" if record is None
                 else "pruned" if is_pruned(workspace, record) else record["status"])
        raise VersionError(f"version {version!r} is {state}: only published versions that "
                           "are still stored can be pinned")
    _write_pins(workspace, {**pinned_versions(workspace), version: note})


def unpin_version(workspace: Workspace, version: str) -> bool:
    pins = pinned_versions(workspace)
    if version not in pins:
        return False
    del pins[version]
    _write_pins(workspace, pins)
    return True


def _write_pins(workspace: Workspace, pins: Mapping[str, str]) -> None:
    storage.write_bytes_atomic(json.dumps(dict(sorted(pins.items())), indent=1).encode(),
                               workspace.root / PINS_FILE)


def is_pruned(workspace: Workspace, record: Mapping[str, Any]) -> bool:
    """Retention removed the version's folder (its row stays, as history): its verdicts file,
    removed last, is gone."""
    return not (workspace.root / record["verdicts_path"]).is_file()


def get_version(workspace: Workspace, version: str) -> dict[str, Any] | None:
    rows = storage.read(workspace, DATASET_VERSIONS, where=f"version = {storage.quote(version)}",
                        schema=DATASET_VERSIONS_SCHEMA).to_pylist()
    return rows[0] if rows else None


def list_versions(workspace: Workspace) -> list[dict[str, Any]]:
    """Every version, newest first, with ``current`` marking the one in use."""
    current = current_version(workspace)
    pins = pinned_versions(workspace)
    rows = storage.read(workspace, DATASET_VERSIONS,
                        columns=["version", "status", "created_at", "sketches", "accepted",
                                 "rejected", "acceptance_rate", "identities", "report_path",
                                 "manifest_path", "verdicts_path", "run_id"],
                        schema=DATASET_VERSIONS_SCHEMA).to_pylist()
    rows.sort(key=lambda r: r["created_at"], reverse=True)
    return [{**r, "current": r["version"] == current, "pinned": r["version"] in pins,
             "pruned": is_pruned(workspace, r)} for r in rows]


def versions_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """``list_versions`` as the plain-text table ``clip4sketch datasets`` prints."""
    if not rows:
        return "no dataset versions yet: run `clip4sketch validate`"
    lines = [f"{'':2}{'version':16} {'status':17} {'created (UTC)':17} {'sketches':>8} "
             f"{'accepted':>8} {'rate':>6}  report"]
    for r in rows:
        mark = "*" if r["current"] else "p" if r.get("pinned") else " "
        status = f"{r['status']}, pruned" if r.get("pruned") else r["status"]
        lines.append(f"{mark:2}{r['version']:16} {status:17} "
                     f"{r['created_at']:%Y-%m-%d %H:%M} {r['sketches']:8d} {r['accepted']:8d} "
                     f"{r['acceptance_rate']:6.1%}  {r['report_path']}")
    lines.append("* current (the published version in use); p pinned (kept by `prune`)")
    return "\n".join(lines)


def verdict_table(rows: Sequence[Mapping[str, Any]], verdicts: Mapping[str, list[str]],
                  version: str) -> pa.Table:
    out = []
    for row in rows:
        found = verdicts[row["sketch_id"]]
        out.append({**{f.name: row.get(f.name) for f in MANIFEST_SCHEMA},
                    "dataset_version": version, "file_problem": row.get("file_problem"),
                    "accepted": not found, "reasons": list(found)})
    return pa.Table.from_pylist(out, schema=VERDICTS_SCHEMA)


def manifest_table(verdicts: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    return verdicts.filter(pc.field("accepted")).select(MANIFEST_SCHEMA.names)


def write_verdicts(workspace: Workspace, verdicts: pa.Table, thresholds_sha: str,
                   run_id: str) -> None:
    """The latest verdict per sketch in ``sketch_verdicts`` (filter ``accepted = false``)."""
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    rows = pa.table({
        "sketch_id": verdicts.column("sketch_id"),
        "identity_id": verdicts.column("identity_id"),
        "style": verdicts.column("style"),
        "accepted": verdicts.column("accepted"),
        "reasons": verdicts.column("reasons"),
        "dataset_version": verdicts.column("dataset_version"),
        "thresholds_sha256": [thresholds_sha] * verdicts.num_rows,
        "run_id": [run_id] * verdicts.num_rows,
        "judged_at": pa.array([now] * verdicts.num_rows, pa.timestamp("us", tz="UTC")),
    }, schema=SKETCH_VERDICTS_SCHEMA)
    storage.ensure_table(workspace, SKETCH_VERDICTS, SKETCH_VERDICTS_SCHEMA)
    storage.upsert(workspace, SKETCH_VERDICTS, rows, "sketch_id")


def record_version(workspace: Workspace, record: DatasetVersionRecord, verdicts: pa.Table,
                   details: Mapping[str, Any]) -> DatasetVersionRecord:
    """Write the version's folder and row; on publication also the manifest, tags, CURRENT.

    The manifest is written before the row and CURRENT moves last, so a crash in between
    leaves an unlisted folder, never a listed version without its files.
    """
    existing = get_version(workspace, record.version)
    folder = version_dir(record.status, record.version)
    storage.write_parquet_atomic(verdicts, workspace.root / folder / VERDICTS)
    storage.write_bytes_atomic(json.dumps(details, indent=1, default=str).encode(),
                               workspace.root / folder / DATASET_JSON)
    storage.write_bytes_atomic(record.contracts.encode(), workspace.root / folder / CONTRACTS_JSON)
    record = record.model_copy(update={"verdicts_path": str(folder / VERDICTS)})
    if existing is not None and existing["status"] == "published":
        # Published versions are immutable: an identical dataset published again keeps its
        # original record; a failing re-check is reported by the run, not written over it.
        if record.status == "published":
            _point_current(workspace, record.version)
        return DatasetVersionRecord.model_validate(existing)
    if record.status == "published":
        manifest = manifest_table(verdicts)
        storage.write_parquet_atomic(manifest, workspace.root / folder / MANIFEST)
        record = record.model_copy(update={"manifest_path": str(folder / MANIFEST)})
        storage.tag(workspace, SKETCHES, record.version)
        storage.tag(workspace, SKETCH_METRICS, record.version)
    row = pa.Table.from_pylist([record.model_dump()], schema=DATASET_VERSIONS_SCHEMA)
    storage.upsert(workspace, DATASET_VERSIONS, row, "version")
    storage.export_parquet(workspace, DATASET_VERSIONS)
    if record.status == "published":
        _point_current(workspace, record.version)
    return record


def _point_current(workspace: Workspace, version: str) -> None:
    storage.write_bytes_atomic(f"{version}\n".encode(), workspace.root / CURRENT_FILE)


# --------------------------------------------------------------------------- export


class ExportReport(BaseModel):
    version: str
    destination: str
    sketches: int
    mugshots: int
    manifest: str


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(value: str) -> str:
    """A path component from an id: identity ids come from user folders and manifests."""
    name = _UNSAFE.sub("_", value).lstrip(".") or "_"
    if name != value:
        import hashlib

        name = f"{name}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"
    return name


def export_version(workspace: Workspace, version: str, destination: str | Path) -> ExportReport:
    """A published version as image folders plus ``manifest.parquet`` (paths relative to it).

    ``sketches/<style>/<identity>/<sketch_id>.png`` and ``mugshots/<identity>/<face_id>.png``
    (the aligned crops the sketches were drawn from), so a recognition trainer needs nothing
    else. Every PNG is checked against its recorded sha256 on the way; the manifest is written
    last, so its presence means a complete export.
    """

    record = get_version(workspace, version)
    if record is not None and is_pruned(workspace, record):
        raise VersionError(f"version {version!r} was pruned by retention (`clip4sketch "
                           "prune`): its files are gone; pin versions you need to keep")
    if record is None or record["status"] != "published":
        published = [r["version"] for r in list_versions(workspace) if r["status"] == "published"]
        state = "unknown" if record is None else record["status"]
        raise VersionError(f"version {version!r} is {state}; published versions: "
                           f"{', '.join(published) or 'none'}")
    destination = Path(destination).expanduser().resolve()
    target_manifest = destination / MANIFEST
    if destination.exists() and any(destination.iterdir()):
        previous = (storage.read_parquet(target_manifest, columns=["dataset_version"])
                    if target_manifest.is_file() else None)
        if previous is None or set(previous.column("dataset_version").to_pylist()) != {version}:
            raise FileExistsError(f"{destination} is not empty and holds no export of {version}")
    manifest = storage.read_parquet(workspace.root / record["manifest_path"]).to_pylist()
    for row in manifest:
        source = workspace.root / row["png_path"]
        if not source.is_file() or sha256_file(source) != row["png_sha256"]:
            raise VersionError(f"sketch {row['sketch_id']} of {version}: {source} is missing "
                               "or no longer matches its recorded sha256")
        relative = Path("sketches", safe_name(row["style"]), safe_name(row["identity_id"]),
                        f"{row['sketch_id']}.png")
        storage.write_bytes_atomic(source.read_bytes(), destination / relative)
        row["png_path"] = str(relative)
    faces = sorted({row["face_id"] for row in manifest})
    face_paths: dict[str, str] = {}
    for start in range(0, len(faces), 500):
        rows = storage.read(workspace, FACES, columns=["face_id", "identity_id", "aligned_png"],
                            where=storage.where_in("face_id", faces[start:start + 500]))
        for face in rows.to_pylist():
            relative = Path("mugshots", safe_name(face["identity_id"]), f"{face['face_id']}.png")
            storage.write_bytes_atomic(face["aligned_png"], destination / relative)
            face_paths[face["face_id"]] = str(relative)
    for row in manifest:
        row["face_png_path"] = face_paths.get(row["face_id"])
    schema = MANIFEST_SCHEMA.append(pa.field("face_png_path", pa.string()))
    storage.write_parquet_atomic(pa.Table.from_pylist(manifest, schema=schema), target_manifest)
    return ExportReport(version=version, destination=str(destination), sketches=len(manifest),
                        mugshots=len(face_paths), manifest=str(target_manifest))
