"""Saved generators in a workspace, found by folder or by version.

A backfill names the generator the way the dataset names it (its version, as in the
``sketches`` table and the dataset reports); users with a folder elsewhere give the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.generate.saved import (
    MANIFEST_FILE,
    check_recorded_shapes,
    read_manifest,
    verify_files,
)

GENERATORS_DIR = "generators"
DEFAULT_GENERATOR = Path(GENERATORS_DIR) / "default" / "final"


class GeneratorNotFoundError(FileNotFoundError):
    """No saved generator by that path or version."""


def saved_generators(root: Path) -> dict[str, Path]:
    """``{version: folder}`` of every final generator under ``<root>/generators``."""
    found: dict[str, Path] = {}
    for manifest in sorted((root / GENERATORS_DIR).glob(f"*/final/{MANIFEST_FILE}")):
        info: dict[str, Any] = read_manifest(manifest.parent)
        found.setdefault(str(info["version"]), manifest.parent)
    return found


def find_generator(root: Path, given: str | Path | None) -> Path:
    """A generator folder from a path (absolute or relative to the workspace), a version of
    a generator saved in the workspace, or nothing (the default folder)."""
    if given is None:
        return root / DEFAULT_GENERATOR
    path = Path(given).expanduser()
    path = path if path.is_absolute() else root / path
    if path.exists():
        return path.resolve()
    by_version = saved_generators(root)
    if str(given) in by_version:
        return by_version[str(given)]
    known = ", ".join(f"{v} ({p.relative_to(root)})" for v, p in by_version.items())
    known = known or "none (train one with `clip4sketch train-generator`)"
    raise GeneratorNotFoundError(
        f"no generator {str(given)!r}: neither a folder nor the version of a generator saved "
        f"in {root / GENERATORS_DIR}. Saved: {known}"
    )


def trained_styles(generator: Path) -> list[str] | None:
    """The styles a saved generator was trained on (None when it does not say)."""
    import json

    path = generator / "training.json"
    if not path.is_file():
        return None
    return sorted(json.loads(path.read_text(encoding="utf-8")).get("styles", {}))


def checked_generator(path: Path) -> dict[str, Any]:
    """The generator's manifest, after checking every weights file against its sha256 and
    its tensor shapes against its config."""
    manifest = read_manifest(path)
    # The core's own checks (from_pretrained runs them too); run here so a truncated file or
    # weights of another shape fail the flow before planning, from the manifest and the
    # safetensors headers alone: no network is built and torch is not imported.
    verify_files(path, manifest["files"])
    if not check_recorded_shapes(path, manifest):
        # Saved before manifests recorded tensor shapes: only its nets can tell them (built
        # on the meta device, which imports torch and diffusers), so imported only then.
        from tasks.generate.networks import check_weight_shapes

        check_weight_shapes(path)
    return manifest
