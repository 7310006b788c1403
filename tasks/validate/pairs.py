"""The style contract: does a drawing look more like its style than the same face drawn
another way?

The style judge (``tasks.validate.style_classifier``) learns each style from drawings of
some people, so it reads the people as well as the strokes: on real nights it called 63.7 %
of the cufsf-artist drawings and 46.3 % of the forensic-artist ones their own style, largely
by which dataset the photo came from (docs/results/generator.md). An absolute share ("the
judge calls at least 90 % of the S drawings S") therefore judges the population a version
happens to draw. Here two drawings of the same face are compared instead: the judge's score
for S must be higher on the S drawing than on the T drawing of that face. Whatever the judge
reads in the person is in both images and cancels; what is left is how each was drawn.

A face drawn in S alone has nothing to pair with, so it is compared with its start render
(the image its generator starts from, ``tasks.validate.start_renders``): a drawing the judge
scores no higher for S than the start image has not been drawn in S. A style with no
comparison at all is "not judged": its share is None, and the gate counts that as nothing
won (``StylePairs.gate_share``), the way a sketch without pixels counts against the identity
share rather than being left out.

Everything here is plain Python over scores already computed, so it is tested on
constructed examples; ``tasks.validate.judge`` feeds it the stored sketch vectors.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from schemas.validation import PairingMode, StylePairs

# A win needs a margin above float noise: one PNG encoded in two batches scores a little
# apart (batched convolutions round differently), two identical drawings must tie, and a tie
# is not a win. Scores are log-probabilities or cosines, so this is about 0.01 % of p.
TIE = 1e-4
SCORE_BLOCK = 2048  # vectors a judge scores at once (``Scorer.rows``)

Scores = Mapping[str, float]  # the judge's score for each style it knows
Start = tuple[str, int]  # (start image, size): "pencil-dodge" at 64 px
RenderKey = tuple[str, str, int]  # (face id, start image, size)


@dataclass(frozen=True)
class Scorer:
    """The style judge's score for every style it knows (columns of ``score`` in ``classes``
    order). A pair needs the score of S on a drawing of T, which the stored per-sketch
    metrics (own style only) do not hold.

    The classifier scores in log-probabilities, not probabilities: a judge sure of the
    people drawn gives a style 1e-9 on one drawing and 1e-12 on the other, which as
    probabilities differ by less than float noise (or underflow to 0 together) and as
    log-probabilities differ by 7. CLIP zero-shot scores in prompt cosines.
    """

    classes: list[str]
    score: Callable[[np.ndarray], np.ndarray]
    kind: str = "log-probability"  # or "cosine": what the report's score figures are in

    def rows(self, vectors: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """Each vector's score per class, scored ``SCORE_BLOCK`` vectors at a time: a whole
        version at once stacked every image vector (12,000 × 1,280: 61 MB) and the judge
        standardised the stack in float64 (123 MB), both in fresh memory, whose page faults
        cost the validate stage more than the scoring (docs/results/performance.md)."""
        found: list[dict[str, float]] = []
        for start in range(0, len(vectors), SCORE_BLOCK):
            block = np.stack(vectors[start:start + SCORE_BLOCK])
            matrix = np.asarray(self.score(block), np.float64)
            found += [dict(zip(self.classes, map(float, row), strict=True)) for row in matrix]
        return found


@dataclass(frozen=True)
class Drawing:
    """One generated sketch as the style contract sees it."""

    face_id: str
    style: str
    scores: Scores | None  # None: no pixels to score (a NaN row, a missing PNG)
    start: Start | None = None  # the image its generator started from; None: unknown


@dataclass(frozen=True)
class FaceStyle:
    """The scored drawings of one face in one style, reduced to what a comparison reads."""

    mean: dict[str, float]
    drawings: int
    start: Start | None


@dataclass
class _Tally:
    pairs: int = 0
    pairs_won: int = 0
    paired_faces: int = 0
    renders: int = 0
    renders_won: int = 0
    fallback_drawings: int = 0
    uncompared_faces: int = 0
    uncompared_drawings: int = 0
    against: dict[str, list[int]] = field(default_factory=dict)  # other style: [won, pairs]


def wins(own: float, other: float) -> bool:
    """S's score on the S drawing beats S's score on the other image (ties lose)."""
    return own - other > TIE


def face_styles(drawings: Iterable[Drawing]) -> dict[tuple[str, str], FaceStyle]:
    """Scored drawings grouped by (face, style), their scores averaged.

    Several samples of one face in one style are averaged before comparing rather than
    compared sample by sample, so each face counts once per ordered pair of styles: a face
    drawn four times does not outweigh one drawn once, and the spread between samples (what
    the diversity contract looks at) does not decide a style verdict.
    """
    groups: dict[tuple[str, str], list[Drawing]] = defaultdict(list)
    for drawing in drawings:
        if drawing.scores is not None:
            groups[(drawing.face_id, drawing.style)].append(drawing)
    return {key: _reduce(members) for key, members in groups.items()}


def _reduce(members: Sequence[Drawing]) -> FaceStyle:
    classes = members[0].scores or {}
    mean = {c: float(np.mean([m.scores[c] for m in members if m.scores])) for c in classes}
    # Generators with different start images drawing one face in one style: the commonest.
    starts = Counter(m.start for m in members if m.start is not None)
    return FaceStyle(mean, len(members), starts.most_common(1)[0][0] if starts else None)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _pairing(t: _Tally) -> tuple[PairingMode, str]:
    """The mode and the reviewer's line, e.g. "render fallback (1 drawing)"."""
    parts = []
    if t.pairs:
        parts.append(f"pairs ({_plural(t.paired_faces, 'face')} drawn in another style too)")
    if t.renders:
        parts.append(f"render fallback ({_plural(t.fallback_drawings, 'drawing')})")
    line = " + ".join(parts)
    if t.uncompared_faces:
        line += (f"; {_plural(t.uncompared_faces, 'face')} not compared (no other style, "
                 "no start render)")
    mode: PairingMode = ("pairs + render fallback" if t.pairs and t.renders
                         else "pairs" if t.pairs else "render fallback")
    return mode, line


