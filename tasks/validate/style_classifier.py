"""Does a sketch look like its style? Zero-shot with CLIP, or a small offline classifier.

With an open_clip image and text encoder the answer is the style prompt closest to the sketch
(CLIP's zero-shot classification). Offline there is no joint image-text space, so the
registry's own training examples stand in for the prompts: the real sketches of each paired
style and the renderer's drawings of the aligned photos for each render style, encoded by the
workspace's image encoder and fed to a softmax regression in numpy. The examples are first
shrunk to the generated sketches' resolution, so the classifier learns styles, not sharpness.

Training examples are a deterministic function of the registry and the stored faces, so the
classifier and its features are cached under ``<workspace>/validation/style-classifier/`` by
a fingerprint of those inputs; the features double as the reference set of the Fréchet
distance.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from schemas.records import FACES_SCHEMA
from schemas.styles import PairedSource, RenderSource, Style
from schemas.vectors import VectorTable
from tasks import storage
from tasks.faces import to_aligned
from tasks.ingest.align import decode_png
from tasks.storage import FACES, Workspace
from tasks.styles.rendering import render
from tasks.validate.vectors import checked_encoder

CODE_VERSION = "softmax-3"
MAX_EXAMPLES_PER_STYLE = 200
# A cached classifier keeps judging while no more than this share of any style's examples
# is new to it (``reusable_plan``): a workspace growing 1 % a night refits every ~10 nights.
REFIT_SHARE = 0.10
# Each example is also drawn from this many jittered copies of its photo (small rotation,
# scale, shift, a mirror), like the generator's own training augmentation: generated sketches
# vary in pose, and without this a pose change reads as a style change.
AUGMENTED_COPIES = 2
ENCODE_CHUNK = 64
CACHE_DIR = "validation/style-classifier"


@dataclass(frozen=True)
class ExamplePlan:
    """Which stored faces make each style's examples, and the fingerprint of it all."""

    examples: dict[str, list[str]]  # style -> face ids (sketches if paired, photos if render)
    reference: dict[str, str]  # style -> "real" | "rendered"
    size: int
    fingerprint: str
    # Everything the fingerprint covers but the example ids: code, size, image encoder
    # version, the styles and their sources. Two plans on one basis differ only in examples.
    basis: str = ""


def plan_examples(workspace: Workspace, registry: Mapping[str, Style], image_version: str,
                  size: int) -> ExamplePlan | None:
    """The examples per style; None when fewer than two styles have examples to tell apart."""
    faces = storage.read(workspace, FACES, columns=["face_id", "kind", "style"],
                         schema=FACES_SCHEMA).sort_by("face_id").to_pylist()
    photos = [f["face_id"] for f in faces if f["kind"] == "photo"]
    examples: dict[str, list[str]] = {}
    reference: dict[str, str] = {}
    for name, style in sorted(registry.items()):
        if isinstance(style.source, PairedSource):
            ids = [f["face_id"] for f in faces
                   if f["kind"] == "sketch" and f["style"] == style.source.sketch_style]
            kind = "real"
        else:
            ids, kind = photos, "rendered"
        # Face ids are content hashes, so the first N in id order is an unbiased sample.
        ids = ids[:MAX_EXAMPLES_PER_STYLE]
        if len(ids) >= 2:
            examples[name], reference[name] = ids, kind
    if len(examples) < 2:
        return None
    key = {
        "code": CODE_VERSION, "size": size, "image_version": image_version,
        "styles": {name: [registry[name].source.model_dump(mode="json"), ids]
                   for name, ids in examples.items()},
    }
    fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    basis = {**key, "styles": {name: [registry[name].source.model_dump(mode="json"),
                                      reference[name]] for name in examples}}
    return ExamplePlan(examples, reference, size, fingerprint,
                       hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest())


def reusable_plan(workspace: Workspace, plan: ExamplePlan,
                  refit_share: float = REFIT_SHARE) -> ExamplePlan:
    """``plan``, or the plan of a cached classifier close enough to judge in its place.

    A workspace that gains a few faces a night changes each style's examples a little every
    night; refitting (six softmax fits with the cross-validation) for that was the validate
    stage's largest cost that grew with the workspace. A cached classifier on the same basis
    (styles, sources, size, encoder) is reused while, for every style, no more than
    ``refit_share`` of the plan's examples are ones it was not trained on; its fingerprint
    then keys the metrics, so the sketches it judged keep their metrics too. A new style, a
    changed source or encoder, or enough new examples means a new fit.
    """
    if not plan.basis or cache_path(workspace, plan.fingerprint).is_file():
        return plan
    folder = workspace.root / CACHE_DIR
    candidates = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True
                        ) if folder.is_dir() else []
    for path in candidates:
        meta = _meta(path)
        if not meta or meta.get("basis") != plan.basis:
            continue
        trained = meta.get("examples") or {}
        if sorted(trained) != sorted(plan.examples):
            continue
        if all(_new_share(plan.examples[s], trained[s]) <= refit_share for s in plan.examples):
            return ExamplePlan({s: list(v) for s, v in trained.items()}, plan.reference,
                               plan.size, meta["fingerprint"], plan.basis)
    return plan


