"""Where a style loses its same-face comparisons: the style contract split by the photos' source.

The validate stage judges a style over every face of the version; a rejected one says how many
pairs it lost, and (``against``) to which other style. This splits the same comparisons by
where each face came from (the first folder under ``--data``: cuhk, cufsf, orl; anything
elsewhere, such as synthetic mugshots, is "elsewhere"), with the judge ``clip4sketch
validate`` builds for the workspace (its cached classifier when the examples are unchanged,
as after the night that drew them), so a reviewer sees whether a style fails on a population
the generator never saw drawn in it.

    .venv/bin/python -m benchmarks.style_pairs_by_source ~/clip4sketch-runs/real/night-v11 \\
        --data ../shared/data --style forensic-artist
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path


def source_of(path: str, data: Path) -> str:
    """The first folder of ``path`` under ``data`` (links resolved on both sides)."""
    try:
        return Path(path).resolve().relative_to(data.resolve()).parts[0]
    except (ValueError, IndexError):
        return "elsewhere"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    parser.add_argument("--data", default="../shared/data", help="the sources' data root")
    parser.add_argument("--style", action="append", help="styles to show (default: all)")
    parser.add_argument("--image-encoder", default="effnet-lite0")
    args = parser.parse_args()
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DO_NOT_TRACK"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("LANCEDB_LOG", "error")

    # Imported here, after the environment above: these modules import Prefect.
    from schemas.encoders import EncoderSpec
    from schemas.records import SKETCHES_SCHEMA
    from schemas.validation import Scope
    from tasks import storage
    from tasks.storage import Workspace
    from tasks.validate.compute import read_scope, sketch_resolution, validate_judge
    from tasks.validate.pairs import Drawing, Scorer, judge_pairs
    from tasks.validate.vectors import stored_sketch_vectors

    ws = Workspace.open(args.workspace)
    rows = read_scope(ws, Scope(), columns=list(SKETCHES_SCHEMA.names)).to_pylist()
    if not rows:
        parser.error(f"no sketches in {ws.root}: run a night or `clip4sketch generate` first")
    judge = validate_judge(ws, sketch_resolution(rows),
                           EncoderSpec(role="image", name=args.image_encoder))
    if judge.method is None:
        parser.error(f"no style judge for {ws.root}: the registry has no examples to train one")
    scorer = Scorer(judge.classes(), judge.scores, judge.method)

    faces = storage.read(ws, "faces", columns=["face_id", "source_path"]).to_pylist()
    source = {f["face_id"]: source_of(f["source_path"], Path(args.data)) for f in faces}
    vectors = stored_sketch_vectors(ws, judge.image,
                                    [(r["sketch_id"], r["png_sha256"]) for r in rows])
    ids = [r["sketch_id"] for r in rows if r["sketch_id"] in vectors]
    scores = dict(zip(ids, scorer.rows([vectors[i] for i in ids]), strict=True)
                  ) if ids else {}
    groups: dict[str, list[Drawing]] = defaultdict(list)
    for r in rows:
        drawing = Drawing(r["face_id"], r["style"], scores.get(r["sketch_id"]))
        groups["all"].append(drawing)
        groups[source.get(r["face_id"], "elsewhere")].append(drawing)

    print(f"{ws.root}: {len(rows)} drawings, judge {judge.method} {judge.fingerprint}")
    print(f"{'style':18} {'faces from':10} {'faces':>6} {'pairs won':>16}  "
          "against each other style")
    for name, drawings in sorted(groups.items(), key=lambda kv: (kv[0] != "all", kv[0])):
        verdicts = judge_pairs(drawings, {}, judge.classes(), 0.9)
        for style, v in verdicts.items():
            if args.style and style not in args.style or not v.pairs:
                continue
            faces_n = len({d.face_id for d in drawings if d.style == style})
            against = ", ".join(f"{o} {w}/{n} ({w / n:.1%})" for o, (w, n) in v.against.items())
            print(f"{style:18} {name:10} {faces_n:6d} {v.pairs_won:6d}/{v.pairs:<5d} "
                  f"({v.share:.1%})  {against}")


if __name__ == "__main__":
    main()
