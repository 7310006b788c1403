"""Plan a generation run: which sketches are missing, grouped into shards.

A sketch's key is (face id, style, sample index, generator version). Its id and its seed are
both hashes of the key, so the same sketch gets the same id and the same noise in every run,
on every machine: a rerun recognises finished work by id and regenerates lost work exactly.

Shards are deterministic too: items are sorted by key and cut into fixed-size groups, and a
shard's id is a hash of its sketch ids. An interrupted run that is planned again (with nothing
merged in between) gets the same shards back, so its finished shard files are found and reused.
Only small references leave this module: the items of each shard go to a Parquet file.

A merged sketch counts as done only while its PNG still has the recorded sha256. One that is
missing or damaged on disk is sent back to the shard that drew it (its item list is kept under
``shards/``), so its whole original batch is sampled again and the pixels come back
bit-for-bit; if that item list is gone too, it is planned afresh in a new shard.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from schemas.generation import Plan, PlanSummary, ShardRef, StyleCounts
from schemas.records import FACES_SCHEMA, SKETCHES_SCHEMA
from schemas.vectors import VectorTable
from tasks import storage
from tasks.digests import FileDigests
from tasks.generate.conditions import text_vectors
from tasks.runtime import retry_transient
from tasks.storage import FACES, SKETCHES, CorruptFileError, Workspace

_log = logging.getLogger(__name__)

SHARDS_DIR = "shards/generate"
SKETCHES_DIR = "sketches"
# Style names become folder names; the style registry's slugs all pass.
STYLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SEP = "\x1f"  # cannot occur in ids, style names or versions

ITEMS_SCHEMA = pa.schema([
    pa.field("sketch_id", pa.string(), nullable=False),
    pa.field("face_id", pa.string(), nullable=False),
    pa.field("identity_id", pa.string(), nullable=False),
    pa.field("style", pa.string(), nullable=False),
    pa.field("sample_index", pa.int64(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
])

SKIP_NO_IDENTITY = "no_identity_vector"
SKIP_STALE_IDENTITY = "stale_identity_vector"
SKIP_NO_IMAGE = "no_image_vector"
SKIP_STALE_IMAGE = "stale_image_vector"


# --------------------------------------------------------------------------- keys and paths


def sketch_key(face_id: str, style: str, sample_index: int, generator_version: str) -> str:
    return _SEP.join([face_id, style, str(int(sample_index)), generator_version])


def sketch_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def sketch_seed(key: str) -> int:
    """A 63-bit seed from the key (a separate hash domain, so it is not the id's prefix)."""
    digest = hashlib.sha256(b"seed" + _SEP.encode() + key.encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def png_relpath(generator_version: str, style: str, sid: str) -> str:
    return f"{SKETCHES_DIR}/{generator_version}/{style}/{sid}.png"


def shard_dir(generator_version: str) -> str:
    return f"{SHARDS_DIR}/{generator_version}"


def shard_id(sketch_ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(sketch_ids)).encode()).hexdigest()[:16]


def read_plan(path: str | Path) -> Plan:
    return Plan.model_validate_json(Path(path).read_text(encoding="utf-8"))


def items_path(generator_version: str, sid: str) -> str:
    return f"{shard_dir(generator_version)}/{sid}.items.parquet"


def result_path(generator_version: str, sid: str) -> str:
    return f"{shard_dir(generator_version)}/{sid}.parquet"


def checks_out(root: Path, row: Mapping[str, Any], digests: FileDigests | None = None) -> bool:
    """A recorded sketch is trusted only if its PNG is there with the recorded sha256
    (``digests`` remembers files already hashed, tasks/digests.py; without, each is read)."""
    if row["png_path"] is None:
        return row["status"] == "nan"
    actual = (digests or FileDigests(root, trust_stat=False)).sha256(row["png_path"])
    return actual is not None and actual == row["png_sha256"]


def logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a task or flow, this module's logger outside one."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return _log


# --------------------------------------------------------------------------- planning


def _check_styles(styles: list[str]) -> list[str]:
    if not styles:
        raise ValueError("no styles to generate: give style names (see the style registry)")
    bad = [s for s in styles if not STYLE_NAME.match(s)]
    if bad:
        raise ValueError(f"style names must be slugs usable as folder names: {bad}")
    return list(dict.fromkeys(styles))


def _photos(workspace: Workspace, faces: list[str] | None) -> tuple[pa.Table, list[str]]:
    """Stored mugshots, restricted to the given face or identity ids when given."""
    photos = storage.read(workspace, FACES, columns=["face_id", "identity_id"],
                          where="kind = 'photo'", schema=FACES_SCHEMA)
    if faces is None:
        return photos, []
    wanted = set(faces)
    ids = photos.column("face_id").to_pylist()
    identities = photos.column("identity_id").to_pylist()
    keep = [f in wanted or i in wanted for f, i in zip(ids, identities, strict=True)]
    unmatched = sorted(wanted - set(ids) - set(identities))
    return photos.filter(pa.array(keep, pa.bool_())), unmatched


def _versions_by_face(workspace: Workspace, table: str) -> dict[str, str]:
    rows = storage.read(workspace, table, columns=["face_id", "encoder_version"])
    if rows.num_rows == 0:
        return {}
    return dict(zip(rows.column("face_id").to_pylist(),
                    rows.column("encoder_version").to_pylist(), strict=True))


def _skip_reason(face: str, vectors: dict[str, dict[str, str]],
                 sources: dict[str, VectorTable]) -> str | None:
    for role, missing, stale in (("identity", SKIP_NO_IDENTITY, SKIP_STALE_IDENTITY),
                                 ("image", SKIP_NO_IMAGE, SKIP_STALE_IMAGE)):
        version = vectors[role].get(face)
        if version is None:
            return missing
        if version != sources[role].version:
            return stale
    return None


def _existing(workspace: Workspace, generator_version: str) -> dict[str, dict]:
    """Merged sketches of this generator, by id, with what it takes to check their PNG."""
    rows = storage.read(workspace, SKETCHES,
                        columns=["sketch_id", "png_path", "png_sha256", "status", "shard_id"],
                        where=f"generator_version = {storage.quote(generator_version)}",
                        schema=SKETCHES_SCHEMA)
    return {row["sketch_id"]: row for row in rows.to_pylist()}


def read_items(path: Path) -> list[dict]:
    """A shard's item list, checked against its checksum (CorruptFileError when damaged)."""
    return storage.read_verified_parquet(path).to_pylist()


def _holds(path: Path, rows: list[dict]) -> bool:
    """Whether the item list at ``path`` is intact and holds exactly ``rows``."""
    if not path.is_file():
        return False
    try:
        return read_items(path) == rows
    except CorruptFileError as error:
        logger().warning("%s; writing it again", error)
        return False


def _write_shard(workspace: Workspace, generator_version: str, rows: list[dict]) -> ShardRef:
    sid = shard_id(r["sketch_id"] for r in rows)
    ref = ShardRef(shard_id=sid, items=len(rows), items_path=items_path(generator_version, sid),
                   result_path=result_path(generator_version, sid))
    path = workspace.root / ref.items_path
    # Same id, same items: an existing file that still holds exactly these rows is kept.
    if not _holds(path, rows):
        storage.write_parquet_atomic(pa.Table.from_pylist(rows, schema=ITEMS_SCHEMA), path,
                                     checksum=True)
    return ref


def _repair_shards(workspace: Workspace, generator_version: str,
                   damaged: list[dict]) -> tuple[list[ShardRef], set[str]]:
    """The original shards of merged sketches whose PNG is missing or damaged, and the ids of
    those whose shard cannot be found intact (they are planned afresh instead)."""
    by_shard: dict[str, list[str]] = defaultdict(list)
    for row in damaged:
        by_shard[row["shard_id"]].append(row["sketch_id"])
    refs: list[ShardRef] = []
    orphans: set[str] = set()
    for sid, wanted in sorted(by_shard.items()):
        path = workspace.root / items_path(generator_version, sid)
        try:
            ids = [item["sketch_id"] for item in read_items(path)]
        except (FileNotFoundError, CorruptFileError):
            ids = []
        if ids and shard_id(ids) == sid and set(wanted) <= set(ids):
            refs.append(ShardRef(shard_id=sid, items=len(ids),
                                 items_path=items_path(generator_version, sid),
                                 result_path=result_path(generator_version, sid)))
        else:
            orphans.update(wanted)
    if damaged:
        logger().warning(
            "%d merged sketches have a missing or damaged PNG (sha256 differs): %d are drawn "
            "again in their original shards (%s), %d in new shards (their item list is gone)",
            len(damaged), len(damaged) - len(orphans), ", ".join(r.shard_id for r in refs)
            or "none", len(orphans))
    return refs, orphans


def plan_generation(
    workspace: Workspace,
    generator_version: str,
    sources: dict[str, VectorTable],
    styles: list[str],
    samples_per_face: int = 2,
    shard_size: int = 256,
    faces: list[str] | None = None,
    write: bool = True,
) -> Plan:
    """Work items (photo x style x sample) not yet in ``sketches``, cut into shards.

    Faces lacking a vector from the generator's identity or image encoder are skipped and
    counted by reason; a style without a text vector from its text encoder is an error.
    ``write=False`` is the dry run: the same counts, no files, and styles whose prompt is
    not embedded yet are allowed (the real run embeds them first).
    """
    styles = _check_styles(styles)
    if samples_per_face < 1 or shard_size < 1:
        raise ValueError("samples_per_face and shard_size must be at least 1")
    if write:
        text_vectors(workspace, sources["text"], styles)  # raises, naming styles lacking one
    photos, unmatched = _photos(workspace, faces)
    vectors = {role: _versions_by_face(workspace, sources[role].table)
               for role in ("identity", "image")}
    existing = _existing(workspace, generator_version)
    per_style = {s: StyleCounts() for s in styles}
    skipped: Counter[str] = Counter()
    wanted: list[dict] = []  # every eligible item in key order, merged or not
    order = sorted(zip(photos.column("face_id").to_pylist(),
                       photos.column("identity_id").to_pylist(), strict=True))
    for face, identity in order:
        reason = _skip_reason(face, vectors, sources)
        if reason:
            skipped[reason] += 1
        for style in styles:
            counts = per_style[style]
            counts.planned += samples_per_face
            if reason:
                counts.skipped_no_vectors += samples_per_face
                continue
            for index in range(samples_per_face):
                key = sketch_key(face, style, index, generator_version)
                wanted.append({"sketch_id": sketch_id(key), "face_id": face,
                               "identity_id": identity, "style": style,
                               "sample_index": index, "seed": sketch_seed(key)})
    digests = FileDigests.for_workspace(workspace.root)
    damaged = [existing[i["sketch_id"]] for i in wanted
               if i["sketch_id"] in existing and not checks_out(workspace.root,
                                                                 existing[i["sketch_id"]],
                                                                 digests)]
    if write:  # a dry run writes no file
        digests.save()
    repairs, orphans = _repair_shards(workspace, generator_version, damaged)
    repaired = {row["sketch_id"] for row in damaged} - orphans
    items: list[dict] = []
    for item in wanted:
        sid, counts = item["sketch_id"], per_style[item["style"]]
        if sid in existing and sid not in orphans and sid not in repaired:
            counts.skipped_existing += 1
            continue
        counts.todo += 1
        if sid not in repaired:  # a repaired sketch is drawn again by its original shard
            items.append(item)
    cuts = [items[start:start + shard_size] for start in range(0, len(items), shard_size)]
    shards = ([_write_shard(workspace, generator_version, rows) for rows in cuts] + repairs
              if write else [])
    plan = Plan(
        plan_path="", generator_version=generator_version, styles=styles,
        samples_per_face=samples_per_face, faces_considered=photos.num_rows,
        faces_eligible=photos.num_rows - sum(skipped.values()),
        skipped_faces=dict(sorted(skipped.items())), unmatched_filters=unmatched,
        per_style=per_style, items_todo=len(items) + len(repaired),
        shards=len(cuts) + len(repairs), shard_refs=shards,
    )
    if not write:
        return plan
    body = plan.model_dump_json(indent=1)
    name = f"plan-{hashlib.sha256(body.encode()).hexdigest()[:16]}.json"
    path = workspace.root / shard_dir(generator_version) / name
    plan.plan_path = str(path)
    storage.write_bytes_atomic(plan.model_dump_json(indent=1).encode(), path)
    return plan


def summary(plan: Plan) -> PlanSummary:
    return PlanSummary.model_validate(plan.model_dump(exclude={"shard_refs"}))


@task(name="plan-generation", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def plan_task(workspace: str, generator_version: str, sources: dict[str, VectorTable],
              styles: list[str], samples_per_face: int, shard_size: int,
              faces: list[str] | None = None) -> PlanSummary:
    """Returns the plan without its shard list; shards are read from ``plan_path``."""
    plan = plan_generation(Workspace.open(workspace), generator_version, sources, styles,
                           samples_per_face, shard_size, faces)
    return summary(plan)
