"""The synthetic source folder: its manifest, and the one step that decides who is kept.

Layout (``ingest DIR`` reads it as any folder source: one sub-folder per identity)::

    DIR/synthetic-manifest.json       generator, weights digest, seed, truncation, sigma,
                                      thresholds; every identity and every refusal
    DIR/syn<key>-<index>/<id>_<k>.png the kept identities (k: image, 00 the undisturbed one)
    DIR/.gitignore                    "*": drawn faces are never committed by accident
    DIR/.synthesize/                  shards, candidate images (refused ones stay here for
                                      review), never read by ingestion (a dot-folder)

Who is kept is decided by one task, in candidate order, never by the shards: a candidate is
refused as ``duplicate_identity`` when SFace finds it too close to an identity kept before it
(or to a stored photo of the workspace), so the outcome depends only on the candidates, not
on which shard finished first. Candidates are judged until N identities are kept; the ones
drawn beyond that stay as surplus for a later, larger request. Identity folders are built
under a temp name and renamed, and the manifest is written last, so a killed run resumes
with every identity once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from schemas.synthesize import (
    MANIFEST_NAME,
    SFACE_MATCH_THRESHOLD,
    WORK_DIR,
    ImpostorStats,
    SynthesizeRequest,
)
from tasks import storage
from tasks.embed import vector_matrix
from tasks.storage import Workspace
from tasks.synthesize.hygiene import identity_vectors, nearest, pair_similarities
from tasks.synthesize.shard import file_sha, read_records, shard_refs

LICENCE = (
    "Faces drawn by MobileStyleGAN (random-face 2021.7.21.1). The package's code is "
    "Apache-2.0; the weights' terms are not stated (a StyleGAN-family model trained on FFHQ). "
    "Research use only; check upstream before any other use. Never commit these images."
)
# Parameters a folder is drawn with once and for all: changing any of them would put other
# people (or other pixels) under the same identity ids.
FIXED = ("generator", "weights_sha256", "seed", "truncation", "size", "sigma", "threads")


class SourceMismatchError(ValueError):
    """The folder was drawn with other parameters; resuming would mix two sources."""


@dataclass
class SourceState:
    """The manifest as read (or new), plus what this run's selection changed."""

    root: Path
    manifest: dict[str, Any]
    refused_now: Counter = field(default_factory=Counter)
    images_refused_now: Counter = field(default_factory=Counter)
    kept_now: int = 0
    judged_now: int = 0
    stopped_at_gap: int | None = None  # first candidate not drawn (a failed shard)

    @property
    def kept(self) -> int:
        return len(self.manifest["identities"])

    @property
    def next_index(self) -> int:
        return self.manifest["judged_through"] + 1

    @property
    def judged(self) -> int:
        return self.next_index


def open_source(request: SynthesizeRequest) -> SourceState:
    """Create the folder, or check that an existing one was drawn with the same parameters
    (its shard size and images per identity stay those of its first run)."""
    root = Path(request.out).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        storage.write_bytes_atomic(b"# drawn faces: never committed (weights' terms unstated)\n*\n",
                                   ignore)
    path = root / MANIFEST_NAME
    params = request.params.model_dump()
    if not path.is_file():
        if any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
            raise SourceMismatchError(f"{root} already holds folders but no {MANIFEST_NAME}: "
                                      "give synthesize-mugshots an empty or new folder")
        manifest = {"format": 1, **params, "images_per_identity": request.images_per_identity,
                    "shard_size": request.shard_size, "licence": LICENCE,
                    "identities": [], "refused": [], "refused_images": [],
                    "judged_through": -1}
        return SourceState(root, manifest)
    manifest = json.loads(path.read_text())
    differ = {k: (manifest.get(k), params[k]) for k in FIXED if manifest.get(k) != params[k]}
    if manifest.get("images_per_identity") != request.images_per_identity:
        differ["images_per_identity"] = (manifest.get("images_per_identity"),
                                         request.images_per_identity)
    if differ:
        said = ", ".join(f"{k} {old!r} (asked {new!r})" for k, (old, new) in differ.items())
        raise SourceMismatchError(f"{root} was drawn with {said}; use another folder, or the "
                                  "same values to resume or extend it")
    return SourceState(root, manifest)


def own_prefix(request: SynthesizeRequest) -> str:
    return f"syn{request.params.key()}-"


