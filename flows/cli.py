"""The ``clip4sketch`` command: one sub-command per flow, plus small helpers.

Only the standard library is imported at module level so ``--help`` answers at once;
each command imports its flow (and with it Prefect) when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

OFFLINE_ENVIRONMENT = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LANCEDB_LOG": "error",
    # A fresh temporary server migrates its database first: 20 s is too tight on 2 cores.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def prepare_environment(workspace: Path) -> None:
    """Offline defaults, and Prefect's home inside the workspace unless the user set one."""
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    os.environ["CLIP4SKETCH_WORKSPACE"] = str(workspace)
    if "PREFECT_HOME" not in os.environ:
        # Prefect cannot create a nested home itself, and then its server cannot start.
        (workspace / ".prefect").mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(workspace / ".prefect")


def log_to_workspace(workspace: Path, command: str):
    """Copy Prefect's flow and task logs into ``workspace/logs`` for readers without the UI.

    Attached after Prefect is imported: its logging set-up replaces earlier handlers.
    """
    import logging
    import time

    import prefect  # noqa: F401  (configures Prefect's loggers first)

    path = workspace / "logs" / f"{time.strftime('%Y%m%dT%H%M%S')}-{command}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s - %(message)s"))
    logging.getLogger("prefect").addHandler(handler)
    return handler


def _workspace(args: argparse.Namespace) -> Path:
    given = args.workspace or os.environ.get("CLIP4SKETCH_WORKSPACE") or "workspace"
    return Path(given).expanduser().resolve()


def _encoder_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("encoders (see `clip4sketch encoders`)")
    for role, default in (("identity", "sface"), ("image", "effnet-lite0")):
        group.add_argument(f"--{role}-encoder", default=None, metavar="NAME",
                           help=f"{role} encoder (default {default})")
        group.add_argument(f"--{role}-weights", default=None, metavar="PATH",
                           help=f"local weights for the {role} encoder")
        group.add_argument(f"--{role}-arch", default=None, metavar="ARCH",
                           help=f"architecture of the {role} encoder (adaface: ir_50|ir_101; "
                                "open_clip: e.g. ViT-B-32)")
    group.add_argument("--image-config", default=None, metavar="JSON",
                       help="open_clip model config for a custom architecture")
    group.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: auto)")


def _specs(args: argparse.Namespace) -> dict:
    from schemas.encoders import EncoderSpec

    specs = {}
    for role in ("identity", "image"):
        name = getattr(args, f"{role}_encoder")
        weights, arch = getattr(args, f"{role}_weights"), getattr(args, f"{role}_arch")
        config = args.image_config if role == "image" else None
        if name or weights or arch or config or args.device:
            from schemas.settings import load_settings

            default = getattr(load_settings(), f"{role}_encoder")
            specs[f"{role}_encoder"] = EncoderSpec(
                role=role, name=name or default, weights=weights, arch=arch, config=config,
                device=args.device)
    return specs


def _ingest_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="a folder with one sub-folder per identity, or a CSV/Parquet "
                             "manifest (identity_id, photo_path[, sketch_path, style])")
    parser.add_argument("--root", default=None,
                        help="folder that manifest paths must stay inside (default: the "
                             "manifest's folder)")
    parser.add_argument("--pre-aligned", action="store_true",
                        help="images are already 112x112 ArcFace-aligned crops: skip detection")
    parser.add_argument("--retry-quarantined", action="store_true",
                        help="decode again files quarantined earlier (e.g. after changing "
                             "the detection threshold)")


def cmd_ingest(args: argparse.Namespace) -> int:
    from flows.ingest import ingest

    reports = ingest(sources=args.sources, workspace=str(args.workspace), root=args.root,
                     pre_aligned=args.pre_aligned, retry_quarantined=args.retry_quarantined)
    for report in reports:
        _print_ingest(report)
    return 0


def _print_ingest(report) -> None:
    print(f"{report.source}: {report.seen} files, ingested {report.ingested or 0}, "
          f"skipped {report.skipped or 0}, quarantined {report.quarantined or 0} "
          f"({report.seconds:.1f} s)")


def _print_embed(report) -> None:
    for role, table in report.tables.items():
        print(f"{role}: {table.encoder_version} -> {table.table}: computed {table.computed}, "
              f"reused {table.reused}")


