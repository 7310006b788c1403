"""EfficientNet-Lite0: bundled weights, pooled 1280-d features, documented preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.encoders import EncoderError, create
from tasks.encoders.effnet import EffNetLite0Encoder


@pytest.fixture(scope="module")
def effnet() -> EffNetLite0Encoder:
    return create("image", "effnet-lite0", device="cpu", batch_size=4)


def test_loads_bundled_weights(effnet):
    assert effnet.dim == 1280 and effnet.role == "image" and effnet.image_size == 224
    assert effnet.version.startswith("effnet-lite0@")


def test_vectors_are_pooled_features_before_the_classifier(effnet, fake_faces):
    """RGB, resized to 224, ImageNet mean/std; the classifier input, not its logits."""
    import cv2

    face = fake_faces[0]
    rgb = cv2.resize(face, (224, 224), interpolation=cv2.INTER_LINEAR)[..., ::-1] / 255.0
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = torch.from_numpy(((rgb - mean) / std).transpose(2, 0, 1)[None]).float()
    with torch.no_grad():
        pooled = effnet.model.extract_features(x).mean(dim=(2, 3)).numpy()
    expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(effnet.encode(face[None]), expected, atol=1e-5)


def test_batches_split_without_changing_vectors(effnet, fake_faces):
    vectors = effnet.encode(fake_faces)  # batch_size 4: two chunks
    assert vectors.shape == (5, 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[4:], effnet.encode(fake_faces[4:]), atol=1e-5)


def test_bad_weights_are_refused(tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"_fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(EncoderError, match="not an efficientnet-lite0 state_dict"):
        EffNetLite0Encoder(weights=wrong, device="cpu")
    with pytest.raises(EncoderError, match="not found"):
        EffNetLite0Encoder(weights=tmp_path / "missing.pth")


def test_rejects_non_face_batches(effnet):
    with pytest.raises(EncoderError):
        effnet.encode(np.zeros((1, 224, 224, 3), dtype=np.uint8))
