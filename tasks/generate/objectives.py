"""Losses on the predicted clean sketch, beside the formulation's regression loss.

A regression loss (L1 on x0, MSE on epsilon) alone makes a bridge drift to the average
sketch: identity fades and strokes blur (METHOD.md). Two remedies, each weighted and switched
on from a step by ``config.training.losses``:

- identity: 1 - cos(SFace(x0_hat), SFace(mugshot)) through a differentiable port of SFace;
  for ``identity_artist_styles`` the target is SFace(the artist's sketch of that person)
  instead, so the drawing is pulled to where the artist's drawings sit, not the photo;
  ``identity_photo`` adds an anchor to the mugshot on those items, so that a drawing that
  cannot reach the artist's vector is not pulled away from the person;
  ``identity_direction`` asks that the drawing's offset from the mugshot point the way the
  artist's sketch's does, the one thing a vector-level recognizer learns from it.
  Judge the result with another recognizer too (dlib), or the generator learns to fool its
  judge.
  With ``identity_downsample`` / ``identity_jitter`` SFace reads a blurred, shifted copy, so
  the gradient cannot pay in pixel-level textures that fool recognizers but are no drawing.
  ``identity_features`` matches SFace's early blocks between the drawing and the artist's
  sketch (feature matching): the artist's marks as the recognizer sees them, not only the
  place of the artist's vector.
- adversarial: a hinge PatchGAN (pix2pix) critic on (start image, sketch) pairs with
  spectral norm. It has its own optimizer; its state is checkpointed with the run so that a
  resumed run continues the same game. With ``critic_style`` it is a projection critic on
  the style's text vector (Miyato & Koyama 2018) that also learns a real sketch under another
  style's text as fake (matching-aware, Reed et al. 2016): each style must look like itself.
  Real sketches of one style come with one dataset's photos, so such a critic should not see
  the start image (``critic_sees_start``), and ``style_swap_items`` also draws a few mugshots
  in another style (from the start image, as the sampler's first step does) for the critic
  alone to judge: the way one mugshot is made to come out differently per style.
  ``critic_scales`` adds the same critic on the sketch shrunk 2x, 4x ... (pix2pixHD), so
  tone and outline count, not only texture; ``critic_start_as_fake`` shows it the start
  render as a fake, so an output that still looks like its start image does not pass.
- texture: the Gram matrices of an ImageNet network's first blocks (tasks.generate.texture)
  of the first outputs against their own real sketch, and of the style-swapped drawings
  against a real sketch of the style they were asked for: the swapped drawings' only
  signal that is not a critic's, and one the people drawn cannot satisfy.

``Objective`` is what the training loop calls; with every weight at zero it is exactly the
formulation's loss, so older configs train as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tasks.encoders.sface_torch import load_sface_torch, sface_embed, sface_embed_and_features
from tasks.generate.config import LossSpec
from tasks.generate.texture import TextureFeatures, gram_matrix, texture_distance

_CRITIC_SEED_SALT = 0xC217
_OLD_OUT = "net.6."
_SCALES = "scales."
SFACE_SIZE = 112


class PatchCritic(nn.Module):
    """4-layer PatchGAN over (condition, sketch): one real/fake score per ~22 px patch.

    With ``style_dim`` each patch's score adds <features, W style>: a projection critic,
    the way a conditional GAN tells classes apart without a classifier head.
    """

    def __init__(self, in_channels: int, channels: int, style_dim: int | None = None):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        c = channels
        self.net = nn.Sequential(
            sn(nn.Conv2d(in_channels, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
        )
        self.out = sn(nn.Conv2d(4 * c, 1, 3, padding=1))
        self.style = None if style_dim is None else sn(nn.Linear(style_dim, 4 * c, bias=False))

    def forward(self, condition: torch.Tensor | None, sketch: torch.Tensor,
                style: torch.Tensor | None = None) -> torch.Tensor:
        x = sketch if condition is None else torch.cat([condition.to(sketch), sketch], dim=1)
        features = self.net(x)
        score = self.out(features)
        if self.style is not None:
            if style is None:
                raise ValueError("this critic judges (sketch, style): give the style vectors")
            projection = self.style(style.to(features))[:, :, None, None]
            score = score + (features * projection).sum(dim=1, keepdim=True)
        return score


class MultiScaleCritic(nn.Module):
    """One PatchCritic per scale, the sketch (and condition) halved between them: a list of
    score maps, finest first. At 4x a patch covers ~88 of 112 px: the whole face."""

    def __init__(self, in_channels: int, channels: int, style_dim: int | None = None,
                 scales: int = 1):
        super().__init__()
        self.scales = nn.ModuleList(PatchCritic(in_channels, channels, style_dim)
                                    for _ in range(scales))

    @property
    def style(self) -> nn.Module | None:
        return self.scales[0].style

    def forward(self, condition: torch.Tensor | None, sketch: torch.Tensor,
                style: torch.Tensor | None = None) -> list[torch.Tensor]:
        scores = []
        for i, critic in enumerate(self.scales):
            if i:
                sketch = F.avg_pool2d(sketch, 2)
                condition = None if condition is None else F.avg_pool2d(condition, 2)
            scores.append(critic(condition, sketch, style))
        return scores


def critic_mean(scores: list[torch.Tensor]) -> torch.Tensor:
    """Mean score, each scale weighing the same however many patches it has."""
    return torch.stack([s.mean() for s in scores]).mean()


def critic_hinge(scores: list[torch.Tensor], real: bool) -> torch.Tensor:
    """Hinge loss per patch (real: relu(1 - s), fake: relu(1 + s)), averaged per scale."""
    sign = -1.0 if real else 1.0
    return torch.stack([F.relu(1.0 + sign * s).mean() for s in scores]).mean()


def critic_per_item(scores: list[torch.Tensor]) -> torch.Tensor:
    """(B,) mean score of each item over patches and scales."""
    return torch.stack([s.mean(dim=(1, 2, 3)) for s in scores]).mean(dim=0)


def jitter_and_blur(picture: torch.Tensor, downsample: int, jitter: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """What the identity loss's recognizer sees: the picture shrunk and back, then shifted."""
    if downsample > 1:
        size = picture.shape[-2:]
        picture = F.avg_pool2d(picture, downsample)
        picture = F.interpolate(picture, size=size, mode="bilinear", align_corners=False)
    if jitter > 0:
        b, _, h, _ = picture.shape
        shifts = torch.randint(-jitter, jitter + 1, (b, 2), generator=generator)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = shifts.float() * 2.0 / h
        grid = F.affine_grid(theta.to(picture), list(picture.shape), align_corners=False)
        picture = F.grid_sample(picture, grid, padding_mode="border", align_corners=False)
    return picture


