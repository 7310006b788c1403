"""A saved sketch generator on disk: its files, its manifest, and the checks that refuse a
wrong or damaged one, all without building a network or importing torch.

Layout of a saved generator (written by ``SketchGenerator.save_pretrained`` in
``tasks.generate.networks``): ``unet/`` (diffusers' own config and safetensors weights),
``projector.safetensors``, ``head.safetensors`` (configs with a refine head), ``scheduler/``
(the formulation's diffusers scheduler config), ``generator_config.json`` and the manifest
``generator.json``, written last. The manifest records the encoders the generator was trained
with, the sha256 and the tensor shapes of every weights file, so a wrong encoder, a damaged
file or weights of another shape are refused before any sampling work is scheduled: a flow
checks all three here, from JSON and the safetensors headers alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from tasks.digests import sha256_file
from tasks.generate.config import GeneratorConfig

FORMAT_VERSION = 1
UNET_DIR = "unet"
UNET_WEIGHTS = f"{UNET_DIR}/diffusion_pytorch_model.safetensors"
PROJECTOR_WEIGHTS = "projector.safetensors"
HEAD_WEIGHTS = "head.safetensors"
SCHEDULER_DIR = "scheduler"
CONFIG_FILE = "generator_config.json"
MANIFEST_FILE = "generator.json"
# Manifest key: {weights file: {tensor: "AxBxC"}}, the shapes the config's nets have.
SHAPES_KEY = "tensor_shapes"

Shapes = Mapping[str, Mapping[str, Sequence[int]]]


class GeneratorLoadError(ValueError):
    """A saved generator that cannot be used: missing, damaged or inconsistent files."""


class GeneratorMismatchError(GeneratorLoadError):
    """The generator was trained on vectors from other encoders than the pipeline now uses.

    Its vectors would be silently meaningless to the projections, so loading is refused.
    ``roles`` lists the roles that disagree.
    """

    def __init__(self, message: str, roles: list[str]):
        super().__init__(message)
        self.roles = roles


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


def read_manifest(root: str | Path) -> dict[str, Any]:
    """A saved generator's manifest (version, encoders, dims) without touching its weights.

    Lets a flow plan work and check encoders cheaply before a worker loads the model.
    """
    root = Path(root)
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise GeneratorLoadError(f"{root} is not a saved sketch generator (no {MANIFEST_FILE})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise GeneratorLoadError(f"cannot read {path}: {err}") from err
    if manifest.get("format") != FORMAT_VERSION:
        raise GeneratorLoadError(
            f"{path} has format {manifest.get('format')!r}; this code reads {FORMAT_VERSION}"
        )
    return manifest


def write_manifest(root: Path, manifest: Mapping[str, Any]) -> None:
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                      encoding="utf-8")


def read_config(root: Path) -> GeneratorConfig:
    try:
        return GeneratorConfig.model_validate_json((root / CONFIG_FILE).read_text("utf-8"))
    except (OSError, ValueError) as err:
        raise GeneratorLoadError(f"cannot read {root / CONFIG_FILE}: {err}") from err


def verify_files(root: Path, files: Mapping[str, str]) -> None:
    """Check every weights file against the sha256 its manifest recorded (fail before work)."""
    for rel, expected in files.items():
        path = root / rel
        if not path.is_file():
            raise GeneratorLoadError(f"generator at {root} is incomplete: {rel} is missing")
        if sha256_file(path) != expected:
            raise GeneratorLoadError(
                f"generator weights file {path} is corrupted or truncated (sha256 differs from "
                f"{MANIFEST_FILE}); restore it from the original save or a checkpoint"
            )


def check_encoders(
    manifest: Mapping[str, Any], expected: Mapping[str, tuple[int, str | None]]
) -> None:
    """Refuse a generator whose training encoders differ from the pipeline's.

    A version given as None checks the vector size only; a generator that recorded no version
    for a role cannot prove it matches, so it is refused when a version is expected.
    """
    dims = manifest.get("condition_dims", {})
    versions = manifest.get("encoder_versions", {})
    generator = manifest.get("version", "?")
    problems: list[str] = []
    roles: list[str] = []
    for role, (dim, version) in expected.items():
        if role not in dims:
            problems.append(f"{role}: the generator has no {role} condition")
            roles.append(role)
            continue
        found_dim, found_version = int(dims[role]), versions.get(role)
        if int(dim) != found_dim or (version is not None and version != found_version):
            problems.append(
                f"{role}: expected encoder {version} ({dim}-d vectors), generator {generator} "
                f"was trained with {found_version} ({found_dim}-d vectors)"
            )
            roles.append(role)
    if problems:
        raise GeneratorMismatchError(
            "generator does not match the configured encoders:\n  " + "\n  ".join(problems)
            + "\nRe-embed the mugshots with the generator's encoders, or retrain the generator "
            "on vectors from the configured encoders.",
            roles,
        )


# --------------------------------------------------------------------------- tensor shapes


def shapes_record(shapes: Shapes) -> dict[str, dict[str, str]]:
    """Shapes as the manifest keeps them: one short string a tensor ("320x4x3x3")."""
    return {rel: {name: "x".join(str(int(d)) for d in shape) for name, shape in files.items()}
            for rel, files in shapes.items()}


def recorded_shapes(manifest: Mapping[str, Any]) -> dict[str, dict[str, tuple[int, ...]]] | None:
    """The tensor shapes the manifest recorded at save time; None for a generator saved
    before manifests recorded them."""
    record = manifest.get(SHAPES_KEY)
    if not isinstance(record, Mapping):
        return None
    try:
        return {rel: {name: tuple(int(d) for d in str(shape).split("x") if d)
                      for name, shape in files.items()}
                for rel, files in record.items()}
    except (AttributeError, ValueError) as err:
        raise GeneratorLoadError(f"{MANIFEST_FILE} has a malformed {SHAPES_KEY}: {err}") from err


def stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header (the tensors themselves are not read)."""
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except (OSError, SafetensorError) as err:
        raise GeneratorLoadError(f"cannot read the tensor list of {path}: {err}") from err


