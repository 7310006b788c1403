"""Margin-based classification heads (AdaFace, ArcFace, CosFace) and the projection head.

All heads share the call ``head(embeddings, norms, labels) -> logits``: ``embeddings`` are
L2-normalised (B, D), ``norms`` the pre-normalisation feature norms (B, 1) and ``labels`` class
indices (B,). The logits are already scaled by ``s`` and go straight into
``torch.nn.functional.cross_entropy``. This is the interface of the official AdaFace code
(mk-minchul/AdaFace, head.py), kept so a backbone trained there drops in here unchanged.

Differences from the official head, all deliberate:

* The margin is applied to the target column only (gather, modify, scatter) instead of
  building one-hot (B, C) margin matrices and taking ``acos`` of every logit. The result is
  the same; it avoids B x C transcendental calls when C is tens of thousands of identities,
  and non-target logits are exactly ``s * cos`` rather than ``s * cos(acos(cos))``.
* AdaFace's running norm statistics update only in training mode, as BatchNorm's do, so
  evaluating a held-out batch does not shift the margin that training will use next.
* A batch of one leaves the running std untouched: the unbiased std of one value is NaN, and
  the official code would carry that NaN into every later margin.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "HEADS",
    "AdaFaceHead",
    "ArcFaceHead",
    "CosFaceHead",
    "MarginHead",
    "ProjectionHead",
    "make_head",
]


class MarginHead(nn.Module):
    """Class centres on the unit sphere and the cosine to them; subclasses add the margin."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, eps: float = 1e-3):
        super().__init__()
        if embedding_dim < 1 or num_classes < 2:
            raise ValueError(
                f"need embedding_dim >= 1 and num_classes >= 2, got {embedding_dim}, {num_classes}"
            )
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.s = float(s)
        # Keeps cosines off +-1, where acos has an infinite gradient (official value).
        self.eps = float(eps)
        # (D, C) like the official head, so its kernels load as they are; the official init
        # (uniform, then every column rescaled to unit norm) gives random unit class centres.
        self.kernel = nn.Parameter(torch.empty(embedding_dim, num_classes))
        with torch.no_grad():
            self.kernel.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def cosine(self, embeddings: Tensor) -> Tensor:
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_dim:
            raise ValueError(
                f"expected embeddings (B, {self.embedding_dim}), got {tuple(embeddings.shape)}"
            )
        kernel = F.normalize(self.kernel, dim=0)
        return (embeddings @ kernel).clamp(-1 + self.eps, 1 - self.eps)

    def _with_target(self, cosine: Tensor, labels: Tensor, new_target: Tensor) -> Tensor:
        """Scaled logits with the target column replaced; out-of-place so autograd sees it."""
        return cosine.scatter(1, labels.view(-1, 1), new_target) * self.s

    @staticmethod
    def _target(cosine: Tensor, labels: Tensor) -> Tensor:
        if labels.ndim != 1 or labels.shape[0] != cosine.shape[0]:
            raise ValueError(f"expected labels ({cosine.shape[0]},), got {tuple(labels.shape)}")
        return cosine.gather(1, labels.view(-1, 1))

    def extra_repr(self) -> str:
        return f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, s={self.s}"


class ArcFaceHead(MarginHead):
    """Additive angular margin: target logit ``s * cos(theta + m)``.

    Like the AdaFace repository's ArcFace (and unlike insightface's ``th``/``mm`` fallback), the
    angle is clipped at pi - eps instead of switching to a CosFace-like penalty past pi - m;
    with normalised features that region is rarely reached after the first iterations.
    """

    def __init__(self, embedding_dim: int, num_classes: int, m: float = 0.5, s: float = 64.0):
        super().__init__(embedding_dim, num_classes, s=s)
        self.m = float(m)

    def forward(self, embeddings: Tensor, norms: Tensor | None, labels: Tensor) -> Tensor:
        cosine = self.cosine(embeddings)
        theta = self._target(cosine, labels).acos()
        target = (theta + self.m).clamp(self.eps, math.pi - self.eps).cos()
        return self._with_target(cosine, labels, target)


class CosFaceHead(MarginHead):
    """Additive cosine margin: target logit ``s * (cos(theta) - m)``."""

    def __init__(self, embedding_dim: int, num_classes: int, m: float = 0.35, s: float = 64.0):
        super().__init__(embedding_dim, num_classes, s=s)
        self.m = float(m)

    def forward(self, embeddings: Tensor, norms: Tensor | None, labels: Tensor) -> Tensor:
        cosine = self.cosine(embeddings)
        target = self._target(cosine, labels) - self.m
        return self._with_target(cosine, labels, target)