def cmd_embed(args: argparse.Namespace) -> int:
    from flows.embed import embed

    _print_embed(embed(workspace=str(args.workspace), **_specs(args)))
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from flows.nightly import nightly

    report = nightly(sources=args.sources, workspace=str(args.workspace), root=args.root,
                     pre_aligned=args.pre_aligned, retry_quarantined=args.retry_quarantined,
                     **_specs(args))
    for item in report.ingest:
        _print_ingest(item)
    _print_embed(report.embed)
    print(f"run record: {report.run_record}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.nightly import nightly
    from tasks.demo.faces import MANIFEST_NAME, PHOTO_DIR, make_demo_source

    source = make_demo_source(args.workspace / "demo-source", identities=args.identities,
                              photos_per_identity=args.photos, seed=args.seed)
    # The photo folder first, then the pairs manifest that adds each identity's sketch.
    report = nightly(sources=[str(source / PHOTO_DIR), str(source / MANIFEST_NAME)],
                     workspace=str(args.workspace))
    for item in report.ingest:
        _print_ingest(item)
    _print_embed(report.embed)
    print(f"\nDemo finished. Workspace: {report.workspace}")
    print(f"  datasets (Parquet): {Path(report.workspace) / 'datasets'}")
    print(f"  run record:         {report.run_record}")
    return 0


def cmd_make_manifest(args: argparse.Namespace) -> int:
    from tasks.ingest.sources import write_cuhk_manifest

    rows = write_cuhk_manifest(Path(args.source), Path(args.out), style=args.style)
    print(f"wrote {rows} pairs to {args.out}; ingest it with:\n"
          f"  clip4sketch ingest {args.out} --root {Path(args.source).resolve()}")
    return 0


def cmd_encoders(args: argparse.Namespace) -> int:
    from tasks.encoders import DEFAULTS, available

    for role, name in available():
        print(f"{role:9} {name}{'  (default)' if DEFAULTS[role] == name else ''}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip4sketch",
        description="Regenerate a validated dataset of synthetic forensic sketches from a "
                    "mugshot database. Each command runs a Prefect flow.",
    )
    parser.add_argument("--workspace", type=Path, default=None,
                        help="workspace folder (default $CLIP4SKETCH_WORKSPACE or ./workspace)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], text: str,
            runs_flow: bool = False):
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler, runs_flow=runs_flow)
        return sub

    _ingest_options(add("ingest", cmd_ingest, "ingest mugshots and paired sketches", True))
    _encoder_options(add("embed", cmd_embed, "compute identity and image vectors of faces",
                         True))
    nightly = add("nightly", cmd_nightly, "the nightly DAG: ingest, then embed", True)
    _ingest_options(nightly)
    _encoder_options(nightly)
    demo = add("demo", cmd_demo, "draw demo faces and run the nightly DAG on them", True)
    demo.add_argument("--identities", type=int, default=12)
    demo.add_argument("--photos", type=int, default=3, help="photos per identity")
    demo.add_argument("--seed", type=int, default=0)
    manifest = add("make-manifest", cmd_make_manifest,
                   "write a pairs manifest for a known dataset layout (CUHK)")
    manifest.add_argument("source", help="dataset folder (CUHK: photos/ and sketches/)")
    manifest.add_argument("out", help="manifest CSV to write")
    manifest.add_argument("--layout", choices=["cuhk"], default="cuhk")
    manifest.add_argument("--style", default="artist", help="style name of the real sketches")
    add("encoders", cmd_encoders, "list the registered encoders")
    add("status", cmd_status, "list the workspace's tables and row counts")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.workspace = _workspace(args)
    prepare_environment(args.workspace)
    log_handler = log_to_workspace(args.workspace, args.command) if args.runs_flow else None
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the flow already logged the traceback
        from tasks.encoders.base import EncoderError
        from tasks.ingest.sources import ManifestError
        from tasks.locking import WorkspaceBusyError

        if isinstance(error, ManifestError | EncoderError | FileNotFoundError
                      | WorkspaceBusyError):
            print(f"error: {error}", file=sys.stderr)
            return 2
        raise
    finally:
        if log_handler is not None:
            import logging

            logging.getLogger("prefect").removeHandler(log_handler)
            log_handler.close()


if __name__ == "__main__":
    sys.exit(main())
