"""Retention: what months of nights may remove, and the proof that kept versions lose nothing.

Every night adds LanceDB versions, Parquet mirrors, shard files, evaluation galleries and the
PNGs of versions that were rejected. ``prune`` keeps:

- the current version, the newest ``keep_published`` published versions and every pinned
  one (``clip4sketch datasets --pin``), each with its folder, every PNG and row its verdicts
  name, and the LanceDB tags it was published under;
- rejected versions younger than ``keep_days`` (a reviewer may still be reading them);
- every sketch in no version yet (a night that died before validation), and the shard files
  a rerun or a bit-for-bit repair still reads.

and removes the rest: folders of versions past retention (their rows stay in
``dataset_versions`` as history, listed as pruned), sketch rows and PNGs that only those
versions named, finished runs' plans and merged shard results, gallery tables older than
``keep_days``, ``run-*`` tags older than ``keep_days``; then compacts every table and removes
the files of LanceDB versions older than ``keep_days`` that no remaining tag holds.

The plan is computed first and is all a dry run prints. Applying it deletes rows before
files and a version's verdicts file last, so a prune killed half way leaves orphans that the
next prune finds (orphan PNGs are looked for every time), never a kept version with a hole.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from data_contracts.run import rebuild_data_docs
from schemas.settings import RetentionSettings
from schemas.validation import SKETCH_METRICS, SKETCH_VERDICTS
from tasks import storage
from tasks.digests import FileDigests
from tasks.evaluate.gallery import run_of
from tasks.generate.plan import SHARDS_DIR, SKETCHES_DIR
from tasks.runtime import Laps
from tasks.storage import SKETCHES, Workspace
from tasks.validate import publish
from tasks.validate.style_classifier import CACHE_DIR as STYLE_CACHE_DIR
from tasks.validate.style_classifier import feature_caches_in_use

RUN_TAG_PREFIX = "run-"
GX_RESULTS = Path("gx/uncommitted/validations")
GX_PAGES = Path("gx/uncommitted/data_docs/local_site/validations")
# Tables whose rows are sketches, keyed by sketch_id: pruned sketches leave all three.
SKETCH_TABLES = (SKETCHES, SKETCH_METRICS, SKETCH_VERDICTS)
_CHUNK = 500


class RetentionError(ValueError):
    """A retention setting that would remove what must stay (e.g. ``keep_published`` 0)."""


class Removal(BaseModel):
    path: str  # relative to the workspace
    bytes: int
    why: str


class PrunePlan(BaseModel):
    """What a prune keeps and removes; all a dry run computes."""

    keep_published: int
    keep_days: float
    kept_versions: list[str] = Field(default_factory=list)
    pinned: list[str] = Field(default_factory=list)
    pruned_versions: dict[str, str] = Field(default_factory=dict)  # version -> status
    sketches: list[str] = Field(default_factory=list)  # sketch ids whose rows go
    files: list[Removal] = Field(default_factory=list)
    galleries: list[str] = Field(default_factory=list)
    gallery_bytes: int = 0
    tags: dict[str, list[str]] = Field(default_factory=dict)  # table -> labels that go

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files) + self.gallery_bytes

    def summary(self) -> dict[str, int]:
        why: dict[str, int] = {}
        for item in self.files:
            why[item.why] = why.get(item.why, 0) + item.bytes
        return why

    def lines(self) -> list[str]:
        out = [f"keep {len(self.kept_versions)} version(s): {', '.join(self.kept_versions)}"
               + (f" (pinned: {', '.join(self.pinned)})" if self.pinned else "")]
        if self.pruned_versions:
            out.append("prune version(s): " + ", ".join(
                f"{v} ({s})" for v, s in self.pruned_versions.items()))
        out.append(f"sketch rows to remove: {len(self.sketches)}")
        for why, size in sorted(self.summary().items()):
            count = sum(1 for f in self.files if f.why == why)
            out.append(f"{why}: {count} file(s) or folder(s), {size:,} bytes")
        if self.galleries:
            out.append(f"gallery tables: {len(self.galleries)}, {self.gallery_bytes:,} bytes")
        tags = sum(len(v) for v in self.tags.values())
        if tags:
            out.append(f"tags to remove: {tags} on {len(self.tags)} table(s)")
        out.append(f"in all: {self.bytes:,} bytes (before LanceDB's own clean-up)")
        return out


class PruneReport(PrunePlan):
    dry_run: bool
    bytes_before: int
    bytes_after: int
    lancedb_bytes_freed: int = 0
    seconds: float = 0.0
    # Where the seconds went (the workspace's bytes before and after; the plan; removing rows
    # and files; LanceDB's compaction; the Parquet mirrors), as the validate stage records its
    # own: a night's record says which part grows.
    step_seconds: dict[str, float] = Field(default_factory=dict)


def check_policy(keep_published: int, keep_days: float) -> None:
    if keep_published < 1:
        raise RetentionError(
            f"keep_published must be at least 1 (got {keep_published}): pruning every "
            "published version would leave the current dataset without its files")
    if keep_days < 0:
        raise RetentionError(f"keep_days must be >= 0 (got {keep_days})")


def resolve_policy(keep_published: int | None, keep_days: float | None,
                   defaults: RetentionSettings) -> tuple[int, float]:
    """Given values, else the retention settings; none at all is a user error."""
    keep = keep_published if keep_published is not None else defaults.keep_published
    if keep is None:
        raise RetentionError("how many published versions to keep? give --keep N or set "
                             "CLIP4SKETCH_RETENTION_KEEP_PUBLISHED")
    days = keep_days if keep_days is not None else defaults.keep_days
    check_policy(keep, days)
    return keep, days


# --------------------------------------------------------------------------- planning


def plan_prune(workspace: Workspace, keep_published: int, keep_days: float,
               now: dt.datetime | None = None) -> PrunePlan:
    check_policy(keep_published, keep_days)
    now = now or dt.datetime.now(dt.UTC)
    cutoff = now - dt.timedelta(days=keep_days)
    plan = PrunePlan(keep_published=keep_published, keep_days=keep_days)
    versions = [v for v in publish.list_versions(workspace) if not v["pruned"]]
    published = [v for v in versions if v["status"] == "published"]
    pins = set(publish.pinned_versions(workspace))
    keep = {v["version"] for v in published[:keep_published]}  # newest first
    keep |= {v["version"] for v in versions if v["current"] or v["version"] in pins}
    keep |= {v["version"] for v in versions
             if v["status"] != "published" and _aware(v["created_at"]) >= cutoff}
    if versions:
        keep.add(versions[0]["version"])  # the newest night's, whatever its status
    plan.kept_versions = [v["version"] for v in versions if v["version"] in keep]
    plan.pinned = sorted(pins & keep)
    pruned = [v for v in versions if v["version"] not in keep]
    plan.pruned_versions = {v["version"]: v["status"] for v in pruned}

    kept_sketches = _named_sketches(workspace, [v for v in versions if v["version"] in keep])
    pruned_sketches = _named_sketches(workspace, pruned)
    going = sorted(set(pruned_sketches) - set(kept_sketches))
    plan.sketches = going
    for sid in going:
        png = pruned_sketches[sid]
        if png and (workspace.root / png).is_file():
            plan.files.append(Removal(path=png, bytes=(workspace.root / png).stat().st_size,
                                      why="sketch PNGs only pruned versions used"))
    plan.files += _orphan_pngs(workspace, set(going))
    plan.files += _shard_leftovers(workspace, set(going))
    for version in pruned:
        folder = publish.version_dir(version["status"], version["version"])
        plan.files.append(Removal(path=str(folder),
                                  bytes=storage.folder_bytes(workspace.root / folder),
                                  why=f"{version['status']} version folders"))
    plan.files += _old_outputs(workspace, [v for v in versions if v["version"] in keep], cutoff)
    plan.galleries, plan.gallery_bytes = _old_galleries(workspace, cutoff)
    plan.tags = _old_tags(workspace, keep, pruned, cutoff)
    return plan


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _named_sketches(workspace: Workspace, versions: Iterable[dict]) -> dict[str, str | None]:
    """sketch id -> PNG path, for every sketch a version's verdicts name (accepted or not:
    a reviewer opening a kept version's report sees its rejected drawings too)."""
    named: dict[str, str | None] = {}
    for version in versions:
        path = workspace.root / version["verdicts_path"]
        rows = pq.read_table(path, columns=["sketch_id", "png_path"]).to_pylist()
        named.update({r["sketch_id"]: r["png_path"] for r in rows})
    return named


