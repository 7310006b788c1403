"""Identity similarity of generated sketches, beside real artist sketches and impostors.

Run: .venv/bin/python -m benchmarks.identity_similarity --workspace WS [--split cuhk]
     [--part test] [--style forensic-artist] [--generator-version V]
For the identities of one split part (default: CUHK's held-out test identities), prints the
median SFace cosine of (a) generated sketches to their source mugshot, (b) the real artist
sketches of the same identities to their photos, (c) impostor pairs (a generated sketch
against every other identity's photo). On CUHK the artists reach about 0.42, impostors 0.10.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from tasks import storage
from tasks.encoders import create
from tasks.splits import load_split, resolve_split
from tasks.storage import Workspace

os.environ.setdefault("LANCEDB_LOG", "error")


def _unit(rows) -> np.ndarray:
    return np.stack(rows.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--split", default="cuhk")
    parser.add_argument("--part", default="test")
    parser.add_argument("--style", action="append", default=None)
    parser.add_argument("--generator-version", default=None)
    args = parser.parse_args()

    # Imported here, not at the top: tasks.validate.vectors loads prefect, which reads the
    # environment set above.
    from tasks.faces import to_aligned
    from tasks.validate.vectors import read_image

    workspace = Workspace.open(args.workspace)
    split = load_split(resolve_split(args.split))
    keep = {identity for identity, part in split.items() if part == args.part}
    encoder = create("identity", "sface")
    faces = storage.read(workspace, "faces", columns=["face_id", "identity_id", "kind", "style",
                                                      "paired_face_id"]).to_pylist()
    table = f"emb_identity_sface_{encoder.dim}"
    stored = storage.read(workspace, table, columns=["face_id", "encoder_version", "vector"])
    if set(stored.column("encoder_version").to_pylist()) != {encoder.version}:
        raise SystemExit(f"{table} holds other encoder versions: run `clip4sketch embed` first")
    vector_of = dict(zip(stored.column("face_id").to_pylist(), _unit(stored), strict=True))
    photos = [f for f in faces if f["kind"] == "photo"]

    sketches = storage.read(workspace, "sketches").to_pylist()
    sketches = [s for s in sketches if s["status"] == "ok" and s["identity_id"] in keep
                and (args.style is None or s["style"] in args.style)
                and (args.generator_version in (None, s["generator_version"]))]
    if not sketches:
        raise SystemExit("no generated sketches of those identities: run `clip4sketch generate`")
    crops = np.stack([to_aligned(read_image(workspace.root, s["png_path"])) for s in sketches])
    generated = encoder.encode(crops)
    own = np.array([generated[i] @ vector_of[s["face_id"]] for i, s in enumerate(sketches)])
    others = []
    for i, sketch in enumerate(sketches):
        others += [generated[i] @ vector_of[p["face_id"]] for p in photos
                   if p["identity_id"] != sketch["identity_id"] and p["face_id"] in vector_of]
    artists = [vector_of[f["face_id"]] @ vector_of[f["paired_face_id"]] for f in faces
               if f["kind"] == "sketch" and f["identity_id"] in keep and f["paired_face_id"]]

    print(f"{len(keep)} identities ({args.split}:{args.part}); styles "
          f"{sorted({s['style'] for s in sketches})}; generator "
          f"{sorted({s['generator_version'] for s in sketches})}\n")
    print(f"{'pairs':44} {'n':>6} {'median':>7} {'mean':>7}")
    for label, values in (("generated sketch -> its source mugshot", own),
                          ("real artist sketch -> its photo", artists),
                          ("impostor: generated sketch -> other photos", others)):
        values = np.asarray(values)
        if len(values):
            print(f"{label:44} {len(values):6} {np.median(values):7.3f} {values.mean():7.3f}")
    print(f"\nshare of generated sketches above the median impostor score: "
          f"{(own > np.median(others)).mean():.2f}")


if __name__ == "__main__":
    main()
