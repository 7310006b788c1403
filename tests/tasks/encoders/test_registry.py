"""The registry and the contract every plug-in keeps (float32, unit norm, (N, dim), version)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tasks.encoders as registry
from tasks.encoders import EncoderError, available, create, register
from tasks.encoders.base import Encoder, check_face_batch

REPO = Path(__file__).resolve().parents[3]
SIX = [
    ("identity", "adaface"),
    ("identity", "sface"),
    ("image", "effnet-lite0"),
    ("image", "open_clip"),
    ("text", "minilm"),
    ("text", "open_clip"),
]


def test_registry_lists_all_six():
    assert available() == SIX
    assert available("text") == [("text", "minilm"), ("text", "open_clip")]
    assert registry.DEFAULTS == {"identity": "sface", "image": "effnet-lite0", "text": "minilm"}


def test_unknown_name_lists_known_ones():
    with pytest.raises(EncoderError, match="known: adaface, sface"):
        create("identity", "arcface")


def test_name_under_the_wrong_role_is_unknown():
    with pytest.raises(EncoderError, match="unknown image encoder 'sface'"):
        create("image", "sface")


def test_factory_whose_role_differs_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "_PLUGINS", dict(registry._PLUGINS))
    register("image", "mislabelled", "tasks.encoders.sface:SFaceEncoder")
    with pytest.raises(EncoderError, match="is a identity encoder, not image"):
        create("image", "mislabelled")
    with pytest.raises(EncoderError, match="unknown encoder role"):
        register("audio", "x", "tasks.encoders.sface:SFaceEncoder")  # type: ignore[arg-type]


def test_importing_the_plugins_loads_no_heavy_library():
    code = (
        "import sys, tasks.encoders, tasks.encoders.sface, tasks.encoders.adaface, "
        "tasks.encoders.effnet, tasks.encoders.clip, tasks.encoders.minilm\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'onnx', 'open_clip', 'transformers', "
        "'cv2') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


@pytest.mark.parametrize(
    "batch",
    [
        np.zeros((2, 112, 112, 3), dtype=np.float32),
        np.zeros((2, 3, 112, 112), dtype=np.uint8),
        np.zeros((2, 224, 224, 3), dtype=np.uint8),
        np.zeros((2, 112, 112), dtype=np.uint8),
        np.zeros((112, 112, 4), dtype=np.uint8),
    ],
    ids=["float32", "nchw", "224", "grey", "bgra"],
)
def test_check_face_batch_rejects_wrong_shapes_and_dtypes(batch):
    with pytest.raises(EncoderError, match="expected aligned faces"):
        check_face_batch(batch)


def test_check_face_batch_accepts_a_single_face():
    assert check_face_batch(np.zeros((112, 112, 3), dtype=np.uint8)).shape == (1, 112, 112, 3)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory, tiny_clip_config) -> dict[tuple[str, str], Encoder]:
    """One of each plug-in; small random-init models where no weights ship offline."""
    clip = {"config": str(tiny_clip_config), "random_init": True, "device": "cpu"}
    return {
        ("identity", "sface"): create("identity", "sface", threads=2),
        ("identity", "adaface"): create(
            "identity", "adaface", arch="ir_tiny", random_init=True, device="cpu"
        ),
        ("image", "effnet-lite0"): create("image", "effnet-lite0", device="cpu"),
        ("image", "open_clip"): create("image", "open_clip", **clip),
        ("text", "minilm"): create("text", "minilm", device="cpu"),
        ("text", "open_clip"): create("text", "open_clip", **clip),
    }


@pytest.mark.parametrize("key", SIX, ids=["/".join(k) for k in SIX])
def test_output_contract(encoders, key, fake_faces):
    encoder = encoders[key]
    role, name = key
    assert isinstance(encoder, Encoder)
    assert encoder.role == role and encoder.name == name
    assert isinstance(encoder.version, str) and "@" in encoder.version
    batch = (
        ["a pencil sketch", "a photo", "a charcoal drawing"] if role == "text" else fake_faces[:3]
    )
    vectors = encoder.encode(batch)
    assert vectors.dtype == np.float32
    assert vectors.shape == (3, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    if role != "text":
        with pytest.raises(EncoderError):
            encoder.encode(fake_faces[:3].astype(np.float32))


def test_an_option_the_encoder_does_not_take_is_a_clear_error():
    with pytest.raises(EncoderError, match="takes no option arch"):
        create("identity", "sface", arch="ir_50")
