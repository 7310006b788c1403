"""AdaFace identity encoder (512-d): the official IR backbones, loaded from a local checkpoint.

The network is rebuilt here with the parameter names of the official repository
(mk-minchul/AdaFace, ``net.py``) so its released ``.ckpt`` files load unchanged:
``input_layer``, ``body.<i>.shortcut_layer`` / ``res_layer``, ``output_layer`` (BatchNorm2d,
Dropout, Flatten, Linear(C*7*7, 512), BatchNorm1d(affine=False)). IR-18/34/50/101 use
``BasicBlockIR``; IR-152/200 use ``BottleneckIR``; ``ir_se_*`` add the SE block.
``ir_tiny`` is not an official model: a narrow one-block-per-stage net for fast tests.

No AdaFace weights ship offline, so a checkpoint path is required (``random_init=True``
exists for tests). Checkpoints are read with ``weights_only=True`` or safetensors, never
unpickled blindly; the official Lightning ``.ckpt`` stores its hyper-parameters as an
``argparse.Namespace``, the one non-tensor type allowed through.

The official inference feeds BGR scaled to [-1, 1]; ingestion already stores BGR, so the
crop is only rescaled, never channel-swapped.
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from tasks.encoders.base import EncoderError, check_face_batch, file_digest, l2_normalise

# arch -> (units per stage, stage widths, SE blocks?)
_STAGES = (64, 128, 256, 512)
_BOTTLENECK_STAGES = (256, 512, 1024, 2048)
ARCHS: dict[str, tuple[tuple[int, ...], tuple[int, ...], bool]] = {
    "ir_tiny": ((1, 1, 1, 1), (8, 16, 32, 64), False),
    "ir_18": ((2, 2, 2, 2), _STAGES, False),
    "ir_34": ((3, 4, 6, 3), _STAGES, False),
    "ir_50": ((3, 4, 14, 3), _STAGES, False),
    "ir_101": ((3, 13, 30, 3), _STAGES, False),
    "ir_152": ((3, 8, 36, 3), _BOTTLENECK_STAGES, False),
    "ir_200": ((3, 24, 36, 3), _BOTTLENECK_STAGES, False),
    "ir_se_50": ((3, 4, 14, 3), _STAGES, True),
    "ir_se_101": ((3, 13, 30, 3), _STAGES, True),
}
_ALIASES = {"ir50": "ir_50", "ir101": "ir_101", "ir_100": "ir_101", "ir18": "ir_18"}
EMBEDDING_DIM = 512
_CONVERT_HINT = (
    'convert it once on a trusted machine: python -c "import torch; '
    "c = torch.load('IN.ckpt', weights_only=False); "
    "torch.save({'state_dict': c['state_dict']}, 'OUT.ckpt')\" and pass weights=OUT.ckpt"
)


@functools.cache
def _nn() -> SimpleNamespace:
    """Define the torch modules on first use, so importing this file does not load torch."""
    import torch
    from torch import nn

    class SEModule(nn.Module):
        def __init__(self, channels: int, reduction: int = 16) -> None:
            super().__init__()
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
            self.relu = nn.ReLU(inplace=True)
            self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
            self.sigmoid = nn.Sigmoid()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scale = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
            return x * scale

    def shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
        if c_in == c_out:
            return nn.MaxPool2d(1, stride)
        return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    class BasicBlockIR(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int, se: bool = False) -> None:
            super().__init__()
            self.shortcut_layer = shortcut(c_in, c_out, stride)
            self.res_layer = nn.Sequential(
                nn.BatchNorm2d(c_in),
                nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.PReLU(c_out),
                nn.Conv2d(c_out, c_out, 3, stride, 1, bias=False),
                nn.BatchNorm2d(c_out),
            )
            if se:
                self.res_layer.add_module("se_block", SEModule(c_out))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.res_layer(x) + self.shortcut_layer(x)

    class BottleneckIR(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int, se: bool = False) -> None:
            super().__init__()
            mid = c_out // 4
            self.shortcut_layer = shortcut(c_in, c_out, stride)
            self.res_layer = nn.Sequential(
                nn.BatchNorm2d(c_in),
                nn.Conv2d(c_in, mid, 1, 1, 0, bias=False),
                nn.BatchNorm2d(mid),
                nn.PReLU(mid),
                nn.Conv2d(mid, mid, 3, 1, 1, bias=False),
                nn.BatchNorm2d(mid),
                nn.PReLU(mid),
                nn.Conv2d(mid, c_out, 1, stride, 0, bias=False),
                nn.BatchNorm2d(c_out),
            )
            if se:
                self.res_layer.add_module("se_block", SEModule(c_out))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.res_layer(x) + self.shortcut_layer(x)

    class Backbone(nn.Module):
        """IR backbone for 112x112 input; forward returns (unit feature, its norm)."""

        def __init__(self, arch: str) -> None:
            super().__init__()
            units, widths, se = ARCHS[arch]
            block = BottleneckIR if widths[-1] > 512 else BasicBlockIR
            self.input_layer = nn.Sequential(
                nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
            )
            modules: list[nn.Module] = []
            c_in = 64
            for count, width in zip(units, widths, strict=True):
                for index in range(count):
                    modules.append(block(c_in, width, 2 if index == 0 else 1, se))
                    c_in = width
            self.body = nn.Sequential(*modules)
            self.output_layer = nn.Sequential(
                nn.BatchNorm2d(c_in),
                nn.Dropout(0.4),
                nn.Flatten(),
                nn.Linear(c_in * 7 * 7, EMBEDDING_DIM),
                nn.BatchNorm1d(EMBEDDING_DIM, affine=False),
            )
            _initialise(self.modules())

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.output_layer(self.body(self.input_layer(x)))
            norm = torch.norm(x, 2, 1, True)
            return x / norm, norm

    def _initialise(modules: Any) -> None:
        # The official kaiming init; only matters for random-init test models.
        for module in modules:
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    return SimpleNamespace(Backbone=Backbone)


def resolve_arch(arch: str) -> str:
    key = _ALIASES.get(arch.lower(), arch.lower())
    if key not in ARCHS:
        raise EncoderError(f"unknown AdaFace arch {arch!r}; known: {', '.join(ARCHS)}")
    return key


def build_model(arch: str = "ir_50") -> Any:
    """An AdaFace backbone with official parameter names (random weights)."""
    return _nn().Backbone(resolve_arch(arch))


def guess_arch(state_dict: dict[str, Any]) -> str | None:
    """Name the arch whose block count matches a checkpoint, for error messages."""
    blocks = {int(k.split(".")[1]) for k in state_dict if k.startswith("body.")}
    se = any(".se_block." in k for k in state_dict)
    count = max(blocks) + 1 if blocks else 0
    for name, (units, _, uses_se) in ARCHS.items():
        if sum(units) == count and uses_se == se and name != "ir_tiny":
            return name
    return None


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Tensors from an official ``.ckpt``, a bare state_dict or a ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise EncoderError(f"AdaFace weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(path))
        except Exception as exc:
            raise EncoderError(f"cannot read safetensors file {path}: {exc}") from exc
    else:
        raw = _torch_load(path)
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not raw:
        raise EncoderError(f"{path} holds no state_dict (got {type(raw).__name__})")
    if any(str(k).startswith("model.") for k in raw):
        # Official Lightning layout: backbone under "model.", margin head under "head.".
        raw = {k[6:]: v for k, v in raw.items() if k.startswith("model.")}
    return raw


def _torch_load(path: Path) -> Any:
    import argparse
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise EncoderError(
            f"{path} holds objects other than tensors, so it is not loaded "
            f"(weights_only=True): {str(exc).splitlines()[0]}. If you trust the file, "
            + _CONVERT_HINT
        ) from exc
    except Exception as exc:  # truncated or not a torch file at all
        raise EncoderError(f"cannot read AdaFace checkpoint {path}: {exc}") from exc


def load_weights(model: Any, state_dict: dict[str, Any], arch: str) -> None:
    """Strict load with an error that names keys and the arch instead of a torch traceback."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(getattr(state_dict[k], "shape", ())) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        guess = guess_arch(state_dict)
        hint = f"; the checkpoint looks like {guess}" if guess and guess != arch else ""
        parts = [
            f"{label} {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", mismatched),
            )
            if keys
        ]
        raise EncoderError(f"checkpoint does not fit AdaFace {arch}: {'; '.join(parts)}{hint}")
    model.load_state_dict(state_dict, strict=True)


