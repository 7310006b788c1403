"""open_clip encoders: a custom JSON arch, random init, local weights in both file formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.encoders import EncoderError, create
from tasks.encoders.clip import OpenClipImageEncoder, OpenClipTextEncoder

TEXTS = ["a pencil sketch of a face", "a photograph", "charcoal, heavy shading"]


@pytest.fixture(scope="module")
def random_image(tiny_clip_config) -> OpenClipImageEncoder:
    return create(
        "image", "open_clip", config=str(tiny_clip_config), random_init=True, device="cpu", seed=1
    )


@pytest.fixture(scope="module", params=[".pt", ".safetensors"])
def weights(request, random_image, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip_weights") / f"tiny{request.param}"
    state = random_image.model.state_dict()
    if request.param == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def _expected_image(model, preprocess, faces: np.ndarray) -> np.ndarray:
    from PIL import Image

    x = torch.stack([preprocess(Image.fromarray(f[:, :, ::-1].copy())) for f in faces])
    with torch.no_grad():
        return model.encode_image(x, normalize=True).numpy()


def test_custom_config_registers_and_names_the_arch(random_image):
    assert random_image.arch == "tiny-clip-test"
    assert random_image.dim == 32
    assert random_image.version == "open_clip-tiny-clip-test@random-1"


def test_image_vectors_from_weights_equal_in_memory_model(random_image, weights, fake_faces):
    loaded = create(
        "image",
        "open_clip",
        arch="tiny-clip-test",
        weights=str(weights),
        device="cpu",
        batch_size=2,
    )
    vectors = loaded.encode(fake_faces)
    assert vectors.shape == (5, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = _expected_image(random_image.model, random_image.preprocess, fake_faces)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(random_image.encode(fake_faces), expected, atol=1e-5)
    assert loaded.version.startswith("open_clip-tiny-clip-test@")
    assert "random" not in loaded.version


def test_text_vectors_from_weights_equal_in_memory_model(random_image, weights):
    import open_clip

    text = create("text", "open_clip", arch="tiny-clip-test", weights=str(weights), device="cpu")
    assert isinstance(text, OpenClipTextEncoder) and text.dim == 32
    tokens = open_clip.get_tokenizer("tiny-clip-test")(TEXTS)
    with torch.no_grad():
        expected = random_image.model.encode_text(tokens, normalize=True).numpy()
    vectors = text.encode(TEXTS)
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_image_and_text_encoders_share_one_model(tiny_clip_config):
    options = {"config": str(tiny_clip_config), "random_init": True, "device": "cpu", "seed": 9}
    image = create("image", "open_clip", **options)
    text = create("text", "open_clip", **options)
    assert text.model is image.model


def test_refusals(tiny_clip_config, tmp_path):
    with pytest.raises(EncoderError, match="no CLIP weights ship offline"):
        create("image", "open_clip", config=str(tiny_clip_config))
    with pytest.raises(EncoderError, match="local file"):
        create("image", "open_clip", weights="openai")
    with pytest.raises(EncoderError, match="unknown open_clip arch"):
        create("text", "open_clip", arch="no-such-arch", random_init=True)
    with pytest.raises(EncoderError, match="model hub"):
        create("text", "open_clip", arch="xlm-roberta-base-ViT-B-32", random_init=True)
    broken = tmp_path / "broken-clip.json"
    broken.write_text('{"embed_dim": 8}')
    with pytest.raises(EncoderError, match="lacks vision_cfg, text_cfg"):
        create("image", "open_clip", config=str(broken), random_init=True)


def test_default_arch_tokenizer_works_offline():
    import open_clip

    tokens = open_clip.get_tokenizer("ViT-B-32")(["a pencil sketch"])
    assert tuple(tokens.shape) == (1, 77)


def test_bad_batches_are_refused(random_image, tiny_clip_config):
    with pytest.raises(EncoderError):
        random_image.encode(np.zeros((1, 112, 112), dtype=np.float32))
    text = create(
        "text", "open_clip", config=str(tiny_clip_config), random_init=True, device="cpu", seed=1
    )
    with pytest.raises(EncoderError):
        text.encode("not a list")