def _orphan_pngs(workspace: Workspace, going: set[str]) -> list[Removal]:
    """PNGs under sketches/ that no sketch row and no shard result names: what a killed
    prune or a hand-deleted row leaves. A dead generation run's PNGs are named by its shard
    results (the rerun reuses them) and stay."""
    folder = workspace.root / SKETCHES_DIR
    if not folder.is_dir():
        return []
    rows = storage.read(workspace, SKETCHES, columns=["sketch_id", "png_path"]).to_pylist()
    named = {r["png_path"] for r in rows if r["png_path"] and r["sketch_id"] not in going}
    for result in _shard_files(workspace, "results"):
        named |= {p for p in pq.read_table(result, columns=["png_path"])
                  .column("png_path").to_pylist() if p}
    removals = []
    for path in sorted(folder.rglob("*.png")):
        relative = str(path.relative_to(workspace.root))
        if relative not in named and path.is_file() and not path.is_symlink():
            sid = path.stem
            if sid in going:
                continue  # already listed as a pruned sketch's PNG
            removals.append(Removal(path=relative, bytes=path.stat().st_size,
                                    why="orphan sketch PNGs"))
    return removals


def _shard_files(workspace: Workspace, kind: str) -> list[Path]:
    folder = workspace.root / SHARDS_DIR
    if not folder.is_dir():
        return []
    if kind == "plans":
        return sorted(folder.glob("*/plan-*.json")) + sorted(folder.glob("plan-*.json"))
    if kind == "items":
        return sorted(folder.glob("*/*.items.parquet"))
    return sorted(p for p in folder.glob("*/*.parquet") if not p.name.endswith(".items.parquet"))


