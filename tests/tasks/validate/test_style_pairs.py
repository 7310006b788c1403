"""The style contract by pairs of drawings of the same face (issue 20).

The unit tests build the scores by hand or with the real numpy style classifier; the
workspace tests run the validate stage (LanceDB, great-expectations, the report) on the demo
faces, with "generated" sketches that are renderer drawings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks.sketch_data import (
    Sketch,
    drawn,
    photos,
    stored_suite,
    validate_version,
    write_sketches,
)
from data_contracts.run import SuiteOutcome
from data_contracts.thresholds import THRESHOLDS_FILE, load_thresholds
from schemas.validation import Scope, StyleFigures
from tasks.storage import Workspace
from tasks.validate.pairs import Drawing, Scorer, judge_pairs, lost_drawings
from tasks.validate.report import _pairs_against
from tasks.validate.start_renders import CACHE_DIR, generator_start
from tasks.validate.style_classifier import StyleClassifier

REVIEWED = load_thresholds().sketches.min_share_pairs_won
STYLES = ["artist-a", "artist-b"]


# --------------------------------------------------------------------------- on scores


def _population_example(seed: int = 0):
    """Each artist drew one population (as CUHK's artist drew CUHK students and CUFSF's
    FERET faces): a judge trained on their drawings reads who is drawn more than how.

    Features: dimension 0 is the population (A +3, B -3, sharp), dimension 1 the stroke
    (artist-a +1, artist-b -1, blurred by noise in the examples), the rest noise.
    """
    rng = np.random.default_rng(seed)

    def features(population: float, stroke: float, n: int, stroke_noise: float):
        x = rng.normal(scale=0.3, size=(n, 6))
        x[:, 0] = population + rng.normal(scale=0.3, size=n)
        x[:, 1] = stroke + rng.normal(scale=stroke_noise, size=n)
        return x

    examples = np.concatenate([features(3, 1, 60, 1.5), features(-3, -1, 60, 1.5)])
    labels = np.repeat([0, 1], 60)
    judge = StyleClassifier.fit(examples, labels, STYLES, {}, "population")
    # 10 faces of each population, each drawn by both artists (two samples each).
    faces = [(f"a{i}", 3.0) for i in range(10)] + [(f"b{i}", -3.0) for i in range(10)]
    drawings, vectors = [], []
    for face, population in faces:
        for style, stroke in zip(STYLES, (1.0, -1.0), strict=True):
            for _ in range(2):
                drawings.append((face, style))
                vectors.append(features(population, stroke, 1, 0.1)[0])
    return judge, drawings, np.stack(vectors)


def test_pairs_cancel_the_people_a_judge_reads_where_the_absolute_share_fails():
    judge, keys, vectors = _population_example()
    # The old contract: the share of each style's drawings the judge calls that style. The
    # other population's faces are called the other artist, whatever was drawn.
    called, _ = judge.judge(vectors, [style for _, style in keys])
    for style in STYLES:
        mine = [c for c, (_, s) in zip(called, keys, strict=True) if s == style]
        assert 0.4 <= sum(c == style for c in mine) / len(mine) <= 0.6  # fails >= 0.90

    scorer = Scorer(judge.classes, judge.log_probabilities)
    drawings = [Drawing(face, style, scores)
                for (face, style), scores in zip(keys, scorer.rows(vectors), strict=True)]
    verdicts = judge_pairs(drawings, {}, judge.classes, REVIEWED, scorer.kind)
    for style in STYLES:
        v = verdicts[style]
        assert (v.mode, v.pairs, v.pairs_won, v.share, v.passed) == ("pairs", 20, 20, 1.0, True)
        assert v.pairing == "pairs (20 faces drawn in another style too)"
        assert 0.4 <= v.absolute_share <= 0.6  # the old figure, reported beside the verdict
        assert v.score_kind == "log-probability"


def test_a_scorer_scores_block_by_block_what_it_scored_at_once(monkeypatch):
    """A version's drawings are scored a block at a time (memory, not figures): the same
    scores as one call over every vector, for a list of vectors as for a matrix."""
    import tasks.validate.pairs as pairs

    judge, _, vectors = _population_example()
    scorer = Scorer(judge.classes, judge.log_probabilities)
    whole = np.asarray(judge.log_probabilities(vectors))
    monkeypatch.setattr(pairs, "SCORE_BLOCK", 7)  # 80 vectors: 11 full blocks and a rest
    calls = []
    blocked = Scorer(judge.classes, lambda x: calls.append(len(x)) or judge.log_probabilities(x))
    for given in (list(vectors), vectors):
        rows = blocked.rows(given)
        assert np.allclose([[r[c] for c in judge.classes] for r in rows], whole, rtol=0,
                           atol=1e-12)
    assert calls == ([7] * 11 + [3]) * 2
    assert scorer.rows([]) == []


def _scores(**by_style: float) -> dict[str, float]:
    return {"ink": 0.0, "pencil": 0.0, "charcoal": 0.0, **by_style}


def test_each_ordered_pair_of_styles_counts_once_per_face_samples_averaged():
    drawings = [
        # face 1: two pencil samples, one of them below the ink drawing; their mean is above.
        Drawing("f1", "pencil", _scores(pencil=0.9)),
        Drawing("f1", "pencil", _scores(pencil=0.3)),
        Drawing("f1", "ink", _scores(pencil=0.5, ink=0.8)),
        Drawing("f1", "charcoal", _scores(pencil=0.7, charcoal=0.6)),
        # face 2: the pencil drawing is no more pencil than the ink one (a tie loses).
        Drawing("f2", "pencil", _scores(pencil=0.4)),
        Drawing("f2", "ink", _scores(pencil=0.4, ink=0.9)),
    ]
    verdicts = judge_pairs(drawings, {}, ["charcoal", "ink", "pencil"], 0.9)
    pencil = verdicts["pencil"]
    # (f1: ink, charcoal; f2: ink) = 3 pairs; won: f1 0.6 > 0.5, not 0.6 vs 0.7, f2 tie.
    assert (pencil.pairs, pencil.pairs_won, pencil.renders) == (3, 1, 0)
    assert pencil.share == pytest.approx(1 / 3) and not pencil.passed
    assert (verdicts["ink"].pairs, verdicts["ink"].pairs_won) == (3, 3)  # f1 twice, f2 once
    assert (verdicts["charcoal"].pairs, verdicts["charcoal"].pairs_won) == (2, 2)
    # Which comparison each style loses: pencil loses to charcoal on f1 and to ink on f2.
    assert pencil.against == {"charcoal": (0, 1), "ink": (1, 2)}
    assert verdicts["ink"].against == {"charcoal": (1, 1), "pencil": (2, 2)}

    # The reviewer's report shows that breakdown beside the verdicts.
    figures = {style: StyleFigures(sketches=1, accepted=1, pair_verdict=v)
               for style, v in verdicts.items()}
    html = _pairs_against(figures)
    assert "<th>against charcoal</th><th>against ink</th><th>against pencil</th>" in html
    assert "<tr><td>pencil</td><td class='n'>0 / 1 (0.0%)</td><td class='n'>1 / 2 (50.0%)" in html


def test_a_face_drawn_in_one_style_is_compared_with_its_start_render():
    start = ("pencil-dodge", 64)
    drawings = [Drawing("f1", "ink", _scores(ink=-0.1), start)]
    renders = {("f1", "pencil-dodge", 64): _scores(ink=-5.0)}
    (verdict,) = judge_pairs(drawings, renders, ["ink", "pencil"], 0.9).values()
    assert (verdict.mode, verdict.pairing) == ("render fallback", "render fallback (1 drawing)")
    assert (verdict.renders, verdict.renders_won, verdict.share, verdict.passed) == (
        1, 1, 1.0, True)
    assert verdict.render_score == -5.0 and verdict.drawing_score == -0.1
    # A drawing that is still its start render (the same score) has not been drawn in ink.
    renders = {("f1", "pencil-dodge", 64): _scores(ink=-0.1)}
    (verdict,) = judge_pairs(drawings, renders, ["ink", "pencil"], 0.9).values()
    assert (verdict.renders_won, verdict.passed) == (0, False)


def test_faces_with_a_pair_pair_and_faces_without_fall_back_in_one_style():
    start = ("grey", 64)
    drawings = [Drawing("f1", "ink", _scores(ink=0.9), start),
                Drawing("f1", "pencil", _scores(ink=0.1), start),
                Drawing("f2", "ink", _scores(ink=0.9), start),
                Drawing("f2", "ink", _scores(ink=0.8), start)]
    renders = {("f1", "grey", 64): _scores(ink=0.2), ("f2", "grey", 64): _scores(ink=0.95)}
    verdict = judge_pairs(drawings, renders, ["ink", "pencil"], 0.9)["ink"]
    assert verdict.mode == "pairs + render fallback"
    assert verdict.pairing == ("pairs (1 face drawn in another style too) + render fallback "
                               "(2 drawings)")
    assert (verdict.pairs_won, verdict.renders_won, verdict.share) == (1, 0, 0.5)
    # The render control covers every face drawn in the style, paired or not.
    assert verdict.render_score == pytest.approx((0.2 + 0.95) / 2)


def test_a_style_with_nothing_to_compare_is_not_judged_and_does_not_pass():
    lone = [Drawing("f1", "ink", _scores(ink=0.9))]  # no other style, no start render known
    verdict = judge_pairs(lone, {}, ["ink", "pencil"], 0.9)["ink"]
    assert (verdict.mode, verdict.share, verdict.gate_share, verdict.passed) == (
        "not judged", None, 0.0, False)
    assert verdict.pairing == ("not judged: 1 drawing, no other style of the same face and "
                               "no start render to compare with")
    unknown = judge_pairs([Drawing("f1", "crayon", _scores())], {}, ["ink"], 0.9)["crayon"]
    assert unknown.pairing == "not judged: the style judge has no examples of crayon"
    no_pixels = judge_pairs([Drawing("f1", "ink", None)], {}, ["ink"], 0.9)["ink"]
    assert no_pixels.pairing == "not judged: none of its 1 drawing has pixels to score"
    assert not unknown.passed and not no_pixels.passed
    # Only a thresholds file that asks for nothing (the flow tests' accept-all) lets it by.
    assert judge_pairs(lone, {}, ["ink"], 0.0)["ink"].passed


def test_each_drawing_loses_or_wins_its_own_comparison_the_sketch_level_reason():
    start = ("grey", 64)
    drawings = [
        # f1: the first pencil sample beats the ink drawing on pencil, the second does not.
        Drawing("f1", "pencil", _scores(pencil=0.9), start),
        Drawing("f1", "pencil", _scores(pencil=0.3), start),
        Drawing("f1", "ink", _scores(pencil=0.5, ink=0.8), start),
        # f2: ink alone, against its start render; f3: ink alone, no render; f4: no pixels.
        Drawing("f2", "ink", _scores(ink=0.2), start),
        Drawing("f3", "ink", _scores(ink=0.9), None),
        Drawing("f4", "ink", None, start),
        Drawing("f1", "crayon", _scores(), start),  # a style the judge does not score
    ]
    renders = {("f2", "grey", 64): _scores(ink=0.4)}
    # f1's ink drawing scores ink 0.8 against 0.0 on the pencil samples: won. f2 scores ink
    # lower than its start render: lost. The rest has nothing that decides.
    assert lost_drawings(drawings, renders) == [False, True, False, True, None, None, None]


# --------------------------------------------------------------------------- the stage


def _validate(workspace: Workspace, run: str, scope: Scope, thresholds: Path | None = None):
    return validate_version(workspace, run, scope, thresholds)


def _suite(workspace: Workspace, outcome, name: str = "style_pairs") -> SuiteOutcome:
    return stored_suite(workspace, outcome, name)


def test_the_bundled_demo_config_names_its_start_render():
    assert generator_start("never-saved", "demo", {}) == "pencil-dodge"
    assert generator_start("never-saved", "tiny", {}) == "grey"  # noise start: the photo
    assert generator_start("never-saved", "test", {}) is None
    assert generator_start("never-saved", "../configs/demo", {}) is None  # names only


def test_a_single_drawing_falls_back_to_its_start_render_and_the_report_says_so(
        sketch_workspace: Workspace):
    face = photos(sketch_workspace)[0]
    write_sketches(sketch_workspace, [Sketch(face.face_id, face.identity_id, "xdog-lines", 0,
                                             drawn("xdog-lines", face.crop), generator="one")])
    outcome = _validate(sketch_workspace, "one", Scope(generator_version="one"))
    verdict = outcome.dataset.per_style["xdog-lines"].pair_verdict
    assert (verdict.mode, verdict.pairing) == ("render fallback", "render fallback (1 drawing)")
    assert (verdict.renders, verdict.renders_won, verdict.threshold) == (1, 1, REVIEWED)
    assert verdict.render_score < verdict.drawing_score  # the pencil-dodge start render
    assert outcome.published, outcome.failed_expectations
    suite = _suite(sketch_workspace, outcome)
    assert suite.success and suite.rows == 1
    html = Path(outcome.report_path).read_text()
    assert "Style contract" in html and "render fallback (1 drawing)" in html
    # Encoded once, then read from the cache.
    assert len(list((sketch_workspace.root / CACHE_DIR).glob("*.npz"))) == 1


def test_a_single_drawing_without_a_start_render_is_not_judged_and_rejected(
        sketch_workspace: Workspace):
    face = photos(sketch_workspace)[0]
    write_sketches(sketch_workspace, [Sketch(face.face_id, face.identity_id, "xdog-lines", 0,
                                             drawn("xdog-lines", face.crop), generator="lone",
                                             config="test")])
    outcome = _validate(sketch_workspace, "lone", Scope(generator_version="lone"))
    verdict = outcome.dataset.per_style["xdog-lines"].pair_verdict
    assert verdict.mode == "not judged" and not verdict.passed
    assert not outcome.published
    assert outcome.failed_expectations == [
        "style_pairs: expect_column_values_to_be_between(share_won)"]
    (failure,) = _suite(sketch_workspace, outcome).failures()
    assert failure.failing_keys == ["xdog-lines"]
    assert "not judged: 1 drawing, no other style" in Path(outcome.report_path).read_text()


def test_drawings_that_do_not_differ_by_style_are_rejected(sketch_workspace: Workspace,
                                                          tmp_path: Path):
    """Each face "drawn" in both styles with the very same picture: no pair is won."""
    sketches = []
    for face in photos(sketch_workspace)[:4]:
        picture = drawn("pencil-dodge", face.crop)
        sketches += [Sketch(face.face_id, face.identity_id, style, 0, picture, generator="same")
                     for style in ("pencil-dodge", "xdog-lines")]
    write_sketches(sketch_workspace, sketches)
    outcome = _validate(sketch_workspace, "same", Scope(generator_version="same"))
    for style in ("pencil-dodge", "xdog-lines"):
        verdict = outcome.dataset.per_style[style].pair_verdict
        assert (verdict.mode, verdict.pairs, verdict.pairs_won) == ("pairs", 4, 0), style
    assert not outcome.published
    assert outcome.dataset.reasons["wrong_style"] == 8  # each drawing lost its own pair
    assert "style_pairs: expect_column_values_to_be_between(share_won)" in (
        outcome.failed_expectations)
    (failure,) = _suite(sketch_workspace, outcome).failures()
    assert failure.failing_keys == ["pencil-dodge", "xdog-lines"]

    # The threshold is the thresholds file's: a reviewed 0 lets the same drawings through.
    loose = yaml.safe_load(THRESHOLDS_FILE.read_text())
    loose["sketches"]["min_share_pairs_won"] = 0.0
    path = tmp_path / "loose.yaml"
    path.write_text(yaml.safe_dump(loose))
    outcome = _validate(sketch_workspace, "loose", Scope(generator_version="same"), path)
    assert outcome.dataset.per_style["xdog-lines"].pair_verdict.threshold == 0.0
    assert _suite(sketch_workspace, outcome).success


def test_the_reviewed_threshold_is_read_from_the_thresholds_file(tmp_path: Path):
    reviewed = yaml.safe_load(THRESHOLDS_FILE.read_text())["sketches"]
    assert REVIEWED == reviewed["min_share_pairs_won"] == 0.90
    # The absolute share's old key is refused: a file reviewed for that gate must be
    # reviewed again for this one.
    text = THRESHOLDS_FILE.read_text().replace("min_share_pairs_won", "max_share_wrong_style")
    (tmp_path / "old.yaml").write_text(text)
    with pytest.raises(ValueError, match="max_share_wrong_style"):
        load_thresholds(tmp_path / "old.yaml")
