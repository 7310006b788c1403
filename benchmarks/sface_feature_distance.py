"""How far SFace's early blocks put a photo, a pencil render and another person's sketch from
an artist's sketch: what `losses.identity_features` can ask of a drawing, per statistic.

The feature-matching loss compares a drawing with the artist's sketch of the same person in
SFace's early blocks, either place by place ("activations") or by the blocks' Gram matrices
("gram", the marks without their places). A statistic that puts the person's own photo as
far from the sketch as another person's sketch by the same artist asks for layout, not for the
artist's marks. Read on the real-data workspace (experiments/real-data.sh), no training:

    .venv/bin/python -m benchmarks.sface_feature_distance --workspace $RUNS/real/ws --pairs 24
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from schemas.records import FACES_SCHEMA
from tasks import storage
from tasks.encoders.sface_torch import load_sface_torch, sface_embed_and_features
from tasks.faces import read_crops
from tasks.generate.inputs import to_grey, to_unit
from tasks.generate.objectives import feature_distance, jitter_and_blur
from tasks.styles.rendering import pencil_dodge


def _pictures(crops: list[np.ndarray]) -> torch.Tensor:
    return torch.as_tensor(np.stack([to_unit(to_grey(c))[None] for c in crops]))


def distances(workspace: Path, pairs: int, blocks: tuple[int, ...], seed: int
              ) -> dict[str, dict[str, dict[str, float]]]:
    """style -> comparison -> statistic -> mean distance to the artist's sketch."""
    if not (workspace / "lancedb").is_dir():
        raise SystemExit(f"{workspace} is no workspace: run experiments/real-data.sh")
    ws = storage.Workspace.open(workspace)
    faces = storage.read(ws, storage.FACES, columns=["face_id", "kind", "style", "paired_face_id"],
                         schema=FACES_SCHEMA).to_pandas()
    sketches = faces[faces.kind == "sketch"].dropna(subset=["paired_face_id"])
    if sketches.empty:
        raise SystemExit(f"{workspace} holds no paired sketches: run experiments/real-data.sh")
    model = load_sface_torch()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for style, part in sorted(sketches.groupby("style")):
        part = part.sample(min(pairs, len(part)), random_state=seed)
        crops = read_crops(ws, list(part.face_id) + list(part.paired_face_id))
        artist = _pictures([crops[f] for f in part.face_id])
        photos = [crops[p] for p in part.paired_face_id]
        candidates = {
            "grey photo": _pictures(photos),
            "pencil render": _pictures([pencil_dodge(p) for p in photos]),
            "another person's sketch, same artist": artist.roll(1, 0),
        }
        ones = torch.ones(len(part))
        with torch.no_grad():
            # The loss reads the pictures shrunk 2x and back (identity_downsample 2).
            _, theirs = sface_embed_and_features(model, jitter_and_blur(artist, 2, 0), blocks)
            out[style] = {}
            for name, pictures in candidates.items():
                _, mine = sface_embed_and_features(model, jitter_and_blur(pictures, 2, 0),
                                                   blocks)
                out[style][name] = {
                    statistic: float(feature_distance(mine, theirs, ones, statistic))
                    for statistic in ("activations", "gram")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=24, help="sketches per artist style")
    parser.add_argument("--blocks", default="2,4,6", help="SFace blocks, as the config's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    blocks = tuple(int(b) for b in args.blocks.split(","))
    print(f"SFace blocks {blocks}: mean distance to the artist's sketch of the person")
    print("| style | compared | activations | gram |\n|---|---|---:|---:|")
    for style, rows in distances(args.workspace, args.pairs, blocks, args.seed).items():
        for name, value in rows.items():
            print(f"| {style} | {name} | {value['activations']:.3f} | {value['gram']:.3f} |")


if __name__ == "__main__":
    main()