class AdaFaceEncoder:
    """AdaFace IR backbone in torch; CUDA with float16 autocast when present, else CPU."""

    name = "adaface"
    role = "identity"
    dim = EMBEDDING_DIM

    def __init__(
        self,
        weights: str | Path | None = None,
        arch: str = "ir_50",
        device: str | None = None,
        batch_size: int = 64,
        random_init: bool = False,
        seed: int = 0,
    ) -> None:
        import torch

        self.arch = resolve_arch(arch)
        if weights is None and not random_init:
            raise EncoderError(
                "AdaFace needs weights=PATH to an official .ckpt; no weights ship offline "
                "(random_init=True gives an untrained model, for tests only)"
            )
        if batch_size < 1:
            raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
        if weights is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build_model(self.arch)
            self.version = f"adaface-{self.arch}@random-{seed}"
        else:
            model = build_model(self.arch)
            load_weights(model, read_state_dict(weights), self.arch)
            self.version = f"adaface-{self.arch}@{file_digest(weights)}"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.batch_size = batch_size

    def encode(self, batch: np.ndarray) -> np.ndarray:
        import torch

        faces = check_face_batch(batch)
        out: list[np.ndarray] = []
        use_amp = self.device.type == "cuda"
        with torch.inference_mode():
            for start in range(0, len(faces), self.batch_size):
                chunk = torch.from_numpy(faces[start : start + self.batch_size]).to(self.device)
                # BGR kept as is (the official input order); [0, 255] -> [-1, 1], NHWC -> NCHW.
                x = (chunk.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
                with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                    feature, _ = self.model(x)
                out.append(feature.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.concatenate(out))