def _not_judged(threshold: float, why: str) -> StylePairs:
    return StylePairs(mode="not judged", pairing=f"not judged: {why}", threshold=threshold,
                      passed=0.0 >= threshold)


def _tally(style: str, own: Mapping[str, FaceStyle],
           others: Mapping[str, list[tuple[str, FaceStyle]]],
           renders: Mapping[RenderKey, Scores]) -> _Tally:
    """Each face drawn in ``style``: against its other styles, else its start render."""
    t = _Tally()
    for face, group in sorted(own.items()):
        score = group.mean[style]
        render = renders.get((face, *group.start)) if group.start else None
        if others.get(face):
            for other_style, other in others[face]:
                won = wins(score, other.mean[style])
                tally = t.against.setdefault(other_style, [0, 0])
                tally[0] += won
                tally[1] += 1
                t.pairs += 1
                t.pairs_won += won
            t.paired_faces += 1
        elif render is not None:
            t.renders += 1
            t.renders_won += wins(score, render[style])
            t.fallback_drawings += group.drawings
        else:
            t.uncompared_faces += 1
            t.uncompared_drawings += group.drawings
    return t


def _mean(values: Iterable[float]) -> float | None:
    kept = list(values)
    return float(np.mean(kept)) if kept else None


def judge_style(style: str, drawings: Sequence[Drawing],
                groups: Mapping[tuple[str, str], FaceStyle],
                renders: Mapping[RenderKey, Scores], classes: Sequence[str],
                threshold: float, score_kind: str | None = None) -> StylePairs:
    """The verdict on one style: its comparisons, the share won, and the figures beside it.

    ``drawings``: this style's drawings; ``groups``: every style's (``face_styles``);
    ``renders``: the judge's scores on start renders, by (face, start, size).
    """
    if style not in classes:
        return _not_judged(threshold, f"the style judge has no examples of {style}"
                           if classes else "there is no style judge")
    own = {face: g for (face, s), g in groups.items() if s == style}
    if not own:
        return _not_judged(threshold, f"none of its {_plural(len(drawings), 'drawing')} "
                                      "has pixels to score")
    others: dict[str, list[tuple[str, FaceStyle]]] = defaultdict(list)
    for (face, other_style), group in sorted(groups.items()):
        if other_style != style and face in own:
            others[face].append((other_style, group))
    t = _tally(style, own, others, renders)
    scored = [d.scores for d in drawings if d.scores is not None]
    figures = {
        "score_kind": score_kind,
        "absolute_share": sum(max(s, key=s.__getitem__) == style for s in scored) / len(scored),
        "drawing_score": _mean(s[style] for s in scored),
        "render_score": _mean(renders[(face, *g.start)][style] for face, g in own.items()
                              if g.start and (face, *g.start) in renders),
    }
    compared = t.pairs + t.renders
    if not compared:
        return _not_judged(threshold, f"{_plural(t.uncompared_drawings, 'drawing')}, no other "
                                      "style of the same face and no start render to compare "
                                      "with").model_copy(update=figures)
    mode, pairing = _pairing(t)
    share = (t.pairs_won + t.renders_won) / compared
    return StylePairs(mode=mode, pairing=pairing, pairs=t.pairs, pairs_won=t.pairs_won,
                      renders=t.renders, renders_won=t.renders_won, share=share,
                      threshold=threshold, passed=share >= threshold,
                      against={o: (w, n) for o, (w, n) in sorted(t.against.items())},
                      **figures)


