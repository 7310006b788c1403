"""Image-processing sketches as a dataset: the classical alternative to the diffusion model.

The rendered styles (pencil dodge, XDoG lines) are deterministic functions of the aligned
mugshot. Writing them out in the shape a recognizer trains on (``tasks.recognize.data``:
sketch id, face, identity, style, PNG path relative to the workspace, status) lets the
evaluation compare "trained on diffusion sketches" with "trained on classical renderings" of
the same faces, which is the question a reviewer asks first.

Layout: ``<workspace>/rendered/<style>/<face id>.png`` and one Parquet file per call in
``<workspace>/datasets/rendered/``. Same faces and styles, same bytes: a rerun rewrites
nothing it already has.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from schemas.records import FACES_SCHEMA
from schemas.styles import RenderSource, Style
from tasks import storage
from tasks.faces import read_crops
from tasks.storage import FACES, Workspace
from tasks.styles.rendering import render

RENDERED_DIR = "rendered"
DATASETS_SUBDIR = "rendered"

RENDERED_SCHEMA = pa.schema([
    pa.field("sketch_id", pa.string(), nullable=False),
    pa.field("face_id", pa.string(), nullable=False),
    pa.field("identity_id", pa.string(), nullable=False),
    pa.field("style", pa.string(), nullable=False),
    pa.field("renderer", pa.string(), nullable=False),
    pa.field("png_path", pa.string(), nullable=False),
    pa.field("png_sha256", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
])


class RenderError(ValueError):
    """A style that cannot be rendered, or faces that are not there."""


def _photos(workspace: Workspace, faces: Iterable[str] | None) -> list[tuple[str, str]]:
    rows = storage.read(workspace, FACES, columns=["face_id", "identity_id"],
                        where="kind = 'photo'", schema=FACES_SCHEMA).to_pylist()
    if faces is None:
        return sorted((r["face_id"], r["identity_id"]) for r in rows)
    wanted = set(faces)
    chosen = sorted((r["face_id"], r["identity_id"]) for r in rows
                    if r["face_id"] in wanted or r["identity_id"] in wanted)
    matched = {f for f, _ in chosen} | {i for _, i in chosen}
    if wanted - matched:
        missing = sorted(wanted - matched)
        raise RenderError(f"{len(missing)} face or identity ids are not stored photos "
                          f"(first: {missing[0]})")
    return chosen


def render_dataset(workspace: Workspace, styles: list[Style],
                   faces: Iterable[str] | None = None) -> tuple[Path, int]:
    """Render every chosen photo in every style; returns the dataset Parquet and its rows."""
    for style in styles:
        if not isinstance(style.source, RenderSource):
            raise RenderError(f"style {style.name} is drawn by artists, not rendered: choose a "
                              f"style whose source kind is 'render'")
    photos = _photos(workspace, faces)
    if not photos:
        raise RenderError(f"no photos to render in {workspace.root}")
    crops = read_crops(workspace, [f for f, _ in photos])
    rows = []
    for style in styles:
        source = style.source
        assert isinstance(source, RenderSource)
        for face, identity in photos:
            relative = f"{RENDERED_DIR}/{style.name}/{face}.png"
            path = workspace.root / relative
            if not path.is_file():
                grey = render(source.renderer, crops[face], **source.params)
                ok, encoded = cv2.imencode(".png", np.ascontiguousarray(grey))
                if not ok:
                    raise RenderError(f"could not encode the {style.name} rendering of {face}")
                storage.write_bytes_atomic(encoded.tobytes(), path)
            data = path.read_bytes()
            rows.append({
                "sketch_id": hashlib.sha256(f"{face}\x1f{style.name}".encode()).hexdigest()[:32],
                "face_id": face, "identity_id": identity, "style": style.name,
                "renderer": source.renderer, "png_path": relative,
                "png_sha256": hashlib.sha256(data).hexdigest(), "status": "ok",
            })
    table = pa.Table.from_pylist(rows, schema=RENDERED_SCHEMA)
    digest = hashlib.sha256("\n".join(sorted(r["sketch_id"] + r["png_sha256"] for r in rows))
                            .encode()).hexdigest()[:12]
    names = "+".join(s.name for s in styles)
    out = workspace.datasets_dir / DATASETS_SUBDIR / f"{names}-{digest}.parquet"
    storage.write_parquet_atomic(table, out)
    return out, table.num_rows
