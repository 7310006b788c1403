"""What each ``clip4sketch`` command takes, declared once.

A command that runs a flow names it (``flow="generate:generate"``); the flow's own signature
in ``flows/<module>.py`` gives each option its name, its type (``int``, ``float``, a flag for
``bool``, repeatable for ``list[...]``), whether it is required, and, by leaving the value unset,
its default. This table adds only what a signature cannot say: help texts, metavars, the
option's place and group, and the CLI's own spelling where it differs (``--style`` for
``styles``). ``*_encoder`` parameters become the encoder options (``ENCODERS``), and
``workspace`` is the global ``--workspace``. Options of commands without a flow (``demo``,
``datasets``, ...) give their type and default here. ``flows/cli_parser.py`` builds argparse
from this; standard library only, so ``--help`` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Opt:
    """One option or positional argument: a flow parameter, or a CLI-only value."""

    param: str  # the flow's parameter, or the namespace name of a CLI-only option
    help: str | None = None
    metavar: str | None = None
    flag: str | None = None  # default: FLAGS, else --param-with-dashes
    positional: bool = False
    choices: tuple[str, ...] | None = None
    # CLI-only options (no flow parameter to read them from): int, float, "flag" or "append".
    kind: Any = None
    default: Any = None
    required: bool = False


@dataclass(frozen=True)
class Group:
    title: str
    options: tuple[Opt, ...] = ()


@dataclass(frozen=True)
class Command:
    help: str
    options: tuple[Opt | Group, ...] = ()
    flow: str | None = None  # "module:function" in flows/
    runs_flow: bool = False  # copy Prefect's log to the workspace (every command with a flow)


# How a flow parameter is spelled on the command line when not --param-with-dashes.
FLAGS = {"styles": "--style", "faces": "--face", "recognizers": "--recognizer",
         "synthetic_styles": "--synthetic-style", "include_synthetic": "--no-synthetic"}

ENCODER_DEFAULTS = {"identity": "sface", "image": "effnet-lite0", "text": "minilm"}
# Filled from the flow's ``<role>_encoder`` parameters (and its ``device``, if any).
ENCODERS = Group("encoders (see `clip4sketch encoders`)")


def encoder_options(role: str) -> tuple[Opt, ...]:
    return (
        Opt(f"{role}_encoder", f"{role} encoder (default {ENCODER_DEFAULTS[role]})", "NAME"),
        Opt(f"{role}_weights", f"local weights for the {role} encoder", "PATH"),
        Opt(f"{role}_arch", f"architecture of the {role} encoder (adaface: ir_50|ir_101; "
                            "open_clip: e.g. ViT-B-32)", "ARCH"),
    )


ENCODER_SHARED = (
    Opt("image_config", "open_clip model config for a custom architecture", "JSON"),
    Opt("device", "cpu, cuda or cuda:N (default: auto)"),
)

DRY_RUN = Opt("dry_run", "print what each stage would do; change nothing")
THRESHOLDS = Opt("thresholds", "thresholds file (default: data_contracts/thresholds.yaml)",
                 "YAML")
STYLES = Opt("styles", "repeatable (default: every active style)", "NAME")
FACES = Opt("faces", "restrict to these face or identity ids (repeatable)", "ID")
DASK = Opt("dask_address", "run the shards (ingest: decode, detect, align; embed: encode; "
                           "nightly: those and generate's) on an existing Dask cluster; the "
                           "tables are written here (default CLIP4SKETCH_DASK_ADDRESS; see "
                           "docs/how-to/dask-ingest.md)", "tcp://HOST:8786")
INGEST = (
    Opt("sources", "a folder with one sub-folder per identity, or a CSV/Parquet manifest "
                   "(identity_id, photo_path[, sketch_path, style])", "SOURCE", positional=True),
    Opt("root", "folder that manifest paths must stay inside (default: the manifest's folder)"),
    Opt("pre_aligned", "images are already 112x112 ArcFace-aligned crops: skip detection"),
    Opt("retry_quarantined", "decode again files quarantined earlier (e.g. after changing the "
                             "detection threshold)"),
    DASK,
)


def publish_options(styles_help: str) -> tuple[Opt, ...]:
    return (
        Opt("generator", "a saved generator's version or folder (default "
                         "CLIP4SKETCH_GENERATE_GENERATOR, then generators/default/final)",
            "VERSION|DIR"),
        Opt("styles", styles_help, "NAME"), THRESHOLDS, DRY_RUN,
    )


SAMPLING = Group("sampling (default: the settings, see README)", (
    Opt("samples_per_face", "default 2"),
    Opt("shard_size", "default 256"),
    Opt("steps", "sampling steps (default: the generator's own; bridge 4, DDIM 50)"),
    Opt("guidance", "classifier-free guidance (default: the generator's own)"),
    Opt("eta", "sampling noise of every style (default: the generator's own, per style "
               "where it has one; bridge 1, DDIM 0)"),
    Opt("style_eta", "sampling noise of one style, repeatable (default "
                     "CLIP4SKETCH_GENERATE_STYLE_ETA, then the generator's own)", "STYLE=ETA"),
    Opt("batch_size", "default 16"),
    Opt("dask_address", "run the shards on an existing Dask cluster (default "
                        "CLIP4SKETCH_GENERATE_DASK_ADDRESS, then CLIP4SKETCH_DASK_ADDRESS)",
        "tcp://HOST:8786"),
))
RETENTION = Group("retention (default CLIP4SKETCH_RETENTION_*; see prune)", (
    Opt("keep_published", "keep the newest N published versions (plus current and pinned "
                          "ones); remove what only older versions used", "N"),
    Opt("keep_days", "keep rejected versions, run tags, galleries and old table versions "
                     "younger than this (default 14)", "DAYS"),
))

COMMANDS: dict[str, Command] = {
    "ingest": Command("ingest mugshots and paired sketches", INGEST, "ingest:ingest"),
    "embed": Command("compute identity and image vectors of faces", (ENCODERS, DASK),
                     "embed:embed"),
    "nightly": Command(
        "the nightly DAG: ingest, embed, generate what is missing, validate, publish (then "
        "train and evaluate when asked)",
        (*INGEST, ENCODERS, *publish_options(STYLES.help),
         Opt("train_recognizer_steps", "train a head recognizer on the published version "
                                       "(0: don't)", "N"),
         Opt("evaluate_pairs", "evaluate the baseline (and that recognizer) on these pairs",
             "MANIFEST"),
         Opt("evaluate_root"), RETENTION), "nightly:nightly"),
    "backfill": Command("draw a style for every stored face, then validate and publish",
                        (ENCODERS, *publish_options("repeatable")), "backfill:backfill"),
    "demo": Command("draw demo faces and run the nightly DAG on them", (
        Opt("identities", kind=int, default=12),
        Opt("photos", "photos per identity", kind=int, default=3),
        Opt("seed", kind=int, default=0),
        Opt("config", "generator config for the demo", default="demo"),
        Opt("train_steps", "training steps of the demo generator (trained once)", kind=int,
            default=300),
    ), runs_flow=True),
    "train-generator": Command(
        "train the sketch generator on paired sketches and rendered styles", (
            Opt("config", "generator config: tiny, cpu, paper, or a JSON path"),
            Opt("styles", "a style to train (repeatable; default: every style with examples)",
                "NAME"),
            Opt("steps"), Opt("batch_size"),
            Opt("split", "identities to hold out: a bundled split (cuhk, cufsf) or a CSV "
                         "identity_id,split; repeatable (their union); only 'train' "
                         "identities are used"),
            Opt("resume", "continue from the last checkpoint of --name"),
            Opt("name", "generators/<name>/ in the workspace"),
            Opt("seed"), Opt("sample_every", "checkpoint and report interval in steps"),
            ENCODERS), "train_generator:train_generator"),
    "generate": Command(
        "sample sketches for every mugshot x style, one Prefect task per shard", (
            Opt("generator", "a saved generator (default: workspace/generators/default/final)",
                "DIR"),
            STYLES, SAMPLING, FACES, ENCODERS), "generate:generate"),
    "validate": Command(
        "metrics, data contracts and the reviewer's report; publish if every contract holds", (
            Opt("generator_version", "validate only the sketches of this generator version"),
            Opt("styles", metavar="NAME"), THRESHOLDS, ENCODERS), "validate:validate"),
    "render-sketches": Command(
        "classical image-processing sketches of stored photos, as a dataset a recognizer can "
        "train on (the baseline for the diffusion sketches)", (
            Opt("style", "a rendered style (pencil-dodge, xdog-lines; repeatable)", "NAME",
                kind="append", required=True),
            Opt("face", FACES.help, "ID", kind="append"))),
    "datasets": Command("list dataset versions and their status", (
        Opt("pin", "keep this published version whatever retention says (repeatable)",
            "VERSION", kind="append"),
        Opt("unpin", metavar="VERSION", kind="append"),
        Opt("note", "why it is pinned (with --pin)"))),
    "prune": Command(
        "remove what only old or rejected dataset versions use, under the workspace lock", (
            Opt("keep_published", "published versions to keep, newest first (>= 1; default "
                                  "CLIP4SKETCH_RETENTION_KEEP_PUBLISHED); current and pinned "
                                  "versions are kept too", "N", flag="--keep"),
            Opt("keep_days", "keep what is younger than this (default 14)", "DAYS"),
            Opt("dry_run", "list what would go and its bytes; remove nothing"),
            Opt("wait", "wait this long for a running night's lock, then refuse (default "
                        "CLIP4SKETCH_LOCK_TIMEOUT_SECONDS, 60)", "SECONDS"),
        ), "prune:prune_workspace"),
    "export": Command("write a published version as image folders + a Parquet manifest", (
        Opt("version", positional=True), Opt("dest", metavar="DIR", positional=True))),
    "evaluate": Command("sketch-to-mugshot identification and verification metrics", (
        Opt("pairs", "pairs manifest: identity_id, photo_path, sketch_path (probes are the "
                     "sketches, the gallery the photos)"),
        Opt("recognizers", "repeatable; 'baseline' (the identity encoder) or a trained "
                           "recognizer folder (default: baseline)", "baseline|PATH"),
        Opt("out", "results folder (default: workspace/evaluations/<run id>)"),
        Opt("distractors", "more mugshots of other people added to the gallery", "SOURCE"),
        Opt("root", "folder manifest paths must stay inside"),
        Opt("distractors_root"),
        Opt("ann_threshold", "gallery size past which an ANN index is searched (below it: "
                             "exact blocked search, measured faster)"),
        Opt("split", "probe only one part of a split (cuhk or a CSV)"),
        Opt("split_part"),
        Opt("matrix_limit", "probe x gallery cells scored exactly for verification"),
        Opt("seed"),
        Opt("bootstrap", "probe resamples for 95%% intervals (0: none)", "N"),
        Opt("keep_galleries", "keep the gallery tables of this many runs, drop older ones",
            "RUNS"),
        ENCODERS), "evaluate:evaluate"),
    "train-recognizer": Command(
        "train a sketch-to-mugshot recognizer on synthetic and/or real sketches", (
            Opt("name", "recognizers/<name>/ in the workspace"), Opt("out"),
            Opt("dataset", "repeatable: published version, sketches table, Parquet, export "
                           "folder or workspace (default: the sketches table)"),
            Opt("synthetic_styles", "repeatable: train only on synthetic sketches of this "
                                    "style"),
            Opt("real_pairs", "repeatable: pairs manifest of real sketches"),
            Opt("real_pairs_root", "one for all manifests, or one per --real-pairs"),
            Opt("guard_pairs", "repeatable, encoder: pairs manifest of another artist, never "
                               "trained on; a step scoring under the frozen encoder on it is "
                               "not chosen"),
            Opt("guard_pairs_root", "one for all guard manifests, or one per --guard-pairs"),
            Opt("encoder_blocks", "repeatable, encoder: a k (SFace's first k blocks "
                                  "retrained) its search tries (default 4 and 8); one pins k",
                metavar="K"),
            Opt("drop_test_identities", "drop identities of the split's test part from the "
                                        "sources (default: refuse such sources)"),
            Opt("include_synthetic", "train on real sketches only"),
            Opt("mode", "procrustes/adapter/encoder adapt the sketch side only, tuned on a "
                        "validation part of the training identities (encoder: SFace's first "
                        "blocks retrained on sketch images)",
                choices=("head", "backbone", "procrustes", "adapter", "encoder")),
            Opt("loss", choices=("adaface", "arcface", "cosface")),
            Opt("backbone_arch"), Opt("backbone_weights"), Opt("steps"), Opt("batch_size"),
            Opt("samples_per_identity"), Opt("lr"), Opt("seed"), Opt("resume"),
            Opt("split", "only 'train' identities of this split are used"),
            Opt("checkpoint_every"), Opt("hidden", "head MLP / adapter width"), ENCODERS,
        ), "train_recognizer:train_recognizer"),
    "make-manifest": Command("write a pairs manifest for a known dataset layout (CUHK, CUFSF)", (
        Opt("source", "dataset folder (photos/ and sketches/)", positional=True),
        Opt("out", "manifest CSV to write", positional=True),
        Opt("layout", "cuhk: sketches/NAME-sz1.jpg; cufsf: sketches/NAME.jpg",
            choices=("cuhk", "cufsf"), default="cuhk"),
        Opt("style", "style name of the real sketches", default="artist"))),
    "synthesize-mugshots": Command(
        "draw N new, photo-realistic people (MobileStyleGAN, offline) as a folder source for "
        "ingest/nightly; needs the 'synthetic' extra", (
            Opt("identities", "identities to keep", "N"),
            Opt("out", "the source folder (keep it outside any repository: drawn faces are "
                       "never committed); an earlier DIR is resumed or extended", "DIR",
                flag="--out"),
            Opt("seed", "default 0"),
            Opt("truncation", "pull toward the average face (default 1.0: at 0.7 drawn people "
                              "look too alike for 1,000 distinct identities; see README)",
                "PSI"),
            Opt("images_per_identity", "default 1. K > 1 adds small latent nudges (--sigma) of "
                                       "each person: near-duplicates (SFace ~0.7-0.9 to the "
                                       "first), not new poses or lighting; the model has no "
                                       "noise input", "K"),
            Opt("sigma", "latent nudge for images 2..K (default 0.3; recorded)"),
            Opt("size", "saved side in px (default 512)"),
            Opt("shard_size", "candidates a task (default 32; fixed by a folder's first run)"),
            Opt("workers", "shards at once on this machine (default 1)"),
            Opt("threads", "OpenVINO threads per worker (default 1; fixed per folder)"),
            Opt("dask_address", "run the shards on an existing Dask cluster",
                "tcp://HOST:8786"),
            THRESHOLDS,
            Opt("max_identity_similarity", "refuse a face whose SFace cosine to one already "
                                           "drawn or stored exceeds this (default 0.5, "
                                           "reviewed)"),
            Opt("max_alignment_error", "refuse faces whose landmarks miss the template by "
                                       "more (px)"),
            Opt("min_detection_score", "refuse broken faces YuNet scores below this (default "
                                       "off)"),
            Opt("max_candidates", "bound on candidates judged (default 3N + a shard)"),
        ), "synthesize:synthesize_mugshots"),
    "encoders": Command("list the registered encoders"),
    "status": Command("list the workspace's tables and row counts"),
}
