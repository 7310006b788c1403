"""Judge a saved generator on held-out identities, beside the artists and the renders.

Run: .venv/bin/python -m benchmarks.generator_quality --workspace WS --generator DIR \
        --judge forensic-artist=cuhk --judge cufsf-artist=cufsf [--steps N] [--limit N]

For each STYLE=SPLIT, the test identities of SPLIT that have a real STYLE sketch: their
mugshots are drawn by the generator in STYLE (fixed seeds) and judged with
benchmarks.quality against the real artist sketches and the pencil-dodge renders:
SFace genuine / impostor medians and gap, SFace and dlib rank-1 among the held-out photos
(dlib is in no training loss), sharpness (mean |Laplacian|), mean |pixel - artist| and the
validate stage's Fréchet distance to the artist sketches; and a second sample of each photo
(another seed), with the SFace cosine between the two (the validate stage's diversity
contract: at most 0.97); and the share of each source's sketches that the validate stage's
style judge (the workspace's style classifier) calls STYLE. Writes quality.md, quality.json and a
contact sheet per style (mugshot | render | generated | artist) under
<generator>/quality/ (or --out); never commit those images.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from flows.cli_parser import key_value
from tasks.generate.saved import read_manifest
from tasks.storage import Workspace

os.environ.setdefault("LANCEDB_LOG", "error")
SECOND_SEED_OFFSET = 10_000  # each photo's second sample: the diversity figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--generator", required=True, help="a saved generator folder")
    parser.add_argument("--judge", action="append", required=True, metavar="STYLE=SPLIT",
                        help="a paired style and the split whose test part judges it")
    parser.add_argument("--part", default="test")
    parser.add_argument("--steps", type=int, default=None, help="default: the generator's")
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--eta", type=float, default=None,
                        help="every style's sampling noise (default: the generator's, per "
                             "style where it has one)")
    parser.add_argument("--style-eta", action="append", default=[], metavar="STYLE=ETA",
                        type=key_value(float),
                        help="one style's sampling noise (repeatable), as generate's option")
    parser.add_argument("--no-second-seed", action="store_true",
                        help="skip drawing a second sample of each photo (the diversity figure)")
    parser.add_argument("--limit", type=int, default=None, help="at most N identities a style")
    parser.add_argument("--no-dlib", action="store_true")
    parser.add_argument("--resamples", type=int, default=1000,
                        help="the paired bootstrap of Fréchet against the render (0: none, "
                             "for quick sweeps; ~40 s per 1,000 on 57 identities)")
    parser.add_argument("--no-style", action="store_true",
                        help="skip the validate stage's style verdicts")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    # Imported here, not at the top: benchmarks.held_out, benchmarks.quality load prefect, which
    # reads the environment set above.
    import numpy as np

    from benchmarks.held_out import SEED_BASE, draw_samples, held_out, renders
    from benchmarks.quality import (
        IMAGE_SPEC,
        contact_sheet,
        judge_sources,
        seed_similarity,
        style_verdicts,
    )

    style_eta = dict(args.style_eta)
    workspace = Workspace.open(args.workspace)
    verdict = None if args.no_style else style_judge(workspace, IMAGE_SPEC, args.generator)
    out = Path(args.out or Path(args.generator) / "quality")
    out.mkdir(parents=True, exist_ok=True)
    results, lines = {}, [f"generator {Path(args.generator).resolve()}", ""]
    for judge in args.judge:
        style, _, split = judge.partition("=")
        data = held_out(workspace, style, [split], args.part, args.limit)
        began = time.perf_counter()
        bases = [SEED_BASE] if args.no_second_seed else [SEED_BASE,
                                                         SEED_BASE + SECOND_SEED_OFFSET]
        eta = style_eta.get(style, args.eta)
        generated, *second = draw_samples(workspace, args.generator, data.photo_ids,
                                          data.photos, style, args.steps, args.guidance,
                                          eta=eta, seed_bases=bases)
        seconds = time.perf_counter() - began
        seeds = None
        if second:
            between = seed_similarity(generated, second[0])
            seeds = {"median": float(np.median(between)), "mean": float(np.mean(between)),
                     "share_above_0.97": float(np.mean(between > 0.97))}
        sources = {"render": renders(data.photos), "generated": generated,
                   "artist": data.artists}
        report = judge_sources(data.photos, sources, use_dlib=not args.no_dlib,
                               frechet_baseline="render" if args.resamples else None,
                               resamples=args.resamples)
        sheet = contact_sheet(out / f"contact-{style}.png", data.photos, sources, n=10,
                              order=["render", "generated", "artist"])
        verdicts = None if verdict is None else style_verdicts(verdict, sources, style)
        results[style] = {"split": split, "identities": len(data.identities), "eta": eta,
                          "draw_seconds": seconds, "samples_per_photo": len(bases),
                          "sources": report.to_dicts(), "style_verdicts": verdicts,
                          "frechet_vs_render": {name: asdict(d) for name, d in
                                                report.frechet_vs_baseline.items()},
                          "photo_to_artist": report.photo_to_artist,
                          "artist_consistency": report.artist_consistency,
                          "second_seed_sface": seeds, "contact_sheet": str(sheet)}
        lines += [f"## {style}: {len(data.identities)} held-out identities of {split} "
                  f"({seconds:.1f} s to draw {len(bases)} per photo"
                  + ("" if eta is None else f" at eta {eta:g}") + ")", "", report.to_markdown(),
                  ""]
        if seeds is not None:
            lines += [f"two seeds of one photo, SFace between them: median "
                      f"{seeds['median']:.3f}, mean {seeds['mean']:.3f}, "
                      f"{seeds['share_above_0.97']:.0%} above 0.97 (the diversity contract's "
                      f"ceiling)", ""]
        if verdicts is not None:
            lines += ["the validate stage's style judge calls them " + style + ": " + "; ".join(
                f"{name} {v['right']:.0%} ({v['called']})" if v["right"] is not None
                else f"{name} not judged" for name, v in verdicts.items()), ""]
        lines += [f"contact sheet: {sheet}", ""]
    (out / "quality.json").write_text(json.dumps(results, indent=2))
    (out / "quality.md").write_text("\n".join(lines))
    print("\n".join(lines))


def style_judge(workspace, image_spec, generator_dir):
    """The validate stage's style judge for this generator's sketches in this workspace: its
    classifier's examples are shrunk to the generator's resolution, as validate does."""
    # Imported here, not at the top: tasks.validate.compute loads prefect, which reads the
    # environment set above.
    from tasks.validate.compute import validate_judge

    size = int(read_manifest(generator_dir)["resolution"])
    return validate_judge(workspace, size, image_spec).judge


if __name__ == "__main__":
    main()
