"""The bridge formulation on the tiny-bridge config (CPU): train, save, reload, resume,
refusals, and the identity and adversarial losses it trains with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.encoders.base import EncoderError
from tasks.encoders.sface_torch import load_sface_torch, sface_embed, sface_embed_and_features
from tasks.generate.config import ConfigError, GeneratorConfig, LossSpec, load_config
from tasks.generate.formulations import known_formulations, known_starts
from tasks.generate.inputs import start_images
from tasks.generate.networks import SketchGenerator
from tasks.generate.objectives import (
    Objective,
    critic_per_item,
    feature_distance,
    jitter_and_blur,
    offset_direction,
)
from tasks.generate.saved import HEAD_WEIGHTS, MANIFEST_FILE, GeneratorMismatchError
from tasks.generate.training import list_checkpoints, train

DIMS = {"identity": 8, "image": 12, "text": 6}
VERSIONS = {"identity": "sface-aaa", "image": "effnet-bbb", "text": "minilm-ccc"}
SIZE = 32


def make_batch(step: int, batch_size: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3000 + step)
    photo = torch.rand(batch_size, 1, SIZE, SIZE, generator=g) * 2 - 1
    return {
        "sketch": (photo * 0.5 + 0.3).clamp(-1, 1),
        "spatial": photo,
        "start": photo.clamp(-1, 1) * 0.8,
        "id_target": torch.nn.functional.normalize(torch.randn(batch_size, 128, generator=g)),
        **{r: torch.randn(batch_size, d, generator=g) for r, d in DIMS.items()},
    }


def conditions(n: int) -> dict[str, torch.Tensor]:
    return {k: v for k, v in make_batch(99, n).items() if k not in ("sketch", "id_target")}


def config_with(**losses: float) -> GeneratorConfig:
    config = load_config("tiny-bridge")
    training = config.training.model_copy(update={"losses": LossSpec(**losses)})
    return config.model_copy(update={"training": training})


@pytest.fixture(scope="module")
def trained() -> SketchGenerator:
    gen = SketchGenerator.build("tiny-bridge", DIMS, VERSIONS, seed=1)
    state = train(gen, make_batch, steps=3, seed=0)
    assert len(state.losses) == 3 and all(np.isfinite(state.losses))
    return gen


def test_bridge_config_round_trips(tmp_path: Path) -> None:
    for name in ("tiny-bridge", "cpu", "demo"):
        config = load_config(name)
        assert config.formulation.kind == "bridge"
        assert GeneratorConfig.model_validate_json(config.to_json()) == config
        assert load_config(config.save(tmp_path / f"{name}.json")) == config
    assert load_config("paper").formulation.kind == "ddpm"


def test_cpu_config_draws_full_resolution_through_space_to_depth() -> None:
    config = load_config("cpu")
    assert config.resolution == 112
    assert config.unet_resolution == 28
    assert config.unet_kwargs()["in_channels"] == 2 * 16


@pytest.mark.parametrize(("field", "value", "known"), [
    ("kind", "score-sde", known_formulations()),
    ("start", "watercolour", known_starts()),
])
def test_unknown_formulation_or_start_fails_listing_the_known(
        tmp_path: Path, field: str, value: str, known: list[str]) -> None:
    raw = json.loads(load_config("tiny-bridge").to_json())
    raw["formulation"][field] = value
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=value) as err:
        load_config(tmp_path / "bad.json")
    assert all(name in str(err.value) for name in known)


def test_unknown_formulation_fails_in_the_cli_before_any_work(tmp_path: Path, capsys) -> None:
    from flows.cli import main

    raw = json.loads(load_config("tiny-bridge").to_json())
    raw["formulation"]["kind"] = "score-sde"
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    code = main(["train-generator", "--config", str(tmp_path / "bad.json"),
                 "--workspace", str(tmp_path / "ws")])
    err = capsys.readouterr().err
    assert code == 2
    assert "score-sde" in err and "bridge" in err and "ddpm" in err
    assert not (tmp_path / "ws" / "generators").exists()


def test_sampling_starts_from_the_start_image(trained: SketchGenerator) -> None:
    with pytest.raises(ValueError, match="start"):
        trained.sample({k: v for k, v in conditions(2).items() if k != "start"}, seeds=[1, 2],
                       steps=2, guidance=1.0)
    images = trained.sample(conditions(2), seeds=[1, 2], steps=2, guidance=1.0)
    assert images.shape == (2, SIZE, SIZE) and images.dtype == np.uint8


def test_bridge_saves_reloads_and_draws_the_same_pixels_twice(
        trained: SketchGenerator, tmp_path: Path) -> None:
    saved = trained.save_pretrained(tmp_path / "bridge")
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    assert manifest["formulation"] == "bridge" and manifest["start"] == "pencil-dodge"
    assert HEAD_WEIGHTS in manifest["files"]
    assert json.loads((saved / "scheduler" / "scheduler_config.json").read_text())[
        "_class_name"] == "FlowMatchEulerDiscreteScheduler"
    loaded = SketchGenerator.from_pretrained(saved)
    assert loaded.version == trained.version
    first = loaded.sample(conditions(3), seeds=[5, 6, 7], steps=3, guidance=1.5)
    again = SketchGenerator.from_pretrained(saved).sample(conditions(3), seeds=[5, 6, 7],
                                                          steps=3, guidance=1.5)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, trained.sample(conditions(3), seeds=[5, 6, 7], steps=3,
                                                        guidance=1.5))


def test_bridge_refused_on_mismatched_encoders(trained: SketchGenerator, tmp_path: Path) -> None:
    saved = trained.save_pretrained(tmp_path / "bridge")
    with pytest.raises(GeneratorMismatchError, match="identity") as err:
        SketchGenerator.from_pretrained(saved, expected_encoders={"identity": (8, "arcface-x")})
    assert err.value.roles == ["identity"]


def test_identity_loss_pulls_the_picture_toward_the_mugshot_vector() -> None:
    """The identity term is the SFace cosine gap, and its gradient reaches the generator."""
    gen = SketchGenerator.build(config_with(identity=1.0, identity_items=2), DIMS, seed=2)
    objective = Objective(gen.config.training.losses, "cpu")
    loss, terms = objective.generator_loss(gen, make_batch(0), torch.Generator().manual_seed(0),
                                           step=0)
    assert set(terms) == {"regression", "identity"}
    assert 0.0 < terms["identity"] < 2.0
    assert loss.item() == pytest.approx(terms["regression"] + terms["identity"], rel=1e-5)
    loss.backward()
    grads = [p.grad for p in gen.unet.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_losses_wait_for_their_first_step() -> None:
    gen = SketchGenerator.build(config_with(identity=1.0, identity_from_step=5, adversarial=0.1,
                                            adversarial_from_step=5), DIMS, seed=2)
    objective = Objective(gen.config.training.losses, "cpu")
    _, early = objective.generator_loss(gen, make_batch(0), torch.Generator().manual_seed(0), 4)
    assert set(early) == {"regression"} and objective.critic_step(make_batch(0)) == {}
    _, late = objective.generator_loss(gen, make_batch(0), torch.Generator().manual_seed(0), 5)
    assert set(late) == {"regression", "identity", "adversarial"}
    assert "critic" in objective.critic_step(make_batch(0))


def test_style_critic_learns_a_real_sketch_under_another_style_as_fake() -> None:
    """The projection critic scores (sketch, style); a batch of two styles gives it a
    mismatch term, and after a few updates the same real sketch scores higher under its own
    style's vector than under the other's."""
    gen = SketchGenerator.build(config_with(adversarial=0.5, critic_style=True,
                                            discriminator_lr=0.01), DIMS, seed=2)
    objective = Objective(gen.config.training.losses, "cpu", style_dim=DIMS["text"])
    styles = torch.nn.functional.normalize(torch.randn(2, DIMS["text"],
                                                       generator=torch.Generator().manual_seed(5)))

    def two_styles(step: int) -> dict[str, torch.Tensor]:
        batch = make_batch(step)
        own = torch.tensor([0, 1, 0, 1])
        batch["text"] = styles[own]
        # Style 1's real sketches are the photo inverted: something a critic can see.
        batch["sketch"] = torch.where(own.view(-1, 1, 1, 1) == 1, -batch["sketch"],
                                      batch["sketch"])
        return batch

    for step in range(30):
        _, terms = objective.generator_loss(gen, two_styles(step),
                                            torch.Generator().manual_seed(step), step)
        assert "adversarial" in terms
        critic_terms = objective.critic_step(two_styles(step))
        assert set(critic_terms) == {"critic", "critic_mismatch"}
    batch = two_styles(99)
    with torch.no_grad():
        own = critic_per_item(objective.critic(batch["start"], batch["sketch"], batch["text"]))
        swapped = critic_per_item(objective.critic(batch["start"], batch["sketch"],
                                                   batch["text"].flip(0)))
    assert bool((own > swapped).all())
    with pytest.raises(ValueError, match="style"):
        Objective(gen.config.training.losses, "cpu", style_dim=None)


def test_style_swap_draws_a_mugshot_in_another_style_for_the_critic_alone() -> None:
    gen = SketchGenerator.build(config_with(adversarial=0.5, critic_style=True,
                                            critic_sees_start=False, style_swap_items=2),
                                DIMS, seed=2)
    objective = Objective(gen.config.training.losses, "cpu", style_dim=DIMS["text"])
    assert objective.critic is not None and objective.critic.scales[0].net[0].in_channels == 1
    batch = make_batch(0)
    styles = torch.nn.functional.normalize(torch.randn(2, DIMS["text"]))
    batch["text"] = styles[torch.tensor([0, 0, 1, 1])]
    picked = objective._swap_styles(batch)
    assert picked is not None
    swapped, donors = picked
    assert len(swapped["text"]) == 2 and donors.tolist() == [2, 2]
    # Each swapped item keeps its mugshot and takes the next item's different style.
    assert torch.equal(swapped["start"], batch["start"][:2])
    assert torch.equal(swapped["text"], styles[torch.tensor([1, 1])])
    loss, terms = objective.generator_loss(gen, batch, torch.Generator().manual_seed(0), 0)
    assert {"adversarial", "adversarial_swapped"} <= set(terms)
    loss.backward()
    assert any(p.grad is not None for p in gen.unet.parameters())
    assert "critic" in objective.critic_step(batch)
    one_style = make_batch(1)
    one_style["text"] = styles[torch.zeros(4, dtype=torch.long)]
    assert objective._swap_styles(one_style) is None


def test_texture_features_are_frozen_and_compare_texture_not_layout() -> None:
    from tasks.generate.texture import TextureFeatures, texture_distance

    features = TextureFeatures()
    assert not any(p.requires_grad for p in features.parameters())
    features.train()
    assert not features.training  # ImageNet's BatchNorm statistics stay
    g = torch.Generator().manual_seed(0)
    stripes = torch.sin(torch.arange(64.0) * 1.3).view(1, 1, 1, 64).expand(1, 1, 64, 64)
    shifted = torch.roll(stripes, shifts=7, dims=3)  # same texture, moved
    blobs = torch.nn.functional.avg_pool2d(torch.randn(1, 1, 64, 64, generator=g), 9, 1, 4)
    blobs = blobs / blobs.abs().max()
    grams = [features.grams(x) for x in (stripes, shifted, blobs)]
    assert [tuple(m.shape[1:]) for m in grams[0]] == [(16, 16), (24, 24), (40, 40)]
    assert float(texture_distance(grams[0], grams[0])) == 0.0
    assert float(texture_distance(grams[1], grams[0])) < 0.1 * float(
        texture_distance(grams[2], grams[0]))
    picture = blobs.clone().requires_grad_(True)
    texture_distance(features.grams(picture), grams[0]).backward()
    assert picture.grad is not None and picture.grad.abs().sum() > 0


def test_texture_loss_compares_swapped_drawings_with_the_style_they_were_given() -> None:
    gen = SketchGenerator.build(config_with(texture=1.0, texture_from_step=3, texture_items=2,
                                            style_swap_items=2), DIMS, seed=2)
    objective = Objective(gen.config.training.losses, "cpu", style_dim=DIMS["text"])
    assert objective.critic is None and objective.texture_model is not None
    batch = make_batch(0)
    styles = torch.nn.functional.normalize(torch.randn(2, DIMS["text"]))
    batch["text"] = styles[torch.tensor([0, 0, 1, 1])]
    _, early = objective.generator_loss(gen, batch, torch.Generator().manual_seed(0), 2)
    assert set(early) == {"regression"}
    loss, terms = objective.generator_loss(gen, batch, torch.Generator().manual_seed(0), 3)
    assert set(terms) == {"regression", "texture"} and terms["texture"] > 0
    loss.backward()
    assert any(p.grad is not None for p in gen.unet.parameters())
    # Outputs equal to their own sketches cost nothing; swapped drawings are held to the
    # donor's sketch (item 2's), so drawing the donor's sketch costs nothing either.
    sketch = batch["sketch"]
    own = objective._texture(batch, sketch, None)
    donor = objective._texture(batch, sketch, (batch, torch.tensor([2, 2]), sketch[[2, 2]]))
    other = objective._texture(batch, sketch, (batch, torch.tensor([2, 2]), sketch[[0, 1]]))
    assert float(own) == 0.0 and float(donor) == 0.0 and float(other) > 0


def test_a_fixed_time_of_one_is_where_the_sampler_begins() -> None:
    """``at=1`` puts every item at the start image (the bridge) or at the last noise level
    (ddpm): what the style swap draws from."""
    from tasks.generate.formulations.base import build_formulation

    x0 = torch.rand(3, 1, SIZE, SIZE) * 2 - 1
    start = torch.rand(3, 1, SIZE, SIZE) * 2 - 1
    bridge = build_formulation(load_config("tiny-bridge"))
    noised = bridge.noise(x0, start, torch.Generator().manual_seed(0), at=1.0)
    assert torch.allclose(noised.x_t, start) and torch.all(noised.t == 1.0)
    drawn = bridge.noise(x0, start, torch.Generator().manual_seed(0))
    assert not torch.all(drawn.t == 1.0)
    ddpm = build_formulation(load_config("tiny"))
    last = ddpm.config.scheduler.num_train_timesteps - 1
    assert torch.all(ddpm.noise(x0, None, torch.Generator().manual_seed(0), at=1.0).t == last)


def test_identity_loss_reads_a_blurred_shifted_copy() -> None:
    from tasks.generate.objectives import jitter_and_blur

    checker = (torch.arange(32).view(1, 1, 1, 32) + torch.arange(32).view(1, 1, 32, 1)) % 2
    picture = checker.float().expand(2, 1, 32, 32) * 2 - 1
    blurred = jitter_and_blur(picture, downsample=2, jitter=0)
    assert blurred.abs().max() < 1e-6  # a one-pixel checker carries nothing after the blur
    ramp = torch.linspace(-1, 1, 32).view(1, 1, 1, 32).expand(2, 1, 32, 32).contiguous()
    shifted = jitter_and_blur(ramp, downsample=1, jitter=3,
                              generator=torch.Generator().manual_seed(0))
    assert shifted.shape == ramp.shape and not torch.allclose(shifted, ramp)
    assert torch.equal(jitter_and_blur(ramp, 1, 0), ramp)
    gen = SketchGenerator.build(config_with(identity=1.0, identity_items=2, identity_downsample=2,
                                            identity_jitter=2), DIMS, seed=2)
    objective = Objective(gen.config.training.losses, "cpu")
    loss, terms = objective.generator_loss(gen, make_batch(0), torch.Generator().manual_seed(0),
                                           step=0)
    assert 0.0 < terms["identity"] < 2.0
    loss.backward()


def test_resume_after_kill_continues_generator_and_critic_exactly(tmp_path: Path) -> None:
    config = config_with(adversarial=0.5, adversarial_from_step=1)

    class Killed(Exception):
        pass

    def dies_at_3(step: int) -> dict[str, torch.Tensor]:
        if step == 3:
            raise Killed
        return make_batch(step)

    straight = SketchGenerator.build(config, DIMS, seed=3)
    train(straight, make_batch, 4, checkpoint_dir=tmp_path / "a", checkpoint_every=2, seed=7)
    first = SketchGenerator.build(config, DIMS, seed=3)
    with pytest.raises(Killed):
        train(first, dies_at_3, 4, checkpoint_dir=tmp_path / "b", checkpoint_every=2, seed=7)
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [2]
    resumed = SketchGenerator.build(config, DIMS, seed=42)
    state = train(resumed, make_batch, 4, checkpoint_dir=tmp_path / "b", checkpoint_every=2,
                  seed=7, resume=True)
    assert state.resumed_from == 2
    assert resumed.weights_digest() == straight.weights_digest()
    critic_a = (tmp_path / "a" / "step-00000004" / "objective.safetensors").read_bytes()
    critic_b = (tmp_path / "b" / "step-00000004" / "objective.safetensors").read_bytes()
    assert critic_a == critic_b


def test_start_images_render_the_aligned_photo() -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (2, 112, 112, 3), dtype=np.uint8)
    grey = start_images(crops, "grey", 32)
    pencil = start_images(crops, "pencil-dodge", 32)
    assert grey.shape == pencil.shape == (2, 1, 32, 32)
    assert grey.min() >= -1 and grey.max() <= 1
    assert not np.allclose(grey, pencil)


def test_sampling_noise_above_one_is_a_bridge_setting_only() -> None:
    """A bridge may sample with more than its posterior's noise (diversity); DDIM's eta is
    at most 1, and a config saying otherwise fails on load."""
    bridge = load_config("tiny-bridge")
    spec = bridge.formulation.model_copy(update={"default_eta": 4.0})
    assert type(spec).model_validate(spec.model_dump()).default_eta == 4.0
    ddpm = load_config("tiny").formulation.model_dump()
    with pytest.raises(ValueError, match="at most 1"):
        type(spec).model_validate({**ddpm, "default_eta": 2.0})


def test_each_style_may_sample_with_its_own_noise(trained: SketchGenerator,
                                                 tmp_path: Path) -> None:
    """``style_eta`` round-trips with the config and the saved manifest; a value the
    formulation does not take is refused at load naming the style; per-item noise samples
    each value's items as that value alone would."""
    bridge = load_config("tiny-bridge")
    spec = bridge.formulation.model_copy(update={"style_eta": {"cufsf-artist": 3.0}})
    assert type(spec).model_validate(spec.model_dump()).style_eta == {"cufsf-artist": 3.0}
    ddpm = load_config("tiny").formulation.model_dump()
    with pytest.raises(ValueError, match=r"style_eta\['cufsf-artist'\].*at most 1"):
        type(spec).model_validate({**ddpm, "style_eta": {"cufsf-artist": 2.0}})
    with pytest.raises(ValueError, match=r"style_eta\['forensic-artist'\]: eta -1.0 is below 0"):
        type(spec).model_validate({**bridge.formulation.model_dump(),
                                   "style_eta": {"forensic-artist": -1.0}})

    config = bridge.model_copy(update={"formulation": spec})
    generator = SketchGenerator.build(config, DIMS, VERSIONS, seed=1)
    saved = generator.save_pretrained(tmp_path / "gen")
    assert json.loads((saved / MANIFEST_FILE).read_text())["style_eta"] == {"cufsf-artist": 3.0}
    assert SketchGenerator.from_pretrained(saved).formulation.style_eta == {"cufsf-artist": 3.0}

    cond, seeds = conditions(4), [3, 7, 11, 13]
    mixed = trained.sample(cond, seeds, steps=4, eta=[0.5, 3.0, 0.5, 3.0])
    for eta, index in ((0.5, [0, 2]), (3.0, [1, 3])):
        alone = trained.sample({k: v[index] for k, v in cond.items()},
                               [seeds[i] for i in index], steps=4, eta=eta)
        np.testing.assert_array_equal(mixed[index], alone)
    assert not np.array_equal(mixed, trained.sample(cond, seeds, steps=4, eta=0.5))
    with pytest.raises(ValueError, match="one per item"):
        trained.sample(cond, seeds, steps=4, eta=[0.5, 3.0])


