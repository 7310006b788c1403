"""Embedding stage: vectors per encoder table, reuse by version, text vectors by name."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.encoders import EncoderSpec
from tasks import encoders, storage
from tasks.embed import embed_faces, embed_texts
from tasks.ingest.run import ingest_source

from .ingest.conftest import good_source  # noqa: F401  (fixture)


class MeanColour:
    """A real (if simple) plug-in: mean BGR colour per face, versioned by its scale."""

    role = "image"
    name = "mean-colour"
    dim = 3

    def __init__(self, arch: str = "1") -> None:
        self.scale = float(arch)
        self.version = f"mean-colour@{arch}"

    def encode(self, batch: np.ndarray) -> np.ndarray:
        vectors = batch.reshape(len(batch), -1, 3).mean(axis=1) * self.scale + 1.0
        return encoders.base.l2_normalise(vectors)


@pytest.fixture(autouse=True)
def mean_colour_plugin():
    encoders.register("image", "mean-colour", f"{__name__}:MeanColour")
    yield
    encoders.unregister("image", "mean-colour")


@pytest.fixture
def ingested(workspace, good_source):  # noqa: F811
    ingest_source(workspace, good_source)
    return workspace


def test_sface_vectors_are_stored_per_face(ingested):
    report = embed_faces(ingested, [EncoderSpec(role="identity", name="sface")])
    table = report.tables["identity"]
    assert table.table == "emb_identity_sface_128" and table.computed == 6 and table.rows == 6
    rows = storage.read(ingested, table.table)
    vectors = np.stack(rows.column("vector").to_numpy(zero_copy_only=False))
    assert vectors.shape == (6, 128) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    faces = storage.read(ingested, "faces", columns=["face_id"])
    assert sorted(rows.column("face_id").to_pylist()) == sorted(faces.column("face_id").to_pylist())
    assert (ingested.datasets_dir / "emb_identity_sface_128.parquet").is_file()


def test_same_version_is_reused_and_a_new_version_recomputed(ingested):
    spec = EncoderSpec(role="image", name="mean-colour", arch="1")
    first = embed_faces(ingested, [spec]).tables["image"]
    again = embed_faces(ingested, [spec]).tables["image"]
    assert (first.computed, again.computed, again.reused) == (6, 0, 6)
    before = storage.read(ingested, first.table).sort_by("face_id")
    changed = embed_faces(ingested, [EncoderSpec(role="image", name="mean-colour", arch="2")])
    assert changed.tables["image"].computed == 6
    after = storage.read(ingested, first.table).sort_by("face_id")
    assert after.num_rows == 6
    assert set(after.column("encoder_version").to_pylist()) == {"mean-colour@2"}
    assert not after.column("vector").equals(before.column("vector"))


def test_new_faces_only_are_embedded(ingested, good_source):  # noqa: F811
    spec = EncoderSpec(role="image", name="mean-colour")
    embed_faces(ingested, [spec])
    from tasks.demo.faces import draw_face

    from .ingest.conftest import png_bytes

    (good_source / "person-9").mkdir()
    (good_source / "person-9" / "0.png").write_bytes(png_bytes(draw_face(9, 0)))
    ingest_source(ingested, good_source)
    assert embed_faces(ingested, [spec]).tables["image"].computed == 1


def test_unknown_encoder_names_the_known_ones(ingested):
    with pytest.raises(encoders.EncoderError, match="known: .*sface"):
        embed_faces(ingested, [EncoderSpec(role="identity", name="nope")])


def test_text_vectors_keyed_by_name_and_refreshed_when_text_changes(workspace):
    spec = EncoderSpec(role="text", name="minilm")
    first = embed_texts(workspace, {"artist": "pencil sketch by a forensic artist"}, spec)
    same = embed_texts(workspace, {"artist": "pencil sketch by a forensic artist"}, spec)
    edited = embed_texts(workspace, {"artist": "charcoal drawing of a face"}, spec)
    assert (first.computed, same.computed, edited.computed) == (1, 0, 1)
    assert storage.count(workspace, first.table) == 1


def test_a_vector_column_becomes_one_writable_float32_matrix_chunk_by_chunk():
    """Chunks (one of them a slice with an offset) are copied straight into the matrix; a
    null vector is an error naming the count, not a silently shorter matrix."""
    import pyarrow as pa

    from tasks.embed import vector_matrix

    kind = pa.list_(pa.float32(), 2)
    column = pa.chunked_array([pa.array([[1, 2], [3, 4], [7, 8]], type=kind).slice(1),
                               pa.array([], type=kind), pa.array([[5, 6]], type=kind)])
    matrix = vector_matrix(column, 2)
    assert matrix.dtype == np.float32 and matrix.flags.writeable
    assert matrix.tolist() == [[3, 4], [7, 8], [5, 6]]
    assert vector_matrix(pa.chunked_array([], type=kind), 2).shape == (0, 2)
    with pytest.raises(ValueError, match="4 rows holds 3 vectors"):
        vector_matrix(pa.array([[1, 2], [3, 4], None, [5, 6]], type=kind), 2)
