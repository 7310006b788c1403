"""Validation cost: a first run over a sketch dataset beside a re-validation of the same data.

The first run measures every sketch (decode, health, SFace and EfficientNet-Lite0 vectors,
the style classifier trained on the registry's examples), runs the data contracts and writes
the report. A re-validation of the unchanged dataset reuses the stored metrics and the stored
contract outcome, so it only reads tables, checks PNG hashes and writes a new report; it
should cost well under 10 % of the first. Both runs are in one process, as two Prefect task
runs would be, and the encoders are loaded inside the first (that is part of its cost).
Prefect's own start-up (a temporary server: 9-20 s, see ../shared/STACK.md) is not included.

    .venv/bin/python -m benchmarks.validate                  # 20 identities: ~2 min on 2 cores
    .venv/bin/python -m benchmarks.validate --identities 6 --samples 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks import sketch_data as sd
from data_contracts.thresholds import load_thresholds
from tasks.storage import Workspace
from tasks.styles.registry import load_styles

for key, value in {"LANCEDB_LOG": "error", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "DO_NOT_TRACK": "1"}.items():
    os.environ.setdefault(key, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=20)
    parser.add_argument("--photos", type=int, default=3)
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()

    # Imported here, not at the top: tasks.validate.compute, tasks.validate.judge,
    # tasks.validate.report load prefect, which reads the environment set above.
    from tasks.validate.compute import compute_metrics
    from tasks.validate.judge import judge_dataset
    from tasks.validate.report import write_report

    sd.IDENTITIES, sd.PHOTOS = args.identities, args.photos
    with tempfile.TemporaryDirectory() as temp:
        started = time.perf_counter()
        workspace = Workspace.open(sd.build_workspace(Path(temp)))
        sketches = sd.clean_sketches(workspace, samples=args.samples)
        sd.write_sketches(workspace, sketches + list(sd.broken_sketches(workspace).values()))
        print(f"set-up: {len(sketches) + 5} sketches of {args.identities} identities in "
              f"{time.perf_counter() - started:.1f} s (ingest, embed, draw; not timed below)")
        registry, thresholds = load_styles(), load_thresholds()
        timings = []
        for label in ("first run", "re-validation"):
            run_id = label.replace(" ", "-")
            started = time.perf_counter()
            metrics = compute_metrics(workspace, sd.IDENTITY, sd.IMAGE, registry, run_id=run_id)
            metrics_s = time.perf_counter() - started
            outcome = judge_dataset(
                workspace, metrics, registry, sd.IDENTITY, sd.IMAGE, run_id=run_id,
                report_path=str(workspace.reports_dir / f"validate-{run_id}.html"))
            write_report(workspace, outcome, thresholds)
            timings.append(time.perf_counter() - started)
            print(f"{label:14} {timings[-1]:7.2f} s  (metrics {metrics_s:.2f} s: computed "
                  f"{metrics.computed}, reused {metrics.reused}, encoded {metrics.encoded}; "
                  f"contracts {outcome.seconds['contracts']:.2f} s"
                  f"{' reused' if outcome.reused_contracts else ''}; "
                  f"{outcome.version} {outcome.status})")
            for failure in outcome.failed_expectations:
                print(f"{'':14} failed: {failure}")
        print(f"re-validation / first run: {timings[1] / timings[0]:.1%}")


if __name__ == "__main__":
    main()
