"""open_clip image and text encoders, built from a local checkpoint and an optional JSON config.

No CLIP weights ship offline, so ``weights`` must be a local ``.pt``/``.pth``/``.bin`` or
``.safetensors`` file (read with ``weights_only=True`` by open_clip); pretrained *tags*
such as ``"openai"`` would download and are refused. ``random_init=True`` builds an untrained
model for tests. ``config`` registers a JSON architecture with ``open_clip.add_model_config``
(configs as data, like the style registry): its file stem becomes the arch name, so a
custom ``my-clip.json`` is used with ``arch="my-clip"`` or with ``arch`` left out.

Offline tokenizers: architectures whose ``text_cfg`` has no ``hf_tokenizer_name`` use
open_clip's ``SimpleTokenizer``, whose BPE vocabulary ships inside the wheel, so they work
offline: RN50/RN101 (and -quickgelu), every ``ViT-*`` (e.g. the default ViT-B-32,
ViT-B-16, ViT-L-14, ViT-H-14, ViT-bigG-14), ``convnext_*``, ``coca_*``, EVA and
MobileCLIP. Architectures with a Hugging Face text tower or tokenizer (``xlm-roberta-*``,
``mt5-*``, ``roberta-*``, ``nllb-*``, every SigLIP/SigLIP2) need files from the hub and are
refused up front unless the config points ``hf_tokenizer_name`` / ``hf_model_name`` at a
local directory. Both encoders check this, because open_clip builds the text tower even
when only images are encoded.

The image and text encoders of one checkpoint share a single loaded model (a small cache
keyed on the weights' digest), so a worker holds one copy.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.encoders.base import EncoderError, check_face_batch, file_digest, l2_normalise

DEFAULT_ARCH = "ViT-B-32"


def register_config(config: str | Path) -> list[str]:
    """Validate and register JSON model config(s); returns the arch names they define."""
    import open_clip

    path = Path(config)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise EncoderError(f"open_clip config not found: {path}")
    for file in files:
        try:
            cfg = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise EncoderError(f"cannot read open_clip config {file}: {exc}") from exc
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
        if missing:
            # open_clip would skip such a file silently and then report an unknown model.
            raise EncoderError(f"open_clip config {file} lacks {', '.join(missing)}")
    open_clip.add_model_config(path)
    return [f.stem for f in files]


def _needs_hub(arch: str, cfg: dict[str, Any]) -> str | None:
    """Name the hub-only piece of an arch (HF tokenizer or text tower), if any."""
    text = cfg.get("text_cfg", {})
    for key in ("hf_model_name", "hf_tokenizer_name"):
        name = text.get(key)
        if name and not Path(name).is_dir():
            return f"{key}={name!r}"
    if "siglip" in arch.lower() and not text.get("hf_tokenizer_name"):
        return "the SigLIP tokenizer"
    vision = cfg.get("vision_cfg", {})
    if vision.get("timm_model_pretrained"):
        return f"timm pretrained weights for {vision.get('timm_model_name')!r}"
    return None


@functools.lru_cache(maxsize=2)
def _load(
    arch: str, weights: str | None, digest: str | None, device: str, seed: int, cfg_key: str
) -> tuple[Any, Any, Any]:
    """(model, preprocess, tokenizer); ``digest`` and ``cfg_key`` (the arch's JSON config)
    are only in the cache key, so an edited weights file or a re-registered config reloads."""
    import open_clip
    import torch

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=weights, device=device
            )
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as exc:  # open_clip raises RuntimeError/KeyError/ValueError alike
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EncoderError(f"open_clip cannot build {arch} from {weights}: {first}") from exc
    return model.eval(), preprocess, tokenizer


class _OpenClip:
    name = "open_clip"

    def __init__(
        self,
        arch: str | None = None,
        weights: str | Path | None = None,
        config: str | Path | None = None,
        device: str | None = None,
        batch_size: int = 64,
        random_init: bool = False,
        seed: int = 0,
    ) -> None:
        import open_clip
        import torch

        if config is not None:
            defined = register_config(config)
            arch = arch or (defined[0] if len(defined) == 1 else None)
        arch = arch or DEFAULT_ARCH
        cfg = open_clip.get_model_config(arch)
        if cfg is None:
            raise EncoderError(
                f"unknown open_clip arch {arch!r}; pass config=PATH to a JSON model config "
                f"or one of: {', '.join(open_clip.list_models()[:12])} ..."
            )
        hub_part = _needs_hub(arch, cfg)
        if hub_part:
            raise EncoderError(f"open_clip {arch} needs {hub_part} from the model hub (offline)")
        if weights is None and not random_init:
            raise EncoderError(
                f"open_clip {arch} needs weights=PATH to a local .pt/.safetensors checkpoint; "
                "no CLIP weights ship offline (random_init=True gives an untrained model, "
                "for tests only)"
            )
        if weights is not None and not Path(weights).is_file():
            raise EncoderError(
                f"open_clip weights must be a local file, not found: {weights} "
                "(pretrained tags would download from the hub)"
            )
        if batch_size < 1:
            raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        path = str(Path(weights).resolve()) if weights is not None else None
        digest = file_digest(path) if path else None
        cfg_key = json.dumps(cfg, sort_keys=True)
        self.model, self.preprocess, self.tokenizer = _load(
            arch, path, digest, str(self.device), seed, cfg_key
        )
        self.arch = arch
        self.dim = int(cfg["embed_dim"])
        self.batch_size = batch_size
        self.version = f"open_clip-{arch}@{digest or f'random-{seed}'}"

    def _autocast(self) -> Any:
        import torch

        return torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda")


class OpenClipImageEncoder(_OpenClip):
    """CLIP image embedding of an aligned face, through the model's own eval transform."""

    role = "image"

    def encode(self, batch: np.ndarray) -> np.ndarray:
        import torch
        from PIL import Image

        faces = check_face_batch(batch)
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(faces), self.batch_size):
                chunk = faces[start : start + self.batch_size]
                images = [
                    self.preprocess(Image.fromarray(face[..., ::-1].copy())) for face in chunk
                ]
                x = torch.stack(images).to(self.device)
                with self._autocast():
                    out.append(self.model.encode_image(x).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.concatenate(out))


class OpenClipTextEncoder(_OpenClip):
    """CLIP text embedding of style prompts, tokenised with the arch's own tokenizer."""

    role = "text"

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        import torch

        texts = _check_texts(batch)
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(texts[start : start + self.batch_size]).to(self.device)
                with self._autocast():
                    out.append(self.model.encode_text(tokens).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.concatenate(out))


def _check_texts(batch: Sequence[str]) -> list[str]:
    """A bare string would be split into characters; reject it and non-strings early."""
    if isinstance(batch, str | bytes) or not all(isinstance(t, str) for t in batch):
        raise EncoderError("text encoders take a list of str")
    return list(batch)
