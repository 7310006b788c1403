"""Incremental nightly runs: a full night, a night with 5 % new faces, a night with nothing new.

After a full nightly over N faces, adding 5 % new faces should make the next night do only
their work (goal: at most 15 % of the full night's time), and a night with nothing new should
cost at most 5 % of it. All three nights run in one process against one Prefect server that
is started (and warmed by a first tiny flow) before the clock starts, so Prefect's fixed
start-up is excluded, as the goal says; each night's own flow and task runs are included.

The generator is the ``demo`` config (32 px, grey spatial input) at random init: sampling
costs the same whatever the weights, and validation rejects its noise, which is the honest
outcome and costs the same as a publish (the rejected night is caught and timed).

    .venv/bin/python -m benchmarks.nightly                       # 40 identities x 2 photos
    .venv/bin/python -m benchmarks.nightly --identities 20 --steps 10
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from schemas.encoders import EncoderSpec
from tasks.demo.faces import make_demo_source
from tasks.encoders import load
from tasks.generate.catalog import DEFAULT_GENERATOR

for key, value in {"LANCEDB_LOG": "error", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
                   "PREFECT_LOGGING_LEVEL": "WARNING"}.items():
    os.environ.setdefault(key, value)


def _copy_identities(source: Path, live: Path, identities: list[str]) -> None:
    for identity in identities:
        shutil.copytree(source / "photos" / identity, live / identity)


def _night(workspace: Path, live: Path, styles: list[str]
           ) -> tuple[float, dict[str, float], str]:
    # Imported here, not at the top: flows.nightly loads prefect, which reads the environment set
    # above.
    from flows.nightly import NightlyRejectedError, nightly

    started = time.perf_counter()
    try:
        report = nightly(sources=[str(live)], workspace=str(workspace), styles=styles)
        stages = {name: r.seconds for name, r in report.stages.records.items()}
        outcome = "published" if report.published.validation else "no dataset"
    except NightlyRejectedError:
        import json

        manifest = max((workspace / "runs").glob("nightly-*.json"),
                       key=lambda p: p.stat().st_mtime)
        summary = json.loads(manifest.read_text())["summary"]
        stages = {name: r["seconds"] for name, r in summary.items()}
        outcome = "rejected"
    return time.perf_counter() - started, stages, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=40)
    parser.add_argument("--photos", type=int, default=2)
    parser.add_argument("--new-share", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=None,
                        help="sampling steps per sketch (default: the generator's own)")
    parser.add_argument("--samples", type=int, default=2, help="sketches per face and style")
    parser.add_argument("--keep", default=None, help="keep the workspace in this folder")
    args = parser.parse_args()

    os.environ["CLIP4SKETCH_GENERATE_SAMPLES_PER_FACE"] = str(args.samples)
    if args.steps:
        os.environ["CLIP4SKETCH_GENERATE_STEPS"] = str(args.steps)
    temp = Path(args.keep or tempfile.mkdtemp(prefix="nightly-bench-"))
    os.environ.setdefault("PREFECT_HOME", str(temp / "prefect-home"))
    (temp / "prefect-home").mkdir(parents=True, exist_ok=True)

    # Imported here, not at the top: tasks.generate.networks loads diffusers and torch.
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from tasks.generate.networks import SketchGenerator

    source = make_demo_source(temp / "source", identities=args.identities,
                              photos_per_identity=args.photos)
    names = sorted(p.name for p in (source / "photos").iterdir())
    n_new = max(1, round(len(names) * args.new_share))
    base, new = names[:-n_new], names[-n_new:]
    workspace, live = temp / "ws", temp / "live"
    live.mkdir(parents=True, exist_ok=True)
    _copy_identities(source, live, base)

    encoders = {role: load(EncoderSpec(role=role, name=name)) for role, name in
                (("identity", "sface"), ("image", "effnet-lite0"), ("text", "minilm"))}
    generator = SketchGenerator.build("demo", {r: e.dim for r, e in encoders.items()},
                                      {r: e.version for r, e in encoders.items()}, seed=0)
    generator.save_pretrained(workspace / DEFAULT_GENERATOR)
    styles = ["pencil-dodge", "xdog-lines"]

    @flow
    def warm_up() -> None:
        """Starts and warms the server, outside the clock."""

    with prefect_test_harness(server_startup_timeout=120):
        warm_up()
        full = _night(workspace, live, styles)
        _copy_identities(source, live, new)
        more = _night(workspace, live, styles)
        quiet = _night(workspace, live, styles)

    faces = len(base) * args.photos
    print(f"\nnightly over {faces} faces ({len(base)} identities x {args.photos} photos), "
          f"styles {', '.join(styles)}, {args.samples} samples, "
          f"{args.steps or 'the generator default'} steps; "
          f"then {len(new) * args.photos} new faces ({args.new_share:.0%}), then nothing new\n")
    rows = [("full night", full), (f"+{args.new_share:.0%} new faces", more),
            ("nothing new", quiet)]
    stages = list(full[1])
    print(f"{'night':18} {'seconds':>8} {'of full':>8} {'goal':>6}  outcome    "
          + " ".join(f"{s:>9}" for s in stages))
    goals = {1: 0.15, 2: 0.05}
    for i, (name, (seconds, per_stage, outcome)) in enumerate(rows):
        share = seconds / full[0]
        goal = f"{goals[i]:.0%}" if i in goals else "-"
        print(f"{name:18} {seconds:8.1f} {share:8.1%} {goal:>6}  {outcome:10} "
              + " ".join(f"{per_stage.get(s, 0.0):9.1f}" for s in stages))
    print(f"\nworkspace: {workspace}")


if __name__ == "__main__":
    main()
