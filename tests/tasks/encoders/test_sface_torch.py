"""The torch port of SFace must give onnxruntime's vectors and pass gradients to the image.

It is the identity loss of generator training: a port that drifts from SFaceEncoder would
train the generator towards a different recognizer than the one that judges it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tasks.demo.faces import draw_face, draw_sketch
from tasks.encoders import EncoderError
from tasks.encoders.sface import SFaceEncoder
from tasks.encoders.sface_torch import load_sface_torch, sface_embed
from tasks.ingest.align import align_face, detect_faces

SHARED_DATA = (Path(__file__).resolve().parents[3] / ".." / "shared" / "data").resolve()
ORL = SHARED_DATA / "orl"


def _aligned(bgr: np.ndarray) -> np.ndarray:
    """YuNet + 5-point warp onto the ArcFace template: the crop ingestion stores."""
    faces = detect_faces(bgr, threshold=0.6, max_side=1024)
    assert faces, "the detector found no face"
    return align_face(bgr, faces[0].landmarks)


def _to_tensor(crops: np.ndarray) -> torch.Tensor:
    """uint8 (N, 112, 112[, 3]) -> float (N, C, 112, 112) in [-1, 1], the generator's range."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).float() / 127.5 - 1.0
    return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_sface_torch()


@pytest.fixture(scope="module")
def reference() -> SFaceEncoder:
    return SFaceEncoder(threads=2)


@pytest.fixture(scope="module")
def demo_crops() -> dict[str, np.ndarray]:
    """Aligned crops of four demo identities: photos (BGR) and their pencil sketches (grey)."""
    photos = np.stack([_aligned(draw_face(i, 0)) for i in range(4)])
    sketches = np.stack(
        [
            cv2.cvtColor(
                _aligned(cv2.cvtColor(draw_sketch(i), cv2.COLOR_GRAY2BGR)), cv2.COLOR_BGR2GRAY
            )
            for i in range(4)
        ]
    )
    return {"photo": photos, "sketch": sketches}


def _cosines(model, reference, crops: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        ours = sface_embed(model, _to_tensor(crops)).numpy()
    bgr = crops if crops.ndim == 4 else np.repeat(crops[..., None], 3, axis=3)
    return (ours * reference.encode(bgr)).sum(axis=1)


def test_module_is_frozen_cached_and_stays_in_eval(model):
    assert load_sface_torch() is model  # converted once per process
    assert not any(p.requires_grad for p in model.parameters())
    wrapper = torch.nn.Sequential(model)
    wrapper.train()  # a generator's .train() must not switch SFace's BatchNorms to batch stats
    assert not any(m.training for m in model.modules())


def test_matches_onnxruntime_on_demo_photos_and_grey_sketches(model, reference, demo_crops):
    photo = _cosines(model, reference, demo_crops["photo"])
    sketch = _cosines(model, reference, demo_crops["sketch"])
    print(f"cosine torch vs onnxruntime: photos {photo.min():.6f}, sketches {sketch.min():.6f}")
    assert photo.min() >= 0.9999 and sketch.min() >= 0.9999


def test_vectors_are_unit_and_batch_equals_single(model, demo_crops):
    x = _to_tensor(demo_crops["photo"])
    with torch.no_grad():
        batch = sface_embed(model, x)
        single = torch.cat([sface_embed(model, x[i : i + 1]) for i in range(len(x))])
    assert batch.shape == (4, 128) and batch.dtype == torch.float32
    torch.testing.assert_close(batch.norm(dim=1), torch.ones(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(batch, single, atol=1e-4, rtol=0)


def test_gradients_reach_the_image(model, demo_crops):
    sketch = _to_tensor(demo_crops["sketch"][:2]).requires_grad_()
    with torch.no_grad():
        target = sface_embed(model, _to_tensor(demo_crops["photo"][:2]))
    loss = (1 - (sface_embed(model, sketch) * target).sum(dim=1)).mean()
    loss.backward()
    grad = sketch.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert (grad.abs().flatten(1).sum(dim=1) > 0).all()  # every image gets a gradient
    # A small step down the gradient raises identity similarity: the loss is usable.
    with torch.no_grad():
        stepped = sketch - 0.5 * grad / grad.abs().max()
        after = (1 - (sface_embed(model, stepped) * target).sum(dim=1)).mean()
    assert after < loss


def test_bad_inputs_are_refused(model, tmp_path):
    with pytest.raises(EncoderError):
        sface_embed(model, torch.zeros(2, 3, 96, 96))
    with pytest.raises(EncoderError):
        sface_embed(model, torch.zeros(2, 2, 112, 112))
    with pytest.raises(EncoderError):
        sface_embed(model, torch.zeros(2, 3, 112, 112, dtype=torch.uint8))
    with pytest.raises(EncoderError, match="not found"):
        load_sface_torch(tmp_path / "missing.onnx")


@pytest.mark.slow
def test_matches_onnxruntime_on_orl_faces(model, reference):
    if not ORL.is_dir():
        pytest.skip(f"real-data test: ORL faces not found at {ORL}")
    images = [cv2.imread(str(ORL / f"s{i}" / "1.pgm")) for i in (1, 7, 13, 25, 38)]
    crops = np.stack([_aligned(im) for im in images])  # as ingestion: no upscaling
    cosine = _cosines(model, reference, crops)
    print(f"ORL cosine torch vs onnxruntime: min {cosine.min():.6f}")
    assert cosine.min() >= 0.9999


def test_vectors_stay_fp32_inside_a_bf16_autocast(model, demo_crops):
    """Training steps on CUDA run under bf16 autocast; SFace must give the same vectors there
    (checked with the CPU autocast, which casts the same way)."""
    x = _to_tensor(demo_crops["photo"][:2])
    with torch.no_grad():
        plain = sface_embed(model, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = sface_embed(model, x)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, plain)
