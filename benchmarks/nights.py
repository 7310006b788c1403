"""A hundred nights with retention: workspace bytes and night seconds, night by night.

Simulates what a data team's schedule does to a workspace over months: every night 1 % more
faces arrive, every 25th night a new style is added, every 10th night's dataset is rejected
(validated against the reviewed thresholds, which refuse a random-init generator's noise;
the other nights use thresholds that accept it, so they publish), and the night ends with a
prune (``keep_published``, ``keep_days`` 0: the count rule alone, since simulated nights
are seconds apart). It prints, and plots to a PNG, the workspace's bytes and each night's
seconds, beside:

- the bytes the kept versions need: their folders, reports and the PNGs their verdicts
  name, the stored tables' current rows rewritten once (what a fresh workspace holding just
  them would store), the Parquet mirrors, the generator and styles, great-expectations'
  project with the newest result of each suite, the newest style classifier and the
  feature caches it was trained from; goal: the workspace ≤ 1.3 × that after the last
  night (run records, a few KB a night, count against it);
- night 2's seconds; goal: the last night ≤ 1.2 × night 2.

A new style arrives the way the product adds one (docs/how-to/backfill-a-style.md): an
engineer runs ``backfill`` for it before that night, which draws every stored face in it,
validates and publishes; the night then draws only its new faces in every style. The
backfill is timed on its own (``backfill`` in each row, a point of its own in the plot);
``--new-style-by night`` instead names the style in that night's list, so the night itself
draws every face in it (how the runs before this option worked).

Night 100 is both a new-style night and a rejected one, so beside the goal's ratio it prints
the like-for-like one: the median of the last ten ordinary nights (published, no new style)
over the median of the first ten. Both still compare different work: night 2 draws its one
new face in one style, night 100 its one in five (and validates five styles' sketches, with
a judge of five classes). ``--same-work K`` takes the workspace's own growth apart from the
night's: after the last night it gives K more nights of exactly one new face, each run
twice, on the long-lived workspace and on a fresh one holding the first night's faces and
the same styles and generator (the two interleaved, same server), and prints the median
seconds of the one over the other.

Wall seconds swing with whatever else the machine runs; the process's CPU seconds (every
thread of the flows; the Prefect server is a separate process) swing far less, so both are
printed, and each night's stage seconds are kept in ``nights.json``. The night's wall
seconds also come in whole seconds (plus ~0.1): Prefect joins the flow run's heartbeat
thread, which sleeps in 1-s steps, when the run ends. So the sum of the stages' own seconds
(``stage_seconds``) is printed too: the night's work without that step.

All nights run in one process against one Prefect server started (and warmed) before the
clock, as ``benchmarks/nightly.py`` does. Each night starts on a settled heap (what earlier
nights left collected, the rest frozen out of the garbage collector's full passes, off the
clock), as a night in a fresh process does; ``--shared-heap`` leaves the heap to grow, and
every night prints the collector's pauses that landed in it.

    .venv/bin/python -m benchmarks.nights                       # 100 nights, 50 faces
    .venv/bin/python -m benchmarks.nights --nights 12 --faces 20 --no-prune   # the baseline
    .venv/bin/python -m benchmarks.nights --out DIR --resume --nights 110     # 10 more nights
    .venv/bin/python -m benchmarks.nights --out DIR --resume --same-work 5    # same work, two sizes

``--resume`` continues a run whose ``--out`` folder holds its workspace and ``nights.json``
(written after every night), e.g. to time ten more ordinary nights on a hundred nights'
workspace beside a fresh run's first ten, both on the same, equally busy machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

# Set in main(), before Prefect is imported, never at import: a test that imports a helper
# from here must not turn its own process's Prefect logging down to warnings.
ENVIRONMENT = {"LANCEDB_LOG": "error", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
               "PREFECT_LOGGING_LEVEL": "WARNING"}

STYLE_PROMPTS = ["a soft graphite pencil sketch", "a charcoal drawing with heavy shading",
                 "a fine ink line drawing", "a police composite sketch", "a pastel portrait"]


def _add_style(workspace: Path, index: int) -> str:
    name = f"bench-style-{index}"
    folder = workspace / "styles"
    folder.mkdir(parents=True, exist_ok=True)
    style = {"name": name, "prompt": STYLE_PROMPTS[index % len(STYLE_PROMPTS)],
             "source": {"kind": "paired", "sketch_style": name}}
    (folder / f"{name}.json").write_text(json.dumps(style))
    return name


class CollectorPauses:
    """Seconds Python's cyclic garbage collector held the process, by generation, as a
    ``gc.callbacks`` hook. All nights run in one process here, whose heap a night run by a
    Prefect worker (a fresh process each) never grows: a full (generation 2) collection
    over it can stop a night for most of a second, wherever it lands."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self._began: float | None = None

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif self._began is not None:
            self.seconds[info["generation"]] += time.perf_counter() - self._began
            self._began = None

    def since(self, before: list[float]) -> dict[str, float]:
        return {"gc_seconds": sum(self.seconds) - sum(before),
                "gc_full_seconds": self.seconds[2] - before[2]}


