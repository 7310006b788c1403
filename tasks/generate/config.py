"""Generator configs as data, the way open_clip keeps model configs as JSON.

A config fixes everything that shapes the weights (UNet layout, condition tokens, noise
schedule) so that a saved generator can be rebuilt from its JSON alone, plus training defaults
that a flow may override. Encoder vector sizes are stored too: they are filled in from the
encoders at build time, and a generator trained on one encoder's vectors is useless with another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.generate.formulations import (
    check_eta,
    check_style_eta,
    known_formulations,
    known_starts,
)

Role = Literal["identity", "image", "text"]
ROLES: tuple[Role, ...] = ("identity", "image", "text")
SpatialCondition = Literal["none", "grey", "edges"]

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """An unknown or invalid generator config."""


class _Strict(BaseModel):
    # Typos in a hand-edited JSON file must fail loudly, not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class UNetSpec(_Strict):
    block_out_channels: tuple[int, ...] = Field(min_length=2)
    layers_per_block: int = Field(ge=1)
    # One flag per resolution level, highest resolution first. Cross-attention above 32x32
    # makes a CPU step ~7x slower (STACK.md), so the CPU configs keep it to the lower levels.
    attention_levels: tuple[bool, ...]
    mid_block_attention: bool = True
    # Channels per attention head (the real meaning; diffusers' own `attention_head_dim`
    # argument is a head *count*, see `GeneratorConfig.unet_kwargs`).
    attention_head_dim: int = Field(ge=1)
    cross_attention_dim: int = Field(ge=1)
    norm_num_groups: int = Field(default=32, ge=1)
    transformer_layers_per_block: int = Field(default=1, ge=1)
    # Adds the mean condition token to the timestep embedding (AdaGN-like global path, as in
    # DCFace), so identity reaches every resnet, not only the attention levels.
    pooled_to_time: bool = True

    @model_validator(mode="after")
    def _check(self) -> UNetSpec:
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError(
                f"attention_levels has {len(self.attention_levels)} entries, "
                f"block_out_channels {len(self.block_out_channels)}: give one flag per level"
            )
        for width in self.block_out_channels:
            if width % self.norm_num_groups:
                raise ValueError(f"width {width} is not divisible by norm_num_groups")
        levels = zip(self.block_out_channels, self.attention_levels, strict=True)
        attn_widths = [width for width, attn in levels if attn]
        if self.mid_block_attention:
            attn_widths.append(self.block_out_channels[-1])
        for width in attn_widths:
            if width % self.attention_head_dim:
                raise ValueError(
                    f"attention width {width} is not divisible by attention_head_dim "
                    f"{self.attention_head_dim}"
                )
        return self


class ConditionSpec(_Strict):
    dims: dict[Role, int] = Field(description="vector size per role, filled from the encoders")
    tokens: dict[Role, int] = Field(description="cross-attention tokens per role")
    hidden_dim: int = Field(ge=1, description="width of each role's projection MLP")
    # Independent per-role drop rates plus a drop-everything rate: the latter trains the
    # unconditional branch that classifier-free guidance subtracts.
    drop: dict[Role, float]
    drop_all: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> ConditionSpec:
        for name in ("dims", "tokens", "drop"):
            table = getattr(self, name)
            if set(table) != set(ROLES):
                raise ValueError(f"conditions.{name} needs exactly the roles {list(ROLES)}")
        if any(v < 1 for v in self.dims.values()) or any(v < 1 for v in self.tokens.values()):
            raise ValueError("condition dims and token counts must be positive")
        if any(not 0.0 <= v <= 1.0 for v in self.drop.values()):
            raise ValueError("drop rates must lie in [0, 1]")
        return self


class SchedulerSpec(_Strict):
    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: Literal["epsilon"] = "epsilon"
    clip_sample: bool = True
    # "trailing" starts DDIM at t = T-1; "leading" never visits the noisiest step, which
    # leaves pixel-space samples greyish at few steps.
    timestep_spacing: Literal["leading", "trailing", "linspace"] = "trailing"

    def diffusers_config(self) -> dict[str, Any]:
        """Keys that DDPMScheduler and DDIMScheduler both accept."""
        return self.model_dump()


class FormulationSpec(_Strict):
    """How noise is added and removed: the one field that picks a formulation module.

    ``ddpm``: noise-start, epsilon-prediction, DDIM sampling (the paper's form; its betas are in
    ``scheduler``). ``bridge``: a linear bridge from a deterministic rendering of the mugshot
    (``start``) to the sketch, x0-prediction, a few flow-matching Euler steps; identity is in
    the picture from step 0 instead of having to be denoised out of pure noise.
    """

    kind: str = "ddpm"
    # Bridge only: the start image, "grey" (the aligned photo's luma) or a renderer's name.
    start: str = "grey"
    # Bridge only: std of the Brownian-bridge noise sigma * sqrt(t (1 - t)) * eps in training.
    noise: float = Field(default=0.1, ge=0.0)
    # Bridge only: the smallest t drawn in training (t = 0 is the target itself).
    t_min: float = Field(default=0.02, gt=0.0, lt=1.0)
    # Sampling defaults when a caller does not say (bridge: few steps; ddpm: DDIM steps).
    default_steps: int = Field(default=50, ge=1)
    default_guidance: float = Field(default=2.0, ge=0.0)
    # Sampling noise: DDIM's eta (at most 1), or the bridge's posterior noise (eta * noise *
    # sqrt(s (t - s) / t)); None: the formulation's own (ddpm 0, deterministic; bridge 1, the
    # posterior). A bridge trained with little noise draws near-copies at eta 1; more noise
    # at sampling is what makes two samples of one mugshot differ (README: measured).
    default_eta: float | None = Field(default=None, ge=0.0)
    # Sampling noise per style, over ``default_eta``: noise sharpens a drawing and costs its
    # Frechet distance, and one artist's sharpness is reached at another noise than another's
    # (chosen on train identities: docs/results/generator.md, "Sampling noise per style").
    style_eta: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> FormulationSpec:
        if self.kind not in known_formulations():
            raise ValueError(f"unknown formulation {self.kind!r}; known: "
                             f"{', '.join(known_formulations())}")
        if self.default_eta is not None:
            check_eta(self.kind, self.default_eta)
        check_style_eta(self.kind, self.style_eta)
        if self.start not in known_starts():
            raise ValueError(f"unknown start image {self.start!r}; known: "
                             f"{', '.join(known_starts())}")
        return self


class LossSpec(_Strict):
    """Extra training losses on the predicted clean sketch, each from a step on.

    ``identity``: weight of 1 - cos(SFace(x0_hat), SFace(mugshot)) through the torch port of
    SFace; what keeps identity (a regression loss alone drifts to the average sketch).
    ``adversarial``: weight of a hinge PatchGAN loss on (grey photo, sketch) pairs, against
    the blur of regression losses. Judge identity with another recognizer than the one in
    the loss, and realism by the Frechet distance, not sharpness alone (METHOD.md).
    """

    identity: float = Field(default=0.0, ge=0.0)
    identity_from_step: int = Field(default=0, ge=0)
    # SFace's backward costs more than the generator's own step on a CPU: the identity loss
    # may look at only the first items of each batch (None: all of them).
    identity_items: int | None = Field(default=None, ge=1)
    adversarial: float = Field(default=0.0, ge=0.0)
    adversarial_from_step: int = Field(default=0, ge=0)
    discriminator_lr: float = Field(default=2e-4, gt=0.0)
    discriminator_channels: int = Field(default=32, ge=4)
    # The critic also reads the style (a projection of its text vector) and learns that a real
    # sketch under another style's text is fake: without it one artist's look passes for
    # every style, and the style condition never has to show.
    critic_style: bool = False
    # Each style's real sketches come with one dataset's photos, so a critic that also sees
    # the start image can tell styles by the photos and never look at the drawing: a style
    # critic should judge the sketch alone.
    critic_sees_start: bool = True
    # The first N items are also drawn from their start image (the sampler's first step) in
    # another style of the batch, which has no real sketch of them: only the style critic
    # judges those. This is what makes one mugshot come out differently per style.
    style_swap_items: int = Field(default=0, ge=0)
    # SFace judges the sketch shrunk by this factor (and back), shifted by up to this many
    # pixels: a recognizer's gradient otherwise paints high-frequency textures that fool it
    # (and dlib) but are no drawing.
    identity_downsample: int = Field(default=1, ge=1, le=8)
    identity_jitter: int = Field(default=0, ge=0, le=16)
    # The critic also judges the sketch shrunk 2x, 4x ... (pix2pixHD's multi-scale critic):
    # one ~22-px patch critic pushes local texture only, while a style is also the drawing's
    # whole tone and outline, which a patch covering most of the face can see.
    critic_scales: int = Field(default=1, ge=1, le=4)
    # The start render (under each item's style) is one more kind of fake for the critic:
    # a bridge's output that still looks like its start image is not the artist's drawing.
    critic_start_as_fake: bool = False
    # Weight of a Gram-matrix texture loss (tasks/generate/texture.py) on the first
    # ``texture_items`` outputs against their own real sketch, and on as many style-swapped
    # drawings against a real sketch of the style they were asked for: pencil texture, which
    # an orderless statistic can compare across people the artist never drew.
    texture: float = Field(default=0.0, ge=0.0)
    texture_from_step: int = Field(default=0, ge=0)
    texture_items: int = Field(default=4, ge=1)
    # The styles whose identity target is the artist's own sketch of the person, not the
    # mugshot (SynThermFace's target-modality identity loss, METHOD.md). Against the photo
    # the loss pulls every drawing to where the photo sits in SFace's space; the artists sit
    # elsewhere, in a consistent direction, and that gap is what a recognizer must learn
    # from synthetic sketches. Only styles with paired sketches have such a target: a
    # rendered style named here is refused when the run's styles are resolved.
    identity_artist_styles: tuple[str, ...] = ()
    # The identity term only on items whose formulation time is at most this (1: the start
    # render, 0: the sketch); None: every item. SynThermFace applies it at low noise only.
    identity_max_t: float | None = Field(default=None, gt=0.0, le=1.0)
    # Weight of a second identity term on the artist-target styles' items, against the
    # mugshot: an anchor. The artist target alone moves a drawing in the artist's direction
    # but not back to the person when the generator cannot reach the artist's vector
    # (CUHK held out: 0.29 to the photo, the artist's own sketches 0.41), so the drawing
    # may be moved toward the artist, not away from the person. 0: the artist target only.
    identity_photo: float = Field(default=0.0, ge=0.0)
    # Weight of feature matching in SFace's early blocks between the drawing and the artist's
    # own sketch of the person, on the artist-target styles' items whose sketch is usable.
    # The vector target moves a drawing to where the artist's sketch sits in SFace's last
    # layer, which a drawing can reach with the photo's own texture (the recognizer then has
    # nothing of the artist's to learn from it); the early blocks see line work and shading,
    # so matching them asks for the artist's marks, seen the way the recognizer sees them.
    # The pictures are blurred and shifted together, as the identity term's.
    identity_features: float = Field(default=0.0, ge=0.0)
    # SFace blocks (1..14) whose outputs are matched, each normalised by the artist's mean
    # activation so that every block counts about equally.
    identity_feature_blocks: tuple[int, ...] = (2, 4, 6)
    # What is compared in those blocks: "activations" (place by place, L1) asks for the
    # artist's marks where the artist put them, which the photo does not determine (the artist
    # reshaped the features); "gram" (channel co-activations averaged over positions, as
    # losses.texture does with an ImageNet network) asks for the marks without their places.
    identity_feature_statistic: Literal["activations", "gram"] = "activations"
    # Weight of 1 - cos(drawing - mugshot, artist's sketch - mugshot) in SFace's space, on the
    # artist-target items: the drawing's *offset* from its photo should point where the
    # artist's does. The vector target rewards nearness, which a drawing can buy by moving
    # along a direction of its own (held out, drawings nearer the artist than the photo
    # still taught the adapter nothing); a recognizer learns the artists' shared offset, and
    # a drawing teaches it only along that direction. Scale-free: how far to move stays the
    # vector target's and the anchor's business.
    identity_direction: float = Field(default=0.0, ge=0.0)

    @property
    def needs_photo_vectors(self) -> bool:
        """Whether a term reads the mugshots' SFace vectors beside the artist target (the
        anchor, the offset's direction): the training set keeps them only then."""
        return self.identity_photo > 0 or self.identity_direction > 0

    @model_validator(mode="after")
    def _check(self) -> LossSpec:
        if self.identity_artist_styles and self.identity <= 0:
            raise ValueError("losses.identity_artist_styles needs losses.identity > 0: the "
                             "artist target is a target of the identity loss")
        if len(set(self.identity_artist_styles)) != len(self.identity_artist_styles):
            raise ValueError("losses.identity_artist_styles names a style twice")
        if self.identity_photo > 0 and not self.identity_artist_styles:
            raise ValueError("losses.identity_photo anchors the artist target to the photo: it "
                             "needs losses.identity_artist_styles (every other style's "
                             "target is the photo already)")
        if self.identity_features > 0 and not self.identity_artist_styles:
            raise ValueError("losses.identity_features matches the artist's sketch: it needs "
                             "losses.identity_artist_styles (the styles whose target is the "
                             "artist's)")
        if self.identity_direction > 0 and not self.identity_artist_styles:
            raise ValueError("losses.identity_direction compares the drawing's offset from the "
                             "photo with the artist's: it needs losses.identity_artist_styles "
                             "(the styles whose sketches are the artist's)")
        blocks = self.identity_feature_blocks
        if self.identity_features > 0 and (not blocks or len(set(blocks)) != len(blocks)
                                           or not all(1 <= b <= 14 for b in blocks)):
            raise ValueError("losses.identity_feature_blocks must name distinct SFace blocks "
                             f"1..14, got {list(blocks)}")
        if self.critic_start_as_fake and self.critic_sees_start:
            raise ValueError("losses.critic_start_as_fake needs critic_sees_start: false (a "
                             "critic that is shown the start image beside it sees they match)")
        return self


