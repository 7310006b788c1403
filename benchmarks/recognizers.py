"""The recognizer comparison of issue 11, every row from one command, with bootstrap intervals.

Rows (each trained as ``procrustes``, ``adapter`` and, for reference, ``head``; ``--kinds``
adds ``encoder``, SFace's first blocks retrained on sketch images, and ``encoder-guarded``,
the same with its choice guarded by the artists the row does not train on), judged on
the CUFSF test part (schemas/splits/cufsf.csv, 200 identities) and the CUHK test part (57):
    1  baseline SFace (no training)
    2  real CUFSF train pairs only (223 identities: "the few real pairs")
    3  synthetic only (``--synthetic``: sketches drawn for identities that are not test ones)
    4  real CUFSF train + synthetic
    5  rendered sketches only (pencil-dodge + xdog-lines of every non-test photo)
    6  real CUHK train pairs only (the cross-source check)
    7  real CUFSF train + real CUHK train pairs (the control for row 4: what another artist's
       real sketches add to the few real pairs, where row 4 adds drawn ones)

Nothing is tuned to a test identity: each recognizer chooses its hyper-parameters on a
validation part of its own training identities (``tasks/recognize/sketch_side.py``); the
training sources are train-only manifests and a split that marks both test parts ``test``,
so a leak is refused rather than dropped. Run from the repository root, niced:

    nice -n 15 .venv/bin/python -m benchmarks.recognizers \\
        --workspace ~/clip4sketch-runs/recognizers/ws --rows 1,2,5,6
    # rows 3 and 4 once generated sketches exist (a published version in the workspace, a
    # sketches table / Parquet, an export folder or another workspace; repeatable):
    nice -n 15 .venv/bin/python -m benchmarks.recognizers \\
        --workspace ~/clip4sketch-runs/recognizers/ws --synthetic PATH_OR_VERSION

Writes ``<out>/comparison.md`` (the table) and ``comparison.json`` (every figure, interval and
paired difference); a trained recognizer whose inputs did not change is reused.

``--real-identities N`` trains rows 2, 4 and 7 on N of the 223 CUFSF train identities (the first
N of a seeded order, so a smaller N's people are among a larger one's), saved beside the
full rows as ``row2-adapter-real56`` etc.: what drawn identities add when the real pairs are
fewer, the case of a new artist with a handful of pairs. Guards and the other rows keep
every pair. ``--encoder-blocks K`` (repeatable) lets the encoder kinds' search try only
those k (saved as ``row2-encoder-k8`` …): a validation part of a few identities can score
several k perfectly, and its tie rule then takes the fewest blocks.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from schemas.encoders import EncoderSpec
from schemas.settings import load_settings
from tasks import storage
from tasks.evaluate.bootstrap import paired_difference
from tasks.evaluate.scoring import probe_data_from_pairs
from tasks.ingest.sources import MANIFEST_LAYOUTS
from tasks.splits import load_split
from tasks.storage import FACES, Workspace
from tasks.styles.registry import get_style, styles_for

for _key, _value in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                     "LANCEDB_LOG": "error"}.items():
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parents[1]
ROWS = {
    1: "baseline SFace",
    2: "real CUFSF train pairs only",
    3: "synthetic only",
    4: "real CUFSF train + synthetic",
    5: "rendered sketches only",
    6: "real CUHK train pairs only",
    7: "real CUFSF train + real CUHK train pairs",
}
KINDS = ("procrustes", "adapter", "head")
ENCODER_STEPS = 50  # the most steps of each encoder candidate (early stopping ends most)
# The ``encoder-guarded`` kind: the encoder whose choice is guarded by the real train pairs
# of every artist its row does not train on (never trained on; a step scoring under the
# frozen encoder on them is no candidate): CUHK-trained blocks had lost CUFSF's artist.
GUARDED = "encoder-guarded"
GUARDS = {2: ("cuhk",), 3: ("cuhk", "cufsf"), 4: ("cuhk",), 5: ("cuhk", "cufsf"),
          6: ("cufsf",)}
RENDER_STYLES = ("pencil-dodge", "xdog-lines")
TESTS = {"CUFSF test": ("cufsf.csv", "cufsf"), "CUHK test": ("cuhk.csv", "cuhk")}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- inputs


def write_manifests(data: Path, work: Path) -> dict[str, Path]:
    """Full pairs manifests (paths into the shared data, no images copied) and train-only
    copies: training reads the latter, so the test identities never reach a trainer."""

    out: dict[str, Path] = {}
    for name, style in (("cufsf", "cufsf-artist"), ("cuhk", "artist")):
        full = work / f"{name}.csv"
        MANIFEST_LAYOUTS[name](data / name, full, style=style)
        split = load_split(REPO / "schemas" / "splits" / f"{name}.csv")
        train = filtered_manifest(full, work / f"{name}-train.csv",
                                  lambda identity, split=split: split.get(identity) == "train")
        out[name], out[f"{name}-train"] = full, train
    return out


def filtered_manifest(source: Path, out: Path, keep: Callable[[str], bool]) -> Path:
    """A copy of a pairs manifest with the rows of the identities ``keep`` accepts."""
    with open(source, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if keep(r["identity_id"]))
    return out


MIN_REAL_IDENTITIES = 20  # five validation folds of at least four real identities each


def narrowed_manifest(train: Path, count: int, seed: int) -> Path:
    """A copy of a train pairs manifest with only the first ``count`` identities of a
    seeded order of them (``<name>-<count>.csv`` beside it): nested, so the people of a
    smaller count are among a larger one's, and the same for the same seed on any machine."""
    import numpy as np

    with open(train, newline="", encoding="utf-8") as handle:
        identities = sorted({r["identity_id"] for r in csv.DictReader(handle)})
    if not MIN_REAL_IDENTITIES <= count <= len(identities):
        raise SystemExit(f"--real-identities {count}: {train.name} has {len(identities)} "
                         f"identities; choose {MIN_REAL_IDENTITIES} to {len(identities)}")
    order = np.random.default_rng([seed, 0x5EA1]).permutation(len(identities))
    kept = {identities[i] for i in order[:count]}
    return filtered_manifest(train, train.with_name(f"{train.stem}-{count}.csv"),
                             kept.__contains__)