def _sface_size(picture: torch.Tensor) -> torch.Tensor:
    """Small test configs draw below 112 px; SFace reads 112."""
    if picture.shape[-1] == SFACE_SIZE:
        return picture
    return F.interpolate(picture, size=(SFACE_SIZE, SFACE_SIZE), mode="bilinear",
                         align_corners=False)


def feature_distance(drawn: list[torch.Tensor], artist: list[torch.Tensor],
                     weight: torch.Tensor, statistic: str = "activations") -> torch.Tensor:
    """Weighted mean over items of the blocks' distances, each scale-free so no block
    outweighs the others: for "activations" the mean L1 distance divided by the artist's mean
    activation, for "gram" ||G - G*||^2 / ||G*||^2 of the blocks' Gram matrices (per item).

    Divided by the items asked for (``weight``'s length), as the identity term is.
    """
    per_item = torch.zeros_like(weight)
    for mine, theirs in zip(drawn, artist, strict=True):
        if statistic == "gram":
            mine, theirs = gram_matrix(mine), gram_matrix(theirs)
            per_item = per_item + ((mine - theirs).square().mean(dim=(1, 2))
                                   / theirs.square().mean(dim=(1, 2)).clamp_min(1e-8))
        else:
            scale = theirs.abs().mean(dim=(1, 2, 3)).clamp_min(1e-6)
            per_item = per_item + (mine - theirs).abs().mean(dim=(1, 2, 3)) / scale
    return (weight * per_item / len(drawn)).sum() / weight.shape[0]