PAUSES = CollectorPauses()
# Whether each night starts on a settled heap (below); ``--shared-heap`` turns it off.
SETTLE = {"heap": True}


def settle_heap() -> None:
    """Before a night, off the clock: collect what earlier nights left and freeze the rest
    out of later full collections, so a night starts where a fresh process's would (a
    night run by a Prefect worker is one). Without it, the one process's heap grows night
    by night and its full collections with it (0.43 s on night 1, 0.79 s by night 92, one
    every ~9 nights: docs/results/reliability.md)."""
    if SETTLE["heap"]:
        gc.collect()
        gc.freeze()


def _night(workspace: Path, live: Path, styles: list[str], thresholds: str,
           keep: int | None) -> dict:
    """One night: outcome, wall and CPU seconds, and its stages' seconds (from its run record,
    which a rejected night writes too)."""
    # Imported here, once main() has pointed PREFECT_HOME at the run folder: Prefect (which
    # these modules import) reads its settings when first imported.
    from flows.nightly import NightlyRejectedError, nightly

    settle_heap()
    started, cpu, paused = time.perf_counter(), time.process_time(), list(PAUSES.seconds)
    try:
        nightly(sources=[str(live)], workspace=str(workspace), styles=styles,
                thresholds=thresholds, keep_published=keep, keep_days=0 if keep else None)
        outcome = "published"
    except NightlyRejectedError:
        outcome = "rejected"
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    record = max((workspace / "runs").glob("nightly-*.json"), key=lambda p: p.stat().st_mtime)
    stored = json.loads(record.read_text())
    stages = {name: stage["seconds"] for name, stage in stored["summary"].items()}
    return {"outcome": outcome, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "stage_seconds": sum(stages.values()), "stages": stages,
            "steps": stage_steps(stored["stages"]), **PAUSES.since(paused)}


def stage_steps(stages: dict) -> dict[str, float]:
    """The steps a night's run record times, by ``stage.step``: the validate stage's metrics
    steps, assess parts, contracts and publish, and the prune's steps (each stage's total is
    in ``stages``)."""
    validate, prune = stages.get("validate") or {}, stages.get("prune") or {}
    steps = {f"validate.metrics.{k}": v
             for k, v in (validate.get("metrics") or {}).get("step_seconds", {}).items()}
    steps |= {f"validate.assess.{k}": v for k, v in validate.get("assess_seconds", {}).items()}
    steps |= {f"validate.{k}": v for k, v in (validate.get("seconds") or {}).items()
              if k != "assess"}
    steps |= {f"prune.{k}": v for k, v in prune.get("step_seconds", {}).items()}
    return steps


def step_growth(last: dict, second: dict, floor: float = 0.01) -> list[tuple[str, float, float]]:
    """(step, night 2's seconds, the last night's) for each stage and timed step that moved
    by at least ``floor`` seconds, largest growth first: where the last night's extra time
    went."""
    def flat(row: dict) -> dict[str, float]:
        return {**{f"{k} (stage)": v for k, v in row.get("stages", {}).items()},
                **row.get("steps", {})}

    before, after = flat(second), flat(last)
    moved = [(k, before.get(k, 0.0), after.get(k, 0.0)) for k in before.keys() | after.keys()]
    return sorted((m for m in moved if abs(m[2] - m[1]) >= floor), key=lambda m: m[1] - m[2])