def write_split(work: Path, extra_train: set[str]) -> Path:
    """Both bundled splits in one file, every other identity (AT&T, synthetic) ``train``."""

    split: dict[str, str] = {}
    for name in ("cufsf", "cuhk"):
        for identity, where in load_split(REPO / "schemas" / "splits" / f"{name}.csv").items():
            if split.get(identity, where) != where:
                raise SystemExit(f"identity {identity} is in both splits with different parts")
            split[identity] = where
    for identity in sorted(extra_train - set(split)):
        split[identity] = "train"
    path = work / "split-cufsf-cuhk-other.csv"
    path.write_text("identity_id,split\n" + "".join(f"{i},{w}\n" for i, w in split.items()),
                    encoding="utf-8")
    return path


def ingest_all(workspace: Any, data: Path, manifests: dict[str, Path]) -> None:
    # Imported here, not at the top: tasks.ingest.run loads prefect, which reads the environment set
    # above.
    from tasks.ingest.run import ingest_source

    for name in ("cufsf", "cuhk"):
        report = ingest_source(workspace, str(manifests[name]), root=str(data / name))
        say(f"ingest {name}: {report.ingested or 0} new, {report.quarantined or 0} quarantined")
    report = ingest_source(workspace, str(data / "orl"))
    say(f"ingest orl: {report.ingested or 0} new")


def render_rows(workspace: Any, split: dict[str, str]) -> Path:
    """Rendered sketches of every photo whose identity is a train one."""
    # Imported here, not at the top: tasks.styles.rendered_dataset loads prefect, which reads the
    # environment set above.
    from tasks.styles.rendered_dataset import render_dataset

    faces = storage.read(workspace, FACES, columns=["face_id", "identity_id", "kind"])
    chosen = [f for f, i, k in zip(*(faces.column(c).to_pylist() for c in
                                     ("face_id", "identity_id", "kind")), strict=True)
              if k == "photo" and split.get(i) == "train"]
    registry = styles_for(load_settings(workspace.root))
    path, rows = render_dataset(workspace, [get_style(s, registry) for s in RENDER_STYLES],
                                chosen)
    say(f"rendered {rows} sketches of {len(chosen)} train photos -> {path}")
    return path


def synthetic_identities(workspace: Any, sources: list[str],
                         styles: list[str] | None) -> set[str]:
    # Imported here, not at the top: tasks.recognize.data loads prefect, which reads the environment
    # set above.
    from tasks.recognize.data import synthetic_source

    found: set[str] = set()
    for source in sources:
        examples, provenance = synthetic_source(workspace, source, styles)
        found |= {e.identity_id for e in examples}
        kept = sum(1 for e in examples if e.kind == "synthetic")
        other = provenance.get("other_styles")
        say(f"synthetic source {source}: {kept} sketches"
            + (f" of {', '.join(styles)} ({other} of other styles left out)" if styles else "")
            + f", {len({e.identity_id for e in examples})} identities")
    return found


