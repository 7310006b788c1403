"""How alike drawn people are at each truncation: the figures behind the default psi.

For each psi, draws N faces (candidates 0..N-1 of --seed), aligns them as ingestion does and
reports the SFace cosine between different people: the median, and the shares above SFace's
match threshold (0.363) and above the duplicate threshold (0.5). Needs the 'synthetic' extra.

    python -m benchmarks.synthetic_truncation --faces 60 --seed 7 --psi 0.7 0.85 1.0
"""

from __future__ import annotations

import argparse

import numpy as np

from schemas.synthesize import HygieneThresholds
from tasks.synthesize.generator import latent, load_generator
from tasks.synthesize.hygiene import check_face, identity_vectors, pair_similarities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--psi", type=float, nargs="+", default=[0.7, 0.85, 1.0])
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

    generator = load_generator(threads=1)
    permissive = HygieneThresholds(max_alignment_error=1e9)  # count every detected face
    for psi in args.psi:
        checks = [check_face(generator.draw(latent(args.seed, i), psi, args.size), permissive)
                  for i in range(args.faces)]
        crops = [c.crop for c in checks if c.ok]
        vectors, _ = identity_vectors(crops)
        pairs = pair_similarities(vectors)
        print(f"psi {psi}: {len(crops)}/{args.faces} faces found; median "
              f"{np.median(pairs):.3f}, above 0.363 {(pairs > 0.363).mean():.1%}, above 0.5 "
              f"{(pairs > 0.5).mean():.2%}, max {pairs.max():.3f}", flush=True)


if __name__ == "__main__":
    main()
