"""The ``clip4sketch`` command: one sub-command per flow, plus small helpers (flows/cli_tools.py).

Each command's options are declared once, in flows/cli_options.py: the flows' signatures give
their names and types, and flows/cli_parser.py builds argparse from both. A command calls its
flow with ``flow_kwargs(args)`` and prints the report. Only the standard library is imported
at module level so ``--help`` answers at once; each command imports its flow (and with it
Prefect) when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flows.cli_parser import add_commands, command, flow_kwargs
from flows.cli_tools import print_stages  # and the commands that are not one flow

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

    # Prefect's logging set-up runs when prefect.main loads (``import prefect`` is lazy).
    import prefect.main  # noqa: F401

    path = workspace / "logs" / f"{time.strftime('%Y%m%dT%H%M%S')}-{command}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s - %(message)s"))
    logging.getLogger("prefect").addHandler(handler)
    return handler


def _workspace(args: argparse.Namespace) -> Path:
    given = args.workspace or os.environ.get("CLIP4SKETCH_WORKSPACE") or "workspace"
    return Path(given).expanduser().resolve()


def _publish(name: str, flow, args: argparse.Namespace) -> int:
    """Run a publishing flow (nightly, backfill) and print its stages, rejected or not."""
    from flows.stages import DatasetRejectedError  # Prefect: when a command runs

    try:
        report = flow(**flow_kwargs(args))
    except DatasetRejectedError as error:
        if error.report is not None:
            print_stages(f"{name} {error.report.run_id}:", error.report)
        print(f"not published: {error}", file=sys.stderr)
        return 1
    print_stages(f"{name} --dry-run: nothing changed. It would:" if args.dry_run
                 else f"{name} {report.run_id}:", report)
    return 0


@command("ingest")
def cmd_ingest(args: argparse.Namespace) -> int:
    from flows.ingest import ingest  # Prefect: when a command runs

    for report in ingest(**flow_kwargs(args)):
        print(f"{report.source}: {report.seen} files, ingested {report.ingested or 0}, "
              f"skipped {report.skipped or 0}, quarantined {report.quarantined or 0} "
              f"({report.seconds:.1f} s)")
    return 0


@command("embed")
def cmd_embed(args: argparse.Namespace) -> int:
    from flows.embed import embed  # Prefect: when a command runs

    for role, table in embed(**flow_kwargs(args)).tables.items():
        print(f"{role}: {table.encoder_version} -> {table.table}: computed {table.computed}, "
              f"reused {table.reused}")
    return 0


@command("nightly")
def cmd_nightly(args: argparse.Namespace) -> int:
    from flows.nightly import nightly  # Prefect: when a command runs

    return _publish("nightly", nightly, args)


@command("backfill")
def cmd_backfill(args: argparse.Namespace) -> int:
    from flows.backfill import backfill  # Prefect: when a command runs

    return _publish("backfill", backfill, args)


@command("train-generator")
def cmd_train_generator(args: argparse.Namespace) -> int:
    from flows.train_generator import train_generator  # Prefect: when a command runs

    report = train_generator(**flow_kwargs(args))
    print(f"generator {report.generator_dir}: {report.steps} steps, "
          f"final loss {report.final_loss:.4f}")
    print(f"  examples per style: {report.examples_per_style}")
    if report.skipped:
        print(f"  skipped: {report.skipped}")
    print(f"  report: {report.report_html}")
    return 0


@command("generate")
def cmd_generate(args: argparse.Namespace) -> int:
    from flows.generate import generate  # Prefect: when a command runs

    report = generate(**flow_kwargs(args))
    for style, counts in report.per_style.items():
        print(f"{style}: planned {counts.planned}, generated {counts.generated}, "
              f"reused {counts.reused}, flagged {counts.flagged}")
    if report.merge:
        print(f"sketches table: {report.merge.rows} rows")
    for shard, error in report.failed_shards.items():
        print(f"failed shard {shard}: {error}", file=sys.stderr)
    return 1 if report.failed_shards else 0


@command("validate")
def cmd_validate(args: argparse.Namespace) -> int:
    from flows.validate import ContractsFailedError, validate  # Prefect: when a command runs

    try:
        report = validate(**flow_kwargs(args))
    except ContractsFailedError as error:
        print(f"not published: {error}", file=sys.stderr)
        return 1
    print(f"published {report.version}: {report.dataset.accepted}/{report.dataset.sketches} "
          f"sketches accepted")
    print(f"  report:    {report.report_path}")
    print(f"  data docs: {report.data_docs}")
    return 0


@command("prune")
def cmd_prune(args: argparse.Namespace) -> int:
    # pydantic and LanceDB, then Prefect: when a command runs.
    from schemas.settings import load_settings
    from tasks.retention import resolve_policy

    # A refused policy (--keep 0) is told before Prefect starts.
    resolve_policy(args.keep, args.keep_days, load_settings(args.workspace).retention)
    from flows.prune import prune_workspace  # Prefect: when a command runs

    report = prune_workspace(**flow_kwargs(args))
    freed = report.bytes_before - report.bytes_after
    print(f"would free {report.bytes:,} bytes (dry run: nothing removed)" if report.dry_run
          else f"freed {freed:,} bytes ({report.bytes_before:,} -> {report.bytes_after:,})")
    return 0


@command("evaluate")
def cmd_evaluate(args: argparse.Namespace) -> int:
    from flows.evaluate import evaluate  # Prefect: when a command runs

    report = evaluate(**flow_kwargs(args))
    print(Path(report.metrics_md).read_text(encoding="utf-8"))
    print(f"results: {report.out}")
    return 0


@command("train-recognizer")
def cmd_train_recognizer(args: argparse.Namespace) -> int:
    from flows.train_recognizer import train_recognizer  # Prefect: when a command runs

    report = train_recognizer(**flow_kwargs(args))
    loss = f"{report.final_loss:.4f}" if report.final_loss is not None else "n/a"
    print(f"recognizer {report.recognizer_dir}: {report.steps} steps, final loss {loss}")
    print(f"  loss curve: {report.loss_png}")
    return 0


@command("synthesize-mugshots")
def cmd_synthesize_mugshots(args: argparse.Namespace) -> int:
    """Check the optional extra first (no Prefect start-up for a missing install), then run
    the flow; a missing extra or a folder drawn with other values is told in one line."""
    from tasks.synthesize.generator import check_extra  # OpenVINO, when the command runs

    check_extra()
    from flows.synthesize import synthesize_mugshots  # Prefect: when the extra is there

    report = synthesize_mugshots(**flow_kwargs(args))
    refused = ", ".join(f"{k} {v}" for k, v in report.refused.items()) or "none"
    print(f"{report.out}: {report.kept} identities, {report.images} images "
          f"({report.kept_new} new; {report.candidates_judged} candidates judged, refused: "
          f"{refused}; surplus {report.surplus})")
    if report.seconds_per_image is not None:
        print(f"  {report.seconds_per_image:.3f} s an image in the generator, "
              f"{report.seconds_per_candidate:.3f} s a candidate with all checks; "
              f"{report.seconds:.0f} s in all")
    imp = report.impostor
    if imp.pairs:
        print(f"  SFace between kept identities: median {imp.median:.3f}, "
              f"{imp.share_above_match:.2%} of {imp.pairs} pairs above 0.363, max {imp.max:.3f}")
    print(f"  manifest: {report.manifest}\n  ingest it with: clip4sketch nightly {report.out}")
    if report.short_by:
        print(f"short by {report.short_by} identities: the candidate budget ran out (raise "
              "--truncation, --max-identity-similarity or --max-candidates)", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip4sketch",
        description="Regenerate a validated dataset of synthetic forensic sketches from a "
                    "mugshot database. Each command runs a Prefect flow.",
    )
    parser.add_argument("--workspace", type=Path, default=None,
                        help="workspace folder (default $CLIP4SKETCH_WORKSPACE or ./workspace)")
    # The same global options after the command (`clip4sketch ingest SRC --workspace W`), as
    # git and pip take them. SUPPRESS: a sub-command that is not given one must not overwrite
    # the value given before the command with its own default.
    global_options = argparse.ArgumentParser(add_help=False)
    global_options.add_argument("--workspace", type=Path, default=argparse.SUPPRESS,
                                help="workspace folder (also accepted before the command)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(commands, [global_options])
    return parser


# Errors that name what the user should fix, by module and class. Looked up among modules
# already imported: an error can only come from a module that ran, and importing torch or
# diffusers just to format a one-line message would cost seconds.
USER_ERRORS = (
    ("tasks.encoders.base", "EncoderError"),
    ("tasks.generate.conditions", "ConditionError"),
    ("tasks.generate.config", "ConfigError"),
    ("tasks.generate.saved", "GeneratorLoadError"),
    ("tasks.ingest.sources", "ManifestError"),
    ("tasks.locking", "WorkspaceBusyError"),
    ("tasks.retention", "RetentionError"),
    ("tasks.validate.publish", "VersionError"),
    ("tasks.styles.registry", "StyleError"),
    ("tasks.styles.rendered_dataset", "RenderError"),
    ("tasks.synthesize.generator", "SyntheticExtraMissing"),
    ("tasks.synthesize.source", "SourceMismatchError"),
)


def _is_user_error(error: BaseException) -> bool:
    kinds = tuple(getattr(sys.modules[module], name) for module, name in USER_ERRORS
                  if module in sys.modules)
    return bool(kinds) and isinstance(error, kinds)


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
        # Mistakes the user fixes (a path, a name, a setting): one line that says what to fix,
        # not a traceback. Anything else is a bug and keeps its traceback.
        if isinstance(error, FileNotFoundError) or _is_user_error(error):
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
