"""Recognizers as evaluation sees them: "baseline" (the identity encoder) or a trained dir.

A trained recognizer dir holds ``recognizer.json`` (what it is and what it was trained on)
and ``recognizer.safetensors`` (the inference weights only). Kinds:

* ``head``: a ProjectionHead over frozen identity-encoder vectors.
* ``procrustes`` / ``adapter``: a map applied to the *sketch* side only (faces stored with
  kind ``sketch``); photos keep the frozen encoder's vectors (``sketch_side.py``).
* ``encoder``: SFace's first blocks retrained on sketch images (``sketch_encoder.py``);
  sketches are embedded from their crops by that branch, photos keep the frozen encoder's
  vectors.
* ``backbone``: an AdaFace IR backbone that embeds aligned crops itself.

A kind over encoder vectors only means something for the exact encoder version it was
trained on, so loading it with another version (other weights, other preprocessing) is
refused with a message naming both.

Every recognizer answers ``embed(workspace, face_ids) -> unit vectors`` for faces stored in
the workspace, so evaluation never cares which kind it holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from schemas.encoders import EncoderSpec
from tasks.encoders import load
from tasks.encoders.adaface import build_model
from tasks.faces import crop_stack, encoder_vectors, rows_by_id
from tasks.recognize.sketch_encoder import ENCODER_MODE, build_sketch_encoder, embed_crops
from tasks.recognize.sketch_side import build_sketch_module
from tasks.storage import FACES, Workspace

CONFIG_FILE = "recognizer.json"
WEIGHTS_FILE = "recognizer.safetensors"
FORMAT = "clip4sketch-recognizer/1"
BASELINE = "baseline"


class RecognizerError(ValueError):
    """A recognizer dir that cannot be used as asked (missing, malformed, mismatched)."""


class Recognizer(Protocol):
    name: str
    version: str

    def embed(self, workspace: Workspace, face_ids: Sequence[str],
              run_id: str = "local") -> np.ndarray: ...


@dataclass
class EncoderRecognizer:
    """The off-the-shelf identity encoder: the baseline every trained recognizer must beat."""

    spec: EncoderSpec
    name: str = BASELINE

    def __post_init__(self) -> None:
        self.encoder = load(self.spec)
        self.version = self.encoder.version

    def embed(self, workspace: Workspace, face_ids: Sequence[str],
              run_id: str = "local") -> np.ndarray:
        return encoder_vectors(workspace, self.encoder, face_ids, run_id)


def weights_digest(path: Path) -> str:
    return _sha256(path)[:12]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_config(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory).expanduser()
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise RecognizerError(
            f"{directory} is not a trained recognizer: {CONFIG_FILE} is missing "
            f"(train one with train_recognizer, or pass '{BASELINE}')")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RecognizerError(f"{path} is not valid JSON: {error}") from error
    if config.get("format") != FORMAT:
        raise RecognizerError(f"{path}: format {config.get('format')!r}, expected {FORMAT!r}")
    if not (directory / WEIGHTS_FILE).is_file():
        raise RecognizerError(f"{directory}: {WEIGHTS_FILE} is missing")
    return config


# read frozen identity-encoder vectors (``encoder`` for its photos, and its branch is built
# from that encoder's weights)
VECTOR_MODES = ("head", "procrustes", "adapter", ENCODER_MODE)
SKETCH_SIDE = "sketch"


def build_module(config: dict[str, Any]) -> Any:
    """The inference module a config describes, with random weights (load them after)."""
    if config["mode"] in ("procrustes", "adapter"):
        return build_sketch_module(config)
    if config["mode"] == "head":
        # Imported here, not at the top: tasks.recognize.losses loads torch.
        from tasks.recognize.losses import ProjectionHead

        return ProjectionHead(config["in_dim"], config["out_dim"], config.get("hidden"))
    if config["mode"] == "backbone":
        return build_model(config["arch"])
    raise RecognizerError(f"unknown recognizer mode {config['mode']!r}")


@dataclass
class TrainedRecognizer:
    """A trained head or backbone, loaded from its dir (safetensors, never unpickled)."""

    directory: Path
    config: dict[str, Any]
    module: Any
    base: EncoderRecognizer | None
    name: str
    version: str
    device: str = "cpu"
    batch_size: int = 256

    def embed(self, workspace: Workspace, face_ids: Sequence[str],
              run_id: str = "local") -> np.ndarray:
        import torch

        face_ids = list(face_ids)
        # A head reads encoder vectors, fetched (and computed if missing) once for all ids.
        inputs = self.base.embed(workspace, face_ids, run_id) if self.base else None
        if self.config.get("applies_to") == SKETCH_SIDE:
            return self._embed_sketch_side(workspace, face_ids, inputs)
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(face_ids), self.batch_size):
                if inputs is not None:
                    x = torch.from_numpy(inputs[start:start + self.batch_size])
                else:
                    x = crops_to_tensor(crop_stack(workspace,
                                                   face_ids[start:start + self.batch_size]))
                vectors, _ = self.module(x.to(self.device))
                out.append(vectors.float().cpu().numpy())
        dim = self.config["out_dim"] if self.base is not None else self.config["embedding_dim"]
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)

    def _embed_sketch_side(self, workspace: Workspace, face_ids: list[str],
                           inputs: np.ndarray) -> np.ndarray:
        """Map stored sketches; return photos' encoder vectors unchanged (unit length)."""
        import torch

        kinds = rows_by_id(workspace, FACES, "face_id", face_ids, ["kind"])
        sketch = np.array([kinds.get(f, {}).get("kind") == "sketch" for f in face_ids], bool)
        out = inputs / np.maximum(np.linalg.norm(inputs, axis=1, keepdims=True), 1e-12)
        rows = np.flatnonzero(sketch)
        if self.config["mode"] == ENCODER_MODE:
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                crops = crop_stack(workspace, [face_ids[i] for i in chunk])
                out[chunk] = embed_crops(self.module, crops, torch.device(self.device))
            return out.astype(np.float32)
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                mapped, _ = self.module(torch.from_numpy(inputs[chunk]).to(self.device))
                out[chunk] = mapped.float().cpu().numpy()
        return out.astype(np.float32)