# --------------------------------------------------------------------------- training


def row_sources(row: int, manifests: dict[str, Path], data: Path, synthetic: list[str],
                rendered: Path | None, styles: list[str] | None) -> dict[str, Any]:
    real_cufsf = {"real_pairs": [str(manifests["cufsf-train"])],
                  "real_pairs_root": [str(data / "cufsf")]}
    if row == 2:
        return {**real_cufsf, "include_synthetic": False}
    if row == 3:
        return {"dataset": synthetic, "include_synthetic": True, "synthetic_styles": styles}
    if row == 4:
        return {**real_cufsf, "dataset": synthetic, "include_synthetic": True,
                "synthetic_styles": styles}
    if row == 5:
        return {"dataset": [str(rendered)], "include_synthetic": True}
    if row == 6:
        return {"real_pairs": [str(manifests["cuhk-train"])],
                "real_pairs_root": [str(data / "cuhk")], "include_synthetic": False}
    if row == 7:
        return {"real_pairs": [*real_cufsf["real_pairs"], str(manifests["cuhk-train"])],
                "real_pairs_root": [*real_cufsf["real_pairs_root"], str(data / "cuhk")],
                "include_synthetic": False}
    raise ValueError(row)


def guard_sources(row: int, manifests: dict[str, Path], data: Path) -> dict[str, Any]:
    """The guard pairs of a row (``GUARDS``): train-part manifests only, like every source.
    Row 7 trains on every artist's pairs, so nothing is left to guard it with."""
    if row not in GUARDS:
        raise SystemExit(f"row {row} ({ROWS[row]}) has no artist left to guard it: "
                         f"drop {GUARDED} from --kinds or the row from --rows")
    names = GUARDS[row]
    return {"guard_pairs": [str(manifests[f"{n}-train"]) for n in names],
            "guard_pairs_root": [str(data / n) for n in names]}


def train(workspace: Any, out: Path, kind: str, sources: dict[str, Any], split: Path,
          seed: int, head_steps: int, retrain: bool, encoder_steps: int = ENCODER_STEPS,
          ) -> Path:
    """Train one recognizer (or reuse it when its request and its data are unchanged)."""
    # Imported here, not at the top: tasks.recognize.train loads prefect, which reads the
    # environment set above.
    from tasks.recognize.train import (
        TrainRecognizerRequest,
        train_recognizer,
        training_fingerprint,
    )

    request = TrainRecognizerRequest(
        workspace=str(workspace.root), out=str(out), mode=kind, split=str(split), seed=seed,
        identity_encoder=EncoderSpec(role="identity", name="sface"),
        steps={"head": head_steps, "encoder": encoder_steps}.get(kind, 1500),
        vectors_cache=str(out.parent / "vectors-cache"), **sources)
    key = reuse_key(request)
    stamp = out / "request.json"
    if not retrain and stamp.is_file() and stamp.read_text() == key and \
            trained_on(out) == training_fingerprint(request):
        say(f"{out.name}: unchanged, reused")
        return out
    if out.exists():
        import shutil

        shutil.rmtree(out)
    started = time.perf_counter()
    report = train_recognizer(request, progress=lambda m: say(f"  {out.name}: {m}"))
    stamp.write_text(key)
    chosen = (report.validation or {}).get("chosen")
    rate = (f"; {report.seconds_per_epoch:.0f} s an epoch of training steps"
            if report.seconds_per_epoch else "")
    say(f"{out.name}: {report.identities} identities, {report.examples}, skipped "
        f"{report.skipped}, chose {chosen} ({time.perf_counter() - started:.0f} s{rate})")
    return out


def trained_on(out: Path) -> str | None:
    """The data fingerprint a saved recognizer records (None: no recognizer there)."""
    config = out / "recognizer.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("training_data", {}).get("fingerprint")