def _shard_leftovers(workspace: Workspace, going: set[str]) -> list[Removal]:
    """Finished runs' plans and merged results; item lists only once all their sketches
    are pruned (a damaged kept PNG is redrawn bit for bit in its original shard batch)."""
    removals = [Removal(path=str(p.relative_to(workspace.root)), bytes=p.stat().st_size,
                        why="plans of finished runs") for p in _shard_files(workspace, "plans")]
    results = _shard_files(workspace, "results")
    merged = (set(storage.column_values(workspace, SKETCHES, "sketch_id")) - going
              if results else set())
    for result in results:
        ids = set(pq.read_table(result, columns=["sketch_id"]).column("sketch_id").to_pylist())
        if ids <= merged | going:
            removals.append(Removal(path=str(result.relative_to(workspace.root)),
                                    bytes=result.stat().st_size, why="merged shard results"))
    # An item list goes only once every sketch it names goes, so on a night that prunes no
    # sketch none can: the lists (one a shard of every generation run whose sketches are
    # still kept: over a hundred after a hundred nights) are then not read at all.
    for items in _shard_files(workspace, "items") if going else []:
        ids = set(pq.read_table(items, columns=["sketch_id"]).column("sketch_id").to_pylist())
        if ids and ids <= going:
            removals.append(Removal(path=str(items.relative_to(workspace.root)),
                                    bytes=items.stat().st_size,
                                    why="item lists of pruned sketches"))
    return removals


