"""The start renders the style contract compares a lone drawing with, and the render control.

A bridge generator starts every sketch from an image of the mugshot: its config's
``formulation.start``, a renderer such as "pencil-dodge" or "grey" (the photo's luma). A
noise-start generator's config keeps the default "grey": the photo it drew from. A drawing
the style judge scores no higher for its style than that image has not been drawn in the
style, so a face drawn in one style only is compared with it (``tasks.validate.pairs``), and
the judge's scores on the start renders of a version's faces are the report's render
control: what a style's score is before anything was drawn.

Renders are made as the generator makes its start image (``tasks.generate.inputs``, at the
sketches' size) and read back into the aligned frame as a sketch PNG of that size is, then
encoded by the image encoder the sketches were encoded with. Their vectors are cached per
(start, size, encoder version) under ``<workspace>/validation/start-renders/`` by face id (a
face id is the hash of its photo), so a night encodes the renders of its new faces only.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from schemas.vectors import VectorTable
from tasks import storage
from tasks.faces import read_crops, to_aligned
from tasks.generate.catalog import saved_generators
from tasks.generate.config import CONFIG_DIR
from tasks.generate.formulations import GREY_START, known_starts
from tasks.generate.inputs import start_images
from tasks.generate.saved import CONFIG_FILE, GeneratorLoadError
from tasks.storage import Workspace
from tasks.validate.pairs import RenderKey
from tasks.validate.vectors import checked_encoder

CODE_VERSION = "start-render-1"
CACHE_DIR = "validation/start-renders"
ENCODE_CHUNK = 64


def _config_start(path: Path) -> str | None:
    """``formulation.start`` of a generator config file, read as JSON (not as the current
    config model, which may have gained fields the saved file predates)."""
    try:
        formulation = json.loads(path.read_text(encoding="utf-8")).get("formulation", {})
        start = str(formulation.get("start", GREY_START))
    except (OSError, ValueError, AttributeError):
        return None
    return start if start in known_starts() else None


def generator_start(version: str, config_name: str, saved: Mapping[str, Path]) -> str | None:
    """The start image of the generator that drew ``version``: its saved config in the
    workspace, else the bundled config it was built from (by the name its sketches record);
    None when neither is there."""
    paths = [saved[version] / CONFIG_FILE] if version in saved else []
    if config_name and Path(config_name).name == config_name:  # a bare name, not a path
        paths.append(CONFIG_DIR / f"{config_name}.json")
    for path in paths:
        if (start := _config_start(path)) is not None:
            return start
    return None


def generator_starts(root: Path, generators: Iterable[tuple[str, str]]) -> dict[str, str | None]:
    """``{generator version: start image or None}`` for (version, config name) pairs."""
    try:
        saved = saved_generators(root)
    except GeneratorLoadError:
        saved = {}  # a damaged generator folder: the bundled configs still say
    return {version: generator_start(version, name, saved)
            for version, name in sorted(set(generators))}


def render_pixels(crops: np.ndarray, start: str, size: int) -> np.ndarray:
    """uint8 (N, 112, 112, 3): the start images at ``size``, put back into the aligned frame
    the way validation reads a ``size``-px sketch PNG."""
    unit = start_images(crops, start, size)[:, 0]
    grey = np.clip(np.rint((unit + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.stack([to_aligned(g) for g in grey])


def _cache_path(workspace: Workspace, start: str, size: int, image: VectorTable) -> Path:
    key = json.dumps({"code": CODE_VERSION, "start": start, "size": size,
                      "encoder": image.version}, sort_keys=True)
    return workspace.root / CACHE_DIR / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as stored:
            return dict(zip(stored["ids"].tolist(), stored["vectors"], strict=True))
    except (OSError, ValueError, KeyError):
        return {}  # missing or damaged: encoded again, not trusted


def _write(path: Path, vectors: Mapping[str, np.ndarray]) -> None:
    ids = sorted(vectors)
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(ids), vectors=np.stack([vectors[i] for i in ids]))
    storage.write_bytes_atomic(buffer.getvalue(), path)


def _encode(workspace: Workspace, start: str, size: int, faces: Sequence[str],
            image: VectorTable) -> dict[str, np.ndarray]:
    """Start-render vectors of the stored ``faces`` (a face no longer stored has none)."""
    crops = read_crops(workspace, faces)
    present = [face for face in faces if face in crops]
    if not present:
        return {}
    encoder = checked_encoder(image)
    out: dict[str, np.ndarray] = {}
    for begin in range(0, len(present), ENCODE_CHUNK):
        part = present[begin:begin + ENCODE_CHUNK]
        pixels = render_pixels(np.stack([crops[face] for face in part]), start, size)
        out.update(zip(part, np.asarray(encoder.encode(pixels), np.float32), strict=True))
    return out


def render_vectors(workspace: Workspace, wanted: Iterable[RenderKey],
                   image: VectorTable) -> dict[RenderKey, np.ndarray]:
    """Image vectors of the start renders ``wanted`` ((face, start, size)), encoding only
    those not cached yet."""
    faces: dict[tuple[str, int], set[str]] = defaultdict(set)
    for face, start, size in wanted:
        faces[(start, size)].add(face)
    found: dict[RenderKey, np.ndarray] = {}
    for (start, size), ids in sorted(faces.items()):
        path = _cache_path(workspace, start, size, image)
        cached = _read(path)
        missing = sorted(ids - set(cached))
        encoded = _encode(workspace, start, size, missing, image) if missing else {}
        if encoded:
            cached.update(encoded)
            _write(path, cached)
        found.update({(face, start, size): cached[face] for face in ids if face in cached})
    return found
