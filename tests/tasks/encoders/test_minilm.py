"""MiniLM text encoder: bundled model, offline load, sentence-transformers pooling."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.encoders import EncoderError, create
from tasks.encoders.minilm import MiniLMEncoder


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    return create("text", "minilm", device="cpu")


def test_meaning_orders_similarity(minilm):
    query, drawing, car = minilm.encode(
        [
            "pencil sketch by a forensic artist",
            "a pencil drawing of a face",
            "a photograph of a car",
        ]
    )
    assert float(query @ drawing) > float(query @ car) + 0.2


def test_contract_and_batch_independence(minilm):
    texts = ["a charcoal sketch", "a police composite drawing of a man with a beard", "x"]
    vectors = minilm.encode(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    single = np.concatenate([minilm.encode([t]) for t in texts])
    np.testing.assert_allclose(vectors, single, atol=1e-5)  # padding must not leak in
    assert minilm.version.startswith("minilm-l6-v2@")
    assert minilm.encode([]).shape == (0, 384)


def test_bad_inputs_are_refused(minilm, tmp_path):
    with pytest.raises(EncoderError):
        minilm.encode("a bare string is not a batch")
    with pytest.raises(EncoderError):
        minilm.encode([b"bytes"])
    with pytest.raises(EncoderError, match="model directory"):
        MiniLMEncoder(weights=tmp_path)
