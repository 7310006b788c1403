"""The texture of a drawing: Gram matrices of an ImageNet network's first blocks.

The validate stage's style judge reads the image encoder's pooled features, and a judge made
of Gram matrices of its first blocks (benchmarks/style_judge.py --features gram-effnet)
calls almost every sketch of the third `cpu` bridge "cufsf-artist": its grain and hatching
are not the smooth shading of the CUHK drawings, whatever style it was asked for (README).
The critic judges patches against one style's real drawings of one population; a Gram
matrix is orderless, so it compares pencil texture without the face's layout, i.e. without
the people each artist drew (neural style transfer's style loss, Gatys et al. 2016). The
network is EfficientNet-Lite0, the image encoder that ships offline; it reads the 112-px
sketch as it is (its first blocks are convolutions, so no resize to its 224-px input).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from tasks.encoders.effnet import EffNetLite0Encoder

# Blocks whose outputs give the Gram matrices: 16 channels at 1/2, 24 at 1/4, 40 at 1/8.
TEXTURE_BLOCKS = (0, 2, 4)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class TextureFeatures(nn.Module):
    """Frozen EfficientNet-Lite0 stem and first blocks, in eval mode whatever the caller's."""

    def __init__(self, model: nn.Module | None = None,
                 blocks: tuple[int, ...] = TEXTURE_BLOCKS):
        super().__init__()
        self.texture_blocks = tuple(blocks)
        if model is None:
            model = EffNetLite0Encoder(device="cpu").model
        model = model.float().to(memory_format=torch.contiguous_format)
        self.stem, self.bn0, self.swish = model._conv_stem, model._bn0, model._swish
        self.blocks = nn.ModuleList(model._blocks[:max(self.texture_blocks) + 1])
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        super().train(False)

    def train(self, mode: bool = True) -> TextureFeatures:
        return super().train(False)  # BatchNorm statistics stay ImageNet's

    def activations(self, sketch: torch.Tensor) -> Iterator[torch.Tensor]:
        """(B, 1, H, W) grey in [-1, 1] -> each texture block's output, in order."""
        x = ((sketch.float() + 1.0) / 2.0).expand(-1, 3, -1, -1)
        x = self.swish(self.bn0(self.stem((x - self.mean) / self.std)))
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.texture_blocks:
                yield x

    def grams(self, sketch: torch.Tensor) -> list[torch.Tensor]:
        """One (B, C, C) Gram matrix per texture block."""
        return [gram_matrix(x) for x in self.activations(sketch)]


def gram_matrix(activations: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) channel co-activations averaged over positions."""
    flat = activations.flatten(2)
    return flat @ flat.transpose(1, 2) / flat.shape[2]


def texture_distance(drawn: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
    """Mean over blocks of ||G - G*||^2 / ||G*||^2 per item: scale-free across blocks, so no
    block's larger activations outweigh the others."""
    terms = []
    for g, t in zip(drawn, target, strict=True):
        t = t.detach()
        terms.append((g - t).square().mean(dim=(1, 2))
                     / t.square().mean(dim=(1, 2)).clamp_min(1e-8))
    return torch.stack(terms).mean(dim=0).mean()