def _old_outputs(workspace: Workspace, kept: list[dict], cutoff: dt.datetime) -> list[Removal]:
    """Per-run outputs older than ``cutoff`` that no kept version names; the newest of each
    kind always stays: validation reports, great-expectations results with their Data Docs
    pages, style-classifier caches (recomputed when missing) and CLI logs. A style's feature
    cache is not per run (one file a style, grown by each night's new faces): it goes only
    when old and no kept classifier was trained from it."""
    root = workspace.root
    named = {str(Path(v["report_path"]).resolve()) for v in kept if v.get("report_path")}
    groups: list[tuple[str, list[Path]]] = [
        ("reports of pruned nights", [p for p in (root / "reports").glob("validate-*.html")
                                      if str(p.resolve()) not in named]),
        ("style classifier caches", list((root / STYLE_CACHE_DIR).glob("*.npz"))),
        ("logs", list((root / "logs").glob("*.log"))),
    ]
    for suite in sorted((root / GX_RESULTS).glob("*/*")) if (root / GX_RESULTS).is_dir() else []:
        groups.append(("great-expectations results", [p for p in suite.iterdir() if p.is_dir()]))
    removals = []
    for why, paths in groups:
        newest = max(paths, key=lambda p: p.stat().st_mtime, default=None)
        for path in sorted(paths):
            if path == newest or path.stat().st_mtime >= cutoff.timestamp():
                continue
            removals.append(Removal(path=str(path.relative_to(root)),
                                    bytes=storage.folder_bytes(path), why=why))
            if why == "great-expectations results":
                page = root / GX_PAGES / path.relative_to(root / GX_RESULTS)
                if page.exists():
                    removals.append(Removal(path=str(page.relative_to(root)),
                                            bytes=storage.folder_bytes(page),
                                            why="great-expectations Data Docs pages"))
    going = {root / r.path for r in removals}
    used = feature_caches_in_use([p for p in (root / STYLE_CACHE_DIR).glob("*.npz")
                                  if p not in going])
    if used is not None:  # else a kept classifier does not say: keep every feature cache
        for path in sorted((root / STYLE_CACHE_DIR / "features").glob("*.npz")):
            if path.name not in used and path.stat().st_mtime < cutoff.timestamp():
                removals.append(Removal(path=str(path.relative_to(root)),
                                        bytes=path.stat().st_size,
                                        why="style feature caches no kept classifier uses"))
    return removals


def _old_galleries(workspace: Workspace, cutoff: dt.datetime) -> tuple[list[str], int]:
    """Gallery tables of evaluation runs last written before ``cutoff``; the newest run's
    always stay (``evaluate --keep-galleries`` bounds them by count as it runs)."""
    by_run: dict[str, list[str]] = {}
    for name in storage.table_names(workspace):
        run = run_of(name)
        if run is not None:
            by_run.setdefault(run, []).append(name)

    def written(run: str) -> float:
        return max((storage.folder_mtime(workspace.lancedb_dir / f"{n}.lance")
                    for n in by_run[run]), default=0.0)

    runs = sorted(by_run, key=written, reverse=True)
    old = [r for r in runs[1:] if written(r) < cutoff.timestamp()]
    names = sorted(n for r in old for n in by_run[r])
    size = sum(storage.folder_bytes(workspace.lancedb_dir / f"{n}.lance") for n in names)
    return names, size