class AugmentSpec(_Strict):
    max_shift: float = Field(default=0.03, ge=0.0, description="fraction of the image size")
    max_scale: float = Field(default=0.05, ge=0.0, description="relative zoom in/out")
    flip_p: float = Field(default=0.5, ge=0.0, le=1.0)


class TrainingSpec(_Strict):
    lr: float = Field(default=2e-4, gt=0)
    batch_size: int = Field(default=16, ge=1)
    ema_decay: float = Field(default=0.999, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    warmup_steps: int = Field(default=0, ge=0)
    grad_clip: float | None = 1.0
    checkpoint_every: int = Field(default=500, ge=1)
    augment: AugmentSpec = AugmentSpec()
    losses: LossSpec = LossSpec()


class GeneratorConfig(_Strict):
    name: str
    resolution: int = Field(ge=8)
    spatial_condition: SpatialCondition = "none"
    # Space-to-depth factor: the UNet works at resolution / s on s*s channels per input
    # channel (pixel_unshuffle), so 112 px output costs what 28 px would.
    space_to_depth: int = Field(default=1, ge=1)
    # Channels of a small full-resolution conv head after pixel_shuffle (0: none). It sees
    # every output pixel with its neighbours, which the sub-pixel layout alone does not, and
    # is the usual cure for pixel_shuffle's checkerboard.
    refine_channels: int = Field(default=0, ge=0)
    unet: UNetSpec
    conditions: ConditionSpec
    formulation: FormulationSpec = FormulationSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    training: TrainingSpec = TrainingSpec()

    @model_validator(mode="after")
    def _check(self) -> GeneratorConfig:
        levels = len(self.unet.block_out_channels)
        s = self.space_to_depth
        if self.resolution % s:
            raise ValueError(f"resolution {self.resolution} is not divisible by space_to_depth {s}")
        inner = self.resolution // s
        if inner % (2 ** (levels - 1)):
            raise ValueError(
                f"resolution {self.resolution} / space_to_depth {s} = {inner} must be divisible "
                f"by 2**{levels - 1} for a {levels}-level UNet"
            )
        return self

    @property
    def image_channels(self) -> int:
        """Channels of the full-resolution input: the noisy sketch, plus the spatial map."""
        return 1 if self.spatial_condition == "none" else 2

    @property
    def in_channels(self) -> int:
        return self.image_channels * self.space_to_depth ** 2

    @property
    def unet_resolution(self) -> int:
        return self.resolution // self.space_to_depth

    def with_condition_dims(self, dims: dict[str, int]) -> GeneratorConfig:
        """A copy whose vector sizes match the encoders actually used."""
        merged = {**self.conditions.dims, **dims}
        conditions = ConditionSpec.model_validate({**self.conditions.model_dump(), "dims": merged})
        return self.model_copy(update={"conditions": conditions})

    def unet_kwargs(self) -> dict[str, Any]:
        """Arguments for diffusers' UNet2DConditionModel.

        diffusers' `attention_head_dim` is, for historical reasons, the number of heads
        (diffusers issue 2011), and passing `num_attention_heads` raises; so the head count per
        level is computed here from our real per-head width.
        """
        u = self.unet
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in u.attention_levels)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(u.attention_levels))
        heads = tuple(max(1, w // u.attention_head_dim) for w in u.block_out_channels)
        kwargs: dict[str, Any] = {
            "sample_size": self.unet_resolution,
            "in_channels": self.in_channels,
            "out_channels": self.space_to_depth ** 2,
            "down_block_types": down,
            "up_block_types": up,
            "mid_block_type": "UNetMidBlock2DCrossAttn" if u.mid_block_attention
            else "UNetMidBlock2D",
            "block_out_channels": tuple(u.block_out_channels),
            "layers_per_block": u.layers_per_block,
            "attention_head_dim": heads,
            "cross_attention_dim": u.cross_attention_dim,
            "norm_num_groups": u.norm_num_groups,
            "transformer_layers_per_block": u.transformer_layers_per_block,
        }
        if u.pooled_to_time:
            kwargs["class_embed_type"] = "projection"
            kwargs["projection_class_embeddings_input_dim"] = u.cross_attention_dim
        return kwargs

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def known_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | Path) -> GeneratorConfig:
    """A bare name ("cpu") looks in the bundled configs; anything path-like loads that file."""
    text = str(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or "/" in text or text.endswith(".json")
    path = Path(text) if looks_like_path else CONFIG_DIR / f"{text}.json"
    if not path.is_file():
        if looks_like_path:
            raise ConfigError(f"generator config file {path} does not exist")
        raise ConfigError(
            f"unknown generator config {text!r}; known: {', '.join(known_configs())} "
            f"(or give a path to a .json file)"
        )
    try:
        return GeneratorConfig.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"invalid generator config {path}: {err}") from err