def lost_drawings(drawings: Sequence[Drawing], renders: Mapping[RenderKey, Scores],
                  groups: Mapping[tuple[str, str], FaceStyle] | None = None
                  ) -> list[bool | None]:
    """Per drawing, in order: True when it loses its own face's comparison, the sketch-level
    ``wrong_style`` reason.

    A drawing of S loses when S scores no higher on it than on some other style's drawing of
    the same face (those samples averaged, as the contract compares them), or, for a face
    drawn in S only, than on its start render. None where nothing decides: no pixels to
    score, a style the judge does not know, or nothing to compare with. The judge's absolute
    call (``style_predicted``) no longer rejects a sketch: it reads the person drawn, and on
    real nights it turned away 3,996 of 12,066 drawings that won their pairs. ``groups``:
    ``face_styles(drawings)`` when the caller has it already.
    """
    groups = face_styles(drawings) if groups is None else groups
    by_face: dict[str, list[tuple[str, FaceStyle]]] = defaultdict(list)
    for (face, style), group in groups.items():
        by_face[face].append((style, group))
    found: list[bool | None] = []
    for drawing in drawings:
        scores = drawing.scores
        if scores is None or drawing.style not in scores:
            found.append(None)
            continue
        own = scores[drawing.style]
        others = [g.mean[drawing.style] for s, g in by_face[drawing.face_id]
                  if s != drawing.style]
        render = renders.get((drawing.face_id, *drawing.start)) if drawing.start else None
        if others:
            found.append(not all(wins(own, other) for other in others))
        elif render is not None:
            found.append(not wins(own, render[drawing.style]))
        else:
            found.append(None)
    return found


def judge_pairs(drawings: Sequence[Drawing], renders: Mapping[RenderKey, Scores],
                classes: Sequence[str], threshold: float, score_kind: str | None = None,
                groups: Mapping[tuple[str, str], FaceStyle] | None = None
                ) -> dict[str, StylePairs]:
    """Every style in ``drawings``, judged by pairs of drawings of the same face.

    ``classes``: the styles the judge scores; ``score_kind``: what its scores are (for the
    report's figures); ``groups``: ``face_styles(drawings)`` when the caller has it already.
    """
    groups = face_styles(drawings) if groups is None else groups
    by_style: dict[str, list[Drawing]] = defaultdict(list)
    for drawing in drawings:
        by_style[drawing.style].append(drawing)
    return {style: judge_style(style, members, groups, renders, classes, threshold, score_kind)
            for style, members in sorted(by_style.items())}
