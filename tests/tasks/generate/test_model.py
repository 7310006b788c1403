"""Generator configs, save/load safety and sampling determinism, on the tiny config (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.generate.config import ConfigError, GeneratorConfig, known_configs, load_config
from tasks.generate.networks import NonFiniteSampleError, SketchGenerator, spatial_condition
from tasks.generate.saved import (
    MANIFEST_FILE,
    PROJECTOR_WEIGHTS,
    UNET_WEIGHTS,
    GeneratorLoadError,
    GeneratorMismatchError,
)
from tasks.generate.training import train

DIMS = {"identity": 8, "image": 12, "text": 6}
VERSIONS = {"identity": "sface-aaa", "image": "effnet-bbb", "text": "minilm-ccc"}
SIZE = 16


def make_batch(step: int, batch_size: int = 4, spatial: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    batch = {
        "sketch": torch.rand(batch_size, 1, SIZE, SIZE, generator=g) * 2 - 1,
        **{r: torch.randn(batch_size, d, generator=g) for r, d in DIMS.items()},
    }
    if spatial:
        batch["spatial"] = torch.rand(batch_size, 1, SIZE, SIZE, generator=g) * 2 - 1
    return batch


def conditions(n: int, spatial: bool = False) -> dict[str, torch.Tensor]:
    batch = make_batch(99, n, spatial)
    return {k: v for k, v in batch.items() if k != "sketch"}


@pytest.fixture(scope="module")
def trained() -> SketchGenerator:
    gen = SketchGenerator.build("tiny", DIMS, VERSIONS, seed=1)
    state = train(gen, make_batch, steps=3, seed=0)
    assert len(state.losses) == 3 and all(np.isfinite(state.losses))
    return gen


@pytest.fixture(scope="module")
def saved(trained: SketchGenerator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained.save_pretrained(tmp_path_factory.mktemp("gen") / "tiny")


# ---------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", known_configs())
def test_config_round_trip(name: str, tmp_path: Path) -> None:
    config = load_config(name)
    assert GeneratorConfig.model_validate_json(config.to_json()) == config
    assert load_config(config.save(tmp_path / "copy.json")) == config


def test_unknown_config_lists_known() -> None:
    assert {"tiny", "cpu", "paper"} <= set(known_configs())
    with pytest.raises(ConfigError, match="known: .*cpu.*paper.*tiny"):
        load_config("huge")


def test_invalid_config_is_refused(tmp_path: Path) -> None:
    raw = json.loads(load_config("tiny").to_json())
    raw["unet"]["attention_levels"] = [True]
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="attention_levels"):
        load_config(tmp_path / "bad.json")
    raw = json.loads(load_config("tiny").to_json())
    raw["resolutoin"] = 16
    (tmp_path / "typo.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="resolutoin"):
        load_config(tmp_path / "typo.json")


def test_unet_config_round_trips_through_diffusers(trained: SketchGenerator, saved: Path) -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(saved / "unet")
    # diffusers stores tuples as JSON lists and adds private keys (_name_or_path, ...) on load.
    def as_json(config: dict) -> object:
        public = {k: v for k, v in config.items() if not k.startswith("_")}
        return json.loads(json.dumps(public, default=str))

    assert as_json(unet.config) == as_json(trained.unet.config)
    assert load_config(saved / "generator_config.json") == trained.config


def test_parameter_counts() -> None:
    from diffusers import UNet2DConditionModel

    def count(name: str) -> int:
        with torch.device("meta"):
            return sum(p.numel() for p in UNet2DConditionModel(
                **load_config(name).unet_kwargs()).parameters())

    assert 3e6 <= count("cpu-ddpm") <= 6e6
    # The bridge's UNet works at 28 px on 32 channels: wider for the same cost a step.
    assert 6e6 <= count("cpu") <= 12e6
    assert count("paper") >= 20e6


# ---------------------------------------------------------------------------- sampling


def test_reload_samples_same_pixels(trained: SketchGenerator, saved: Path) -> None:
    cond, seeds = conditions(2), [5, 6]
    in_memory = trained.sample(cond, seeds, steps=4)
    loaded = SketchGenerator.from_pretrained(saved)
    first, second = loaded.sample(cond, seeds, steps=4), loaded.sample(cond, seeds, steps=4)
    assert first.dtype == np.uint8 and first.shape == (2, SIZE, SIZE)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, in_memory)
    assert loaded.version == trained.version
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    assert manifest["version"] == trained.version and manifest["encoder_versions"] == VERSIONS
    assert manifest["condition_dims"] == DIMS


def test_seed_is_independent_of_batch(trained: SketchGenerator) -> None:
    cond = conditions(4)
    batch = trained.sample(cond, [3, 7, 11, 13], steps=4, eta=0.5)
    alone = trained.sample({k: v[1:2] for k, v in cond.items()}, [7], steps=4, eta=0.5)
    diff = np.abs(alone[0].astype(int) - batch[1].astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.05
    assert not np.array_equal(batch[0], batch[1])


def test_guidance_changes_the_sample(trained: SketchGenerator) -> None:
    cond = conditions(1)
    plain = trained.sample(cond, [1], steps=4, guidance=1.0)
    guided = trained.sample(cond, [1], steps=4, guidance=3.0)
    assert not np.array_equal(plain, guided)


def test_missing_condition_uses_null_tokens(trained: SketchGenerator) -> None:
    cond = conditions(1)
    full = trained.sample(cond, [1], steps=3)
    no_text = trained.sample({**cond, "text": None}, [1], steps=3)
    assert no_text.shape == full.shape and not np.array_equal(full, no_text)


def test_nan_weights_raise_with_mask(trained: SketchGenerator) -> None:
    broken = SketchGenerator(trained.config, VERSIONS)
    broken.load_state_dict(trained.state_dict())
    with torch.no_grad():
        broken.unet.conv_out.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteSampleError) as err:
        broken.sample(conditions(2), [1, 2], steps=2)
    assert err.value.finite.tolist() == [False, False]
    assert err.value.images.shape == (2, SIZE, SIZE)


# ---------------------------------------------------------------------------- load safety


def test_mismatched_encoders_refused(saved: Path) -> None:
    with pytest.raises(GeneratorMismatchError, match="identity: expected encoder sface-aaa") as e:
        SketchGenerator.from_pretrained(saved, expected_encoders={"identity": (512, "sface-aaa")})
    assert e.value.roles == ["identity"] and "Re-embed" in str(e.value)
    with pytest.raises(GeneratorMismatchError, match="text: expected encoder minilm-new") as e:
        SketchGenerator.from_pretrained(
            saved, expected_encoders={"image": (12, "effnet-bbb"), "text": (6, "minilm-new")}
        )
    assert e.value.roles == ["text"]
    ok = SketchGenerator.from_pretrained(
        saved, expected_encoders={r: (d, VERSIONS[r]) for r, d in DIMS.items()}
    )
    assert ok.encoder_versions == VERSIONS


@pytest.mark.parametrize("rel", [UNET_WEIGHTS, PROJECTOR_WEIGHTS])
def test_corrupted_weights_refused(saved: Path, tmp_path: Path, rel: str) -> None:
    import shutil

    copy = Path(shutil.copytree(saved, tmp_path / "copy"))
    data = (copy / rel).read_bytes()
    (copy / rel).write_bytes(data[: len(data) // 2])
    with pytest.raises(GeneratorLoadError, match="corrupted or truncated"):
        SketchGenerator.from_pretrained(copy)


def test_not_a_generator(tmp_path: Path) -> None:
    with pytest.raises(GeneratorLoadError, match="not a saved sketch generator"):
        SketchGenerator.from_pretrained(tmp_path)


def test_checking_a_saved_generator_builds_no_network(trained: SketchGenerator, saved: Path,
                                                      tmp_path: Path) -> None:
    """The manifest records each weights file's tensor shapes, so the flow's check reads JSON
    and safetensors headers only (no torch, no diffusers); a generator saved before that is
    checked by building its nets on the meta device, with the same verdict."""
    import shutil
    import subprocess
    import sys

    from tasks.generate.networks import check_weight_shapes
    from tasks.generate.saved import SHAPES_KEY, check_recorded_shapes, read_manifest

    code = ("import sys\n"
            "from tasks.generate.saved import check_recorded_shapes, read_manifest, verify_files\n"
            f"root = {str(saved)!r}\n"
            "manifest = read_manifest(root)\n"
            "verify_files(__import__('pathlib').Path(root), manifest['files'])\n"
            "assert check_recorded_shapes(root, manifest)\n"
            "print('HEAVY', [m for m in ('torch', 'diffusers') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "HEAVY []" in out
    assert read_manifest(saved)[SHAPES_KEY][UNET_WEIGHTS]["conv_in.weight"] == "x".join(
        map(str, trained.unet.conv_in.weight.shape))

    legacy = Path(shutil.copytree(saved, tmp_path / "legacy"))
    manifest = json.loads((legacy / MANIFEST_FILE).read_text())
    del manifest[SHAPES_KEY]
    (legacy / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert not check_recorded_shapes(legacy, read_manifest(legacy))
    check_weight_shapes(legacy)

    wrong = json.loads((saved / MANIFEST_FILE).read_text())
    wrong[SHAPES_KEY][PROJECTOR_WEIGHTS]["out_norm.weight"] = "7"
    with pytest.raises(GeneratorLoadError, match=r"out_norm.weight is \[\d+\], the config "
                                                 r"expects \[7\]"):
        check_recorded_shapes(saved, wrong)


# ---------------------------------------------------------------------------- spatial


@pytest.mark.parametrize("mode", ["grey", "edges"])
def test_spatial_condition_trains_and_samples(mode: str) -> None:
    config = load_config("tiny").model_copy(update={"spatial_condition": mode})
    gen = SketchGenerator.build(config, DIMS, VERSIONS)
    assert gen.unet.config.in_channels == 2
    state = train(gen, lambda s: make_batch(s, 2, spatial=True), steps=2, seed=0)
    assert all(np.isfinite(state.losses))
    faces = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    spatial = spatial_condition(faces, mode, SIZE)
    assert spatial.shape == (2, 1, SIZE, SIZE) and spatial.min() >= -1 and spatial.max() <= 1
    out = gen.sample({**conditions(2), "spatial": spatial}, [1, 2], steps=2)
    assert out.shape == (2, SIZE, SIZE)
    with pytest.raises(ValueError, match="spatial condition"):
        gen.sample(conditions(2), [1, 2], steps=2)
