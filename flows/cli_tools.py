"""The commands that are not one flow: ``demo`` (it strings flows together) and the small
helpers that read or change the workspace directly (``datasets``, ``export``, ``status``,
``render-sketches``), list the encoders or write a manifest. Their options are declared in
flows/cli_options.py like every command's.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from flows.cli_parser import command


def print_stages(title: str, report) -> None:
    print(title)
    for line in report.stages.lines():
        print(f"  {line}")
    if report.run_record:
        print(f"run manifest: {report.run_record}")
    validation = report.published.validation
    if validation is not None:
        print(f"report: {validation.report_path}")


DEMO_GENERATION = {"SAMPLES_PER_FACE": "2"}


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    """Demo faces -> the nightly DAG. The first night ingests and embeds (there is no
    generator yet), a small generator is trained once, the second night draws, validates,
    publishes and reports: what a new installation's first day looks like."""
    import time

    # Prefect and torch: when a command runs.
    from flows.nightly import NightlyRejectedError, nightly
    from flows.train_generator import train_generator
    from tasks.demo.faces import DEMO_STYLE, MANIFEST_NAME, PHOTO_DIR, make_demo_source
    from tasks.generate.catalog import DEFAULT_GENERATOR

    started = time.perf_counter()
    # The demo's sampling budget, unless the user set one (steps: the generator's own).
    for key, value in DEMO_GENERATION.items():
        os.environ.setdefault(f"CLIP4SKETCH_GENERATE_{key}", value)
    source = make_demo_source(args.workspace / "demo-source", identities=args.identities,
                              photos_per_identity=args.photos, seed=args.seed)
    # The photo folder first, then the pairs manifest that adds each identity's sketch.
    sources = [str(source / PHOTO_DIR), str(source / MANIFEST_NAME)]
    if not (args.workspace / DEFAULT_GENERATOR).exists():
        first = nightly(sources=sources, workspace=str(args.workspace))
        print_stages("first night (no generator yet):", first)
        # Only the demo's own paired style: the night then draws what the generator learned
        # in its three minutes (renderer styles add nothing a renderer does not do already).
        trained = train_generator(workspace=str(args.workspace), config=args.config,
                                  styles=[DEMO_STYLE], steps=args.train_steps, name="default",
                                  seed=args.seed, sample_every=args.train_steps)
        print(f"trained the demo generator: {trained.steps} steps, final loss "
              f"{trained.final_loss:.4f}; samples: {trained.report_html}")
    rejected = None
    try:
        report = nightly(sources=sources, workspace=str(args.workspace))
    except NightlyRejectedError as error:
        rejected, report = str(error), error.report
    seconds = time.perf_counter() - started
    if report is not None:
        print_stages("nightly:", report)
    print(f"\nDemo finished in {seconds:.0f} s. Workspace: {args.workspace}")
    print(f"  datasets:   clip4sketch --workspace {args.workspace} datasets")
    reports = sorted((args.workspace / "reports").glob("validate-*.html"),
                     key=lambda p: p.stat().st_mtime)
    if reports:
        print(f"  the report: {reports[-1]}")
    if rejected:
        # The quality gate did its job: a generator trained for minutes on a CPU does not
        # draw sketches good enough to publish. The report shows which contracts failed.
        print(f"  not published (a generator trained for minutes on a CPU rarely passes the "
              f"reviewed contracts; the report says which failed): {rejected}")
    return 0


@command("datasets")
def cmd_datasets(args: argparse.Namespace) -> int:
    # LanceDB and pyarrow: when a command runs.
    from tasks.locking import workspace_lock
    from tasks.storage import Workspace
    from tasks.validate.publish import list_versions, pin_version, unpin_version, versions_table

    workspace = Workspace.open(args.workspace)
    if args.pin or args.unpin:
        # Pins decide what a prune keeps: never change them under a running prune.
        with workspace_lock(workspace.root, "datasets --pin", timeout=60.0, reentrant=True):
            for version in args.pin or []:
                pin_version(workspace, version, note=args.note or "")
                print(f"pinned {version}: `prune` keeps it")
            for version in args.unpin or []:
                print(f"unpinned {version}" if unpin_version(workspace, version)
                      else f"{version} was not pinned")
    print(versions_table(list_versions(workspace)))
    return 0


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    # LanceDB and pyarrow: when a command runs.
    from tasks.storage import Workspace
    from tasks.validate.publish import export_version

    report = export_version(Workspace.open(args.workspace), args.version, args.dest)
    print(f"{report.version}: {report.sketches} sketches, {report.mugshots} mugshots -> "
          f"{report.destination}")
    return 0


@command("render-sketches")
def cmd_render_sketches(args: argparse.Namespace) -> int:
    # pydantic, LanceDB and OpenCV: when a command runs.
    from schemas.settings import load_settings
    from tasks.storage import Workspace
    from tasks.styles.registry import get_style, styles_for
    from tasks.styles.rendered_dataset import render_dataset

    registry = styles_for(load_settings(args.workspace))
    styles = [get_style(name, registry) for name in dict.fromkeys(args.style)]
    path, rows = render_dataset(Workspace.open(args.workspace), styles, args.face or None)
    print(f"{rows} rendered sketches -> {path}\ntrain on them with:\n"
          f"  clip4sketch train-recognizer --dataset {path}")
    return 0


@command("make-manifest")
def cmd_make_manifest(args: argparse.Namespace) -> int:
    from tasks.ingest.sources import MANIFEST_LAYOUTS  # pyarrow: when a command runs

    writer = MANIFEST_LAYOUTS[args.layout]
    rows = writer(Path(args.source), Path(args.out), style=args.style)
    print(f"wrote {rows} pairs to {args.out}; ingest it with:\n"
          f"  clip4sketch ingest {args.out} --root {Path(args.source).resolve()}")
    return 0


@command("encoders")
def cmd_encoders(args: argparse.Namespace) -> int:
    from tasks.encoders import DEFAULTS, available  # the encoder plug-ins: when a command runs

    for role, name in available():
        print(f"{role:9} {name}{'  (default)' if DEFAULTS[role] == name else ''}")
    return 0


@command("status")
def cmd_status(args: argparse.Namespace) -> int:
    # LanceDB: when a command runs.
    from tasks import storage
    from tasks.storage import Workspace

    workspace = Workspace.open(args.workspace)
    names = storage.table_names(workspace)
    if not names:
        print(f"{workspace.root}: empty workspace")
    for name in sorted(names):
        print(f"{name:32} {storage.count(workspace, name):8} rows  "
              f"tags: {len(storage.tags(workspace, name))}")
    return 0


