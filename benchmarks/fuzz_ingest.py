"""Fuzz ingestion: >= 10,000 mutated files (and fuzzed manifests) through the real ``ingest``.

Run: .venv/bin/python -m benchmarks.fuzz_ingest [--files 10000] [--batch 500] [--manifests 300]
     [--seed 0] [--direct] [--keep DIR]

A workspace first stores three faces and one quarantined file by a normal ingest. Then
hypothesis draws ``--files`` mutated JPEG/PNG/PGM/PPM/WebP files (``tests/tasks/ingest/
fuzzing.py``: header and length rewrites, EXIF orientations and junk, colour modes, odd canvases,
byte flips, cuts, insertions), written ``--batch`` at a time as folder sources and ingested by
the Prefect ``ingest`` flow (``--direct``: by ``ingest_source`` without Prefect). Fuzzed
manifests (encodings, BOMs, CRLF, quoting, huge lines, path tricks) go through
``ingest_source``, since a malformed manifest is meant to stop its run with a ManifestError.

It prints files tried, what became of them (ingested, skipped, quarantined by reason), crashes
(any exception but a ManifestError; must be 0), rows stored before the run that changed (must
be 0) and the peak memory of this process. A crashing batch is replayed file by file on a
scratch copy of the workspace, and each crashing file's recipe is written to
``crashes.txt`` (paste it into tests/tasks/ingest/test_fuzz_corpus.py). Exit status 1 when
anything must-be-0 is not.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

from benchmarks.fuzzing import (
    ManifestRoot,
    changed_rows,
    file_cases,
    manifest_cases,
    seed_workspace,
    stored_rows,
    unaccounted,
    write_files,
    write_manifest,
)
from schemas.settings import IngestSettings
from tasks.ingest.sources import ManifestError
from tasks.storage import Workspace

# Pillow warns on every corrupt EXIF block it meets; here that is the point, not news.
warnings.filterwarnings("ignore", category=UserWarning, module="PIL")

for _key, _value in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LANCEDB_LOG": "error",
                     "PREFECT_LOGGING_LEVEL": "WARNING",
                     "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}.items():
    os.environ.setdefault(_key, _value)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def draw(strategy, n: int, seed: int) -> list:
    """``n`` examples of ``strategy``, drawn by hypothesis's own engine (seeded)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    drawn: list = []
    attempt = 0
    while len(drawn) < n:
        @settings(max_examples=n - len(drawn), database=None, deadline=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @hypothesis_seed(seed + attempt)
        @given(strategy)
        def collect(example) -> None:
            drawn.append(example)

        collect()
        attempt += 1
    return drawn[:n]


class Tally:
    """Everything the run counts, and the must-be-0 figures."""

    def __init__(self) -> None:
        self.files = 0
        self.file_seconds = 0.0
        self.ingested: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.quarantined: Counter[str] = Counter()
        self.unaccounted = 0
        self.crashes: list[str] = []
        self.manifests: Counter[str] = Counter()
        self.manifest_rows: Counter[str] = Counter()  # what became of the manifests' rows
        self.changed: set = set()

    def add(self, report) -> None:
        self.ingested.update(report.ingested)
        self.skipped.update(report.skipped)
        self.quarantined.update(report.quarantined)
        self.unaccounted += unaccounted(report)


def _isolate(cases, workspace_root: Path, scratch: Path, settings) -> list[str]:
    """Replay a crashed batch file by file on a copy of the workspace; crashing recipes."""
    # Imported here, not at the top: tasks.ingest.run loads prefect, which reads the environment set
    # above.
    from tasks.ingest.run import ingest_source

    found = []
    for case in cases:
        shutil.rmtree(scratch, ignore_errors=True)
        workspace = Workspace.open(shutil.copytree(workspace_root, scratch / "workspace"))
        write_files([case], scratch / "source")
        try:
            ingest_source(workspace, scratch / "source", settings=settings, run_id="isolate")
        except Exception as error:
            found.append(f"{case!r}  # {type(error).__name__}: {error}")
    shutil.rmtree(scratch, ignore_errors=True)
    return found


def run_files(args, temp: Path, workspace_root: Path, before: dict, tally: Tally) -> None:
    # Imported here, not at the top: tasks.ingest.run loads prefect, which reads the environment set
    # above.
    from tasks.ingest.run import ingest_source

    settings = IngestSettings()
    began = time.perf_counter()
    cases = draw(file_cases(identities=("fuzz-a", "fuzz-b", "stored-0")), args.files, args.seed)
    print(f"drew {len(cases):,} file recipes in {time.perf_counter() - began:.1f} s")
    started = time.perf_counter()  # files/s counts writing and ingesting, not drawing
    if not args.direct:
        # Imported here, not at the top: flows.ingest loads prefect, which reads the environment set
        # above.
        from flows.ingest import ingest as ingest_flow
    for number, start in enumerate(range(0, len(cases), args.batch)):
        chunk = cases[start:start + args.batch]
        folder = temp / f"batch-{number:03d}"
        write_files(chunk, folder)
        tally.files += len(chunk)
        began = time.perf_counter()
        try:
            if args.direct:
                report = ingest_source(Workspace.open(workspace_root), folder,
                                       settings=settings, run_id=f"fuzz-{number}")
            else:
                report = ingest_flow(sources=[str(folder)], workspace=str(workspace_root))[0]
            tally.add(report)
            outcome = (f"ingested {sum(report.ingested.values())}, skipped "
                       f"{sum(report.skipped.values())}, quarantined {report.n_quarantined}")
        except Exception as error:
            traceback.print_exc()
            found = _isolate(chunk, workspace_root, temp / "isolate", settings)
            tally.crashes += found or [f"batch {number} (no single file reproduces it): "
                                       f"{type(error).__name__}: {error}"]
            outcome = f"CRASH {type(error).__name__}: {error}"
        tally.changed |= set(changed_rows(before, stored_rows(Workspace.open(workspace_root))))
        print(f"batch {number:3d}: {len(chunk)} files in {time.perf_counter() - began:6.1f} s; "
              f"{outcome}; peak {_peak_mib():,.0f} MiB", flush=True)
        shutil.rmtree(folder)
    tally.file_seconds = time.perf_counter() - started


def run_manifests(args, temp: Path, workspace_root: Path, before: dict, tally: Tally) -> None:
    # Imported here, not at the top: tasks.ingest.run loads prefect, which reads the environment set
    # above.
    from tasks.ingest.run import ingest_source

    root = ManifestRoot.build(temp / "manifests")
    workspace = Workspace.open(workspace_root)
    began = time.perf_counter()
    for number, case in enumerate(draw(manifest_cases(), args.manifests, args.seed)):
        try:
            manifest = write_manifest(case, root.root, root.outside, name=f"m{number:05d}")
            report = ingest_source(workspace, manifest, run_id=f"fuzz-m{number}")
            tally.manifests["ingested (a report)"] += 1
            tally.manifest_rows.update(report.ingested)
            tally.manifest_rows.update(report.skipped)
            tally.manifest_rows.update(report.quarantined)
            tally.unaccounted += unaccounted(report)
        except ManifestError:
            tally.manifests["refused (ManifestError naming it)"] += 1
        except Exception as error:
            tally.manifests["crashed"] += 1
            tally.crashes.append(f"{case!r}  # {type(error).__name__}: {error}")
    tally.changed |= set(changed_rows(before, stored_rows(workspace)))
    print(f"manifests: {args.manifests} in {time.perf_counter() - began:.1f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--manifests", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--direct", action="store_true",
                        help="call ingest_source instead of the Prefect ingest flow")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this folder and keep it (default: a temp folder)")
    args = parser.parse_args()

    temp = args.keep or Path(tempfile.mkdtemp(prefix="fuzz-ingest-"))
    temp.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(temp / "prefect-home"))

    started = time.perf_counter()
    baseline = _peak_mib()
    workspace_root = seed_workspace(temp)
    before = stored_rows(Workspace.open(workspace_root))
    tally = Tally()
    try:
        run_files(args, temp, workspace_root, before, tally)
        run_manifests(args, temp, workspace_root, before, tally)
    finally:
        crashes_file = temp / "crashes.txt"
        crashes_file.write_text("\n".join(tally.crashes) + "\n")
        seconds = time.perf_counter() - started
        print()
        print(f"files tried:               {tally.files:,} in {tally.file_seconds / 60:.1f} min "
              f"({tally.files / max(tally.file_seconds, 1e-9):.1f} files/s, through "
              f"{'ingest_source' if args.direct else 'the Prefect ingest flow'}); "
              f"{seconds / 60:.1f} min in all")
        print(f"ingested:                  {dict(sorted(tally.ingested.items()))}")
        print(f"skipped:                   {dict(sorted(tally.skipped.items()))}")
        print(f"quarantined by reason:     {sum(tally.quarantined.values()):,}")
        for reason, n in sorted(tally.quarantined.items(), key=lambda kv: -kv[1]):
            print(f"  {reason:24} {n:6,}")
        print(f"manifests tried:           {args.manifests}: {dict(tally.manifests)}; their "
              f"rows: {dict(sorted(tally.manifest_rows.items()))}")
        print(f"files or rows unaccounted: {tally.unaccounted} (must be 0)")
        print(f"crashes:                   {len(tally.crashes)} (must be 0; recipes in "
              f"{crashes_file})")
        print(f"stored rows changed:       {len(tally.changed)} of {len(before)} stored before "
              f"the run (must be 0)")
        print(f"peak memory (this process): {_peak_mib():,.0f} MiB "
              f"({baseline:,.0f} MiB at start)")
        if args.keep is None:
            shutil.rmtree(temp, ignore_errors=True)
    return 1 if tally.crashes or tally.changed or tally.unaccounted else 0


if __name__ == "__main__":
    sys.exit(main())
