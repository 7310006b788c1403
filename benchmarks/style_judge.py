"""What does the validate stage's style judge read: the artist's strokes, or the people the
artist drew? And where do a generator's sketches fail it?

Run: .venv/bin/python -m benchmarks.style_judge --workspace WS [--project 0 4]
         [--features pooled gram gram-effnet tone] [--seed 0]

Each artist's examples are drawings of one dataset's people (CUHK students, FERET faces), so
a judge could learn the faces instead of the strokes and call every drawing of a CUHK face
"forensic-artist". The renderers give a control: one renderer's drawings of every dataset's
photos have one style by construction, so between the two artist classes they should lean
the same way whatever dataset the photo came from. This prints, for the workspace's judge
(the same registry, encoder and resolution as `clip4sketch validate`):

- per render style and photo source, the share of the artists' probability going to each
  artist (the control);
- per (asked style, photo source), what the judge calls the workspace's generated sketches
  (their image vectors as the validate stage stored them: run it first).

``--project K`` refits the judge after projecting out the K strongest directions along which
a renderer's drawings differ by photo source (nuisance attribute projection, as speaker
verification removes channel directions): if the dataset confound were what fails the
sketches, their verdicts would rise once the control leans the same way on every source.
``--features`` refits the judge on the same examples (faces, jittered copies, shrinking) read
another way, side by side with the validate stage's pooled image vectors: ``gram``, the Gram
matrices of three layers of seeded random filters, and ``gram-effnet``, those of the image
encoder's first blocks (the style representation of neural style transfer). A Gram matrix is
orderless: it keeps the pencil's texture and tone and drops the face's layout, so it should
not read the people drawn (the control says whether it does). ``tone``, the grey-level
histogram alone, says how much of a verdict darkness explains. Where the judges disagree,
the style verdict is a property of the judge as much as of the drawings.

A photo's source is the folder two above its file (``cuhk/photos/x.jpg`` -> ``cuhk``,
``orl/s1/1.pgm`` -> ``orl``), i.e. the dataset folder of ../shared/data's layouts.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter, defaultdict
from pathlib import Path

from schemas.validation import Scope
from tasks import storage
from tasks.encoders.effnet import EffNetLite0Encoder
from tasks.storage import FACES, Workspace

for _name, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                      ("LANCEDB_LOG", "error")):
    os.environ.setdefault(_name, _value)


def photo_source(source_path: str) -> str:
    parts = Path(source_path).parts
    return parts[-3] if len(parts) >= 3 else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--project", type=int, nargs="+", default=[0],
                        help="numbers of photo-source directions to project out (0: the judge)")
    parser.add_argument("--features", nargs="+", default=["pooled"], choices=sorted(FEATURES),
                        help="what the judge reads: pooled (the validate stage's image "
                             "vectors), gram (Gram matrices of random filters), gram-effnet "
                             "(Gram matrices of the image encoder's first blocks), tone (the "
                             "grey-level histogram alone)")
    parser.add_argument("--seed", type=int, default=0, help="the random filters' seed (gram)")
    args = parser.parse_args()

    # Imported here, not at the top: tasks.validate.compute, tasks.validate.vectors load prefect,
    # which reads the environment set above.
    import numpy as np

    from tasks.validate.compute import read_scope, sketch_resolution, validate_judge
    from tasks.validate.vectors import stored_sketch_vectors

    workspace = Workspace.open(args.workspace)
    rows = read_scope(workspace, Scope()).to_pylist()
    judge = validate_judge(workspace, sketch_resolution(rows))
    classifier, plan = judge.classifier, judge.plan
    if classifier is None or plan is None:
        raise SystemExit("this workspace's judge is not a classifier (fewer than two styles "
                         "with examples, or CLIP zero-shot)")
    faces = storage.read(workspace, FACES, columns=["face_id", "source_path"]).to_pylist()
    source = {f["face_id"]: photo_source(f["source_path"]) for f in faces}
    # Feature rows follow the plan: classes in order, examples in order, copies together.
    group_face = [face for name in classifier.classes for face in plan.examples[name]]
    group_label = [i for i, name in enumerate(classifier.classes) for _ in plan.examples[name]]
    if (len(group_face) != len(np.unique(classifier.groups))
            or any(group_label[g] != y for g, y in zip(classifier.groups, classifier.labels,
                                                        strict=True))):
        raise SystemExit("the judge's feature rows do not follow its example plan: "
                         "style_classifier changed how it lays them out")
    row_source = np.array([source[group_face[g]] for g in classifier.groups])
    sketches = [r for r in rows if r["status"] == "ok"]
    print(f"{workspace.root}: judge {classifier.classes}, {len(group_face)} examples; "
          f"{len(sketches)} generated sketches")
    for kind in args.features:
        if kind == "pooled":
            stored = stored_sketch_vectors(workspace, judge.image,
                                           [(s["sketch_id"], s["png_sha256"]) for s in sketches])
            judged = [s for s in sketches if s["sketch_id"] in stored]
            vectors = np.stack([stored[s["sketch_id"]] for s in judged]) if judged else None
            features, own = classifier.features, classifier
        else:
            encoder = FEATURES[kind](args.seed)
            features, own = _example_features(workspace, judge, encoder), None
            judged, vectors = _sketch_features(workspace, sketches, encoder)
        print(f"\n##### the judge reading {kind} features ({features.shape[1]}-d)")
        _verdicts(classifier, features, row_source, judged, vectors, source, args.project, own)


def _verdicts(classifier, features, row_source, sketches, vectors, source, project,
              own=None) -> None:
    """The control and the generated sketches' verdicts of a judge on ``features`` (rows
    laid out as ``classifier``'s), for each number of projected photo-source directions.
    ``own``: the classifier already fitted on ``features`` (the validate stage's), used as
    it is where nothing is projected."""
    # Imported here, not at the top: tasks.validate.style_classifier loads prefect, which reads the
    # environment set above.
    import numpy as np

    from tasks.validate.style_classifier import StyleClassifier

    labels = classifier.labels
    artists = [i for i, c in enumerate(classifier.classes)
               if classifier.reference[c] == "real"]
    renders = [i for i, c in enumerate(classifier.classes)
               if classifier.reference[c] == "rendered"]
    for k in project:
        directions = _source_directions(features, labels, row_source, renders, k)

        def project(x, directions=directions):
            x = np.asarray(x, np.float64)
            return x if directions is None else x - (x @ directions.T) @ directions

        fitted = own if (own is not None and directions is None) else StyleClassifier.fit(
            project(features), labels, classifier.classes, classifier.reference, "probe",
            classifier.groups)
        print(f"\n== {k} photo-source directions projected out "
              f"(cross-validated accuracy {fitted.cv_accuracy:.3f})")
        if len(artists) >= 2:
            logits = fitted.logits(project(features))[:, artists]
            share = np.exp(logits - logits.max(axis=1, keepdims=True))
            share /= share.sum(axis=1, keepdims=True)
            names = [classifier.classes[a] for a in artists]
            print("control, a renderer's drawings: the artists' probability split "
                  f"({' / '.join(names)}) by photo source")
            for r in renders:
                parts = []
                for src in sorted(set(row_source[labels == r])):
                    mean = share[(labels == r) & (row_source == src)].mean(axis=0)
                    parts.append(f"{src} " + " / ".join(f"{v:.2f}" for v in mean))
                print(f"  {classifier.classes[r]:16s} " + "; ".join(parts))
        if vectors is None:
            continue
        called = np.array(fitted.classes)[fitted.probabilities(project(vectors)).argmax(axis=1)]
        cells: dict[tuple[str, str], Counter] = defaultdict(Counter)
        for sketch, call in zip(sketches, called, strict=True):
            for key in ((sketch["style"], "all"), (sketch["style"], source[sketch["face_id"]])):
                cells[key][str(call)] += 1
        print("generated sketches: share called their own style (and the top calls)")
        for (style, src), counts in sorted(cells.items()):
            n = sum(counts.values())
            top = ", ".join(f"{c} {v / n:.0%}" for c, v in counts.most_common(3))
            print(f"  {style:16s} {src:6s} n={n:5d} right {counts[style] / n:5.1%}   ({top})")


# --------------------------------------------------------------------------- texture judges


class _Gram:
    """Signed-log upper-triangle Gram entries of every layer ``layers`` yields."""

    def layers(self, x):
        raise NotImplementedError

    def encode(self, batch):
        """(N, 112, 112[, 3]) uint8 -> (N, dim) features."""
        import numpy as np
        import torch

        x = torch.as_tensor(_grey(batch), dtype=torch.float32)[:, None] / 127.5 - 1.0
        out = []
        with torch.no_grad():
            for start in range(0, len(x), 64):
                out.append(torch.cat([_gram(h) for h in self.layers(x[start:start + 64])],
                                     dim=1).numpy())
        return np.concatenate(out)


class RandomGram(_Gram):
    """Gram matrices of three layers of seeded random 3x3 filters (Ustyuzhaninov et al.
    2017: random filters suffice for texture statistics). Orderless, so the face's layout,
    the people drawn, should not count; no weights to ship or trust."""

    widths = (32, 64, 128)

    def __init__(self, seed: int = 0):
        import torch

        generator = torch.Generator().manual_seed(seed)
        self.filters, before = [], 1
        for width in self.widths:
            scale = (2.0 / (before * 9)) ** 0.5
            self.filters.append(torch.randn(width, before, 3, 3, generator=generator) * scale)
            before = width

    def layers(self, x):
        import torch.nn.functional as F

        for i, weights in enumerate(self.filters):
            x = F.relu(F.conv2d(x, weights, stride=1 if i == 0 else 2, padding=1))
            yield x


class EffNetGram(_Gram):
    """Gram matrices of the image encoder's (EfficientNet-Lite0) blocks 1, 3 and 6 at its
    224-px input: the ImageNet texture statistics of neural style transfer (Gatys et al.
    2016); the generator's texture loss reads blocks 1, 3 and 5 at 112 px."""

    def __init__(self, seed: int = 0):
        # Imported here, not at the top: tasks.generate.texture loads torch.
        from tasks.generate.texture import TextureFeatures

        encoder = EffNetLite0Encoder(device="cpu")
        self.features = TextureFeatures(encoder.model, blocks=(0, 2, 5))
        self.size = encoder.image_size

    def layers(self, x):
        import torch.nn.functional as F

        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        yield from self.features.activations(x)


class Tone:
    """The grey-level histogram (32 bins) alone: what a judge that passes on it reads is
    how dark the drawing is, not how it is drawn."""

    def __init__(self, seed: int = 0):
        self.bins = 32

    def encode(self, batch):
        import numpy as np

        grey = _grey(batch).reshape(len(batch), -1)
        return np.stack([np.bincount(row >> 3, minlength=self.bins) / row.size
                         for row in grey]).astype(np.float32)


FEATURES = {"pooled": None, "gram": RandomGram, "gram-effnet": EffNetGram, "tone": Tone}


def _grey(batch):
    import cv2
    import numpy as np

    return np.stack([cv2.cvtColor(b, cv2.COLOR_BGR2GRAY) if b.ndim == 3 else b for b in batch])


def _gram(h):
    # Imported here, not at the top: tasks.generate.texture loads torch.
    import torch

    from tasks.generate.texture import gram_matrix

    c = h.shape[1]
    gram = gram_matrix(h)
    upper = torch.triu_indices(c, c)
    entries = gram[:, upper[0], upper[1]]
    return torch.sign(entries) * torch.log1p(entries.abs())


def _example_features(workspace, judge, encoder):
    """The judge's own examples (same faces, copies, shrinking) in ``encoder``'s features,
    rows laid out as the judge's."""
    # Imported here, not at the top: tasks.validate.style_classifier loads prefect, which reads the
    # environment set above.
    import numpy as np

    from tasks.validate.style_classifier import encode_examples

    rows = []
    for name in judge.classifier.classes:
        ids = judge.plan.examples[name]
        encoded = encode_examples(workspace, judge.registry[name], ids, judge.plan.size,
                                  encoder)
        rows += [encoded[face] for face in ids]
    return np.concatenate(rows)


def _sketch_features(workspace, sketches, encoder):
    """(the sketches that decode, their features), read as the validate stage reads them;
    a PNG that is gone or does not decode is counted and left out, as validate does."""
    # Imported here, not at the top: tasks.validate.vectors loads prefect, which reads the
    # environment set above.
    import numpy as np

    from tasks.faces import to_aligned
    from tasks.validate.vectors import read_image

    kept, out, missing = [], [], 0
    for start in range(0, len(sketches), 256):
        part, pictures = [], []
        for sketch in sketches[start:start + 256]:
            path = workspace.root / sketch["png_path"]
            picture = read_image(workspace.root, sketch["png_path"]) if path.is_file() else None
            if picture is None:
                missing += 1
                continue
            part.append(sketch)
            pictures.append(to_aligned(picture))
        if part:
            kept += part
            out.append(encoder.encode(np.stack(pictures)))
    if missing:
        print(f"{missing} generated sketches left out: their PNG is missing or does not decode")
    return kept, (np.concatenate(out) if out else None)


def _source_directions(features, labels, sources, renders, k):
    """The top-k directions of the per-(render style, photo source) mean offsets."""
    import numpy as np

    if k <= 0:
        return None
    offsets = []
    for r in renders:
        members = labels == r
        centre = features[members].mean(axis=0)
        for s in sorted(set(sources[members])):
            offsets.append(features[members & (sources == s)].mean(axis=0) - centre)
    if not offsets:
        raise SystemExit("no render style among the judge's classes: no control to project")
    _, _, vt = np.linalg.svd(np.stack(offsets), full_matrices=False)
    return vt[:min(k, len(vt))]


if __name__ == "__main__":
    main()
