"""The bridge formulation on the tiny-bridge config (CPU): train, save, reload, resume,
refusals, and the identity and adversarial losses it trains with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.generate.config import ConfigError, GeneratorConfig, LossSpec, load_config
from tasks.generate.formulations import known_formulations, known_starts
from tasks.generate.formulations.base import start_images
from tasks.generate.model import (
    HEAD_WEIGHTS,
    MANIFEST_FILE,
    GeneratorMismatchError,
    SketchGenerator,
)
from tasks.generate.objectives import Objective
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
