"""Draw one shard of candidate identities: images, detection, alignment, SFace vectors.

Candidate ``i`` of a source is a pure function of (weights, seed, truncation, i), so shards
can run in any order, on any worker, and a rerun draws the same pixels. Resuming without
duplicates or holes follows the generation stage's rules (tasks/generate/shard.py):
- every PNG is written to a temp name and renamed; after each candidate a hidden journal
  records the candidates so far, and the shard's result file is written last, so its
  presence means "finished";
- a rerun trusts a recorded candidate only if every PNG it names still has its sha256;
  anything else is drawn again (same latent, same pixels).

Candidates are written under ``<source>/.synthesize/candidates/``, outside the identity
folders ingestion reads; only the selection step (tasks/synthesize/source.py) moves the
kept ones into place. The generator and SFace load once per worker process.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from schemas.synthesize import (
    WORK_DIR,
    SynthesizeRequest,
    SynthShardRef,
    SynthShardResult,
)
from tasks import storage
from tasks.runtime import retry_transient
from tasks.synthesize.generator import latent, load_generator
from tasks.synthesize.hygiene import check_face, identity_vectors


class SimulatedCrash(RuntimeError):
    """Raised by ``run_shard(crash_after=n)``: tests use it to kill a shard mid-way."""


def identity_id(request: SynthesizeRequest, index: int) -> str:
    """``syn<key>-<index>``: the key differs between weights, seeds and truncations, so two
    sources never file different people under one id."""
    return f"syn{request.params.key()}-{index:06d}"


def shard_refs(request: SynthesizeRequest, first: int, last: int) -> list[SynthShardRef]:
    """Whole shards covering candidates ``first .. last-1``. Shard k always holds candidates
    ``k*S .. (k+1)*S-1`` (S is fixed per source), so a shard is the same work in every run."""
    size = request.shard_size
    refs = []
    for k in range(first // size, (last + size - 1) // size):
        shard = f"c{k * size:07d}-{size}"
        refs.append(SynthShardRef(shard_id=shard, first=k * size, count=size,
                                  result_path=f"{WORK_DIR}/shards/{shard}.json"))
    return refs


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_png(bgr: Any) -> bytes:
    import cv2

    ok, buffer = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError("could not encode a drawn face as PNG")
    return buffer.tobytes()


def journal_path(result: Path) -> Path:
    return result.with_name(f".{result.name}.journal")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Candidate records of a shard file or journal; none when absent or unreadable (a
    damaged file is not trusted: its candidates are drawn again)."""
    try:
        return json.loads(path.read_text())["candidates"]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def record_checks_out(root: Path, record: dict[str, Any]) -> bool:
    """Every PNG the record names is in candidates/ with the recorded sha256."""
    return all(file_sha(root / WORK_DIR / image["file"]) == image["sha256"]
               for image in record["images"])


def file_sha(path: Path) -> str | None:
    try:
        return _sha256(path.read_bytes())
    except OSError:
        return None


def write_records(path: Path, shard: SynthShardRef, request: SynthesizeRequest,
           records: dict[int, dict[str, Any]]) -> None:
    body = {"shard_id": shard.shard_id, "params": request.params.model_dump(),
            "images_per_identity": request.images_per_identity,
            "candidates": [records[i] for i in sorted(records)]}
    storage.write_bytes_atomic(json.dumps(body).encode(), path)


