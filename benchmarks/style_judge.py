"""What does the validate stage's style judge read: the artist's strokes, or the people the
artist drew? And where do a generator's sketches fail it?

Run: .venv/bin/python benchmarks/style_judge.py --workspace WS [--project 0 4]

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
A photo's source is the folder two above its file (``cuhk/photos/x.jpg`` -> ``cuhk``,
``orl/s1/1.pgm`` -> ``orl``), i.e. the dataset folder of ../shared/data's layouts.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter, defaultdict
from pathlib import Path

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
    args = parser.parse_args()

    import numpy as np

    from schemas.validation import Scope
    from tasks import storage
    from tasks.storage import FACES, Workspace
    from tasks.validate.compute import read_scope, sketch_resolution, validate_judge
    from tasks.validate.style_classifier import StyleClassifier
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
    stored = stored_sketch_vectors(workspace, judge.image,
                                   [(s["sketch_id"], s["png_sha256"]) for s in sketches])
    sketches = [s for s in sketches if s["sketch_id"] in stored]
    vectors = np.stack([stored[s["sketch_id"]] for s in sketches]) if sketches else None
    artists = [i for i, c in enumerate(classifier.classes)
               if classifier.reference[c] == "real"]
    renders = [i for i, c in enumerate(classifier.classes)
               if classifier.reference[c] == "rendered"]
    features, labels = classifier.features, classifier.labels
    print(f"{workspace.root}: judge {classifier.classes}, {len(group_face)} examples, "
          f"cross-validated accuracy {classifier.cv_accuracy}; {len(sketches)} generated "
          f"sketches with stored image vectors")
    for k in args.project:
        directions = _source_directions(features, labels, row_source, renders, k)

        def project(x, directions=directions):
            x = np.asarray(x, np.float64)
            return x if directions is None else x - (x @ directions.T) @ directions

        fitted = classifier if directions is None else StyleClassifier.fit(
            project(features), labels, classifier.classes, classifier.reference, "probe",
            classifier.groups)
        print(f"\n== {k} photo-source directions projected out "
              f"(cross-validated accuracy {fitted.cv_accuracy:.3f})")
        probs = fitted.probabilities(project(features))
        if len(artists) >= 2:
            share = probs[:, artists] / probs[:, artists].sum(axis=1, keepdims=True)
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
