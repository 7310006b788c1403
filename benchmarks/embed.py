"""Embedding throughput: the batched pipeline beside a one-image-at-a-time loop.

Run: .venv/bin/python -m benchmarks.embed [--n 256] [--encoders sface effnet-lite0]
Crops are aligned procedural demo faces (the same crops ingestion would store), so the
benchmark runs anywhere; the figures are images per second on this machine.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from tasks.demo.faces import draw_face
from tasks.encoders import create
from tasks.ingest.align import align_face, detect_faces

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def aligned_crops(n: int) -> np.ndarray:
    crops = []
    identity = 0
    while len(crops) < n:
        image = draw_face(identity // 4, identity % 4)
        faces = detect_faces(image, 0.6, 1024)
        if faces:
            crops.append(align_face(image, faces[0].landmarks))
        identity += 1
    return np.stack(crops)


def per_second(fn, n: int, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="number of faces")
    parser.add_argument("--encoders", nargs="+", default=["sface", "effnet-lite0"])
    args = parser.parse_args()

    crops = aligned_crops(args.n)
    print(f"{args.n} aligned 112x112 crops, {os.cpu_count()} CPU cores\n")
    print(f"{'encoder':14} {'batched img/s':>14} {'one-by-one img/s':>17} {'ratio':>7}")
    for name in args.encoders:
        role = "identity" if name in ("sface", "adaface") else "image"
        encoder = create(role, name)
        encoder.encode(crops[:2])  # warm-up: sessions and kernels initialise lazily
        batched = per_second(lambda enc=encoder: enc.encode(crops), args.n)
        single = per_second(lambda enc=encoder: [enc.encode(c[None]) for c in crops], args.n)
        print(f"{name:14} {batched:14.1f} {single:17.1f} {batched / single:6.2f}x")


if __name__ == "__main__":
    main()