def stored_vectors(request: SynthesizeRequest, encoder_version: str) -> tuple[np.ndarray,
                                                                               list[str]]:
    """SFace vectors of the workspace's stored photos (other sources only), to refuse a
    drawn face that is someone already in the database. Empty without a workspace table."""
    if not request.workspace:
        return np.zeros((0, 128), np.float32), []

    workspace = Workspace.open(request.workspace)
    table = "emb_identity_sface_128"
    if table not in storage.table_names(workspace):
        return np.zeros((0, 128), np.float32), []
    rows = storage.read(workspace, table,
                        where=f"kind = 'photo' AND encoder_version = "
                              f"{storage.quote(encoder_version)}",
                        columns=["identity_id", "vector"])
    ids = rows.column("identity_id").to_pylist()
    keep = [i for i, name in enumerate(ids) if not name.startswith(own_prefix(request))]
    vectors = vector_matrix(rows.column("vector"), 128)[keep]
    return vectors, [ids[i] for i in keep]


def candidate_records(state: SourceState, request: SynthesizeRequest, first: int,
                      last: int) -> dict[int, dict[str, Any]]:
    """Finished records of candidates ``first .. last-1`` (a failed shard leaves a gap)."""
    records: dict[int, dict[str, Any]] = {}
    size = state.manifest["shard_size"]
    sticky = request.model_copy(update={"shard_size": size})
    for ref in shard_refs(sticky, first, last):
        path = state.root / ref.result_path
        if path.is_file():
            for record in read_records(path):
                records[record["index"]] = record
    return records