class AdaFaceHead(MarginHead):
    """AdaFace (Kim et al., CVPR 2022): the margin adapts to image quality, read from the norm.

    A feature norm above the running batch mean (a clear, high-quality face) gives a positive
    ``margin_scaler``: the angular margin ``-m * scaler`` turns negative and the additive margin
    ``m + m * scaler`` grows, which concentrates the loss on hard samples of good quality. A low
    norm (blurred or unrecognisable input) gives ``scaler -> -1``, i.e. plain ArcFace with margin
    ``m``, which de-emphasises hard samples that may carry no identity at all. At ``scaler = 0``
    the head is CosFace with margin ``m``.

    The running mean/std (EMA with ``t_alpha``) start at the official 20 / 100, values suited to
    an IR backbone's raw feature norms. A head on top of normalised encoder vectors sees norms
    near 1 and needs some hundred steps (at t_alpha=0.01) for the statistics to settle; until
    then the margin stays near the CosFace case.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        m: float = 0.4,
        h: float = 0.333,
        s: float = 64.0,
        t_alpha: float = 0.01,
        init_mean: float = 20.0,
        init_std: float = 100.0,
    ):
        super().__init__(embedding_dim, num_classes, s=s)
        self.m = float(m)
        self.h = float(h)
        self.t_alpha = float(t_alpha)
        self.batch_mean: Tensor
        self.batch_std: Tensor
        self.register_buffer("batch_mean", torch.full((1,), float(init_mean)))
        self.register_buffer("batch_std", torch.full((1,), float(init_std)))

    @staticmethod
    def _safe_norms(norms: Tensor) -> Tensor:
        # detached: the margin reads the norm as a quality signal, it must not train it
        return norms.detach().reshape(-1, 1).clamp(0.001, 100)

    @torch.no_grad()
    def update_statistics(self, norms: Tensor) -> None:
        safe = self._safe_norms(norms)
        a = self.t_alpha
        self.batch_mean.mul_(1 - a).add_(a * safe.mean())
        if safe.shape[0] > 1:
            self.batch_std.mul_(1 - a).add_(a * safe.std())

    def margins(self, norms: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(margin_scaler, g_angular, g_add), each (B, 1), from the current statistics."""
        safe = self._safe_norms(norms)
        scaler = (safe - self.batch_mean) / (self.batch_std + self.eps) * self.h
        scaler = scaler.clamp(-1, 1)
        return scaler, -self.m * scaler, self.m + self.m * scaler

    def forward(self, embeddings: Tensor, norms: Tensor, labels: Tensor) -> Tensor:
        if norms is None:
            raise ValueError("AdaFace needs the feature norms (B, 1) as its quality signal")
        cosine = self.cosine(embeddings)
        if norms.numel() != cosine.shape[0]:
            raise ValueError(f"expected {cosine.shape[0]} norms, got {tuple(norms.shape)}")
        if self.training:
            self.update_statistics(norms)  # official order: update, then use
        _, g_angular, g_add = self.margins(norms)
        theta = self._target(cosine, labels).acos()
        target = (theta + g_angular).clamp(self.eps, math.pi - self.eps).cos() - g_add
        return self._with_target(cosine, labels, target)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}, h={self.h}, t_alpha={self.t_alpha}"


HEADS: dict[str, type[MarginHead]] = {
    "adaface": AdaFaceHead,
    "arcface": ArcFaceHead,
    "cosface": CosFaceHead,
}


def make_head(name: str, embedding_dim: int, num_classes: int, **kwargs: float) -> MarginHead:
    """Build a head by name; keyword options (m, s, h, t_alpha) go to its constructor."""
    try:
        cls = HEADS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown head {name!r}; known: {', '.join(sorted(HEADS))}") from None
    return cls(embedding_dim, num_classes, **kwargs)


class ProjectionHead(nn.Module):
    """Trainable map from frozen encoder vectors to (normalised embedding, norm).

    This is the CPU-default recognizer: the encoder stays frozen and only this head learns to
    pull sketches towards their mugshots. It starts as the identity (when in_dim == out_dim;
    an isometry when out_dim > in_dim), so the untrained model *is* the off-the-shelf encoder.
    That makes "trained vs off-the-shelf" comparisons measure what training added rather than
    what a random projection destroyed, and lets a short or failed training run degrade
    gracefully to the baseline instead of to noise. The optional MLP is a residual branch whose
    last layer starts at zero, so it keeps the identity start while adding non-linearity.

    The returned norm feeds AdaFace's quality signal. Encoder vectors arrive normalised, so
    at the start every norm is ~1 and that signal is absent; it exists only as far as the
    head learns to scale its outputs.
    """

    def __init__(self, in_dim: int, out_dim: int | None = None, hidden: int | None = None):
        super().__init__()
        out_dim = out_dim or in_dim
        self.in_dim, self.out_dim = in_dim, out_dim
        self.linear = nn.Linear(in_dim, out_dim)
        with torch.no_grad():
            if in_dim == out_dim:
                self.linear.weight.copy_(torch.eye(in_dim))
            else:
                # orthonormal columns when widening: inner products are preserved exactly
                nn.init.orthogonal_(self.linear.weight)
            self.linear.bias.zero_()
        self.residual: nn.Sequential | None = None
        if hidden:
            self.residual = nn.Sequential(
                nn.Linear(out_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
            )
            with torch.no_grad():
                self.residual[-1].weight.zero_()
                self.residual[-1].bias.zero_()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected input (B, {self.in_dim}), got {tuple(x.shape)}")
        y = self.linear(x)
        if self.residual is not None:
            y = y + self.residual(y)
        norms = torch.linalg.vector_norm(y, dim=1, keepdim=True)
        return y / norms.clamp_min(1e-12), norms
