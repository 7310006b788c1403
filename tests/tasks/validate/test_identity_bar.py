"""The identity contract of drawn styles: held to their own artists, face for face.

The unit tests build the figures by hand; the workspace test runs the validate stage
(LanceDB, great-expectations, the report) on the demo faces, whose paired ``demo-pencil``
sketches play the artists, with "generated" drawings that are copies of those sketches.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from benchmarks.sketch_data import (
    IDENTITY,
    SIZE,
    Sketch,
    drawn,
    photos,
    stored_suite,
    validate_version,
    write_sketches,
)
from data_contracts.thresholds import THRESHOLDS_FILE, load_thresholds
from tasks import storage
from tasks.ingest.align import decode_png
from tasks.storage import FACES, Workspace
from tasks.styles.registry import load_styles
from tasks.validate.artists import ArtistScores, artist_scores, identity_bars
from tasks.validate.vectors import gallery, resolve_source

T = load_thresholds().sketches  # similarity floor 0.25, margin floor 0, ratio 0.9, 20 faces


def _rows(style: str, figures: list[tuple[str, float | None, float | None]]) -> list[dict]:
    return [{"sketch_id": f"{style}{i}", "style": style, "face_id": face,
             "identity_similarity": sim, "identity_margin": margin}
            for i, (face, sim, margin) in enumerate(figures)]


def _artists(faces: list[str], similarity: list[float], margin: list[float]) -> ArtistScores:
    return ArtistScores(faces, np.asarray(similarity, float), np.asarray(margin, float))


def test_a_drawn_style_passes_at_its_artists_level_where_the_absolute_shares_fail():
    faces = [f"f{i}" for i in range(40)]
    # The artists: 30 of 40 above the similarity floor, 16 of 40 nearest their own mugshot.
    art = _artists(faces, [0.4] * 30 + [0.1] * 10, [0.05] * 16 + [-0.05] * 24)
    # Drawings at that level, one per face: 75 % / 40 %, far under the absolute 95 % / 90 %.
    rows = _rows("artist-a", [(f, 0.4 if i < 30 else 0.1, 0.05 if i < 16 else -0.05)
                              for i, f in enumerate(faces)])
    bar = identity_bars(rows, {"artist-a": art}, T)["artist-a"]
    assert (bar.mode, bar.faces, bar.drawings, bar.artist_sketches) == ("artists", 40, 40, 40)
    assert (bar.share_identity, bar.artist_share_identity) == (0.75, 0.75)
    assert (bar.share_margin, bar.artist_share_margin) == (0.4, 0.4)
    assert bar.headroom_identity == pytest.approx(0.75 - 0.9 * 0.75) and bar.passed
    assert "40 faces they drew" in bar.line


def test_a_drawn_style_under_its_artists_fails_on_the_share_that_falls_short():
    faces = [f"f{i}" for i in range(40)]
    art = _artists(faces, [0.4] * 40, [0.05] * 20 + [-0.05] * 20)
    rows = _rows("artist-a", [(f, 0.4, 0.05 if i < 10 else -0.05) for i, f in enumerate(faces)])
    bar = identity_bars(rows, {"artist-a": art}, T)["artist-a"]
    assert bar.headroom_identity == pytest.approx(0.1)
    assert bar.headroom_margin == pytest.approx(0.25 - 0.9 * 0.5) and not bar.passed


def test_only_the_faces_the_artists_drew_are_compared_and_missing_figures_count_as_failing():
    drawn_by_artists = [f"f{i}" for i in range(20)]
    art = _artists(drawn_by_artists + ["not-drawn"], [0.4] * 21, [0.1] * 21)
    # Two drawings of each artist's face (one without pixels: no figures), and 100 drawings
    # of faces no artist drew, all far from their mugshots: those stay out of the bar.
    rows = _rows("artist-a", [(f, 0.4, 0.1) for f in drawn_by_artists]
                 + [(f, None, None) for f in drawn_by_artists[:2]]
                 + [(f"other{i}", 0.0, -0.3) for i in range(100)])
    bar = identity_bars(rows, {"artist-a": art}, T)["artist-a"]
    assert (bar.faces, bar.drawings, bar.artist_sketches) == (20, 22, 20)
    assert bar.share_identity == pytest.approx(20 / 22) and bar.passed
    assert bar.drawings_all == 122 and bar.share_identity_all == pytest.approx(20 / 122)


def test_styles_without_enough_artists_keep_the_absolute_shares():
    few = [f"f{i}" for i in range(T.min_artist_faces - 1)]
    art = _artists(few, [0.4] * len(few), [0.1] * len(few))
    rows = (_rows("artist-a", [(f, 0.4, 0.1) for f in few])
            + _rows("render-b", [(f, 0.9, 0.5) for f in few]))
    bars = identity_bars(rows, {"artist-a": art}, T)
    assert bars["artist-a"].mode == bars["render-b"].mode == "absolute"
    assert f"drew {len(few)} of its faces, under {T.min_artist_faces}" in bars["artist-a"].line
    assert "no artists' sketches" in bars["render-b"].line
    assert bars["render-b"].passed and bars["render-b"].ratio is None


def test_the_reviewed_ratio_and_face_count_are_read_from_the_thresholds_file(tmp_path: Path):
    reviewed = yaml.safe_load(THRESHOLDS_FILE.read_text())["sketches"]
    assert (T.min_ratio_to_artists, T.min_artist_faces) == (0.9, 20)
    assert reviewed["min_ratio_to_artists"] == 0.9
    reviewed.pop("min_ratio_to_artists")
    (tmp_path / "old.yaml").write_text(yaml.safe_dump({"sketches": reviewed}))
    with pytest.raises(ValueError, match="min_ratio_to_artists"):
        load_thresholds(tmp_path / "old.yaml")


# --------------------------------------------------------------------------- in a workspace


def _validate(workspace: Workspace, run: str, thresholds: Path | None):
    return validate_version(workspace, run, thresholds=thresholds)


def _failing_keys(workspace: Workspace, outcome, suite: str) -> list[str]:
    found = stored_suite(workspace, outcome, suite)
    return sorted(k for f in found.failures() for k in f.failing_keys)


def test_generated_drawings_at_the_artists_level_publish_and_below_it_are_rejected(
        sketch_workspace: Workspace, tmp_path: Path):
    """The demo workspace's six paired ``demo-pencil`` sketches are the artists. A version
    "draws" each of their faces with a copy of an artist's sketch: its own for four faces,
    another person's for two (and an xdog-lines drawing of each, for the style pairs)."""
    artists = {r["paired_face_id"]: r["aligned_png"] for r in storage.read(
        sketch_workspace, FACES, columns=["paired_face_id", "aligned_png"],
        where="kind = 'sketch'").to_pylist()}
    faces = [p for p in photos(sketch_workspace) if p.face_id in artists]
    assert len(faces) == 6

    def version(run: str, own: int) -> None:
        sketches = []
        for i, face in enumerate(faces):
            source = faces[i if i < own else (i + 1) % len(faces)].face_id
            copy = cv2.resize(decode_png(artists[source]), (SIZE, SIZE),
                              interpolation=cv2.INTER_AREA)
            sketches += [Sketch(face.face_id, face.identity_id, "demo-pencil", 0, copy,
                                generator=run),
                         Sketch(face.face_id, face.identity_id, "xdog-lines", 0,
                                drawn("xdog-lines", face.crop), generator=run)]
        write_sketches(sketch_workspace, sketches)

    few = yaml.safe_load(THRESHOLDS_FILE.read_text())
    few["sketches"]["min_artist_faces"] = 3  # six faces: enough artists for this test
    few_path = tmp_path / "few.yaml"
    few_path.write_text(yaml.safe_dump(few))

    version("mixed", own=4)
    outcome = _validate(sketch_workspace, "mixed", few_path)
    bar = outcome.dataset.per_style["demo-pencil"].identity_bar
    assert (bar.mode, bar.faces, bar.artist_sketches) == ("artists", 6, 6)
    # Two drawings of somebody else: the absolute margin share (90 %) would reject them,
    # the artists' own level lets them through, and the metrics suite leaves them alone.
    assert bar.share_margin == pytest.approx(4 / 6) and 4 / 6 < T.min_share_margin
    assert bar.passed and outcome.published, outcome.failed_expectations
    assert outcome.dataset.per_style["xdog-lines"].identity_bar.mode == "absolute"
    assert outcome.dataset.reasons.get("identity_confusion") == 2  # still rejected one by one
    html = Path(outcome.report_path).read_text()
    assert "Identity contract" in html and "against its artists on the 6 faces" in html

    # With the reviewed face count (20) six faces are too few: the absolute shares judge.
    outcome = _validate(sketch_workspace, "mixed", None)
    assert outcome.dataset.per_style["demo-pencil"].identity_bar.mode == "absolute"
    assert not outcome.published
    assert outcome.failed_expectations == [
        "sketch_metrics: expect_column_values_to_be_between(identity_margin)"]

    # Every face drawn as somebody else: under the artists' level, named by style.
    version("others", own=0)
    outcome = _validate(sketch_workspace, "others", few_path)
    bar = outcome.dataset.per_style["demo-pencil"].identity_bar
    assert bar.share_margin == 0.0 and not bar.passed and not outcome.published
    assert _failing_keys(sketch_workspace, outcome, "identity_bar") == ["demo-pencil"]


