"""The offline style classifier (numpy softmax), CLIP zero-shot, and the registry's examples."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.validate import style_classifier as sc
from tasks.validate.charts import histogram_svg


def _clusters(n: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16)) * 3
    labels = np.repeat(np.arange(3), n)
    return centres[labels] + rng.normal(size=(3 * n, 16)), labels


def test_classifier_learns_separable_styles_and_reports_held_out_accuracy():
    features, labels = _clusters()
    classifier = sc.StyleClassifier.fit(features, labels, ["a", "b", "c"],
                                        {"a": "real", "b": "rendered", "c": "rendered"}, "fp")
    assert classifier.cv_accuracy is not None and classifier.cv_accuracy > 0.9
    test, test_labels = _clusters(5, seed=0)
    predicted, own = classifier.judge(test, [["a", "b", "c"][i] for i in test_labels])
    assert predicted == [["a", "b", "c"][i] for i in test_labels]
    assert all(p > 0.5 for p in own)


def test_a_style_without_examples_is_not_judged_and_the_cache_round_trips():
    features, labels = _clusters()
    classifier = sc.StyleClassifier.fit(features, labels, ["a", "b", "c"], {}, "fp",
                                        groups=np.arange(len(labels)) // 3)
    predicted, own = classifier.judge(features[:2], ["a", "unknown"])
    assert predicted[1] is None and own[1] is None
    again = sc.StyleClassifier.from_bytes(classifier.to_bytes())
    assert again.classes == classifier.classes and again.fingerprint == "fp"
    np.testing.assert_allclose(again.probabilities(features), classifier.probabilities(features))
    assert len(again.reference_features("a")) == 10  # one per group of three copies


def test_logits_split_two_classes_where_their_probabilities_underflow():
    features, labels = _clusters()
    classifier = sc.StyleClassifier.fit(features, labels, ["a", "b", "c"], {}, "fp")
    far = features[labels == 2][:1] * 200  # far out along class c: a and b underflow to 0
    assert classifier.probabilities(far)[0, :2].sum() == 0.0
    logits = classifier.logits(far)[:, :2]
    share = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert np.isfinite(share).all() and share.sum() == pytest.approx(1.0)
    near = features[:5]
    probs = classifier.probabilities(near)
    pair = classifier.logits(near)[:, :2]
    expected = probs[:, :2] / probs[:, :2].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.exp(pair) / np.exp(pair).sum(axis=1, keepdims=True), expected)


def test_log_probabilities_still_order_sketches_whose_probabilities_underflow():
    """The style contract compares one style's score on two drawings of a face: a judge sure
    of another style must still say which of the two is more of this one."""
    features, labels = _clusters()
    classifier = sc.StyleClassifier.fit(features, labels, ["a", "b", "c"], {}, "fp")
    near = features[:5]
    np.testing.assert_allclose(np.exp(classifier.log_probabilities(near)),
                               classifier.probabilities(near), atol=1e-12)
    far = features[labels == 2][:1] * np.array([[200.0], [300.0]])
    assert (classifier.probabilities(far)[:, 0] == 0.0).all()
    log_p = classifier.log_probabilities(far)
    assert np.isfinite(log_p).all() and log_p[0, 0] != log_p[1, 0]


def test_zero_shot_scores_every_style_in_the_judges_class_order():
    from tasks.validate.compute import StyleJudge

    prompts = {"pencil": np.array([0.0, 1.0]), "ink": np.array([1.0, 0.0])}
    judge = StyleJudge("clip-zero-shot", "fp", None, dict.fromkeys(prompts), None,
                       _prompts=prompts)
    assert judge.classes() == ["ink", "pencil"]
    np.testing.assert_allclose(judge.scores(np.array([[0.9, 0.1]])), [[0.9, 0.1]])


def test_zero_shot_picks_the_closest_prompt():
    prompts = {"ink": np.array([1.0, 0.0]), "pencil": np.array([0.0, 1.0])}
    predicted, own = sc.zero_shot(np.array([[0.9, 0.1], [0.2, 0.8]]), prompts, ["ink", "ink"])
    assert predicted == ["ink", "pencil"]
    assert own == pytest.approx([0.9, 0.2])


def test_examples_come_from_the_registry(sketch_workspace):
    from tasks.styles.registry import load_styles

    plan = sc.plan_examples(sketch_workspace, load_styles(), "effnet@x", 64)
    # forensic-artist has no "artist" sketches in the demo workspace: no class for it.
    assert sorted(plan.examples) == ["demo-pencil", "pencil-dodge", "xdog-lines"]
    assert plan.reference == {"demo-pencil": "real", "pencil-dodge": "rendered",
                              "xdog-lines": "rendered"}
    assert len(plan.examples["demo-pencil"]) == 6 and len(plan.examples["xdog-lines"]) == 12
    assert sc.plan_examples(sketch_workspace, load_styles(), "effnet@y", 64).fingerprint != (
        plan.fingerprint)


def test_histogram_draws_bars_and_threshold_lines():
    svg = histogram_svg([0.1, 0.2, 0.2, 0.9], "similarity", thresholds=[(0.25, "min")],
                        bounds=(0.0, 1.0))
    assert svg.startswith("<svg") and svg.count('class="bar"') == 3
    assert 'class="thr"' in svg and ">min<" in svg and "(n=4)" in svg


def test_a_growing_gallery_encodes_only_its_new_examples(sketch_workspace):
    """Example features are cached per face: a night that adds faces pays for those alone."""
    from schemas.encoders import EncoderSpec
    from tasks.encoders import load
    from tasks.styles.registry import load_styles

    class Counting:
        """The real encoder, counting the images it is asked to encode."""

        def __init__(self, encoder):
            self.encoder, self.version, self.images = encoder, encoder.version, 0

        def encode(self, images):
            self.images += len(images)
            return self.encoder.encode(images)

    import shutil

    shutil.rmtree(sketch_workspace.root / sc.CACHE_DIR, ignore_errors=True)  # validated before
    registry = load_styles()
    encoder = Counting(load(EncoderSpec(role="image", name="effnet-lite0")))
    plan = sc.plan_examples(sketch_workspace, registry, encoder.version, 64)
    first = sc._example_features(sketch_workspace, plan, registry, encoder)
    copies = 1 + sc.AUGMENTED_COPIES
    assert encoder.images == copies * sum(len(ids) for ids in plan.examples.values())

    encoder.images = 0
    again = sc._example_features(sketch_workspace, plan, registry, encoder)
    assert encoder.images == 0
    np.testing.assert_array_equal(first[0], again[0])

    # One example fewer in a style (as if it were new): only that one is encoded again.
    cache = sc._feature_cache(sketch_workspace, registry["xdog-lines"], 64, encoder)
    stored = dict(np.load(cache))
    np.savez(cache, ids=stored["ids"][1:], features=stored["features"][1:])
    encoder.images = 0
    third = sc._example_features(sketch_workspace, plan, registry, encoder)
    assert encoder.images == copies
    np.testing.assert_allclose(first[0], third[0], atol=1e-5)


def _cached(workspace, fingerprint: str, basis: str, examples: dict[str, list[str]]):
    features, labels = _clusters(4)
    classifier = sc.StyleClassifier.fit(features, labels, ["a", "b", "c"], {}, fingerprint,
                                        basis=basis, examples=examples)
    path = sc.cache_path(workspace, fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(classifier.to_bytes())
    return path


def _plan(examples: dict[str, list[str]], basis: str = "b1") -> sc.ExamplePlan:
    return sc.ExamplePlan(examples, {s: "rendered" for s in examples}, 64, "new", basis)


def test_a_classifier_keeps_judging_until_a_tenth_of_a_styles_examples_are_new(tmp_path):
    """A workspace that gains a face a night does not refit its style judge every night."""
    from tasks.storage import Workspace

    workspace = Workspace.open(tmp_path / "ws")
    trained = {s: [f"{s}{i}" for i in range(20)] for s in "abc"}
    _cached(workspace, "old", "b1", trained)
    # Two new examples of style a (10 %): the cached classifier judges, under its own key.
    grown = {**trained, "a": trained["a"] + ["a20", "a21"]}
    reused = sc.reusable_plan(workspace, _plan(grown))
    assert (reused.fingerprint, reused.examples) == ("old", trained)
    again = sc.StyleClassifier.from_bytes(sc.cache_path(workspace, "old").read_bytes())
    assert again.basis == "b1" and again.examples == trained  # the record round-trips
    # Three (13 %), another basis (a changed source, size or encoder), or another set of
    # styles: the plan as it is, so a new fit.
    more = {**trained, "a": trained["a"] + ["a20", "a21", "a22"]}
    assert sc.reusable_plan(workspace, _plan(more)).fingerprint == "new"
    assert sc.reusable_plan(workspace, _plan(grown, "b2")).fingerprint == "new"
    assert sc.reusable_plan(workspace, _plan({**trained, "d": ["d0", "d1"]})
                            ).fingerprint == "new"
    # An exact cache of the plan itself always wins.
    _cached(workspace, "new", "b1", more)
    assert sc.reusable_plan(workspace, _plan(grown)).fingerprint == "new"