def reuse_key(request: Any) -> str:
    """What a trained recognizer is reused by: its request, and for the kinds whose settings
    a search chooses, which candidates that search had (a row 4 adapter chosen before the
    curriculum was a candidate is not the one the code chooses now)."""
    # Imported here, not at the top: tasks.recognize loads prefect, which reads the
    # environment set above.
    from tasks.recognize.sketch_side import CANDIDATE_SEARCH

    # Fields added after recognizers were stamped stay out of the key while unset, so those
    # recognizers are still reused.
    unset = {f for f in ("guard_pairs", "guard_pairs_root", "encoder_blocks")
             if getattr(request, f) is None}
    key = request.model_dump_json(exclude={"run_id", *unset})
    search = CANDIDATE_SEARCH.get(request.mode)
    return key + (f"\ncandidates: {search}" if search else "")


def probes_per_second(workspace: Any, report: Any, directory: str) -> dict[str, float]:
    """Sketch probes embedded per second by a recognizer, loaded afresh (evaluation's path):
    the test probes of one evaluation, their stored crops through the recognizer."""
    import pyarrow.parquet as pq

    # Imported here, not at the top: tasks.recognize.recognizer loads prefect, which reads
    # the environment set above.
    from tasks.recognize.recognizer import load_recognizer

    probes = [r["face_id"] for r in pq.read_table(report.inputs).to_pylist()
              if r["role"] == "probe" and r["status"] == "ok"]
    recognizer = load_recognizer(directory)
    started = time.perf_counter()
    recognizer.embed(workspace, probes)
    seconds = time.perf_counter() - started
    return {"probes": len(probes), "seconds": seconds, "per_second": len(probes) / seconds}


# --------------------------------------------------------------------------- evaluation


def evaluate_all(workspace: Any, manifests: dict[str, Path], data: Path,
                 recognizers: list[str], out: Path, seed: int) -> dict[str, Any]:
    # Imported here, not at the top: tasks.evaluate.run loads prefect, which reads the environment
    # set above.
    from tasks.evaluate.run import EvaluateRequest, evaluate

    results = {}
    for test, (manifest, split) in TESTS.items():
        name = manifest.split(".")[0]
        report = evaluate(EvaluateRequest(
            workspace=str(workspace.root), pairs=str(manifests[name]), root=str(data / name),
            out=str(out / f"evaluate-{name}"), recognizers=recognizers, split=split,
            identity_encoder=EncoderSpec(role="identity", name="sface"), seed=seed,
            run_id=f"comparison-{name}", keep_galleries=2),
            progress=lambda m, test=test: say(f"  {test}: {m}"))
        results[test] = report
    return results