def _new_share(wanted: Sequence[str], trained: Sequence[str]) -> float:
    known = set(trained)
    return sum(face not in known for face in wanted) / max(len(wanted), 1)


def _meta(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            return json.loads(str(stored["meta"]))
    except (OSError, ValueError, KeyError):
        return None


def degrade(grey: np.ndarray, size: int) -> np.ndarray:
    """Down to the generated resolution and back into the aligned frame, as sketches are."""
    if grey.shape[:2] != (size, size):
        grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
    return to_aligned(grey)


def augment(crop: np.ndarray, rng: np.random.Generator, mirror: bool) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D((crop.shape[1] / 2, crop.shape[0] / 2),
                                     rng.uniform(-6.0, 6.0), rng.uniform(0.95, 1.05))
    matrix[:, 2] += rng.uniform(-3.0, 3.0, 2)
    out = cv2.warpAffine(crop, matrix, (crop.shape[1], crop.shape[0]),
                         borderMode=cv2.BORDER_REPLICATE)
    return cv2.flip(out, 1) if mirror else out


def example_image(style: Style, crop: np.ndarray, size: int) -> np.ndarray:
    if isinstance(style.source, RenderSource):
        grey = render(style.source.renderer, crop, **style.source.params)
    else:
        grey = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return degrade(grey, size)


# --------------------------------------------------------------------------- the classifier


def _standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(x - mean) / scale`` in float64, the same bits, worked in place on one copy: the two
    temporaries of the plain expression cost the validate stage 0.5 s of page faults on a
    12,000-drawing workspace's (12,000, 1,280) matrix, the in-place steps 0.06 s."""
    out = np.array(x, np.float64)  # always a copy: the caller's array is left alone
    out -= mean
    out /= scale
    return out


def fit_softmax(x: np.ndarray, y: np.ndarray, classes: int, steps: int = 300,
                lr: float = 0.5, l2: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch gradient descent (deterministic).

    A few hundred examples of a few styles need nothing cleverer, and numpy keeps the
    validation stage free of another dependency.
    """
    n, d = x.shape
    weights, bias = np.zeros((d, classes)), np.zeros(classes)
    onehot = np.eye(classes)[y]
    for _ in range(steps):
        logits = x @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        error = (probs - onehot) / n
        weights -= lr * (x.T @ error + l2 * weights)
        bias -= lr * error.sum(axis=0)
    return weights, bias


@dataclass
class StyleClassifier:
    classes: list[str]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    features: np.ndarray  # the examples' image vectors: the Fréchet reference
    labels: np.ndarray
    groups: np.ndarray  # rows sharing a value are copies of one example
    reference: dict[str, str]
    cv_accuracy: float | None
    fingerprint: str
    # The per-style feature cache files it was trained from (names under features/): what
    # retention must keep, or the next night re-encodes every example of those styles.
    feature_caches: tuple[str, ...] = ()
    # The plan it was fitted for, less its examples (``ExamplePlan.basis``), and those
    # examples by style: what ``reusable_plan`` compares a later night's plan with.
    basis: str = ""
    examples: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, classes: list[str],
            reference: dict[str, str], fingerprint: str,
            groups: np.ndarray | None = None,
            feature_caches: Sequence[str] = (), basis: str = "",
            examples: Mapping[str, Sequence[str]] | None = None) -> StyleClassifier:
        """``groups``: which rows are copies of one example (they share a fold)."""
        features = np.asarray(features, np.float64)
        mean = features.mean(axis=0)
        scale = np.maximum(features.std(axis=0), 1e-6)
        weights, bias = fit_softmax(_standardise(features, mean, scale), labels, len(classes))
        groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
        return cls(classes, mean, scale, weights, bias, features, labels, groups, reference,
                   cross_validated_accuracy(features, labels, len(classes), groups),
                   fingerprint, tuple(sorted(feature_caches)), basis,
                   {k: list(v) for k, v in (examples or {}).items()})

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        """Unnormalised log-probabilities: a softmax over a subset of the classes (how two
        of them share a sketch) stays defined where their probabilities underflow to 0."""
        standard = _standardise(vectors, self.mean, self.scale)
        return standard @ self.weights + self.bias

    def log_probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """log p per class, finite where a probability underflows to 0: two drawings a
        confident judge gives 1e-9 and 1e-12 of a style must still compare (pairs)."""
        logits = self.logits(vectors)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = self.logits(vectors)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def judge(self, vectors: np.ndarray, styles: Sequence[str]
              ) -> tuple[list[str | None], list[float | None]]:
        """Predicted style and the probability of the sketch's own style, per sketch.

        A sketch whose style the classifier has no examples of is not judged (None, None):
        an absent class cannot be told apart from the others.
        """
        if len(vectors) == 0:
            return [], []
        probs = self.probabilities(vectors)
        index = {name: i for i, name in enumerate(self.classes)}
        predicted: list[str | None] = []
        own: list[float | None] = []
        for row, style in zip(probs, styles, strict=True):
            if style not in index:
                predicted.append(None)
                own.append(None)
            else:
                predicted.append(self.classes[int(row.argmax())])
                own.append(float(row[index[style]]))
        return predicted, own

    def reference_features(self, style: str) -> np.ndarray:
        """The style's un-augmented examples (a jittered copy is not another sample)."""
        if style not in self.classes:
            return np.zeros((0, self.features.shape[1]))
        _, first = np.unique(self.groups, return_index=True)
        originals = np.zeros(len(self.labels), bool)
        originals[first] = True
        return self.features[originals & (self.labels == self.classes.index(style))]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean, scale=self.scale, weights=self.weights,
                 bias=self.bias, features=self.features, labels=self.labels,
                 groups=self.groups,
                 meta=np.array(json.dumps({"classes": self.classes, "reference": self.reference,
                                           "cv_accuracy": self.cv_accuracy,
                                           "fingerprint": self.fingerprint,
                                           "feature_caches": list(self.feature_caches),
                                           "basis": self.basis,
                                           "examples": self.examples})))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> StyleClassifier:
        # allow_pickle stays False: the file holds plain arrays and one JSON string.
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            return cls(meta["classes"], stored["mean"], stored["scale"], stored["weights"],
                       stored["bias"], stored["features"], stored["labels"], stored["groups"],
                       meta["reference"], meta["cv_accuracy"], meta["fingerprint"],
                       tuple(meta.get("feature_caches", ())), meta.get("basis", ""),
                       meta.get("examples", {}))


def cross_validated_accuracy(features: np.ndarray, labels: np.ndarray, classes: int,
                             groups: np.ndarray, folds: int = 5) -> float | None:
    """k-fold accuracy (copies of one example kept in one fold, or it would be inflated):
    what a reviewer needs to trust a "wrong style" flag."""
    n = len(labels)
    if len(np.unique(groups)) < 2 * folds:
        return None
    correct = 0
    for fold in range(folds):
        test = groups % folds == fold
        train = ~test
        mean = features[train].mean(axis=0)
        scale = np.maximum(features[train].std(axis=0), 1e-6)
        weights, bias = fit_softmax(_standardise(features[train], mean, scale), labels[train],
                                    classes)
        logits = _standardise(features[test], mean, scale) @ weights + bias
        correct += int((logits.argmax(axis=1) == labels[test]).sum())
    return correct / n


# --------------------------------------------------------------------------- train or load


def _feature_cache(workspace: Workspace, style: Style, size: int, encoder) -> Path:
    """One file per (style source, size, image encoder): example features by face id, so a
    gallery that grows by a few faces encodes only those, not every example again."""
    key = json.dumps({"code": CODE_VERSION, "size": size, "encoder": encoder.version,
                      "source": style.source.model_dump(mode="json")}, sort_keys=True)
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    return workspace.root / CACHE_DIR / "features" / f"{name}.npz"


def _read_features(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as stored:
            return dict(zip(stored["ids"].tolist(), stored["features"], strict=True))
    except (OSError, ValueError, KeyError):
        return {}  # missing or damaged: recomputed, not trusted


def encode_examples(workspace: Workspace, style: Style, ids: list[str], size: int,
                    encoder) -> dict[str, np.ndarray]:
    """(1 + AUGMENTED_COPIES, dim) features per face: the example and its augmented copies."""
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(ids), ENCODE_CHUNK):
        part = ids[start:start + ENCODE_CHUNK]
        rows = storage.read(workspace, FACES, columns=["face_id", "aligned_png"],
                            where=storage.where_in("face_id", part))
        crops = dict(zip(rows.column("face_id").to_pylist(),
                         rows.column("aligned_png").to_pylist(), strict=True))
        batch = []
        for face in part:
            crop = decode_png(crops[face])
            # Face ids are content hashes: the augmentation depends on the face alone.
            rng = np.random.default_rng(int(hashlib.sha256(face.encode()).hexdigest()[:15], 16))
            copies = [crop] + [augment(crop, rng, mirror=k % 2 == 0)
                               for k in range(AUGMENTED_COPIES)]
            batch += [example_image(style, c, size) for c in copies]
        vectors = np.asarray(encoder.encode(np.stack(batch)), np.float32)
        per_face = vectors.reshape(len(part), 1 + AUGMENTED_COPIES, -1)
        out.update(zip(part, per_face, strict=True))
    return out


def _example_features(workspace: Workspace, plan: ExamplePlan, registry: Mapping[str, Style],
                      encoder) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """Features, labels, groups, classes and the feature cache files they came from."""
    classes = sorted(plan.examples)
    features, labels, groups, caches = [], [], [], []
    example = 0
    for label, name in enumerate(classes):
        ids = plan.examples[name]
        path = _feature_cache(workspace, registry[name], plan.size, encoder)
        caches.append(path.name)
        cached = _read_features(path)
        missing = [face for face in ids if face not in cached]
        if missing:
            cached.update(encode_examples(workspace, registry[name], missing, plan.size,
                                          encoder))
            kept = sorted(cached)
            buffer = io.BytesIO()
            np.savez(buffer, ids=np.array(kept), features=np.stack([cached[k] for k in kept]))
            storage.write_bytes_atomic(buffer.getvalue(), path)
        for face in ids:
            copies = cached[face]
            features.append(copies)
            labels += [label] * len(copies)
            groups += [example] * len(copies)
            example += 1
    return (np.concatenate(features), np.asarray(labels, np.int64),
            np.asarray(groups, np.int64), classes, caches)


def cache_path(workspace: Workspace, fingerprint: str):
    return workspace.root / CACHE_DIR / f"{fingerprint}.npz"


def feature_caches_in_use(classifier_files: Sequence[Path]) -> set[str] | None:
    """The feature cache files these cached classifiers were trained from; None when one of
    them predates the record (or does not read), so nothing can be known to be unused."""
    used: set[str] = set()
    for path in classifier_files:
        try:
            with np.load(path, allow_pickle=False) as stored:
                meta = json.loads(str(stored["meta"]))
        except (OSError, ValueError, KeyError):
            return None
        if "feature_caches" not in meta:
            return None
        used.update(meta["feature_caches"])
    return used


def cached_classifier(workspace: Workspace, plan: ExamplePlan) -> StyleClassifier | None:
    path = cache_path(workspace, plan.fingerprint)
    if not path.is_file():
        return None
    try:
        return StyleClassifier.from_bytes(path.read_bytes())
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache is rebuilt, not trusted


def load_or_train(workspace: Workspace, plan: ExamplePlan, registry: Mapping[str, Style],
                  image: VectorTable) -> tuple[StyleClassifier, str]:
    """The cached classifier for ``plan``, or a new one (trained and cached)."""
    cached = cached_classifier(workspace, plan)
    if cached is not None:
        # Used tonight: retention keeps the newest classifier files, and a reused one would
        # otherwise look as old as the night it was fitted.
        os.utime(cache_path(workspace, plan.fingerprint))
        return cached, "cached"
    features, labels, groups, classes, caches = _example_features(
        workspace, plan, registry, checked_encoder(image))
    classifier = StyleClassifier.fit(features, labels, classes, plan.reference,
                                     plan.fingerprint, groups, caches, plan.basis,
                                     plan.examples)
    storage.write_bytes_atomic(classifier.to_bytes(), cache_path(workspace, plan.fingerprint))
    return classifier, "trained"


# --------------------------------------------------------------------------- zero-shot


def prompt_scores(vectors: np.ndarray, prompts: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N, styles) cosines of each sketch to each style prompt, styles in name order."""
    text = np.stack([prompts[n] for n in sorted(prompts)]).astype(np.float64)
    return np.asarray(vectors, np.float64) @ text.T


def zero_shot(vectors: np.ndarray, prompts: Mapping[str, np.ndarray], styles: Sequence[str]
              ) -> tuple[list[str | None], list[float | None]]:
    """CLIP zero-shot: the closest style prompt, and the cosine to the sketch's own prompt."""
    names = sorted(prompts)
    if len(vectors) == 0 or not names:
        return [None] * len(vectors), [None] * len(vectors)
    scores = prompt_scores(vectors, prompts)
    predicted: list[str | None] = []
    own: list[float | None] = []
    for row, style in zip(scores, styles, strict=True):
        if style in prompts:
            predicted.append(names[int(row.argmax())])
            own.append(float(row[names.index(style)]))
        else:
            predicted.append(None)
            own.append(None)
    return predicted, own
