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


ENCODER_DEFAULTS = {"identity": "sface", "image": "effnet-lite0", "text": "minilm"}


def _encoder_options(parser: argparse.ArgumentParser,
                     roles: tuple[str, ...] = ("identity", "image")) -> None:
    parser.set_defaults(encoder_roles=roles)
    group = parser.add_argument_group("encoders (see `clip4sketch encoders`)")
    for role in roles:
        default = ENCODER_DEFAULTS[role]
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
    for role in args.encoder_roles:
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


def _sampling_options(parser: argparse.ArgumentParser) -> None:
    """Generation knobs; unset ones come from CLIP4SKETCH_GENERATE_* settings."""
    group = parser.add_argument_group("sampling (default: the settings, see README)")
    group.add_argument("--samples-per-face", type=int, default=None, help="default 2")
    group.add_argument("--shard-size", type=int, default=None, help="default 256")
    group.add_argument("--steps", type=int, default=None,
                       help="sampling steps (default: the generator's own; bridge 4, DDIM 50)")
    group.add_argument("--guidance", type=float, default=None,
                       help="classifier-free guidance (default: the generator's own)")
    group.add_argument("--eta", type=float, default=None,
                       help="sampling noise (default: the generator's own; bridge 1, DDIM 0)")
    group.add_argument("--batch-size", type=int, default=None, help="default 16")
    group.add_argument("--dask-address", default=None, metavar="tcp://HOST:8786",
                       help="run the shards on an existing Dask cluster (default "
                            "CLIP4SKETCH_GENERATE_DASK_ADDRESS, then CLIP4SKETCH_DASK_ADDRESS)")


def _publish_options(parser: argparse.ArgumentParser, style_required: bool = False) -> None:
    parser.add_argument("--generator", default=None, metavar="VERSION|DIR",
                        help="a saved generator's version or folder (default "
                             "CLIP4SKETCH_GENERATE_GENERATOR, then generators/default/final)")
    parser.add_argument("--style", action="append", metavar="NAME", required=style_required,
                        help="repeatable" + ("" if style_required
                                             else " (default: every active style)"))
    parser.add_argument("--thresholds", default=None, metavar="YAML",
                        help="thresholds file (default: data_contracts/thresholds.yaml)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what each stage would do; change nothing")


def _retention_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("retention (default CLIP4SKETCH_RETENTION_*; see prune)")
    group.add_argument("--keep-published", type=int, default=None, metavar="N",
                       help="keep the newest N published versions (plus current and pinned "
                            "ones); remove what only older versions used")
    group.add_argument("--keep-days", type=float, default=None, metavar="DAYS",
                       help="keep rejected versions, run tags, galleries and old table "
                            "versions younger than this (default 14)")


def _dask_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dask-address", default=None, metavar="tcp://HOST:8786",
                        help="run the shards (ingest: decode, detect, align; embed: encode; "
                             "nightly: those and generate's) on an existing Dask cluster; the "
                             "tables are written here (default CLIP4SKETCH_DASK_ADDRESS; see "
                             "docs/how-to/dask-ingest.md)")