def _old_tags(workspace: Workspace, keep: set[str], pruned: list[dict],
              cutoff: dt.datetime) -> dict[str, list[str]]:
    """Tags of pruned versions (any age), and ``run-*`` tags older than ``cutoff``: each
    holds a LanceDB version that no clean-up may otherwise remove."""
    pruned_names = {v["version"] for v in pruned}
    local_cutoff = cutoff.astimezone().replace(tzinfo=None)  # LanceDB's clock: naive local
    out: dict[str, list[str]] = {}
    for name in storage.table_names(workspace):
        if run_of(name) is not None:
            continue
        times = storage.version_times(workspace, name)
        going = []
        for label, version in storage.tags(workspace, name).items():
            if label in keep:
                continue
            old_run = (label.startswith(RUN_TAG_PREFIX)
                       and _naive(times.get(version, dt.datetime.max)) < local_cutoff)
            if label in pruned_names or old_run:
                going.append(label)
        if going:
            out[name] = sorted(going)
    return out


def _naive(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone().replace(tzinfo=None) if moment.tzinfo else moment


# --------------------------------------------------------------------------- applying


def apply_prune(workspace: Workspace, plan: PrunePlan, laps: Laps | None = None) -> int:
    """Carry out ``plan`` (under the caller's workspace lock); returns what LanceDB's own
    clean-up freed beyond the plan's files. ``laps``, when given, times each step."""
    laps = laps or Laps()
    for start in range(0, len(plan.sketches), _CHUNK):
        where = storage.where_in("sketch_id", plan.sketches[start:start + _CHUNK])
        for name in SKETCH_TABLES:
            storage.delete(workspace, name, where)
    folders = [f for f in plan.files if f.why.endswith("version folders")]
    for item in plan.files:
        if item in folders:
            continue
        path = workspace.root / item.path
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for item in folders:
        _remove_version_folder(workspace.root / item.path)
    # The digests of removed PNGs go with them: the cache holds only what is stored.
    pngs = [item.path for item in plan.files if item.path.endswith(".png")]
    if pngs:
        digests = FileDigests.for_workspace(workspace.root)
        digests.forget(pngs)
        digests.save()
    if any(f.why.startswith("great-expectations") for f in plan.files):
        rebuild_data_docs(workspace.root)
    for name in plan.galleries:
        storage.drop_table(workspace, name)
    for name, labels in plan.tags.items():
        storage.delete_tags(workspace, name, labels)
    _remove_empty_folders(workspace.root / SKETCHES_DIR)
    _remove_empty_folders(workspace.root / SHARDS_DIR)
    laps.lap("remove")
    names = [n for n in storage.table_names(workspace) if run_of(n) is None]
    freed = storage.compact(workspace, names, older_than=dt.timedelta(days=plan.keep_days))
    laps.lap("compact")
    if plan.sketches:
        for name in SKETCH_TABLES:
            storage.export_parquet(workspace, name)
    laps.lap("mirrors")
    return freed


def _remove_version_folder(folder: Path) -> None:
    """Everything but the verdicts, then the verdicts (which mark the version stored)."""
    if not folder.is_dir():
        return
    verdicts = folder / publish.VERDICTS
    for path in sorted(folder.iterdir()):
        if path != verdicts:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    verdicts.unlink(missing_ok=True)
    folder.rmdir()


def _remove_empty_folders(root: Path) -> None:
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def prune(workspace: Workspace, keep_published: int, keep_days: float,
          dry_run: bool = False, now: dt.datetime | None = None) -> PruneReport:
    """Plan, then (unless ``dry_run``) apply; the caller holds the workspace lock."""
    started, laps = time.perf_counter(), Laps()
    before = storage.folder_bytes(workspace.root)
    laps.lap("measure")
    plan = plan_prune(workspace, keep_published, keep_days, now=now)
    laps.lap("plan")
    freed = 0 if dry_run else apply_prune(workspace, plan, laps)
    after = before if dry_run else storage.folder_bytes(workspace.root)
    laps.lap("measure")
    return PruneReport(**plan.model_dump(), dry_run=dry_run, bytes_before=before,
                       bytes_after=after, lancedb_bytes_freed=freed,
                       seconds=time.perf_counter() - started, step_seconds=laps.seconds)