def crops_to_tensor(crops: np.ndarray) -> Any:
    """uint8 (N, 112, 112, 3) BGR -> float (N, 3, 112, 112) in [-1, 1], AdaFace's input.

    Made contiguous: torch 2.14.1's CPU convolution backward aborts (double free /
    segfault) on the NHWC strides a bare ``permute`` leaves.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    return ((x / 255.0 - 0.5) / 0.5).contiguous()


def load_recognizer(ref: str, identity_encoder: EncoderSpec | None = None,
                    device: str | None = None) -> Recognizer:
    """``"baseline"`` or a trained recognizer dir.

    A head is checked against the identity encoder it would read: the one saved in its
    config unless ``identity_encoder`` overrides it, and the loaded version must equal the
    version it was trained on.
    """
    if ref == BASELINE:
        if identity_encoder is None:
            raise RecognizerError("the baseline needs an identity encoder spec")
        return EncoderRecognizer(identity_encoder)
    directory = Path(ref).expanduser().resolve()
    config = read_config(directory)
    base = None
    if config["mode"] in VECTOR_MODES:
        saved = EncoderSpec(**config["identity_encoder"])
        spec = identity_encoder if identity_encoder is not None else saved
        base = EncoderRecognizer(spec, name=f"{directory.name}-input")
        trained_on = config["identity_encoder_version"]
        if base.version != trained_on:
            raise RecognizerError(
                f"{directory} is a {config['mode']} trained on identity vectors from "
                f"{trained_on!r}, but "
                f"the identity encoder here is {base.version!r} ({spec.label()}); its "
                f"output would be meaningless. Evaluate with the encoder it was trained on "
                f"(same name, arch and weights file), or retrain the head")
    from safetensors.torch import load_file

    weights = directory / WEIGHTS_FILE
    if config.get("weights_sha256") and _sha256(weights) != config["weights_sha256"]:
        raise RecognizerError(f"{weights}: checksum differs from the one {CONFIG_FILE} "
                              "records; the weights were changed or damaged")
    state = load_file(str(weights))
    try:
        if config["mode"] == ENCODER_MODE:
            # the sketch branch is rebuilt from the (version-checked) encoder's weights file
            module = build_sketch_encoder(getattr(base.encoder, "weights", None),
                                          config["blocks"], config.get("hidden"),
                                          config["in_dim"])
            module.load_trainable(state)
        else:
            module = build_module(config)
            module.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as error:
        raise RecognizerError(f"{directory}: weights do not fit its config: {error}") from error
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    module.eval().to(device)
    digest = weights_digest(weights)
    version = f"{config['mode']}-{config.get('loss', '?')}@{digest}"
    return TrainedRecognizer(directory, config, module, base, directory.name, version, device)
