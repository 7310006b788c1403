"""Training-set assembly on an ingested, embedded demo workspace (real bundled encoders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from schemas.vectors import VectorTable
from tasks import storage
from tasks.demo.faces import make_demo_source
from tasks.embed import embed_texts
from tasks.encoders import load
from tasks.faces import read_crops
from tasks.generate.batches import DatasetError, batch_source
from tasks.generate.dataset import assemble, read_text_vectors
from tasks.generate.inputs import resize_grey, to_grey, to_unit
from tasks.ingest.run import ingest_source
from tasks.storage import Workspace
from tasks.styles.registry import load_styles, style_texts

from .demo_data import IDENTITY, IMAGE, PHOTOS, TEXT, copy_workspace, demo_template

SIZE = 16


@pytest.fixture
def demo(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path):
    """(workspace, styles, vector tables, text vectors) on a fresh copy of the demo workspace."""
    workspace = Workspace.open(copy_workspace(demo_template(tmp_path_factory), tmp_path / "ws"))
    styles = list(load_styles().values())
    tables = {spec.role: VectorTable.of(spec.role, load(spec)) for spec in (IDENTITY, IMAGE, TEXT)}
    embed_texts(workspace, style_texts(styles), TEXT)
    texts = read_text_vectors(workspace, tables["text"], style_texts(styles))
    return workspace, styles, tables, texts


def test_examples_come_from_photos_in_every_style(demo) -> None:
    workspace, styles, tables, texts = demo
    training = assemble(workspace, styles, tables, texts, SIZE)
    assert training.styles == ("demo-pencil", "pencil-dodge", "xdog-lines")
    assert training.empty_styles == ("cufsf-artist", "forensic-artist")
    assert training.examples_per_style == {"demo-pencil": 4, "pencil-dodge": 8, "xdog-lines": 8}
    assert training.sketch.shape == (20, 1, SIZE, SIZE) and training.sketch.dtype == np.float32
    assert -1.0 <= training.sketch.min() and training.sketch.max() <= 1.0
    assert training.identity.shape == (20, 128) and training.image.shape == (20, 1280)
    assert training.text.shape == (3, 384) and training.spatial is None
    np.testing.assert_array_equal(training.text[0], texts["demo-pencil"])

    # A paired example's target is its sketch's crop; its conditions are its PHOTO's vectors.
    first = 0
    photo = training.face_id[first]
    sketch_id = storage.read(workspace, "faces", columns=["face_id"],
                             where=f"paired_face_id = '{photo}'").column("face_id")[0].as_py()
    crop = read_crops(workspace, [sketch_id])[sketch_id]
    np.testing.assert_array_equal(training.sketch[first, 0],
                                  to_unit(resize_grey(to_grey(crop), SIZE)))
    vectors = storage.read(workspace, tables["identity"].table, columns=["vector"],
                           where=f"face_id = '{photo}'").column("vector")[0].as_py()
    np.testing.assert_allclose(training.identity[first], vectors)


def test_held_out_identities_never_reach_training(demo) -> None:
    workspace, styles, tables, texts = demo
    split = {"demo-000": "train", "demo-001": "test", "demo-002": "train"}  # demo-003 unlisted
    training = assemble(workspace, styles, tables, texts, SIZE, split=split)
    assert training.identities == {"demo-000", "demo-002"}
    assert not any(face in training.face_id for face in _faces_of(workspace, "demo-001"))
    assert all(row.identity_id != "demo-001" for row in training.preview)
    assert training.skipped["demo-pencil"] == {"held_out": 1, "not_in_split": 1}
    assert training.skipped["pencil-dodge"] == {"held_out": PHOTOS, "not_in_split": PHOTOS}
    # Every vector in the set is a train identity's vector.
    train_ids = set(_faces_of(workspace, "demo-000")) | set(_faces_of(workspace, "demo-002"))
    assert set(training.face_id) <= train_ids


def test_faces_without_current_vectors_are_skipped_with_a_reason(demo, tmp_path: Path) -> None:
    workspace, styles, tables, texts = demo
    # A new photo arrives after the embed stage ran: it has no vectors yet.
    extra = make_demo_source(tmp_path / "late", identities=1, photos_per_identity=1, seed=7)
    assert ingest_source(workspace, extra / "photos").ingested == {"photo": 1}
    training = assemble(workspace, styles, tables, texts, SIZE)
    assert training.skipped["pencil-dodge"] == {"missing_identity_vector": 1}
    assert training.examples_per_style["pencil-dodge"] == 8

    stale = {**tables, "image": tables["image"].model_copy(update={"version": "effnet@old"})}
    training = assemble(workspace, styles, stale, texts, SIZE)
    assert len(training) == 0 and training.styles == ()
    assert training.skipped["xdog-lines"] == {"missing_identity_vector": 1,
                                              "stale_image_vector": 8}


def test_batches_are_a_pure_function_of_the_step(demo) -> None:
    workspace, styles, tables, texts = demo
    training = assemble(workspace, styles, tables, texts, SIZE)
    batches = batch_source(training, batch_size=6, seed=3)
    a, b, c = batches(5), batch_source(training, 6, 3)(5), batches(6)
    assert set(a) == {"sketch", "identity", "image", "text"}
    assert a["sketch"].shape == (6, 1, SIZE, SIZE) and a["text"].shape == (6, 384)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["sketch"], c["sketch"])
    assert training.fingerprint() == assemble(workspace, styles, tables, texts,
                                              SIZE).fingerprint()


def test_spatial_condition_is_computed_from_the_photo(demo) -> None:
    workspace, styles, tables, texts = demo
    training = assemble(workspace, styles, tables, texts, SIZE, spatial_mode="edges")
    assert training.spatial is not None and training.spatial.shape == (20, 1, SIZE, SIZE)
    assert training.preview[0].spatial is not None
    assert "spatial" in batch_source(training, 2, 0)(0)


def test_missing_text_vectors_are_refused(demo) -> None:
    workspace, _, tables, _ = demo
    with pytest.raises(DatasetError, match="no current emb_text_minilm_384 vector for style"):
        read_text_vectors(workspace, tables["text"], {"crayon": "a crayon drawing"})


def _faces_of(workspace: Workspace, identity: str) -> list[str]:
    rows = storage.read(workspace, "faces", columns=["face_id"],
                        where=f"identity_id = '{identity}'")
    return rows.column("face_id").to_pylist()


def test_artist_styles_target_the_artists_sketch_and_count_unusable_ones(demo) -> None:
    """For an artist-target style the identity loss compares with SFace of the artist's
    sketch; a blank sketch crop keeps its example with weight 0, counted, never dropped."""
    from tasks.generate.dataset import artist_target_vectors
    from tasks.generate.objectives import identity_targets

    workspace, styles, tables, texts = demo
    photo_only = assemble(workspace, styles, tables, texts, SIZE,
                          identity_targets=identity_targets)
    training = assemble(workspace, styles, tables, texts, SIZE,
                        identity_targets=identity_targets, artist_styles=("demo-pencil",))
    assert training.artist_targets == {"demo-pencil": {"used": 4, "unusable": 0}}
    assert photo_only.artist_targets == {} and photo_only.id_weight is not None
    assert np.all(training.id_weight == 1.0) and len(training) == len(photo_only)
    pencil = training.style_index == training.styles.index("demo-pencil")
    # The items whose sketch is the artist's (for the feature matching), in every batch.
    assert photo_only.id_artist is None
    assert training.id_artist.tolist() == pencil.astype(np.float32).tolist()
    drawn = batch_source(training, 8, 0)(0)
    assert drawn["id_artist"].shape == (8,)
    np.testing.assert_array_equal(training.id_target[~pencil], photo_only.id_target[~pencil])
    faces = storage.read(workspace, "faces", columns=["face_id", "paired_face_id"])
    sketch_of = {p: f for f, p in zip(faces.column("face_id").to_pylist(),
                                      faces.column("paired_face_id").to_pylist(), strict=True)
                 if p is not None}
    first = int(np.flatnonzero(pencil)[0])
    sketch_id = sketch_of[training.face_id[first]]
    crop = read_crops(workspace, [sketch_id])[sketch_id]
    np.testing.assert_allclose(training.id_target[first], identity_targets(crop[None])[0],
                               atol=1e-5)
    assert not np.allclose(training.id_target[first], photo_only.id_target[first], atol=1e-3)

    assert training.id_photo is None
    anchored = assemble(workspace, styles, tables, texts, SIZE, identity_targets=identity_targets,
                        artist_styles=("demo-pencil",), photo_vectors=True)
    np.testing.assert_array_equal(anchored.id_target, training.id_target)
    np.testing.assert_array_equal(anchored.id_photo, photo_only.id_target)
    np.testing.assert_array_equal(anchored.id_artist, training.id_artist)
    assert anchored.fingerprint() != training.fingerprint()

    # A blank page where the artist's sketch should be: trained without the term, counted.
    from tasks.generate.dataset import _Candidate

    kept = [_Candidate("demo-pencil", "p1", "s1", "a"), _Candidate("demo-pencil", "p2", "s2", "b"),
            _Candidate("xdog-lines", "p1", None, "a")]
    crops = {"s1": crop, "s2": np.full_like(crop, 200)}
    target = np.zeros((3, 128), np.float32)
    weight = np.ones(3, np.float32)
    counts = artist_target_vectors(kept, crops, {"demo-pencil"}, identity_targets, target, weight)
    assert counts == {"demo-pencil": {"used": 1, "unusable": 1}}
    assert weight.tolist() == [1.0, 0.0, 1.0] and np.all(target[1:] == 0.0)
