"""Synthetic faces from the real bundled MobileStyleGAN (no mock): determinism and hygiene.

Each drawn face costs ~0.3-1 s on one thread, so these tests draw a handful in all.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from schemas.synthesize import HygieneThresholds, SynthesisParams, SynthesizeRequest

pytest.importorskip("openvino", reason="needs the 'synthetic' extra (make synthetic)")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generator():
    from tasks.synthesize.generator import load_generator

    return load_generator(threads=1)


@pytest.fixture(scope="module")
def face(generator) -> np.ndarray:
    from tasks.synthesize.generator import latent

    return generator.draw(latent(11, 0), 1.0, 512)


def _request(out: Path, generator, **changes) -> SynthesizeRequest:
    params = SynthesisParams(weights_sha256=generator.digest, seed=11, truncation=1.0)
    return SynthesizeRequest(out=str(out), identities=changes.pop("identities", 2),
                             params=params, **changes)


def test_same_seed_same_pixels(generator, face):
    from tasks.synthesize.generator import latent, load_generator

    again = load_generator(threads=1).draw(latent(11, 0), 1.0, 512)
    assert face.shape == (512, 512, 3) and face.dtype == np.uint8
    assert np.array_equal(face, again)  # bit-for-bit, not merely close
    other = generator.draw(latent(11, 1), 1.0, 512)
    assert np.abs(face.astype(int) - other.astype(int)).mean() > 10  # another person


def test_a_drawn_face_passes_and_a_blank_one_is_refused_as_no_face(face):
    from tasks.synthesize.hygiene import check_face

    check = check_face(face, HygieneThresholds())
    assert check.ok and check.crop.shape == (112, 112, 3)
    assert check.score > 0.8 and check.alignment_error < 8.0
    blank = np.full_like(face, 128)  # the same hygiene function ingest-side detection runs
    refused = check_face(blank, HygieneThresholds())
    assert refused.reason == "no_face" and refused.crop is None


def test_bad_alignment_and_low_score_are_refusals_with_reasons(face):
    from tasks.synthesize.hygiene import check_face

    strict_alignment = check_face(face, HygieneThresholds(max_alignment_error=0.5))
    assert strict_alignment.reason == "bad_alignment"
    assert "px RMS" in strict_alignment.detail
    strict_score = check_face(face, HygieneThresholds(min_detection_score=0.999))
    assert strict_score.reason == "low_detection_score"


def test_a_look_alike_and_a_stored_person_are_refused_as_duplicates(generator, tmp_path):
    """Candidate 1 is crafted as a tiny latent nudge of candidate 0 (the same person);
    candidate 2's vector is stored in the workspace under a real identity. Selection keeps
    0 and 3 and says whom 1 and 2 duplicate."""
    from schemas.records import embedding_schema
    from tasks import storage
    from tasks.storage import Workspace
    from tasks.synthesize.generator import latent
    from tasks.synthesize.shard import draw_candidate, identity_id, shard_refs, write_records
    from tasks.synthesize.source import open_source, select

    workspace = Workspace.open(tmp_path / "ws")
    request = _request(tmp_path / "src", generator, identities=2, shard_size=4,
                       workspace=str(workspace.root))
    root = Path(request.out)
    state = open_source(request)
    (shard,) = shard_refs(request, 0, 4)
    look_alike = latent(11, 0, nudge=1, sigma=0.05)
    records = {i: draw_candidate(request, i, generator, root,
                                 base=look_alike if i == 1 else None)[0] for i in range(4)}
    write_records(root / shard.result_path, shard, request, records)
    stored = records[2]
    storage.upsert(workspace, "emb_identity_sface_128", pa.Table.from_pylist([{
        "face_id": "f" * 64, "identity_id": "real-person", "kind": "photo", "encoder": "sface",
        "encoder_version": stored["encoder_version"], "vector": stored["vector"],
        "run_id": "test", "embedded_at": dt.datetime.now(dt.UTC)}],
        schema=embedding_schema(128)), "face_id")

    select(state, request, last=4)

    manifest = json.loads((root / "synthetic-manifest.json").read_text())
    assert [i["index"] for i in manifest["identities"]] == [0, 3]
    refused = {r["index"]: r for r in manifest["refused"]}
    assert refused[1]["reason"] == "duplicate_identity"
    assert identity_id(request, 0) in refused[1]["detail"]
    assert refused[2]["reason"] == "duplicate_identity"
    assert "stored identity real-person" in refused[2]["detail"]
    assert dict(state.refused_now) == {"duplicate_identity": 2}
    # Only kept people are identity folders; refused candidates stay under .synthesize/.
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0] != ".")
    assert folders == [identity_id(request, 0), identity_id(request, 3)]
    assert manifest["weights_sha256"] == generator.digest and manifest["truncation"] == 1.0


def test_nudged_images_are_near_duplicates_of_their_person(generator, tmp_path):
    from tasks.synthesize.shard import draw_candidate

    request = _request(tmp_path / "src", generator, images_per_identity=2)
    record, seconds, images = draw_candidate(request, 0, generator, Path(request.out))
    assert images == 2 and seconds > 0
    similarity = record["images"][1]["similarity_to_first"]
    assert 0.5 < similarity < 0.99  # the same person, not the same picture