def _link_identity(root: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Build ``DIR/<identity>/`` from the candidate's good images: hard links (no copy of the
    bytes) in a temp folder, renamed into place, so ingestion never sees half a person."""
    ident = record["identity_id"]
    images = [i for i in record["images"] if i["reason"] is None]
    target = root / ident
    entries = [{"file": f"{ident}/{ident}_{i['nudge']:02d}.png", "sha256": i["sha256"],
                **{k: i[k] for k in ("nudge", "score", "alignment_error", "n_faces",
                                     "similarity_to_first")}} for i in images]
    if target.is_dir() and all(file_sha(root / e["file"]) == e["sha256"] for e in entries):
        return entries  # built by an earlier, interrupted run
    temp = root / WORK_DIR / "tmp" / ident
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    for image, entry in zip(images, entries, strict=True):
        source, dest = root / WORK_DIR / image["file"], temp / Path(entry["file"]).name
        try:
            os.link(source, dest)
        except OSError:  # another filesystem, or no hard links: copy instead
            shutil.copyfile(source, dest)
    if target.exists():
        shutil.rmtree(target)
    os.replace(temp, target)
    return entries


def select(state: SourceState, request: SynthesizeRequest, last: int) -> None:
    """Judge candidates from the next unjudged one, in order, until N identities are kept
    or the drawn candidates (``< last``) run out; then write the manifest."""
    first = state.next_index
    records = candidate_records(state, request, first, last)
    manifest = state.manifest
    hygiene = request.hygiene
    kept_vectors = _kept_vectors(state, request)
    kept_ids = [i["identity_id"] for i in manifest["identities"]]
    stored, stored_ids = _stored(request) if first < last else (np.zeros((0, 128)), [])
    for index in range(first, last):
        if state.kept >= request.identities:
            break
        record = records.get(index)
        if record is None:
            state.stopped_at_gap = index
            break
        refusal = _refusal(record, kept_vectors, kept_ids, stored, stored_ids,
                           hygiene.max_identity_similarity)
        if refusal:
            reason, detail = refusal
            manifest["refused"].append({"index": index, "identity_id": record["identity_id"],
                                        "reason": reason, "detail": detail,
                                        "images": [i["file"] for i in record["images"]]})
            state.refused_now[reason] += 1
        else:
            vector = np.asarray(record["vector"], np.float32)
            entries = _link_identity(state.root, record)
            manifest["identities"].append({
                "identity_id": record["identity_id"], "index": index,
                "nearest_similarity": _nearest_detail(vector, kept_vectors, kept_ids, stored,
                                                      stored_ids),
                "images": entries})
            for image in record["images"]:
                if image["reason"] is not None:
                    manifest["refused_images"].append({
                        "identity_id": record["identity_id"], "nudge": image["nudge"],
                        "reason": image["reason"], "detail": image["detail"],
                        "file": image["file"]})
                    state.images_refused_now[image["reason"]] += 1
            kept_vectors = np.vstack([kept_vectors, vector[None]])
            kept_ids.append(record["identity_id"])
            state.kept_now += 1
        manifest["judged_through"] = index
        state.judged_now += 1
    write_manifest(state, request)


@task(name="select-identities", cache_policy=NO_CACHE)
def select_task(request: SynthesizeRequest, last: int) -> dict[str, object]:
    """Judge drawn candidates in order and build identity folders: one writer per source."""
    state = open_source(request)
    select(state, request, last)
    return {"kept": state.kept, "kept_now": state.kept_now, "judged_now": state.judged_now,
            "next_index": state.next_index, "refused": dict(state.refused_now),
            "images_refused": dict(state.images_refused_now), "gap": state.stopped_at_gap}


def _stored(request: SynthesizeRequest) -> tuple[np.ndarray, list[str]]:
    _, version = identity_vectors([], request.params.threads)
    return stored_vectors(request, version)


def _refusal(record: dict[str, Any], kept: np.ndarray, kept_ids: list[str],
             stored: np.ndarray, stored_ids: list[str], limit: float
             ) -> tuple[str, str] | None:
    if record["reason"] is not None:
        return record["reason"], record["detail"]
    vector = np.asarray(record["vector"], np.float32)
    for pool, ids, what in ((kept, kept_ids, "drawn"), (stored, stored_ids, "stored")):
        best, score = nearest(vector, pool)
        if best >= 0 and score > limit:
            return "duplicate_identity", (f"SFace {score:.3f} > {limit} to {what} identity "
                                          f"{ids[best]}")
    return None


def _nearest_detail(vector: np.ndarray, kept: np.ndarray, kept_ids: list[str],
                    stored: np.ndarray, stored_ids: list[str]) -> float | None:
    scores = [nearest(vector, pool)[1] for pool in (kept, stored) if len(pool)]
    return round(max(scores), 4) if scores else None


def _kept_vectors(state: SourceState, request: SynthesizeRequest) -> np.ndarray:
    """Vectors of the identities kept so far, read back from their shard records."""
    identities = state.manifest["identities"]
    if not identities:
        return np.zeros((0, 128), np.float32)
    indexes = [i["index"] for i in identities]
    records = candidate_records(state, request, min(indexes), max(indexes) + 1)
    missing = [i for i in indexes if i not in records]
    if missing:
        raise RuntimeError(f"{state.root / WORK_DIR} lacks the shard records of kept "
                           f"candidates {missing[:5]}: the folder's work files were removed")
    return np.asarray([records[i]["vector"] for i in indexes], np.float32)


def impostor_stats(state: SourceState, request: SynthesizeRequest) -> ImpostorStats:
    """SFace cosine between kept identities (first images), and of nudges to their first."""

    vectors = _kept_vectors(state, request)
    pairs = pair_similarities(vectors)
    nudges = [i["similarity_to_first"] for ident in state.manifest["identities"]
              for i in ident["images"] if i["similarity_to_first"] is not None]
    if not len(pairs):
        return ImpostorStats(identities=len(vectors),
                             nudge_median=float(np.median(nudges)) if nudges else None)
    return ImpostorStats(
        identities=len(vectors), pairs=len(pairs), median=float(np.median(pairs)),
        p99=float(np.quantile(pairs, 0.99)), max=float(pairs.max()),
        share_above_match=float((pairs > SFACE_MATCH_THRESHOLD).mean()),
        nudge_median=float(np.median(nudges)) if nudges else None)


def write_manifest(state: SourceState, request: SynthesizeRequest) -> Path:
    manifest = state.manifest
    manifest["requested"] = max(request.identities, manifest.get("requested", 0))
    manifest["hygiene"] = request.hygiene.model_dump()
    manifest["detection_threshold"] = request.detection_threshold
    manifest["updated_at"] = dt.datetime.now(dt.UTC).isoformat()
    manifest["counts"] = {
        "identities": len(manifest["identities"]),
        "images": sum(len(i["images"]) for i in manifest["identities"]),
        "refused": dict(Counter(r["reason"] for r in manifest["refused"])),
        "refused_images": dict(Counter(r["reason"] for r in manifest["refused_images"])),
    }
    return storage.write_bytes_atomic(json.dumps(manifest, indent=1).encode(),
                                      state.root / MANIFEST_NAME)
