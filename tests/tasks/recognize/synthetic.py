"""A stand-in for the generator's output in tests: rendered sketches in a ``sketches`` table.

Only the columns the recognizer's adapter relies on (sketch_id, face_id, identity_id, style,
png_path relative to the workspace, png_sha256, status), so these tests do not depend on the
generator.
"""

from __future__ import annotations

import hashlib

import cv2
import pyarrow as pa

from tasks import storage
from tasks.faces import crop_stack
from tasks.storage import FACES, Workspace
from tasks.styles.rendering import render


def write_synthetic_sketches(workspace: Workspace, size: int = 64,
                             renderer: str = "pencil-dodge") -> int:
    """One sketch per stored photo (+ one unusable row); returns the usable. Another
    ``renderer`` draws other pixels under the same sketch ids, as another sampling noise
    does."""
    faces = storage.read(workspace, FACES, columns=["face_id", "identity_id", "kind"])
    rows = []
    for face, identity, kind in zip(*(faces.column(c).to_pylist() for c in faces.column_names),
                                    strict=True):
        if kind != "photo":
            continue
        sketch = render(renderer, crop_stack(workspace, [face])[0])
        path = f"sketches/test/{face[:16]}.png"
        (workspace.root / path).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(workspace.root / path), cv2.resize(sketch, (size, size)))
        sha = hashlib.sha256((workspace.root / path).read_bytes()).hexdigest()
        rows.append({"sketch_id": f"s-{face[:16]}", "face_id": face, "identity_id": identity,
                     "style": "pencil-dodge", "png_path": path, "png_sha256": sha,
                     "status": "ok"})
    rows.append({**rows[0], "sketch_id": "s-nan", "png_path": None, "png_sha256": None,
                 "status": "nan"})
    storage.upsert(workspace, "sketches", pa.Table.from_pylist(rows), "sketch_id")
    return len(rows) - 1
