"""AdaFace: official parameter names, official checkpoint layout, safe loading, clear errors."""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.encoders import EncoderError, create
from tasks.encoders.adaface import AdaFaceEncoder, build_model


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(3)
    model = build_model("ir_tiny").eval()
    # Non-trivial BatchNorm statistics, so a load that skipped buffers would show.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def official_ckpt(tiny_model, tmp_path_factory) -> Path:
    """The Lightning layout of the released files: backbone under 'model.', head alongside."""
    path = tmp_path_factory.mktemp("adaface") / "adaface_ir_tiny.ckpt"
    state = {f"model.{k}": v for k, v in tiny_model.state_dict().items()}
    state["head.kernel"] = torch.randn(512, 10)
    torch.save(
        {
            "epoch": 25,
            "global_step": 1000,
            "pytorch-lightning_version": "1.8.6",
            "state_dict": state,
            "hyper_parameters": argparse.Namespace(arch="ir_tiny", head="adaface", m=0.4),
        },
        path,
    )
    return path


def _reference(model: torch.nn.Module, faces: np.ndarray) -> np.ndarray:
    """The official to_input(): BGR kept, (x/255 - 0.5)/0.5, NCHW."""
    x = torch.from_numpy(((faces / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2)).float()
    with torch.no_grad():
        feature, norm = model(x)
    assert norm.shape == (len(faces), 1)
    return feature.numpy()


@pytest.fixture(scope="module")
def encoder(official_ckpt) -> AdaFaceEncoder:
    return create("identity", "adaface", weights=str(official_ckpt), arch="ir_tiny", device="cpu")


def test_official_ckpt_loads_and_matches_in_memory_model(encoder, tiny_model, fake_faces):
    vectors = encoder.encode(fake_faces)
    assert vectors.shape == (5, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, _reference(tiny_model, fake_faces), atol=1e-5)
    assert encoder.version.startswith("adaface-ir_tiny@") and "random" not in encoder.version


def test_batch_independence(official_ckpt, fake_faces, encoder):
    small = AdaFaceEncoder(official_ckpt, arch="ir_tiny", device="cpu", batch_size=2)
    single = np.concatenate([encoder.encode(f[None]) for f in fake_faces])
    np.testing.assert_allclose(small.encode(fake_faces), single, atol=1e-5)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_bare_state_dict_and_safetensors(tiny_model, tmp_path, fake_faces, suffix):
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    else:
        torch.save(tiny_model.state_dict(), path)
    encoder = AdaFaceEncoder(path, arch="ir_tiny", device="cpu")
    np.testing.assert_allclose(
        encoder.encode(fake_faces[:2]), _reference(tiny_model, fake_faces[:2]), atol=1e-5
    )


def test_no_weights_is_refused_unless_random_init():
    with pytest.raises(EncoderError, match="no weights ship offline"):
        create("identity", "adaface")
    first = AdaFaceEncoder(arch="ir_tiny", random_init=True, seed=5, device="cpu")
    again = AdaFaceEncoder(arch="ir_tiny", random_init=True, seed=5, device="cpu")
    assert first.version == "adaface-ir_tiny@random-5"
    faces = np.full((1, 112, 112, 3), 128, dtype=np.uint8)
    np.testing.assert_array_equal(first.encode(faces), again.encode(faces))


def test_ir50_forward_shape_and_official_names():
    model = build_model("ir_50").eval()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(43.59e6, rel=1e-3)
    with torch.no_grad():
        feature, norm = model(torch.randn(2, 3, 112, 112))
    assert feature.shape == (2, 512) and norm.shape == (2, 1)
    keys = model.state_dict()
    assert keys["output_layer.3.weight"].shape == (512, 512 * 7 * 7)
    assert "body.23.res_layer.5.running_var" in keys
    assert "body.3.shortcut_layer.0.weight" in keys  # 64 -> 128: conv shortcut
    assert "output_layer.4.running_mean" in keys and "output_layer.4.weight" not in keys


def test_ir101_layout_without_allocating():
    with torch.device("meta"):
        keys = build_model("ir_101").state_dict()
    assert max(int(k.split(".")[1]) for k in keys if k.startswith("body.")) == 48
    assert "input_layer.2.weight" in keys  # PReLU


def test_mismatched_arch_names_keys_and_guesses(official_ckpt):
    with pytest.raises(EncoderError) as info:
        AdaFaceEncoder(official_ckpt, arch="ir_18", device="cpu")
    message = str(info.value)
    assert "ir_18" in message and ("missing" in message or "shape mismatch" in message)


def test_checkpoint_for_other_arch_is_identified(tmp_path):
    with torch.device("meta"):
        state = build_model("ir_18").state_dict()
    # Meta tensors cannot be saved; shapes are all the guess needs.
    from tasks.encoders.adaface import guess_arch, load_weights

    assert guess_arch(state) == "ir_18"
    with torch.device("meta"):
        target = build_model("ir_34")
    with pytest.raises(EncoderError, match="looks like ir_18"):
        load_weights(target, state, "ir_34")


def test_corrupted_and_unsafe_checkpoints_are_refused(tmp_path, tiny_model):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(EncoderError):
        AdaFaceEncoder(junk, arch="ir_tiny", device="cpu")
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": tiny_model.state_dict(), "extra": Fraction(1, 3)}, unsafe)
    with pytest.raises(EncoderError, match="weights_only"):
        AdaFaceEncoder(unsafe, arch="ir_tiny", device="cpu")
    with pytest.raises(EncoderError, match="not found"):
        AdaFaceEncoder(tmp_path / "missing.ckpt", arch="ir_tiny")
    with pytest.raises(EncoderError, match="unknown AdaFace arch"):
        AdaFaceEncoder(arch="ir_7", random_init=True)


def test_rejects_non_face_batches(encoder):
    with pytest.raises(EncoderError):
        encoder.encode(np.zeros((1, 112, 112, 3), dtype=np.float32))
    with pytest.raises(EncoderError):
        encoder.encode(np.zeros((1, 3, 112, 112), dtype=np.uint8))