def test_an_artists_sketch_without_a_vector_or_a_photo_is_left_out_of_the_bar(
        sketch_workspace: Workspace):
    """A real sketch whose face failed embedding has no figure, and one whose photo is gone
    has nothing to be compared with: both are left out, the others still measured."""
    source = resolve_source(sketch_workspace, IDENTITY)
    before = artist_scores(sketch_workspace, source, load_styles(),
                           gallery(sketch_workspace, source))["demo-pencil"]
    assert len(before.faces) == 6 and np.isfinite(before.similarity).all()
    sketches = storage.read(sketch_workspace, FACES, columns=["face_id", "paired_face_id"],
                            where="kind = 'sketch'").sort_by("face_id").to_pylist()
    assert storage.delete(sketch_workspace, source.table,
                          f"face_id = {storage.quote(sketches[0]['face_id'])}") == 1
    photos_left = gallery(sketch_workspace, source)
    keep = [i for i, f in enumerate(photos_left[0]) if f != sketches[1]["paired_face_id"]]
    without_photo = ([photos_left[0][i] for i in keep], [photos_left[1][i] for i in keep],
                     photos_left[2][keep])
    after = artist_scores(sketch_workspace, source, load_styles(), without_photo)["demo-pencil"]
    assert sorted(after.faces) == sorted(r["paired_face_id"] for r in sketches[2:])
