"""Plan a generation run: which sketches are missing, grouped into shards.

A sketch's key is (face id, style, sample index, generator version). Its id and its seed are
both hashes of the key, so the same sketch gets the same id and the same noise in every run,
on every machine: a rerun recognises finished work by id and regenerates lost work exactly.

Shards are deterministic too: items are sorted by key and cut into fixed-size groups, and a
shard's id is a hash of its sketch ids. An interrupted run that is planned again (with nothing
merged in between) gets the same shards back, so its finished shard files are found and reused.
Only small references leave this module: the items of each shard go to a Parquet file.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from schemas.generation import ConditionSource, Plan, PlanSummary, ShardRef, StyleCounts
from schemas.records import FACES_SCHEMA, SKETCHES_SCHEMA
from tasks import storage
from tasks.generate.conditions import text_vectors
from tasks.runtime import retry_transient
from tasks.storage import FACES, SKETCHES, Workspace

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
                 sources: dict[str, ConditionSource]) -> str | None:
    for role, missing, stale in (("identity", SKIP_NO_IDENTITY, SKIP_STALE_IDENTITY),
                                 ("image", SKIP_NO_IMAGE, SKIP_STALE_IMAGE)):
        version = vectors[role].get(face)
        if version is None:
            return missing
        if version != sources[role].version:
            return stale
    return None


def _existing(workspace: Workspace, generator_version: str) -> set[str]:
    rows = storage.read(workspace, SKETCHES, columns=["sketch_id"],
                        where=f"generator_version = {storage.quote(generator_version)}",
                        schema=SKETCHES_SCHEMA)
    return set(rows.column("sketch_id").to_pylist())


def _write_shard(workspace: Workspace, generator_version: str, rows: list[dict]) -> ShardRef:
    sid = shard_id(r["sketch_id"] for r in rows)
    folder = shard_dir(generator_version)
    ref = ShardRef(shard_id=sid, items=len(rows), items_path=f"{folder}/{sid}.items.parquet",
                   result_path=f"{folder}/{sid}.parquet")
    path = workspace.root / ref.items_path
    # Same id, same items: an existing file already holds exactly these rows.
    if not path.is_file():
        storage.write_parquet_atomic(pa.Table.from_pylist(rows, schema=ITEMS_SCHEMA), path)
    return ref


def plan_generation(
    workspace: Workspace,
    generator_version: str,
    sources: dict[str, ConditionSource],
    styles: list[str],
    samples_per_face: int = 2,
    shard_size: int = 256,
    faces: list[str] | None = None,
) -> Plan:
    """Work items (photo x style x sample) not yet in ``sketches``, cut into shards.

    Faces lacking a vector from the generator's identity or image encoder are skipped and
    counted by reason; a style without a text vector from its text encoder is an error.
    """
    styles = _check_styles(styles)
    if samples_per_face < 1 or shard_size < 1:
        raise ValueError("samples_per_face and shard_size must be at least 1")
    text_vectors(workspace, sources["text"], styles)  # raises, naming the styles that lack one
    photos, unmatched = _photos(workspace, faces)
    vectors = {role: _versions_by_face(workspace, sources[role].table)
               for role in ("identity", "image")}
    existing = _existing(workspace, generator_version)
    per_style = {s: StyleCounts() for s in styles}
    skipped: Counter[str] = Counter()
    items: list[dict] = []
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
                sid = sketch_id(key)
                if sid in existing:
                    counts.skipped_existing += 1
                    continue
                counts.todo += 1
                items.append({"sketch_id": sid, "face_id": face, "identity_id": identity,
                              "style": style, "sample_index": index, "seed": sketch_seed(key)})
    shards = [_write_shard(workspace, generator_version, items[start:start + shard_size])
              for start in range(0, len(items), shard_size)]
    plan = Plan(
        plan_path="", generator_version=generator_version, styles=styles,
        samples_per_face=samples_per_face, faces_considered=photos.num_rows,
        faces_eligible=photos.num_rows - sum(skipped.values()),
        skipped_faces=dict(sorted(skipped.items())), unmatched_filters=unmatched,
        per_style=per_style, items_todo=len(items), shards=len(shards), shard_refs=shards,
    )
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
def plan_task(workspace: str, generator_version: str, sources: dict[str, ConditionSource],
              styles: list[str], samples_per_face: int, shard_size: int,
              faces: list[str] | None = None) -> PlanSummary:
    """Returns the plan without its shard list; shards are read from ``plan_path``."""
    plan = plan_generation(Workspace.open(workspace), generator_version, sources, styles,
                           samples_per_face, shard_size, faces)
    return summary(plan)