def _backfill(workspace: Path, style: str, thresholds: str) -> dict:
    """The engineer's backfill of a new style before the night that first uses it."""
    # Imported here, once main() has pointed PREFECT_HOME at the run folder (see _night).
    from flows.backfill import backfill

    settle_heap()
    started, cpu = time.perf_counter(), time.process_time()
    backfill(styles=[style], workspace=str(workspace), thresholds=thresholds)
    return {"seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu}


def _same_work(temp: Path, workspace: Path, live: Path, first: list[Path], new: list[Path],
               styles: list[str], thresholds: str, keep: int | None) -> list[dict]:
    """Each new face's night on the long-lived workspace and on a fresh one (see the module's
    docstring); the fresh one first ingests and draws ``first``, untimed."""
    from tasks.generate.catalog import DEFAULT_GENERATOR  # see _night: after PREFECT_HOME

    fresh = temp / "same-work"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh_ws, fresh_live = fresh / "ws", fresh / "live"
    shutil.copytree(workspace / DEFAULT_GENERATOR, fresh_ws / DEFAULT_GENERATOR)
    if (workspace / "styles").is_dir():
        shutil.copytree(workspace / "styles", fresh_ws / "styles")
    for face in first:
        shutil.copytree(face, fresh_live / face.name)
    _night(fresh_ws, fresh_live, styles, thresholds, keep)
    rows = []
    for i, face in enumerate(new):
        for folder in (live, fresh_live):
            shutil.copytree(face, folder / face.name, dirs_exist_ok=True)
        # Interleaved, the one run first on odd nights: a machine that slows down over the
        # minutes slows both alike.
        order = [("long", workspace, live), ("fresh", fresh_ws, fresh_live)]
        done = {name: _night(ws, folder, styles, thresholds, keep)
                for name, ws, folder in (order if i % 2 == 0 else order[::-1])}
        rows.append({"face": face.name, **done})
        print(f"same work {i + 1}: one new face in {len(styles)} style(s), long-lived "
              f"{done['long']['seconds']:5.1f} s ({done['long']['cpu_seconds']:.1f} s CPU), "
              f"fresh {done['fresh']['seconds']:5.1f} s ({done['fresh']['cpu_seconds']:.1f} s "
              f"CPU)", flush=True)
    return rows


def same_work_ratio(rows: list[dict], key: str) -> tuple[float, float]:
    """Medians of ``key`` over the same-work nights: long-lived workspace, fresh one."""
    return (_median([r["long"][key] for r in rows]), _median([r["fresh"][key] for r in rows]))


def add_stage_seconds(rows: list[dict], same_work: list[dict]) -> None:
    """``stage_seconds`` for nights stored before the field, from their stage timings (every
    night's row, and both sides of each same-work night)."""
    for row in [*rows, *(r[side] for r in same_work for side in ("long", "fresh"))]:
        if "stages" in row:
            row.setdefault("stage_seconds", sum(row["stages"].values()))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def like_for_like(rows: list[dict], key: str, count: int = 10) -> tuple[float, float]:
    """Medians of ``key`` over the first and the last ``count`` ordinary nights (published,
    no new style; night 1, which ingests everything, left out)."""
    ordinary = [r for r in rows[1:] if r["outcome"] == "published" and not r["new_style"]
                and key in r]
    return (_median([r[key] for r in ordinary[:count]]),
            _median([r[key] for r in ordinary[-count:]]))


def needed_bytes(workspace: Path, scratch: Path) -> int:
    """What the kept versions need (see the module's docstring)."""
    # Imported here, once main() has pointed PREFECT_HOME at the run folder: Prefect (which
    # these modules import) reads its settings when first imported.
    import pyarrow.parquet as pq

    from tasks import storage
    from tasks.retention import GX_PAGES, GX_RESULTS, STYLE_CACHE_DIR
    from tasks.storage import Workspace
    from tasks.validate import publish
    from tasks.validate.style_classifier import feature_caches_in_use

    ws = Workspace.open(workspace)
    kept = [v for v in publish.list_versions(ws) if not v["pruned"]]
    total = 0
    pngs: set[str] = set()
    for version in kept:
        folder = workspace / publish.version_dir(version["status"], version["version"])
        total += storage.folder_bytes(folder) + storage.folder_bytes(Path(version["report_path"]))
        rows = pq.read_table(folder / publish.VERDICTS, columns=["png_path"]).to_pylist()
        pngs |= {r["png_path"] for r in rows if r["png_path"]}
    total += sum((workspace / p).stat().st_size for p in pngs if (workspace / p).is_file())
    # The generator, the styles, great-expectations' project with the newest result and
    # page of each suite, and the newest style classifier with its feature caches.
    total += sum(storage.folder_bytes(workspace / name) for name in ("generators", "styles"))
    total += storage.folder_bytes(workspace / "gx") - storage.folder_bytes(
        workspace / GX_RESULTS) - storage.folder_bytes(workspace / GX_PAGES)
    for suite in (workspace / GX_RESULTS).glob("*/*"):
        newest = max(suite.iterdir(), key=lambda p: p.stat().st_mtime, default=None)
        if newest is not None:
            total += storage.folder_bytes(newest) + storage.folder_bytes(
                workspace / GX_PAGES / newest.relative_to(workspace / GX_RESULTS))
    classifiers = list((workspace / STYLE_CACHE_DIR).glob("*.npz"))
    newest_classifier = max(classifiers, key=lambda p: p.stat().st_mtime, default=None)
    if newest_classifier is not None:
        total += newest_classifier.stat().st_size
        used = feature_caches_in_use([newest_classifier]) or set()
        features = workspace / STYLE_CACHE_DIR / "features"
        total += sum((features / name).stat().st_size for name in used
                     if (features / name).is_file())
    fresh = Workspace.open(scratch / "fresh")
    for name in storage.table_names(ws):
        rows = storage.read(ws, name)
        if rows.num_rows:
            storage.write_table(fresh, name, rows)
    total += storage.folder_bytes(fresh.lancedb_dir)
    total += storage.folder_bytes(workspace / "datasets") - sum(
        storage.folder_bytes(workspace / publish.version_dir(v["status"], v["version"]))
        for v in kept)
    shutil.rmtree(scratch / "fresh")
    return total


def _by_folder(workspace: Path) -> dict[str, int]:
    from tasks import storage  # see _night: after PREFECT_HOME is set

    return {p.name: storage.folder_bytes(p) for p in sorted(workspace.iterdir()) if p.is_dir()}


def _plot(rows: list[dict], path: Path, needed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nights = [r["night"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(nights, [r["bytes"] / 1e6 for r in rows], label="workspace")
    top.axhline(needed / 1e6, color="grey", linestyle="--", label="kept versions need")
    top.axhline(1.3 * needed / 1e6, color="red", linestyle=":", label="goal: 1.3x")
    top.set_ylabel("MB")
    top.legend()
    bottom.plot(nights, [r["seconds"] for r in rows], label="night (wall)")
    timed = [r for r in rows if "cpu_seconds" in r]  # a resumed run's older nights lack it
    bottom.plot([r["night"] for r in timed], [r["cpu_seconds"] for r in timed],
                label="night (CPU)")
    backfills = [r for r in rows if r.get("backfill")]
    if backfills:
        bottom.scatter([r["night"] for r in backfills],
                       [r["backfill"]["seconds"] for r in backfills], color="black",
                       marker="x", label="backfill of a new style (wall)")
    bottom.axhline(1.2 * rows[1]["seconds"], color="red", linestyle=":",
                   label="goal: 1.2x night 2")
    bottom.set_ylabel("seconds")
    bottom.set_xlabel("night")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=100)
    parser.add_argument("--faces", type=int, default=50, help="faces on the first night")
    parser.add_argument("--growth", type=float, default=0.01, help="new faces a night")
    parser.add_argument("--style-every", type=int, default=25)
    parser.add_argument("--reject-every", type=int, default=10)
    parser.add_argument("--new-style-by", choices=("backfill", "night"), default="backfill",
                        help="how a new style's every face is drawn: a backfill run before "
                             "the night (the documented way), or the night itself")
    parser.add_argument("--keep", type=int, default=3, help="published versions kept")
    parser.add_argument("--shared-heap", action="store_true",
                        help="nights start on the heap the nights before left (no collect and "
                             "freeze between nights): how the runs before this option timed")
    parser.add_argument("--no-prune", action="store_true", help="the baseline: no retention")
    parser.add_argument("--out", default=None, help="workspace and plot folder (kept)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its nights.json")
    parser.add_argument("--same-work", type=int, default=0, metavar="K",
                        help="after the last night, K nights of one new face on this "
                             "workspace and on a fresh one (see the docstring)")
    args = parser.parse_args()
    SETTLE["heap"] = not args.shared_heap
    if args.resume and not (args.out and (Path(args.out) / "nights.json").is_file()):
        parser.error("--resume needs --out naming a folder with a nights.json")

    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    gc.callbacks.append(PAUSES)
    os.environ["CLIP4SKETCH_GENERATE_SAMPLES_PER_FACE"] = "1"
    os.environ["CLIP4SKETCH_GENERATE_STEPS"] = "2"
    temp = Path(args.out or tempfile.mkdtemp(prefix="nights-bench-"))
    os.environ.setdefault("PREFECT_HOME", str(temp / "prefect-home"))
    (temp / "prefect-home").mkdir(parents=True, exist_ok=True)

    # Imported here, once main() has pointed PREFECT_HOME at the run folder: Prefect (which
    # these modules import) reads its settings when first imported.
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from data_contracts.thresholds import THRESHOLDS_FILE, accept_all_thresholds
    from schemas.encoders import EncoderSpec
    from tasks import storage
    from tasks.demo.faces import make_demo_source
    from tasks.encoders import load
    from tasks.generate.catalog import DEFAULT_GENERATOR
    from tasks.generate.networks import SketchGenerator

    stored = json.loads((temp / "nights.json").read_text()) if args.resume else {}
    done_rows: list[dict] = stored.get("rows", [])
    extra = round(args.faces * args.growth * args.nights) + args.nights + args.same_work
    source = temp / "source"
    if not args.resume:
        source = make_demo_source(source, identities=args.faces + extra, photos_per_identity=1)
    names = sorted(p.name for p in (source / "photos").iterdir())
    workspace, live = temp / "ws", temp / "live"
    live.mkdir(parents=True, exist_ok=True)
    # Faces a same-work run added to the live folder count as arrived.
    arrived = (done_rows[-1]["faces"] if done_rows else 0) + len(stored.get("same_work", []))
    if len(names) < arrived + round(arrived * args.growth * (args.nights - len(done_rows))) + (
            args.nights - len(done_rows)) + args.same_work:
        parser.error(f"{source} has too few faces for {args.nights} nights")

    def arrive(count: int) -> None:
        nonlocal arrived
        for name in names[arrived:arrived + count]:
            # A run killed after a night's faces arrived left them there: resumed, they stay.
            shutil.copytree(source / "photos" / name, live / name, dirs_exist_ok=True)
        arrived += count

    if not args.resume:
        encoders = {role: load(EncoderSpec(role=role, name=name)) for role, name in
                    (("identity", "sface"), ("image", "effnet-lite0"), ("text", "minilm"))}
        generator = SketchGenerator.build("demo", {r: e.dim for r, e in encoders.items()},
                                          {r: e.version for r, e in encoders.items()}, seed=0)
        generator.save_pretrained(workspace / DEFAULT_GENERATOR)
        arrive(args.faces)
    accept = str(accept_all_thresholds(temp / "accept-all.yaml"))
    styles = ["pencil-dodge"] + [f"bench-style-{i}" for i in
                                 range(1, len(done_rows) // args.style_every + 1)]
    keep = None if args.no_prune else args.keep
    rows: list[dict] = done_rows
    for row in rows:  # runs written before the fields
        row.setdefault("new_style", row["night"] % args.style_every == 0)
    add_stage_seconds(rows, stored.get("same_work", []))

    @flow
    def warm_up() -> None:
        """Starts and warms the server, outside the clock."""

    with prefect_test_harness(server_startup_timeout=120):
        warm_up()
        for night in range(len(rows) + 1, args.nights + 1):
            if night > 1:
                arrive(max(1, round(arrived * args.growth)))
            new_style = night % args.style_every == 0
            backfilled = None
            if new_style:
                styles.append(_add_style(workspace, night // args.style_every))
                if args.new_style_by == "backfill":
                    backfilled = _backfill(workspace, styles[-1], accept)
            rejected = night % args.reject_every == 0
            done = _night(workspace, live, styles,
                          str(THRESHOLDS_FILE) if rejected else accept, keep)
            size = storage.folder_bytes(workspace)
            rows.append({"night": night, "faces": arrived, "styles": len(styles),
                         "new_style": new_style, **done, "bytes": size,
                         **({"backfill": backfilled} if backfilled else {})})
            print(f"night {night:3d}: {arrived:4d} faces, {len(styles)} style(s), "
                  f"{done['outcome']:9} {done['seconds']:6.1f} s ({done['cpu_seconds']:6.1f} "
                  f"s CPU), workspace {size / 1e6:8.2f} MB"
                  + (f"; backfill of {styles[-1]} before it {backfilled['seconds']:.1f} s "
                     f"({backfilled['cpu_seconds']:.1f} s CPU)" if backfilled else "")
                  + (f"; collector pauses {done['gc_seconds']:.2f} s"
                     if done["gc_seconds"] >= 0.05 else ""),
                  flush=True)
            (temp / "nights.json").write_text(json.dumps({"rows": rows, "args": vars(args)},
                                                          indent=1))
        same = []
        if args.same_work:
            same = _same_work(temp, workspace, live,
                              [source / "photos" / n for n in names[:args.faces]],
                              [source / "photos" / n for n in
                               names[arrived:arrived + args.same_work]],
                              styles, accept, keep)

    # Measured now, not taken from the last row: same-work nights ran after it.
    size, needed = storage.folder_bytes(workspace), needed_bytes(workspace, temp)
    last, second = rows[-1], rows[1]
    plot = temp / "nights.png"
    _plot(rows, plot, needed)
    same_work = stored.get("same_work", []) + same
    # This run's same-work nights; resumed with none, the stored ones (their figures again).
    shown = same or stored.get("same_work", [])
    (temp / "nights.json").write_text(json.dumps(
        {"rows": rows, "needed": needed, "bytes": size, "args": vars(args),
         **({"same_work": same_work} if same_work else {})}, indent=1))
    print(f"\n{args.nights} nights, {'no prune' if keep is None else f'prune keep {keep}'}"
          + (f", then {len(shown)} same-work nights" if shown else ""))
    print(f"{'':28} {'value':>12} {'goal':>12}")
    print(f"{'workspace now':28} {size / 1e6:10.2f} MB "
          f"{1.3 * needed / 1e6:10.2f} MB  (1.3 x {needed / 1e6:.2f} MB the kept versions "
          f"need: {size / needed:.2f} x)")
    for key, unit in (("seconds", "s"), ("cpu_seconds", "s CPU"),
                      ("stage_seconds", "s of stages")):
        if key not in last or key not in second:
            continue  # a resumed run's older nights were timed without CPU seconds
        print(f"{'last night / night 2':28} {last[key] / second[key]:12.2f} "
              f"{1.2:12.2f}  ({last[key]:.1f} / {second[key]:.1f} {unit})")
        first, latest = like_for_like(rows, key)
        print(f"{'ordinary nights, last/first':28} {latest / first:12.2f} {1.2:12.2f}  "
              f"(median of 10: {latest:.1f} / {first:.1f} {unit})")
        if shown and all(key in r[side] for r in shown for side in ("long", "fresh")):
            long, fresh = same_work_ratio(shown, key)
            print(f"{'same work, long/fresh':28} {long / fresh:12.2f} {1.2:12.2f}  "
                  f"(median of {len(shown)}: {long:.2f} / {fresh:.2f} {unit})")
    if "gc_seconds" in last and "gc_seconds" in second:
        print(f"{'collector pauses':28} night 2 {second['gc_seconds']:.2f} s, night "
              f"{last['night']} {last['gc_seconds']:.2f} s (full collections "
              f"{last['gc_full_seconds']:.2f} s); nights with a full collection: "
              f"{sum(1 for r in rows if r.get('gc_full_seconds', 0) > 0)} of {len(rows)}")
    growth = step_growth(last, second)
    if growth:
        print(f"\nwhere night {last['night']}'s seconds went, against night 2's "
              "(stages and their timed steps that moved by 0.01 s or more):")
        for name, before, after in growth:
            print(f"  {name:34} {before:7.3f} -> {after:7.3f} s  ({after - before:+.3f})")
    print("by folder after the last night: " + ", ".join(
        f"{k} {v / 1e6:.2f} MB" for k, v in _by_folder(workspace).items()))
    print(f"plot: {plot}\nrows: {temp / 'nights.json'}")


if __name__ == "__main__":
    main()