def check_shapes(root: Path, expected: Shapes, config_name: str) -> None:
    """Refuse weights files whose tensors are not the ``expected`` ones (names and shapes).

    Checksums prove a file is the one the manifest names, not that it belongs to this
    config (a unet file copied from another generator, with the manifest rewritten); this
    reads only the safetensors headers.
    """
    problems: list[str] = []
    for rel, wanted in expected.items():
        found = stored_shapes(root / rel)
        wanted = {k: tuple(v) for k, v in wanted.items()}
        missing = sorted(set(wanted) - set(found))
        extra = sorted(set(found) - set(wanted))
        wrong = [f"{k} is {list(found[k])}, the config expects {list(wanted[k])}"
                 for k in sorted(set(wanted) & set(found)) if found[k] != wanted[k]]
        for label, names in (("lacks", missing), ("has tensors the config does not make",
                                                     extra)):
            if names:
                problems.append(f"{rel} {label}: {', '.join(names[:3])}"
                                + (f" and {len(names) - 3} more" if len(names) > 3 else ""))
        if wrong:
            problems.append(f"{rel}: {'; '.join(wrong[:3])}"
                            + (f"; and {len(wrong) - 3} more tensors differ"
                               if len(wrong) > 3 else ""))
    if problems:
        raise GeneratorLoadError(
            f"generator at {root}: its weights do not fit its config {config_name!r} "
            f"({CONFIG_FILE}):\n  " + "\n  ".join(problems)
            + "\nThe weights come from a generator of another shape: save the generator "
            "again, or restore all of its files from the same save or checkpoint."
        )


def check_recorded_shapes(root: str | Path, manifest: Mapping[str, Any]) -> bool:
    """Check the weights' headers against the shapes the manifest recorded; False (nothing
    checked) for a generator saved before manifests recorded shapes, whose shapes only its
    nets can tell (``tasks.generate.networks.check_weight_shapes``)."""
    expected = recorded_shapes(manifest)
    if expected is None:
        return False
    check_shapes(Path(root), expected, str(manifest.get("config_name", "?")))
    return True