def probe_data(report: Any, name: str) -> Any:
    """Per-probe data of one recognizer from the evaluation's files (for paired bootstrap)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    scores = pq.read_table(report.scores)
    scores = scores.filter(pc.equal(scores.column("recognizer").cast("string"), name))
    inputs = pq.read_table(report.inputs).to_pylist()
    probes = [r for r in inputs if r["role"] == "probe"]
    usable = [r["entry_id"] for r in probes if r["status"] == "ok"]
    failed = [r["identity_id"] for r in probes if r["status"] != "ok"]
    gallery = [r["identity_id"] for r in inputs if r["role"] == "gallery" and r["status"] == "ok"]
    return probe_data_from_pairs(scores, usable, failed, gallery)


def cell(summary: dict[str, Any], metric: str) -> str:
    if metric == "rank1":
        value, ci = summary["rank1"], summary["ci95"]["rank1"]
    else:
        value, ci = summary["tar_at_far"][metric], summary["ci95"]["tar_at_far"][metric]
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def row_label(row: int, kind: str, real_identities: int | None = None,
              blocks: Sequence[int] | None = None) -> str:
    """A row's label in the table: its training data, its kind, and what was narrowed
    (``--real-identities``, rows 2, 4 and 7; ``--encoder-blocks``, the encoder kinds)."""
    label = ROWS[row] + ("" if kind == "baseline" else f", {kind}")
    if real_identities is not None:
        label += f" ({real_identities} of the CUFSF train identities)"
    if blocks:
        label += f", k from {{{', '.join(str(k) for k in blocks)}}} only"
    return label


def table(results: dict[str, Any], names: dict[str, tuple[int, str]], seed: int,
          labels: dict[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    lines = ["| row | recognizer | " + " | ".join(
        f"{t} rank-1 | {t} TAR@FAR=1e-2" for t in results) + " |",
        "|---|---|" + "---:|" * (2 * len(results))]
    figures: dict[str, Any] = {}
    for name, (row, kind) in names.items():
        cells = []
        for test, report in results.items():
            summary = report.recognizers[name]
            cells += [cell(summary, "rank1"), cell(summary, "1e-02")]
            figures.setdefault(name, {"row": row, "kind": kind})[test] = {
                "rank1": summary["rank1"], "tar_at_far_1e-2": summary["tar_at_far"]["1e-02"],
                "ci95": summary["ci95"], "n_probes": summary["n_probes"],
                "n_failed_probes": summary["n_failed_probes"]}
        label = (labels or {}).get(name) or row_label(row, kind)
        lines.append(f"| {row} | {label} | " + " | ".join(cells) + " |")
    # paired differences: every trained recognizer against the baseline, row 4 against row 2
    diffs: list[dict[str, Any]] = []
    data = {(test, name): probe_data(report, name) for test, report in results.items()
            for name in names}
    for a, b in comparison_pairs(names):
        for test in results:
            for metric in ("rank1", "1e-02"):
                d = paired_difference(data[(test, a)], data[(test, b)], metric, seed=seed)
                diffs.append({"a": a, "b": b, "test": test, **d})
    lines += ["", "Paired bootstrap differences (same 1,000 probe resamples; an interval "
              "above 0 means a beats b beyond resampling noise):", "",
              "| a | b | test | metric | a - b | 95 % interval |", "|---|---|---|---|---:|---|"]
    for d in diffs:
        metric = "rank-1" if d["metric"] == "rank1" else "TAR@FAR=1e-2"
        lines.append(f"| {d['a']} | {d['b']} | {d['test']} | {metric} | {d['mean']:+.3f} | "
                     f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] |")
    return "\n".join(lines) + "\n", {"recognizers": figures, "paired_differences": diffs}


# --------------------------------------------------------------------------- main


def comparison_pairs(names: dict[str, tuple[int, str]]) -> list[tuple[str, str]]:
    """The paired differences a comparison reports: every trained recognizer against the
    baseline, rows 4 and 7 against row 2 for each kind present (the encoder kind included),
    row 4 against row 7 (drawn sketches against another artist's real ones), and the
    encoder kind against the adapter within a row."""
    pairs = [(n, "baseline") for n in names if n != "baseline"]
    kinds = [k for k in dict.fromkeys(k for _, k in names.values()) if k != "baseline"]
    for kind in kinds:
        found = {row: [n for n, (r, k) in names.items() if r == row and k == kind]
                 for row in (2, 4, 7)}
        for a, b in ((4, 2), (7, 2), (4, 7)):
            if found[a] and found[b]:
                pairs.append((found[a][0], found[b][0]))
    for row in sorted({r for r, _ in names.values()}):
        encoder = [n for n, (r, k) in names.items() if r == row and k == "encoder"]
        guarded = [n for n, (r, k) in names.items() if r == row and k == GUARDED]
        adapter = [n for n, (r, k) in names.items() if r == row and k == "adapter"]
        if encoder and adapter:
            pairs.append((encoder[0], adapter[0]))
        if guarded and encoder:
            pairs.append((guarded[0], encoder[0]))
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path,
                        default=Path("~/clip4sketch-runs/recognizers/ws").expanduser())
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: <workspace>/../comparison")
    parser.add_argument("--synthetic", action="append", default=[],
                        help="synthetic sketches for rows 3-4 (repeatable): a published "
                             "version, a sketches table or Parquet, an export folder or a "
                             "workspace")
    parser.add_argument("--synthetic-style", action="append", default=None,
                        help="keep only synthetic sketches of this style (repeatable; "
                             "rows 3-4 of the issue: cufsf-artist)")
    parser.add_argument("--drop-test-identities", action="store_true",
                        help="drop (and count) synthetic sketches of test identities instead "
                             "of refusing the source")
    parser.add_argument("--rows", default=None,
                        help="comma-separated rows (default: 1,2,5,6, plus 3,4 with "
                             "--synthetic)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--head-steps", type=int, default=1000)
    parser.add_argument("--encoder-steps", type=int, default=ENCODER_STEPS,
                        help="the most steps of each encoder candidate run")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--encoder-blocks", type=int, action="append", default=None,
                        metavar="K", help="the k values the encoder kinds' search tries "
                        "(repeatable; default 4 and 8); their recognizers are saved as "
                        "row<r>-encoder-k<K>... so the searched ones stay")
    parser.add_argument("--real-identities", type=int, default=None, metavar="N",
                        help="rows 2, 4 and 7 on N of the CUFSF train identities (seeded, "
                             "nested); saved as row2-<kind>-realN")
    args = parser.parse_args()

    import torch

    # Vectors-sized tensors everywhere (heads, adapters, blocked search over a few hundred
    # photos): one thread is faster than two spinning OpenMP threads on a shared machine.
    torch.set_num_threads(1)
    rows = ([int(r) for r in args.rows.split(",")] if args.rows else
            [1, 2, 3, 4, 5, 6] if args.synthetic else [1, 2, 5, 6])
    if {3, 4} & set(rows) and not args.synthetic:
        raise SystemExit("rows 3 and 4 need --synthetic")
    kinds = [k for k in args.kinds.split(",") if k]
    started = time.perf_counter()
    workspace = Workspace.open(args.workspace)
    work = workspace.root.parent
    out = (args.out or work / "comparison").expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = args.data.resolve()

    manifests = write_manifests(data, work)
    ingest_all(workspace, data, manifests)
    # Rows 2, 4 and 7 train on the narrowed manifest; guards keep every pair.
    trained_manifests = manifests
    if args.real_identities is not None:
        trained_manifests = {**manifests, "cufsf-train": narrowed_manifest(
            manifests["cufsf-train"], args.real_identities, args.seed)}

    faces = storage.read(workspace, "faces", columns=["identity_id"])
    extra = set(faces.column("identity_id").to_pylist())
    if args.synthetic:
        extra |= synthetic_identities(workspace, args.synthetic, args.synthetic_style)
    split_path = write_split(work, extra)
    split = load_split(split_path)
    rendered = render_rows(workspace, split) if 5 in rows else None

    names: dict[str, tuple[int, str]] = {}
    labels: dict[str, str] = {}
    refs: list[str] = []
    if 1 in rows:
        names["baseline"] = (1, "baseline")
        refs.append("baseline")
    for row in (r for r in rows if r != 1):
        for kind in kinds:
            pinned = args.encoder_blocks if kind in ("encoder", GUARDED) else None
            narrowed = args.real_identities if row in (2, 4, 7) else None
            directory = work / "recognizers" / (
                f"row{row}-{kind}" + (f"-real{narrowed}" if narrowed else "")
                + ("".join(f"-k{k}" for k in pinned) if pinned else ""))
            labels[directory.name] = row_label(row, kind, narrowed, pinned)
            sources = row_sources(row, trained_manifests, data, args.synthetic, rendered,
                                  args.synthetic_style)
            if pinned:
                sources["encoder_blocks"] = pinned
            if kind == GUARDED:
                sources |= guard_sources(row, manifests, data)
            if args.drop_test_identities:
                sources["drop_test_identities"] = True
            train(workspace, directory, "encoder" if kind == GUARDED else kind, sources,
                  split_path, args.seed, args.head_steps, args.retrain, args.encoder_steps)
            names[directory.name] = (row, kind)
            refs.append(str(directory))
    results = evaluate_all(workspace, manifests, data, refs, out, args.seed)
    markdown, figures = table(results, names, args.seed, labels)
    speed = {name: probes_per_second(workspace, results["CUFSF test"],
                                     str(work / "recognizers" / name))
             for name, (_, kind) in names.items() if kind in ("encoder", GUARDED)}
    if speed:
        markdown += "\nSketch probes embedded per second at evaluation (CUFSF test probes):\n\n" \
            + "".join(f"- {n}: {s['per_second']:.1f} probes/s ({s['probes']} in "
                      f"{s['seconds']:.1f} s)\n" for n, s in speed.items())
        figures["probes_per_second"] = speed
    command = "nice -n 15 .venv/bin/python -m benchmarks.recognizers " + " ".join(sys.argv[1:])
    header = (f"# Recognizer comparison\n\n`{command}`\n\nrank-1 and TAR@FAR=1e-2 with 95 % "
              f"bootstrap intervals (probes resampled 1,000 times, seed {args.seed}); "
              f"synthetic sources: {args.synthetic or 'none'}"
              + (f"; rows 2, 4 and 7 on {args.real_identities} of the CUFSF train identities"
                 if args.real_identities else "") + ".\n\n")
    (out / "comparison.md").write_text(header + markdown, encoding="utf-8")
    (out / "comparison.json").write_text(json.dumps(
        {"command": command, "synthetic": args.synthetic, "rows": rows, "kinds": kinds,
         "real_identities": args.real_identities,
         **figures}, indent=2, default=str), encoding="utf-8")
    print(header + markdown)
    say(f"done in {time.perf_counter() - started:.0f} s: {out / 'comparison.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