def _ingest_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("sources", nargs="+" if required else "*", metavar="SOURCE",
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
    _dask_option(parser)


def cmd_ingest(args: argparse.Namespace) -> int:
    from flows.ingest import ingest

    reports = ingest(sources=args.sources, workspace=str(args.workspace), root=args.root,
                     pre_aligned=args.pre_aligned, retry_quarantined=args.retry_quarantined,
                     dask_address=args.dask_address)
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

    _print_embed(embed(workspace=str(args.workspace), dask_address=args.dask_address,
                       **_specs(args)))
    return 0


def _print_stages(title: str, report) -> None:
    print(title)
    for line in report.stages.lines():
        print(f"  {line}")
    if report.run_record:
        print(f"run manifest: {report.run_record}")
    validation = report.published.validation
    if validation is not None:
        print(f"report: {validation.report_path}")


def _run_and_report(name: str, run, dry_run: bool) -> int:
    """Run a publishing flow (nightly, backfill) and print its stages, rejected or not."""
    from flows.stages import DatasetRejectedError

    try:
        report = run()
    except DatasetRejectedError as error:
        if error.report is not None:
            _print_stages(f"{name} {error.report.run_id}:", error.report)
        print(f"not published: {error}", file=sys.stderr)
        return 1
    _print_stages(f"{name} --dry-run: nothing changed. It would:" if dry_run
                  else f"{name} {report.run_id}:", report)
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from flows.nightly import nightly

    return _run_and_report("nightly", lambda: nightly(
        sources=args.sources, workspace=str(args.workspace), root=args.root,
        pre_aligned=args.pre_aligned, retry_quarantined=args.retry_quarantined,
        generator=args.generator, styles=args.style or None, thresholds=args.thresholds,
        train_recognizer_steps=args.train_recognizer_steps,
        evaluate_pairs=args.evaluate_pairs, evaluate_root=args.evaluate_root,
        dry_run=args.dry_run, keep_published=args.keep_published, keep_days=args.keep_days,
        dask_address=args.dask_address, **_specs(args)), args.dry_run)


def cmd_backfill(args: argparse.Namespace) -> int:
    from flows.backfill import backfill

    return _run_and_report("backfill", lambda: backfill(
        styles=args.style, generator=args.generator, workspace=str(args.workspace),
        thresholds=args.thresholds, dry_run=args.dry_run, **_specs(args)), args.dry_run)


DEMO_GENERATION = {"SAMPLES_PER_FACE": "2"}


def cmd_demo(args: argparse.Namespace) -> int:
    """Demo faces -> the nightly DAG. The first night ingests and embeds (there is no
    generator yet), a small generator is trained once, the second night draws, validates,
    publishes and reports: what a new installation's first day looks like."""
    import time

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
        _print_stages("first night (no generator yet):", first)
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
        _print_stages("nightly:", report)
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


def cmd_train_generator(args: argparse.Namespace) -> int:
    from flows.train_generator import train_generator

    report = train_generator(
        workspace=str(args.workspace), config=args.config, styles=args.style or None,
        steps=args.steps, batch_size=args.batch_size, split=args.split, resume=args.resume,
        name=args.name, seed=args.seed, sample_every=args.sample_every, device=args.device,
        **_specs(args))
    print(f"generator {report.generator_dir}: {report.steps} steps, "
          f"final loss {report.final_loss:.4f}")
    print(f"  examples per style: {report.examples_per_style}")
    if report.skipped:
        print(f"  skipped: {report.skipped}")
    print(f"  report: {report.report_html}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from flows.generate import generate

    specs = _specs(args)
    report = generate(
        workspace=str(args.workspace), generator=args.generator, styles=args.style or None,
        samples_per_face=args.samples_per_face, shard_size=args.shard_size, steps=args.steps,
        guidance=args.guidance, eta=args.eta, batch_size=args.batch_size,
        device=args.device, dask_address=args.dask_address,
        faces=args.face or None, text_encoder=specs.get("text_encoder"))
    for style, counts in report.per_style.items():
        print(f"{style}: planned {counts.planned}, generated {counts.generated}, "
              f"reused {counts.reused}, flagged {counts.flagged}")
    if report.merge:
        print(f"sketches table: {report.merge.rows} rows")
    for shard, error in report.failed_shards.items():
        print(f"failed shard {shard}: {error}", file=sys.stderr)
    return 1 if report.failed_shards else 0


def cmd_validate(args: argparse.Namespace) -> int:
    from flows.validate import ContractsFailedError, validate

    try:
        report = validate(workspace=str(args.workspace), generator_version=args.generator_version,
                          styles=args.style or None, thresholds=args.thresholds, **_specs(args))
    except ContractsFailedError as error:
        print(f"not published: {error}", file=sys.stderr)
        return 1
    print(f"published {report.version}: {report.dataset.accepted}/{report.dataset.sketches} "
          f"sketches accepted")
    print(f"  report:    {report.report_path}")
    print(f"  data docs: {report.data_docs}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
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


def cmd_prune(args: argparse.Namespace) -> int:
    from schemas.settings import load_settings
    from tasks.retention import resolve_policy

    # A refused policy (--keep 0) is told before Prefect starts.
    resolve_policy(args.keep, args.keep_days, load_settings(args.workspace).retention)
    from flows.prune import prune_workspace

    report = prune_workspace(workspace=str(args.workspace), keep_published=args.keep,
                             keep_days=args.keep_days, dry_run=args.dry_run, wait=args.wait)
    freed = report.bytes_before - report.bytes_after
    print(f"would free {report.bytes:,} bytes (dry run: nothing removed)" if report.dry_run
          else f"freed {freed:,} bytes ({report.bytes_before:,} -> {report.bytes_after:,})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tasks.storage import Workspace
    from tasks.validate.publish import export_version

    report = export_version(Workspace.open(args.workspace), args.version, args.dest)
    print(f"{report.version}: {report.sketches} sketches, {report.mugshots} mugshots -> "
          f"{report.destination}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from flows.evaluate import evaluate

    specs = _specs(args)
    report = evaluate(
        pairs=args.pairs, recognizers=args.recognizer or ["baseline"], out=args.out,
        distractors=args.distractors, workspace=str(args.workspace), root=args.root,
        distractors_root=args.distractors_root, ann_threshold=args.ann_threshold,
        split=args.split, split_part=args.split_part, matrix_limit=args.matrix_limit,
        seed=args.seed, identity_encoder=specs.get("identity_encoder"),
        bootstrap=args.bootstrap, keep_galleries=args.keep_galleries)
    print(Path(report.metrics_md).read_text(encoding="utf-8"))
    print(f"results: {report.out}")
    return 0


def cmd_train_recognizer(args: argparse.Namespace) -> int:
    from flows.train_recognizer import train_recognizer

    specs = _specs(args)
    report = train_recognizer(
        workspace=str(args.workspace), name=args.name, out=args.out, dataset=args.dataset,
        real_pairs=args.real_pairs, real_pairs_root=args.real_pairs_root,
        include_synthetic=not args.no_synthetic, mode=args.mode, loss=args.loss,
        backbone_arch=args.backbone_arch, backbone_weights=args.backbone_weights,
        steps=args.steps, batch_size=args.batch_size,
        samples_per_identity=args.samples_per_identity, lr=args.lr, seed=args.seed,
        resume=args.resume, split=args.split, checkpoint_every=args.checkpoint_every,
        device=args.device, identity_encoder=specs.get("identity_encoder"),
        drop_test_identities=args.drop_test_identities, hidden=args.hidden,
        synthetic_styles=args.synthetic_style)
    loss = f"{report.final_loss:.4f}" if report.final_loss is not None else "n/a"
    print(f"recognizer {report.recognizer_dir}: {report.steps} steps, final loss {loss}")
    print(f"  loss curve: {report.loss_png}")
    return 0


def cmd_render_sketches(args: argparse.Namespace) -> int:
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


def cmd_make_manifest(args: argparse.Namespace) -> int:
    from tasks.ingest.sources import MANIFEST_LAYOUTS

    writer = MANIFEST_LAYOUTS[args.layout]
    rows = writer(Path(args.source), Path(args.out), style=args.style)
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


def cmd_synthesize_mugshots(args: argparse.Namespace) -> int:
    """Check the optional extra first (no Prefect start-up for a missing install), then run
    the flow; a folder drawn with other values is a user error, told in one line."""
    from tasks.synthesize.generator import SyntheticExtraMissing, check_extra

    try:
        check_extra()
    except SyntheticExtraMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from flows.synthesize import synthesize_mugshots
    from tasks.synthesize.source import SourceMismatchError

    options = {k: getattr(args, k) for k in (
        "seed", "truncation", "images_per_identity", "sigma", "size", "shard_size", "workers",
        "threads", "dask_address", "thresholds", "max_identity_similarity",
        "max_alignment_error", "min_detection_score", "max_candidates") if getattr(args, k)
        is not None}
    try:
        report = synthesize_mugshots(out=args.out, identities=args.identities,
                                     workspace=str(args.workspace), **options)
    except SourceMismatchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
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

    def add(name: str, handler: Callable[[argparse.Namespace], int], text: str,
            runs_flow: bool = False):
        sub = commands.add_parser(name, help=text, description=text, parents=[global_options])
        sub.set_defaults(handler=handler, runs_flow=runs_flow)
        return sub

    _ingest_options(add("ingest", cmd_ingest, "ingest mugshots and paired sketches", True))
    embed = add("embed", cmd_embed, "compute identity and image vectors of faces", True)
    _encoder_options(embed)
    _dask_option(embed)
    nightly = add("nightly", cmd_nightly,
                  "the nightly DAG: ingest, embed, generate what is missing, validate, publish "
                  "(then train and evaluate when asked)", True)
    _ingest_options(nightly, required=False)
    _encoder_options(nightly)
    _publish_options(nightly)
    nightly.add_argument("--train-recognizer-steps", type=int, default=0, metavar="N",
                         help="train a head recognizer on the published version (0: don't)")
    nightly.add_argument("--evaluate-pairs", default=None, metavar="MANIFEST",
                         help="evaluate the baseline (and that recognizer) on these pairs")
    nightly.add_argument("--evaluate-root", default=None)
    _retention_options(nightly)
    backfill = add("backfill", cmd_backfill,
                   "draw a style for every stored face, then validate and publish", True)
    _encoder_options(backfill)
    _publish_options(backfill, style_required=True)
    demo = add("demo", cmd_demo, "draw demo faces and run the nightly DAG on them", True)
    demo.add_argument("--identities", type=int, default=12)
    demo.add_argument("--photos", type=int, default=3, help="photos per identity")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--config", default="demo", help="generator config for the demo")
    demo.add_argument("--train-steps", type=int, default=300,
                      help="training steps of the demo generator (trained once)")
    train = add("train-generator", cmd_train_generator,
                "train the sketch generator on paired sketches and rendered styles", True)
    train.add_argument("--config", default="cpu",
                       help="generator config: tiny, cpu, paper, or a JSON path")
    train.add_argument("--style", action="append", metavar="NAME",
                       help="a style to train (repeatable; default: every style with examples)")
    train.add_argument("--steps", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--split", action="append", default=None,
                       help="identities to hold out: a bundled split (cuhk, cufsf) or a CSV "
                            "identity_id,split; repeatable (their union); only 'train' "
                            "identities are used")
    train.add_argument("--resume", action="store_true",
                       help="continue from the last checkpoint of --name")
    train.add_argument("--name", default="default", help="generators/<name>/ in the workspace")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--sample-every", type=int, default=None,
                       help="checkpoint and report interval in steps")
    _encoder_options(train, ("identity", "image", "text"))
    gen = add("generate", cmd_generate,
              "sample sketches for every mugshot x style, one Prefect task per shard", True)
    gen.add_argument("--generator", default=None, metavar="DIR",
                     help="a saved generator (default: workspace/generators/default/final)")
    gen.add_argument("--style", action="append", metavar="NAME",
                     help="repeatable (default: every active style)")
    _sampling_options(gen)
    gen.add_argument("--face", action="append", metavar="ID",
                     help="restrict to these face or identity ids (repeatable)")
    _encoder_options(gen, ("text",))
    check = add("validate", cmd_validate,
                "metrics, data contracts and the reviewer's report; publish if every "
                "contract holds", True)
    check.add_argument("--generator-version", default=None,
                       help="validate only the sketches of this generator version")
    check.add_argument("--style", action="append", metavar="NAME")
    check.add_argument("--thresholds", default=None, metavar="YAML",
                       help="thresholds file (default: data_contracts/thresholds.yaml)")
    _encoder_options(check, ("identity", "image", "text"))
    rendered = add("render-sketches", cmd_render_sketches,
                   "classical image-processing sketches of stored photos, as a dataset a "
                   "recognizer can train on (the baseline for the diffusion sketches)")
    rendered.add_argument("--style", action="append", required=True, metavar="NAME",
                          help="a rendered style (pencil-dodge, xdog-lines; repeatable)")
    rendered.add_argument("--face", action="append", metavar="ID",
                          help="restrict to these face or identity ids (repeatable)")
    datasets = add("datasets", cmd_datasets, "list dataset versions and their status")
    datasets.add_argument("--pin", action="append", metavar="VERSION",
                          help="keep this published version whatever retention says "
                               "(repeatable)")
    datasets.add_argument("--unpin", action="append", metavar="VERSION")
    datasets.add_argument("--note", default=None, help="why it is pinned (with --pin)")
    pruning = add("prune", cmd_prune,
                  "remove what only old or rejected dataset versions use, under the "
                  "workspace lock", True)
    pruning.add_argument("--keep", type=int, default=None, metavar="N",
                         help="published versions to keep, newest first (>= 1; default "
                              "CLIP4SKETCH_RETENTION_KEEP_PUBLISHED); current and pinned "
                              "versions are kept too")
    pruning.add_argument("--keep-days", type=float, default=None, metavar="DAYS",
                         help="keep what is younger than this (default 14)")
    pruning.add_argument("--dry-run", action="store_true",
                         help="list what would go and its bytes; remove nothing")
    pruning.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                         help="wait this long for a running night's lock, then refuse "
                              "(default CLIP4SKETCH_LOCK_TIMEOUT_SECONDS, 60)")
    export = add("export", cmd_export,
                 "write a published version as image folders + a Parquet manifest")
    export.add_argument("version")
    export.add_argument("dest", metavar="DIR")
    evaluation = add("evaluate", cmd_evaluate,
                     "sketch-to-mugshot identification and verification metrics", True)
    evaluation.add_argument("pairs", help="pairs manifest: identity_id, photo_path, sketch_path "
                                          "(probes are the sketches, the gallery the photos)")
    evaluation.add_argument("--recognizer", action="append", metavar="baseline|PATH",
                            help="repeatable; 'baseline' (the identity encoder) or a trained "
                                 "recognizer folder (default: baseline)")
    evaluation.add_argument("--out", default=None,
                            help="results folder (default: workspace/evaluations/<run id>)")
    evaluation.add_argument("--distractors", default=None, metavar="SOURCE",
                            help="more mugshots of other people added to the gallery")
    evaluation.add_argument("--root", default=None, help="folder manifest paths must stay inside")
    evaluation.add_argument("--distractors-root", default=None)
    evaluation.add_argument("--ann-threshold", type=int, default=1_000_000,
                            help="gallery size past which an ANN index is searched (below "
                                 "it: exact blocked search, measured faster)")
    evaluation.add_argument("--split", default=None,
                            help="probe only one part of a split (cuhk or a CSV)")
    evaluation.add_argument("--split-part", default="test")
    evaluation.add_argument("--matrix-limit", type=int, default=5_000_000,
                            help="probe x gallery cells scored exactly for verification")
    evaluation.add_argument("--seed", type=int, default=0)
    evaluation.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                            help="probe resamples for 95%% intervals (0: none)")
    evaluation.add_argument("--keep-galleries", type=int, default=3, metavar="RUNS",
                            help="keep the gallery tables of this many runs, drop older ones")
    _encoder_options(evaluation, ("identity",))
    recognizer = add("train-recognizer", cmd_train_recognizer,
                     "train a sketch-to-mugshot recognizer on synthetic and/or real sketches",
                     True)
    recognizer.add_argument("--name", default="default",
                            help="recognizers/<name>/ in the workspace")
    recognizer.add_argument("--out", default=None)
    recognizer.add_argument("--dataset", action="append", default=None,
                            help="repeatable: published version, sketches table, Parquet, "
                                 "export folder or workspace (default: the sketches table)")
    recognizer.add_argument("--synthetic-style", action="append", default=None,
                            help="repeatable: train only on synthetic sketches of this style")
    recognizer.add_argument("--real-pairs", action="append", default=None,
                            help="repeatable: pairs manifest of real sketches")
    recognizer.add_argument("--real-pairs-root", action="append", default=None,
                            help="one for all manifests, or one per --real-pairs")
    recognizer.add_argument("--drop-test-identities", action="store_true",
                            help="drop identities of the split's test part from the sources "
                                 "(default: refuse such sources)")
    recognizer.add_argument("--no-synthetic", action="store_true",
                            help="train on real sketches only")
    recognizer.add_argument("--mode", choices=["head", "backbone", "procrustes", "adapter"],
                            default="head",
                            help="procrustes/adapter adapt the sketch side only, tuned on a "
                                 "validation part of the training identities")
    recognizer.add_argument("--loss", choices=["adaface", "arcface", "cosface"],
                            default="adaface")
    recognizer.add_argument("--backbone-arch", default="ir_50")
    recognizer.add_argument("--backbone-weights", default=None)
    recognizer.add_argument("--steps", type=int, default=1000)
    recognizer.add_argument("--batch-size", type=int, default=64)
    recognizer.add_argument("--samples-per-identity", type=int, default=4)
    recognizer.add_argument("--lr", type=float, default=None)
    recognizer.add_argument("--seed", type=int, default=0)
    recognizer.add_argument("--resume", action="store_true")
    recognizer.add_argument("--split", default=None,
                            help="only 'train' identities of this split are used")
    recognizer.add_argument("--checkpoint-every", type=int, default=100)
    recognizer.add_argument("--hidden", type=int, default=None,
                            help="head MLP / adapter width")
    _encoder_options(recognizer, ("identity",))
    manifest = add("make-manifest", cmd_make_manifest,
                   "write a pairs manifest for a known dataset layout (CUHK, CUFSF)")
    manifest.add_argument("source", help="dataset folder (photos/ and sketches/)")
    manifest.add_argument("out", help="manifest CSV to write")
    manifest.add_argument("--layout", choices=["cuhk", "cufsf"], default="cuhk",
                          help="cuhk: sketches/NAME-sz1.jpg; cufsf: sketches/NAME.jpg")
    manifest.add_argument("--style", default="artist", help="style name of the real sketches")
    synth = add("synthesize-mugshots", cmd_synthesize_mugshots,
                "draw N new, photo-realistic people (MobileStyleGAN, offline) as a folder "
                "source for ingest/nightly; needs the 'synthetic' extra", True)
    synth.add_argument("identities", type=int, metavar="N", help="identities to keep")
    synth.add_argument("--out", required=True, metavar="DIR",
                       help="the source folder (keep it outside any repository: drawn faces "
                            "are never committed); an earlier DIR is resumed or extended")
    synth.add_argument("--seed", type=int, default=None, help="default 0")
    synth.add_argument("--truncation", type=float, default=None, metavar="PSI",
                       help="pull toward the average face (default 1.0: at 0.7 drawn people "
                            "look too alike for 1,000 distinct identities; see README)")
    synth.add_argument("--images-per-identity", type=int, default=None, metavar="K",
                       help="default 1. K > 1 adds small latent nudges (--sigma) of each "
                            "person: near-duplicates (SFace ~0.7-0.9 to the first), not new "
                            "poses or lighting; the model has no noise input")
    synth.add_argument("--sigma", type=float, default=None,
                       help="latent nudge for images 2..K (default 0.3; recorded)")
    synth.add_argument("--size", type=int, default=None, help="saved side in px (default 512)")
    synth.add_argument("--shard-size", type=int, default=None, help="candidates a task "
                       "(default 32; fixed by a folder's first run)")
    synth.add_argument("--workers", type=int, default=None,
                       help="shards at once on this machine (default 1)")
    synth.add_argument("--threads", type=int, default=None,
                       help="OpenVINO threads per worker (default 1; fixed per folder)")
    synth.add_argument("--dask-address", default=None, metavar="tcp://HOST:8786",
                       help="run the shards on an existing Dask cluster")
    synth.add_argument("--thresholds", default=None, metavar="YAML",
                       help="thresholds file (default: data_contracts/thresholds.yaml)")
    synth.add_argument("--max-identity-similarity", type=float, default=None,
                       help="refuse a face whose SFace cosine to one already drawn or stored "
                            "exceeds this (default 0.5, reviewed)")
    synth.add_argument("--max-alignment-error", type=float, default=None,
                       help="refuse faces whose landmarks miss the template by more (px)")
    synth.add_argument("--min-detection-score", type=float, default=None,
                       help="refuse broken faces YuNet scores below this (default off)")
    synth.add_argument("--max-candidates", type=int, default=None,
                       help="bound on candidates judged (default 3N + a shard)")
    add("encoders", cmd_encoders, "list the registered encoders")
    add("status", cmd_status, "list the workspace's tables and row counts")
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