def draw_candidate(request: SynthesizeRequest, index: int, generator: Any, root: Path,
                   base: Any = None) -> tuple[dict[str, Any], float, int]:
    """Draw and check candidate ``index``: its first image decides whether it is a person
    at all; images 2..K (latent nudges) are drawn only then, and refused one by one.
    Returns the record, the seconds spent in the generator and the images drawn.

    ``base`` replaces the candidate's first latent (tests craft a look-alike with it)."""

    params = request.params
    ident = identity_id(request, index)
    record: dict[str, Any] = {"index": index, "identity_id": ident, "images": [],
                              "reason": None, "detail": "", "vector": None}
    seconds = 0.0
    first_vector = None
    for nudge in range(request.images_per_identity):
        z = latent(params.seed, index, nudge, params.sigma)
        if nudge == 0 and base is not None:
            z = base
        started = time.perf_counter()
        bgr = generator.draw(z, params.truncation, params.size)
        seconds += time.perf_counter() - started
        check = check_face(bgr, request.hygiene, request.detection_threshold,
                           request.detection_max_side)
        data = encode_png(bgr)
        file = f"candidates/{ident}/{nudge:02d}.png"
        storage.write_bytes_atomic(data, root / WORK_DIR / file)
        image = {"nudge": nudge, "file": file, "sha256": _sha256(data),
                 "reason": check.reason, "detail": check.detail, "score": check.score,
                 "alignment_error": check.alignment_error, "n_faces": check.n_faces,
                 "similarity_to_first": None}
        if check.ok:
            vectors, version = identity_vectors([check.crop], params.threads)
            if nudge == 0:
                first_vector = vectors[0]
                record["vector"] = [float(v) for v in first_vector]
                record["encoder_version"] = version
            else:
                image["similarity_to_first"] = float(vectors[0] @ first_vector)
        record["images"].append(image)
        if nudge == 0 and not check.ok:
            record["reason"], record["detail"] = check.reason, check.detail
            break  # not a usable person: no nudges of it
    return record, seconds, len(record["images"])


def run_shard(request: SynthesizeRequest, shard: SynthShardRef, *,
              crash_after: int | None = None) -> SynthShardResult:
    """Draw what this shard still lacks; returns counts (never images).

    ``crash_after`` raises SimulatedCrash after that many candidates are drawn (a test hook
    for a run killed mid-shard).
    """

    started = time.perf_counter()
    root = Path(request.out)
    result_path = root / shard.result_path
    journal = journal_path(result_path)
    wanted = range(shard.first, shard.first + shard.count)
    finished = result_path.is_file()
    previous = {r["index"]: r for r in read_records(result_path if finished else journal)
                if r["index"] in wanted}
    good = {i: r for i, r in previous.items() if record_checks_out(root, r)}
    if finished and len(good) == shard.count:
        journal.unlink(missing_ok=True)
        return SynthShardResult(shard_id=shard.shard_id, candidates=shard.count,
                                reused=shard.count, skipped=True,
                                seconds=time.perf_counter() - started)
    generator = load_generator(request.params.threads)
    if generator.digest != request.params.weights_sha256:
        raise RuntimeError(f"the installed generator weights ({generator.digest[:12]}) are not "
                           f"the ones this source was drawn with "
                           f"({request.params.weights_sha256[:12]})")
    records = dict(good)
    drawn = candidates = 0
    draw_seconds = 0.0
    for index in wanted:
        if index in records:
            continue
        records[index], seconds, images = draw_candidate(request, index, generator, root)
        draw_seconds += seconds
        drawn += images
        candidates += 1
        write_records(journal, shard, request, records)
        if crash_after is not None and candidates >= crash_after:
            raise SimulatedCrash(f"simulated crash after {crash_after} candidates")
    write_records(result_path, shard, request, records)  # last: its presence marks it finished
    journal.unlink(missing_ok=True)
    return SynthShardResult(shard_id=shard.shard_id, candidates=shard.count, drawn=drawn,
                            reused=len(good), draw_seconds=draw_seconds,
                            seconds=time.perf_counter() - started)


@task(name="synthesize-shard", task_run_name="shard-{shard.shard_id}", retries=2,
      retry_delay_seconds=5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def synthesize_shard_task(request: SynthesizeRequest, shard: SynthShardRef) -> SynthShardResult:
    """Thin Prefect wrapper: small references in, counts out; models load in the worker."""
    return run_shard(request, shard)