def offset_direction(drawn: torch.Tensor, photo: torch.Tensor, artist: torch.Tensor
                     ) -> torch.Tensor:
    """(N,) 1 - cos(drawn - photo, artist - photo) for unit vectors: 0 where the drawing
    left its photo the way the artist's sketch did, however far. A vector-level recognizer
    learns the artists' offset from the photo; a drawing whose offset points elsewhere adds
    nothing to it, however near the artist's vector it sits (benchmarks/quality.py
    ``sface_direction`` measures the same on held-out identities). The offsets are taken in
    the sphere's tangent plane at the photo, so every point of the great circle from the
    photo through the artist's vector scores 0. An offset of zero (a drawing that is its
    photo) scores 1, as an unrelated direction."""
    return 1.0 - F.cosine_similarity(tangent_offset(drawn, photo), tangent_offset(artist, photo),
                                     dim=1, eps=1e-6)


def tangent_offset(point: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """(point - origin) less its part along the unit ``origin``: the direction of travel on
    the sphere from ``origin`` toward ``point``."""
    offset = point - origin
    return offset - (offset * origin).sum(dim=1, keepdim=True) * origin


def identity_targets(crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """SFace vectors (torch port) of aligned BGR mugshot crops: the identity loss's targets."""

    model = load_sface_torch()
    out = []
    with torch.no_grad():
        for i in range(0, len(crops), batch_size):
            part = torch.as_tensor(np.asarray(crops[i:i + batch_size]), dtype=torch.float32)
            images = part.permute(0, 3, 1, 2) / 127.5 - 1.0
            out.append(sface_embed(model, images).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 128), np.float32)


class Objective:
    """The generator's total loss for a step, and the critic's update after it."""

    def __init__(self, spec: LossSpec, device: torch.device | str, seed: int = 0,
                 condition_channels: int = 1, style_dim: int | None = None):
        self.spec = spec
        self.device = torch.device(device)
        self.identity_model: nn.Module | None = None
        if spec.identity > 0:
            self.identity_model = load_sface_torch().to(self.device)
        self.critic: MultiScaleCritic | None = None
        self.critic_optimizer: torch.optim.Optimizer | None = None
        if spec.adversarial > 0:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed) ^ _CRITIC_SEED_SALT)
                if spec.critic_style and style_dim is None:
                    raise ValueError("losses.critic_style needs the style text's dimension")
                seen = condition_channels if spec.critic_sees_start else 0
                self.critic = MultiScaleCritic(seen + 1, spec.discriminator_channels,
                                               style_dim if spec.critic_style else None,
                                               spec.critic_scales).to(self.device)
            self.critic_optimizer = torch.optim.Adam(self.critic.parameters(),
                                                     lr=spec.discriminator_lr, betas=(0.5, 0.999))
        self.texture_model: nn.Module | None = None
        if spec.texture > 0:
            self.texture_model = TextureFeatures().to(self.device)
        self._fake: torch.Tensor | None = None
        self._swapped: tuple[dict[str, Any], torch.Tensor] | None = None

    @property
    def needs_identity_targets(self) -> bool:
        return self.identity_model is not None

    def _active(self, weight: float, from_step: int, step: int) -> bool:
        return weight > 0 and step >= from_step

    def _condition(self, batch: Mapping[str, Any], device: torch.device) -> torch.Tensor | None:
        if not self.spec.critic_sees_start:
            return None
        for key in ("start", "spatial"):
            if batch.get(key) is not None:
                return torch.as_tensor(batch[key], dtype=torch.float32).to(device)
        return None

    def generator_loss(self, generator: Any, batch: Mapping[str, Any], rng: torch.Generator,
                       step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its named terms (floats, for the log)."""
        loss, x0_hat, t = generator.training_outputs(batch, rng)
        terms = {"regression": float(loss.detach())}
        total = loss
        spec = self.spec
        if self.identity_model is not None and self._active(spec.identity,
                                                            spec.identity_from_step, step):
            for name, value in self._identity(batch, x0_hat, t, rng).items():
                terms[name] = float(value.detach())
                total = total + getattr(spec, name) * value
        self._fake = self._swapped = None
        swap: tuple[dict[str, Any], torch.Tensor, torch.Tensor] | None = None
        if self.critic is not None and self._active(spec.adversarial,
                                                    spec.adversarial_from_step, step):
            condition = self._condition(batch, self.device)
            adversarial = -critic_mean(self.critic(condition, x0_hat.float(),
                                                   self._style(batch)))
            terms["adversarial"] = float(adversarial.detach())
            self._fake = x0_hat.detach()
            if self.critic.style is not None:
                swap = self._draw_swapped(generator, batch, rng)
            if swap is not None:
                swapped, _, drawn = swap
                other = -critic_mean(self.critic(self._condition(swapped, self.device),
                                                 drawn.float(), self._style(swapped)))
                terms["adversarial_swapped"] = float(other.detach())
                adversarial = 0.5 * (adversarial + other)
                self._swapped = (swapped, drawn.detach())
            total = total + spec.adversarial * adversarial
        if self.texture_model is not None and self._active(spec.texture,
                                                           spec.texture_from_step, step):
            if swap is None:
                swap = self._draw_swapped(generator, batch, rng)
            texture = self._texture(batch, x0_hat, swap)
            terms["texture"] = float(texture.detach())
            total = total + spec.texture * texture
        return total, terms

    def _identity(self, batch: Mapping[str, Any], x0_hat: torch.Tensor, t: torch.Tensor,
                  rng: torch.Generator) -> dict[str, torch.Tensor]:
        """The identity terms by their weight's name in the loss spec, from one SFace pass
        over the drawings: ``identity``, the weighted mean of 1 - cos(SFace(drawing), target)
        over the first items, and where their weight is on, the photo anchor's
        (``identity_photo``), the early blocks' feature distance to the artist's sketch
        (``identity_features``) and the offset's direction (``identity_direction``).

        The target is the mugshot's vector, or the artist's sketch's for the artist-target
        styles; ``id_weight`` drops the items without a usable target and
        ``identity_max_t`` those too far from the sketch (their x0 guess is a blur). The
        anchor compares the artist-target items with their mugshot, an artist sketch without
        a usable vector included: the anchor needs only the photo.
        """
        spec = self.spec
        assert self.identity_model is not None
        if batch.get("id_target") is None:
            raise ValueError("the identity loss needs batch['id_target'] (SFace vectors of "
                             "the mugshots): assemble the training set with them")
        k = spec.identity_items or x0_hat.shape[0]
        target = torch.as_tensor(batch["id_target"][:k], dtype=torch.float32).to(self.device)
        weight = torch.ones(target.shape[0], device=self.device)
        if batch.get("id_weight") is not None:
            weight = torch.as_tensor(batch["id_weight"][:k], dtype=torch.float32).to(self.device)
        low_noise = None
        if spec.identity_max_t is not None:
            low_noise = (t[:k].to(self.device) <= spec.identity_max_t).float()
            weight = weight * low_noise
        matched = self._matched_items(batch, k, low_noise)
        drawn = x0_hat[:k].float()
        if matched is not None:
            # The artist's sketch is shifted and blurred with the drawing (one call on both as
            # channels: the same shift for each pair), so the blocks compare aligned marks.
            artist = torch.as_tensor(batch["sketch"][:k], dtype=torch.float32).to(drawn)
            both = jitter_and_blur(torch.cat([drawn, artist], dim=1), spec.identity_downsample,
                                   spec.identity_jitter, rng)
            picture, artist = _sface_size(both[:, :1]), _sface_size(both[:, 1:])
            vectors, drawn_features = sface_embed_and_features(
                self.identity_model, picture, spec.identity_feature_blocks)
            with torch.no_grad():
                _, artist_features = sface_embed_and_features(
                    self.identity_model, artist, spec.identity_feature_blocks)
            features = feature_distance(drawn_features, artist_features, matched,
                                        spec.identity_feature_statistic)
        else:
            picture = _sface_size(jitter_and_blur(drawn, spec.identity_downsample,
                                                  spec.identity_jitter, rng))
            vectors = sface_embed(self.identity_model, picture)
            features = None
        distance = 1.0 - (vectors * F.normalize(target, dim=1)).sum(dim=1)
        # Divided by the items asked for, not the items kept: a step where few items count
        # must not weigh each of them more.
        terms = {"identity": (weight * distance).sum() / weight.shape[0]}
        if features is not None:
            terms["identity_features"] = features
        if spec.identity_photo > 0:
            photo = self._photo_vectors(batch, k, "losses.identity_photo")
            anchored = self._artist_items(batch, k, "losses.identity_photo")
            if low_noise is not None:
                anchored = anchored * low_noise
            apart = 1.0 - (vectors * photo).sum(dim=1)
            terms["identity_photo"] = (anchored * apart).sum() / anchored.shape[0]
        if spec.identity_direction > 0:
            photo = self._photo_vectors(batch, k, "losses.identity_direction")
            # Only where the artist's vector is usable (id_weight), as the artist target.
            aimed = self._artist_items(batch, k, "losses.identity_direction") * weight
            terms["identity_direction"] = (
                aimed * offset_direction(vectors, photo, F.normalize(target, dim=1))
            ).sum() / aimed.shape[0]
        return terms

    def _photo_vectors(self, batch: Mapping[str, Any], k: int, needed_by: str
                       ) -> torch.Tensor:
        """(k, 128) unit SFace vectors of the first items' mugshots."""
        if batch.get("id_photo") is None:
            raise ValueError(f"{needed_by} needs batch['id_photo'] (the mugshots' SFace "
                             "vectors): assemble the training set with photo_vectors="
                             "config.training.losses.needs_photo_vectors")
        photo = torch.as_tensor(batch["id_photo"][:k], dtype=torch.float32).to(self.device)
        return F.normalize(photo, dim=1)

    def _matched_items(self, batch: Mapping[str, Any], k: int,
                       low_noise: torch.Tensor | None) -> torch.Tensor | None:
        """(k,) weights of the items whose drawing is matched to the artist's sketch, or None
        when feature matching is off."""
        if self.spec.identity_features <= 0:
            return None
        matched = self._artist_items(batch, k, "losses.identity_features")
        if batch.get("id_weight") is not None:  # 0 where the artist's sketch is unusable
            matched = matched * torch.as_tensor(batch["id_weight"][:k],
                                                dtype=torch.float32).to(self.device)
        return matched if low_noise is None else matched * low_noise

    def _artist_items(self, batch: Mapping[str, Any], k: int, needed_by: str) -> torch.Tensor:
        """(k,) 1 on the first items whose style's identity target is the artist's sketch."""
        if batch.get("id_artist") is None:
            raise ValueError(f"{needed_by} needs batch['id_artist'] (which items' sketch is the "
                             "artist's): assemble the training set with the config's "
                             "losses.identity_artist_styles")
        return torch.as_tensor(batch["id_artist"][:k], dtype=torch.float32).to(self.device)

    def _draw_swapped(self, generator: Any, batch: Mapping[str, Any], rng: torch.Generator
                      ) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor] | None:
        """(swapped batch, donor rows, drawings): see ``_swap_styles``."""
        picked = self._swap_styles(batch)
        if picked is None:
            return None
        swapped, donors = picked
        drawn = generator.training_outputs(swapped, rng, at=1.0).x0_hat
        return swapped, donors, drawn

    def _texture(self, batch: Mapping[str, Any], x0_hat: torch.Tensor,
                 swap: tuple[dict[str, Any], torch.Tensor, torch.Tensor] | None
                 ) -> torch.Tensor:
        """Texture distance of the first outputs to their own sketch and of the swapped
        drawings to the sketch of the item whose style they were given."""

        assert self.texture_model is not None
        k = min(self.spec.texture_items, x0_hat.shape[0])
        drawn, rows = [x0_hat[:k]], [torch.arange(k)]
        if swap is not None:
            _, donors, swapped_drawn = swap
            m = min(k, swapped_drawn.shape[0])
            drawn.append(swapped_drawn[:m])
            rows.append(donors[:m])
        real = torch.as_tensor(batch["sketch"], dtype=torch.float32)[torch.cat(rows)]
        with torch.no_grad():
            target = self.texture_model.grams(real.to(self.device))
        return texture_distance(self.texture_model.grams(torch.cat(drawn).float()), target)

    def _swap_styles(self, batch: Mapping[str, Any]
                     ) -> tuple[dict[str, Any], torch.Tensor] | None:
        """The first ``style_swap_items`` items under the style of the nearest later item
        whose style differs, and those items' rows (None when the batch holds one style)."""
        k = min(self.spec.style_swap_items, len(batch["text"]))
        if k == 0:
            return None
        text = torch.as_tensor(batch["text"])
        n = text.shape[0]
        picked, rows = [], []
        for i in range(k):
            for j in range(1, n):
                if not torch.equal(text[(i + j) % n], text[i]):
                    picked.append(i)
                    rows.append((i + j) % n)
                    break
        if not picked:
            return None
        index = torch.as_tensor(picked)
        swapped = {key: (torch.as_tensor(value)[index] if value is not None else None)
                   for key, value in batch.items()}
        donors = torch.as_tensor(rows)
        swapped["text"] = text[donors]
        return swapped, donors

    def critic_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One hinge update of the critic on this step's real sketches and fakes."""
        if self.critic is None or self._fake is None:
            return {}
        assert self.critic_optimizer is not None
        condition = self._condition(batch, self.device)
        real = torch.as_tensor(batch["sketch"], dtype=torch.float32).to(self.device)
        style = self._style(batch)
        fake = critic_hinge(self.critic(condition, self._fake, style), real=False)
        if self._swapped is not None:
            swapped, drawn = self._swapped
            fake = 0.5 * (fake + critic_hinge(self.critic(
                self._condition(swapped, self.device), drawn, self._style(swapped)), real=False))
        # The kinds of "no", averaged: fakes, real sketches under another style, start renders.
        negatives = [fake]
        terms: dict[str, float] = {}
        if style is not None:
            # Real sketches under the next item's style: fake wherever that style differs.
            other = style.roll(1, dims=0)
            differs = (other - style).abs().amax(dim=1) > 0
            if bool(differs.any()):
                scores = critic_per_item(self.critic(condition, real, other))
                mismatch = F.relu(1.0 + scores[differs]).mean()
                negatives.append(mismatch)
                terms["critic_mismatch"] = float(mismatch.detach())
        if self.spec.critic_start_as_fake and batch.get("start") is not None:
            start = torch.as_tensor(batch["start"], dtype=torch.float32).to(self.device)
            # A style whose target is the start render itself has no such fake.
            drawn_apart = (start - real).abs().mean(dim=(1, 2, 3)) > 1e-3
            if bool(drawn_apart.any()):
                own = None if style is None else style[drawn_apart]
                start_fake = critic_hinge(self.critic(None, start[drawn_apart], own),
                                          real=False)
                negatives.append(start_fake)
                terms["critic_start"] = float(start_fake.detach())
        loss = critic_hinge(self.critic(condition, real, style), real=True)
        loss = loss + torch.stack(negatives).mean()
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        self._fake = self._swapped = None
        return {"critic": float(loss.detach()), **terms}

    def _style(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        if self.critic is None or self.critic.style is None:
            return None
        if batch.get("text") is None:
            raise ValueError("a style critic needs batch['text'] (each item's style vector)")
        return torch.as_tensor(batch["text"], dtype=torch.float32).to(self.device)

    # ---- checkpoints: the critic is part of the run's state, not of the generator

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.critic is None:
            return {}
        return {k: v.detach().cpu().contiguous() for k, v in self.critic.state_dict().items()}

    def optimizer_state(self) -> dict[str, Any] | None:
        return None if self.critic_optimizer is None else self.critic_optimizer.state_dict()

    def load(self, tensors: Mapping[str, torch.Tensor],
             optimizer: Mapping[str, Any] | None) -> None:
        if self.critic is None:
            return
        # Checkpoints written before the critic had a style projection kept its last conv
        # as net.6, and before it had scales its keys had no ``scales.0.`` prefix: a run
        # started then still resumes.
        state = {}
        for key, value in tensors.items():
            if key.startswith(_OLD_OUT):
                key = f"out.{key[len(_OLD_OUT):]}"
            if not key.startswith(_SCALES):
                key = f"{_SCALES}0.{key}"
            state[key] = value
        self.critic.load_state_dict(state, strict=True)
        if optimizer is not None and self.critic_optimizer is not None:
            self.critic_optimizer.load_state_dict(dict(optimizer))


def build_objective(generator: Any, seed: int = 0) -> Objective:
    config = generator.config
    channels = 1 if (generator.needs_start or config.spatial_condition != "none") else 0
    return Objective(config.training.losses, generator.device, seed, channels,
                     config.conditions.dims.get("text"))