def test_a_critic_checkpointed_before_the_style_projection_still_loads() -> None:
    """The critic's last conv was ``net.6`` and its keys had no ``scales.0.``; a run
    checkpointed then resumes with it."""
    gen = SketchGenerator.build(config_with(adversarial=0.5), DIMS, seed=2)
    objective = Objective(gen.config.training.losses, "cpu")
    saved = objective.tensors()
    assert all(k.startswith("scales.0.") for k in saved)
    unscaled = {k[len("scales.0."):]: v for k, v in saved.items()}
    old = {(f"net.6.{k[4:]}" if k.startswith("out.") else k): v for k, v in unscaled.items()}
    assert any(k.startswith("net.6.") for k in old)
    fresh = Objective(gen.config.training.losses, "cpu", seed=9)
    fresh.load(old, None)
    assert all(torch.equal(fresh.tensors()[k], v) for k, v in saved.items())


def test_a_multi_scale_critic_judges_the_sketch_shrunk_too() -> None:
    """``critic_scales`` critics, each on the sketch halved once more; a generator step is
    scored by all of them and every scale's critic learns."""
    gen = SketchGenerator.build(config_with(adversarial=0.5, critic_scales=3), DIMS, seed=2)
    objective = Objective(gen.config.training.losses, "cpu")
    assert objective.critic is not None and len(objective.critic.scales) == 3
    batch = make_batch(0)
    scores = objective.critic(batch["start"], batch["sketch"])
    assert [s.shape[-1] for s in scores] == [SIZE // 8, SIZE // 16, SIZE // 32]
    before = {k: v.clone() for k, v in objective.tensors().items()}
    loss, terms = objective.generator_loss(gen, batch, torch.Generator().manual_seed(0), 0)
    loss.backward()
    assert "adversarial" in terms and "critic" in objective.critic_step(batch)
    after = objective.tensors()
    for scale in range(3):
        key = f"scales.{scale}.out.parametrizations.weight.original"
        assert not torch.equal(before[key], after[key])


def test_the_start_render_is_a_fake_for_the_critic() -> None:
    """With ``critic_start_as_fake`` the critic learns the start image as fake beside the
    real sketch (items whose target is the start itself are left out); it must not also be
    shown the start, or it would see the two match."""
    with pytest.raises(ValueError, match="critic_sees_start"):
        LossSpec(adversarial=0.5, critic_start_as_fake=True)
    gen = SketchGenerator.build(config_with(adversarial=0.5, critic_sees_start=False,
                                            critic_start_as_fake=True, discriminator_lr=0.01),
                                DIMS, seed=2)
    objective = Objective(gen.config.training.losses, "cpu")
    for step in range(30):
        objective.generator_loss(gen, make_batch(step), torch.Generator().manual_seed(step),
                                 step)
        terms = objective.critic_step(make_batch(step))
        assert "critic_start" in terms
    batch = make_batch(99)
    with torch.no_grad():
        real = critic_per_item(objective.critic(None, batch["sketch"]))
        start = critic_per_item(objective.critic(None, batch["start"]))
    assert bool((real > start).all())
    same = make_batch(0)
    same["start"] = same["sketch"].clone()
    objective.generator_loss(gen, same, torch.Generator().manual_seed(0), 0)
    assert "critic_start" not in objective.critic_step(same)


def test_identity_target_weights_drop_items_and_noisy_times() -> None:
    """id_weight 0 removes an item from the identity term (an artist sketch with no usable
    vector trains without it), and identity_max_t drops items far from the sketch."""
    gen = SketchGenerator.build(config_with(identity=1.0, identity_items=4), DIMS, seed=2)
    objective = Objective(gen.config.training.losses, "cpu")
    batch = make_batch(0)
    _, full = objective.generator_loss(gen, batch, torch.Generator().manual_seed(0), step=0)
    _, none = objective.generator_loss(gen, {**batch, "id_weight": torch.zeros(4)},
                                       torch.Generator().manual_seed(0), step=0)
    assert full["identity"] > 0.0 and none["identity"] == 0.0
    half = torch.tensor([1.0, 1.0, 0.0, 0.0])
    _, some = objective.generator_loss(gen, {**batch, "id_weight": half},
                                       torch.Generator().manual_seed(0), step=0)
    assert 0.0 < some["identity"] < full["identity"]

    late = SketchGenerator.build(config_with(identity=1.0, identity_items=4, identity_max_t=0.01),
                                 DIMS, seed=2)
    strict = Objective(late.config.training.losses, "cpu")
    # tiny-bridge draws t in [t_min, 1] with t_min above 0.01: no item is that close.
    _, terms = strict.generator_loss(late, batch, torch.Generator().manual_seed(0), step=0)
    assert terms["identity"] == 0.0


def test_the_photo_anchor_compares_only_artist_target_items_with_their_mugshot() -> None:
    """``identity_photo`` adds 1 - cos(drawing, mugshot) on the items its weight marks (the
    artist-target styles'), computed from the same SFace pass; where no item is marked it is
    zero, and a batch without the mugshots' vectors is refused, not trained without it."""
    artists = ("cufsf-artist",)
    gen = SketchGenerator.build(config_with(identity=1.0, identity_items=4,
                                            identity_artist_styles=artists,
                                            identity_photo=0.5), DIMS, seed=2)
    objective = Objective(gen.config.training.losses, "cpu")
    batch = make_batch(0)
    photo = torch.nn.functional.normalize(torch.randn(4, 128, generator=torch.Generator()
                                                      .manual_seed(5)))
    marked = {**batch, "id_photo": photo, "id_artist": torch.tensor([1.0, 1.0, 0.0, 0.0])}
    total, terms = objective.generator_loss(gen, marked, torch.Generator().manual_seed(0), 0)
    assert terms["identity_photo"] > 0.0
    _adds_weight_times_term(gen, marked, total, terms, "identity_photo", 0.5, artists)
    with pytest.raises(ValueError, match="id_photo"):
        objective.generator_loss(gen, {**batch, "id_artist": marked["id_artist"]},
                                 torch.Generator().manual_seed(0), 0)
    unmarked = {**marked, "id_artist": torch.zeros(4)}
    _, none = objective.generator_loss(gen, unmarked, torch.Generator().manual_seed(0), 0)
    assert none["identity_photo"] == 0.0
    # Same drawings, the mugshot as the artist target too: the two terms agree.
    same = {**marked, "id_target": photo, "id_artist": torch.ones(4)}
    _, both = objective.generator_loss(gen, same, torch.Generator().manual_seed(0), 0)
    assert both["identity_photo"] == pytest.approx(both["identity"], rel=1e-5)


def test_the_photo_anchor_needs_an_artist_target() -> None:
    with pytest.raises(ValueError, match="identity_artist_styles"):
        LossSpec(identity=0.4, identity_photo=0.2)
    spec = LossSpec(identity=0.4, identity_artist_styles=("cufsf-artist",), identity_photo=0.2)
    assert LossSpec.model_validate_json(spec.model_dump_json()) == spec
    assert spec.needs_photo_vectors
    assert LossSpec(identity=0.4, identity_artist_styles=("cufsf-artist",),
                    identity_direction=1.0).needs_photo_vectors
    assert not LossSpec(identity=0.4, identity_artist_styles=("cufsf-artist",)).needs_photo_vectors


def test_artist_identity_target_needs_the_identity_loss() -> None:
    with pytest.raises(ValueError, match="identity > 0"):
        LossSpec(identity_artist_styles=("cufsf-artist",))
    with pytest.raises(ValueError, match="twice"):
        LossSpec(identity=0.1, identity_artist_styles=("cufsf-artist", "cufsf-artist"))
    spec = LossSpec(identity=0.1, identity_artist_styles=("cufsf-artist",), identity_max_t=0.5)
    assert LossSpec.model_validate_json(spec.model_dump_json()) == spec


def test_sface_features_come_from_the_same_pass_as_its_vectors() -> None:
    """The feature view shares the frozen SFace's weights: its vectors are sface_embed's, its
    blocks have SFace's shapes, and the module every other caller shares keeps no hook."""
    model = load_sface_torch()
    images = torch.rand(2, 1, 112, 112, generator=torch.Generator().manual_seed(4)) * 2 - 1
    vectors, features = sface_embed_and_features(model, images, (2, 4, 6))
    assert torch.allclose(vectors, sface_embed(model, images), atol=1e-6)
    assert [f.shape[0] for f in features] == [2, 2, 2]
    assert all(f.ndim == 4 for f in features)
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(EncoderError, match="no block 15"):
        sface_embed_and_features(model, images, (15,))


def test_feature_matching_compares_the_drawing_with_the_artists_sketch_on_marked_items(
) -> None:
    """``identity_features`` adds the early blocks' distance between each marked item's drawing
    and its artist sketch: zero where no item is marked, growing with the items marked, and
    its gradient reaches the generator; the identity term itself is unchanged by it."""
    artists = ("cufsf-artist",)
    gen = SketchGenerator.build(config_with(identity=1.0, identity_items=4,
                                            identity_artist_styles=artists,
                                            identity_features=0.5), DIMS, seed=2)
    objective = Objective(gen.config.training.losses, "cpu")
    batch = {**make_batch(0), "id_artist": torch.tensor([1.0, 1.0, 0.0, 0.0])}
    total, terms = objective.generator_loss(gen, batch, torch.Generator().manual_seed(0), 0)
    assert terms["identity_features"] > 0.0
    _, every = objective.generator_loss(gen, {**batch, "id_artist": torch.ones(4)},
                                        torch.Generator().manual_seed(0), 0)
    _, none = objective.generator_loss(gen, {**batch, "id_artist": torch.zeros(4)},
                                       torch.Generator().manual_seed(0), 0)
    assert none["identity_features"] == 0.0 < terms["identity_features"]
    assert every["identity_features"] > terms["identity_features"]
    # An artist item whose sketch gave no usable vector (id_weight 0) is not matched either.
    _, unusable = objective.generator_loss(
        gen, {**batch, "id_artist": torch.ones(4), "id_weight": torch.tensor([1.0, 1, 0, 0])},
        torch.Generator().manual_seed(0), 0)
    assert unusable["identity_features"] == pytest.approx(terms["identity_features"], rel=1e-6)
    _adds_weight_times_term(gen, batch, total, terms, "identity_features", 0.5, artists)
    with pytest.raises(ValueError, match="id_artist"):
        objective.generator_loss(gen, make_batch(0), torch.Generator().manual_seed(0), 0)


def _adds_weight_times_term(gen: SketchGenerator, batch: dict, total: torch.Tensor,
                            terms: dict[str, float], name: str, weight: float,
                            artists: tuple[str, ...]) -> None:
    """The same generator without the term: the identity term is unchanged, the total is
    exactly weight x term less, and the term's gradient reaches the generator."""
    plain = SketchGenerator.build(config_with(identity=1.0, identity_items=4,
                                              identity_artist_styles=artists), DIMS, seed=2)
    plain_total, without = Objective(plain.config.training.losses, "cpu").generator_loss(
        plain, batch, torch.Generator().manual_seed(0), 0)
    assert without["identity"] == pytest.approx(terms["identity"], rel=1e-5)
    assert float(total) == pytest.approx(float(plain_total) + weight * terms[name], rel=1e-5)
    total.backward()
    grads = [p.grad for p in gen.unet.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_a_drawing_that_is_the_artists_sketch_has_no_feature_distance() -> None:
    """The artist's sketch is shifted with the drawing (the same jitter for the pair), so a
    perfect drawing scores zero however far the pair is shifted."""
    model = load_sface_torch()
    sketch = torch.rand(3, 1, 112, 112, generator=torch.Generator().manual_seed(6)) * 2 - 1
    both = jitter_and_blur(torch.cat([sketch, sketch], dim=1), 2, 4,
                           torch.Generator().manual_seed(1))
    _, mine = sface_embed_and_features(model, both[:, :1], (2, 4))
    _, theirs = sface_embed_and_features(model, both[:, 1:], (2, 4))
    assert float(feature_distance(mine, theirs, torch.ones(3))) == pytest.approx(0.0, abs=1e-6)
    _, other = sface_embed_and_features(model, sketch.flip(-1), (2, 4))
    assert float(feature_distance(mine, other, torch.ones(3))) > 0.05


def test_the_gram_statistic_asks_for_the_marks_without_their_places() -> None:
    """Compared by Gram matrices, the artist's sketch moved across the page is nearly the same
    drawing; compared place by place it is not. Both are zero for the sketch itself."""
    model = load_sface_torch()
    sketch = torch.rand(2, 1, 112, 112, generator=torch.Generator().manual_seed(8)) * 2 - 1
    moved = sketch.roll(shifts=(9, 13), dims=(2, 3))
    blocks = (2, 4)
    _, theirs = sface_embed_and_features(model, sketch, blocks)
    _, same = sface_embed_and_features(model, sketch, blocks)
    _, mine = sface_embed_and_features(model, moved, blocks)
    ones = torch.ones(2)
    assert float(feature_distance(same, theirs, ones, "gram")) == pytest.approx(0.0, abs=1e-6)
    placed = float(feature_distance(mine, theirs, ones, "activations"))
    orderless = float(feature_distance(mine, theirs, ones, "gram"))
    assert orderless < 0.1 * placed
    # Other marks in the same places (the noise smoothed away) are another texture.
    smooth = jitter_and_blur(sketch, 8, 0)
    _, other = sface_embed_and_features(model, smooth, blocks)
    assert float(feature_distance(other, theirs, ones, "gram")) > 10 * orderless
    with pytest.raises(ValueError):
        LossSpec(identity=0.4, identity_artist_styles=("cufsf-artist",), identity_features=0.5,
                 identity_feature_statistic="histogram")


def test_feature_matching_needs_an_artist_target_and_real_blocks() -> None:
    with pytest.raises(ValueError, match="identity_artist_styles"):
        LossSpec(identity=0.4, identity_features=0.5)
    for blocks in ((), (2, 2), (0,), (15,)):
        with pytest.raises(ValueError, match="identity_feature_blocks"):
            LossSpec(identity=0.4, identity_artist_styles=("cufsf-artist",),
                     identity_features=0.5, identity_feature_blocks=blocks)
    spec = LossSpec(identity=0.4, identity_artist_styles=("cufsf-artist",),
                    identity_features=0.5, identity_feature_blocks=(1, 3),
                    identity_feature_statistic="gram")
    assert LossSpec.model_validate_json(spec.model_dump_json()) == spec


def test_offset_direction_asks_where_the_drawing_left_its_photo_not_how_far() -> None:
    """0 along the artist's offset at any distance, 1 across it, 2 against it; a drawing
    that is its photo has no offset and scores 1, never NaN."""
    photo = torch.tensor([[1.0, 0.0, 0.0]]).repeat(5, 1)
    artist = torch.nn.functional.normalize(torch.tensor([[1.0, 1.0, 0.0]]), dim=1).repeat(5, 1)
    drawn = torch.nn.functional.normalize(torch.tensor([
        [1.0, 0.1, 0.0],    # a little way toward the artist
        [1.0, 3.0, 0.0],    # past the artist, the same way
        [1.0, 0.0, 1.0],    # as far, another way
        [1.0, -1.0, 0.0],   # away from the artist
        [1.0, 0.0, 0.0],    # the photo itself
    ]), dim=1)
    score = offset_direction(drawn, photo, artist)
    assert torch.isfinite(score).all()
    assert float(score[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(score[1]) == pytest.approx(0.0, abs=1e-6)
    assert float(score[2]) > 0.5 and float(score[3]) > 1.5
    assert float(score[4]) == pytest.approx(1.0)


def test_the_direction_term_marks_the_artist_items_with_a_usable_artist_vector() -> None:
    """``identity_direction`` adds 1 - cos(drawing - mugshot, artist - mugshot) on the artist
    items whose artist vector is usable, from the identity term's own SFace pass: zero where
    none is marked, exactly weight x term in the total, its gradient reaching the generator;
    without the mugshots' vectors it is a clear error."""
    artists = ("cufsf-artist",)
    gen = SketchGenerator.build(config_with(identity=1.0, identity_items=4,
                                            identity_artist_styles=artists,
                                            identity_direction=0.5), DIMS, seed=2)
    objective = Objective(gen.config.training.losses, "cpu")
    photo = torch.nn.functional.normalize(torch.randn(4, 128, generator=torch.Generator()
                                                      .manual_seed(5)))
    batch = {**make_batch(0), "id_photo": photo,
             "id_artist": torch.tensor([1.0, 1.0, 0.0, 0.0])}
    total, terms = objective.generator_loss(gen, batch, torch.Generator().manual_seed(0), 0)
    assert terms["identity_direction"] > 0.0 and "identity_photo" not in terms
    _, none = objective.generator_loss(gen, {**batch, "id_artist": torch.zeros(4)},
                                       torch.Generator().manual_seed(0), 0)
    assert none["identity_direction"] == 0.0
    _, unusable = objective.generator_loss(
        gen, {**batch, "id_weight": torch.tensor([1.0, 0.0, 1.0, 1.0])},
        torch.Generator().manual_seed(0), 0)
    assert 0.0 < unusable["identity_direction"] < terms["identity_direction"]
    _adds_weight_times_term(gen, batch, total, terms, "identity_direction", 0.5, artists)
    with pytest.raises(ValueError, match="id_photo"):
        objective.generator_loss(gen, {**batch, "id_photo": None},
                                 torch.Generator().manual_seed(0), 0)
    with pytest.raises(ValueError, match="identity_artist_styles"):
        LossSpec(identity=0.4, identity_direction=1.0)
    spec = LossSpec(identity=0.4, identity_artist_styles=artists, identity_direction=1.0)
    assert LossSpec.model_validate_json(spec.model_dump_json()) == spec
