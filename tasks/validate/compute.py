"""The metrics stage: threshold-free metrics for every sketch in scope, stored in
``sketch_metrics`` and reused while they still hold.

A stored row is reused when its ``metrics_version`` is current and its PNG still has the
recorded sha256. The version hashes everything a metric depends on besides the pixels: the
identity and image encoder versions, the gallery (a new mugshot can become a sketch's closest
impostor), the style judge (registry examples or CLIP prompts) and this module's code version.
Thresholds are not in it: they are applied afterwards (``metrics.reasons``), so tightening one
re-judges in milliseconds.

The version has three parts, ``<pixels>.<style>.<gallery>``, because every night's new
mugshots change the gallery and only the gallery, and a growing style's examples refit the
judge now and then: a row whose pixel part still holds is *rescored* (its impostor and margin
recomputed from its stored identity vector, a matrix product; re-judged from its stored image
vector when the judge changed) instead of being decoded and measured again. Without that
split a night's validation read every PNG of the workspace, a cost that grew with every night
(docs/results/reliability.md). When the gallery only grew, a row that none of the added faces
beats is not even rescored: it is *carried* as stored, still naming the gallery it was scored
against, and the judge reads it as current (``tasks.validate.galleries``); so a night no
longer rewrites every row of ``sketch_metrics``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from schemas.encoders import EncoderSpec
from schemas.records import SKETCHES_SCHEMA
from schemas.settings import load_settings
from schemas.styles import Style
from schemas.validation import (
    SKETCH_METRICS,
    SKETCH_METRICS_SCHEMA,
    MetricsReport,
    Reason,
    Scope,
)
from schemas.vectors import VectorTable
from tasks import storage
from tasks.digests import FileDigests
from tasks.embed import current_vectors
from tasks.encoders import load
from tasks.faces import to_aligned
from tasks.runtime import Laps, retry_transient
from tasks.storage import SKETCHES, Workspace
from tasks.styles.registry import styles_for
from tasks.validate import galleries
from tasks.validate import style_classifier as sc
from tasks.validate.health import measure
from tasks.validate.metrics import identity_scores
from tasks.validate.vectors import (
    check_png,
    gallery,
    gallery_fingerprint,
    read_image,
    resolve_source,
    sketch_vectors,
    stored_sketch_vectors,
)

CODE_VERSION = "metrics-1"
CHUNK = 256  # sketches decoded and encoded at a time: bounds memory, not speed
# Stored rows rescored at a time: no pixels, a 128-d vector each, and every chunk is a read
# of two vector tables and a commit to sketch_metrics (at 256, 48 of each on a 12,000-drawing
# workspace every night its gallery grew: 2.0 s of its 3.5).
RESCORE_CHUNK = 8192
SCOPE_COLUMNS = ["sketch_id", "face_id", "identity_id", "style", "generator_version",
                 "png_path", "png_sha256", "status", "width"]


@dataclass
class Gallery:
    """Every mugshot a sketch must not look like, and each face's row in ``vectors``
    (built once: every chunk scored looks faces up in it)."""

    faces: list[str]
    identities: list[str]
    vectors: np.ndarray
    row: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.row = {face: i for i, face in enumerate(self.faces)}


def scope_filter(scope: Scope) -> str | None:
    clauses = []
    if scope.generator_version:
        clauses.append(f"generator_version = {storage.quote(scope.generator_version)}")
    if scope.styles:
        clauses.append(storage.where_in("style", scope.styles))
    return " AND ".join(clauses) or None


def read_scope(workspace: Workspace, scope: Scope, columns: list[str] | None = None) -> pa.Table:
    rows = storage.read(workspace, SKETCHES, columns=columns or SCOPE_COLUMNS,
                        where=scope_filter(scope), schema=SKETCHES_SCHEMA)
    return rows.sort_by("sketch_id")


# --------------------------------------------------------------------------- the style judge


@dataclass
class StyleJudge:
    """Zero-shot (CLIP prompts) or the registry classifier; built lazily, since re-validating
    an unchanged dataset needs neither."""

    method: str | None
    fingerprint: str | None
    workspace: Workspace
    registry: Mapping[str, Style]
    image: VectorTable
    plan: sc.ExamplePlan | None = None
    text_spec: EncoderSpec | None = None
    _classifier: sc.StyleClassifier | None = None
    _prompts: dict[str, np.ndarray] | None = None
    source: str | None = None  # "trained" | "cached" once loaded

    @classmethod
    def for_workspace(cls, workspace: Workspace, registry: Mapping[str, Style],
                      image: VectorTable, size: int,
                      text_spec: EncoderSpec | None) -> StyleJudge:
        image_encoder = image.spec.name if image.spec else None
        if text_spec is not None and text_spec.name == image_encoder == "open_clip":
            key = {"text": text_spec.model_dump(), "image": image.version,
                   "prompts": {n: s.prompt for n, s in sorted(registry.items())}}
            fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
            return cls("clip-zero-shot", fingerprint[:16], workspace, registry, image,
                       text_spec=text_spec)
        plan = sc.plan_examples(workspace, registry, image.version, size)
        if plan is None:
            return cls(None, None, workspace, registry, image)
        plan = sc.reusable_plan(workspace, plan)
        return cls("classifier", plan.fingerprint, workspace, registry, image, plan=plan)

    @property
    def classifier(self) -> sc.StyleClassifier | None:
        if self._classifier is None and self.plan is not None:
            self._classifier, self.source = sc.load_or_train(self.workspace, self.plan,
                                                             self.registry, self.image)
        return self._classifier

    def classes(self) -> list[str]:
        if self.method == "clip-zero-shot":
            return sorted(self.registry)
        return sorted(self.plan.examples) if self.plan else []

    def prompts(self) -> dict[str, np.ndarray]:
        """The style prompts' text vectors (zero-shot), encoded once."""
        if self._prompts is None:
            names = sorted(self.registry)
            encoded = load(self.text_spec).encode([self.registry[n].prompt for n in names])
            self._prompts = dict(zip(names, np.asarray(encoded, np.float32), strict=True))
            self.source = "encoded"
        return self._prompts

    def judge(self, vectors: np.ndarray, styles: Sequence[str]
              ) -> tuple[list[str | None], list[float | None]]:
        if self.method == "classifier":
            return self.classifier.judge(vectors, styles)
        if self.method == "clip-zero-shot":
            return sc.zero_shot(vectors, self.prompts(), styles)
        return [None] * len(styles), [None] * len(styles)

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Every class's score per sketch, columns in ``classes()`` order: what the style
        contract compares between two drawings of one face (``tasks.validate.pairs``); the
        classifier's log-probabilities, CLIP's prompt cosines."""
        if self.method == "classifier":
            return self.classifier.log_probabilities(vectors)
        if self.method == "clip-zero-shot":
            return sc.prompt_scores(vectors, self.prompts())
        return np.zeros((len(vectors), 0))


def validate_judge(workspace: Workspace, size: int,
                   image_spec: EncoderSpec | None = None) -> StyleJudge:
    """The style judge ``clip4sketch validate`` builds for ``size``-px sketches (the registry
    with any configured styles folder, the settings' image encoder unless ``image_spec``
    names one): for measurements that must judge exactly as the validate stage does."""

    settings = load_settings(workspace.root)
    spec = image_spec or EncoderSpec(role="image", name=settings.image_encoder)
    return StyleJudge.for_workspace(workspace, styles_for(settings),
                                    resolve_source(workspace, spec), size, None)


# --------------------------------------------------------------------------- the stage


def metrics_version(identity: VectorTable, image: VectorTable, gallery_key: str,
                    style_key: str | None) -> str:
    """``<pixels>.<style>.<gallery>``: what the pixel-level metrics and stored vectors depend
    on (encoders, code), then the style judge, then the gallery the identity margins were
    taken against."""
    key = {"code": CODE_VERSION, "identity": identity.version, "image": image.version}
    pixels = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    style = hashlib.sha256(str(style_key).encode()).hexdigest()[:8]
    return f"{pixels}.{style}.{galleries.gallery_part(gallery_key)}"


def version_parts(version: str | None) -> tuple[str, str, str] | None:
    """(pixels, style, gallery) of a metrics version; None for versions written before the
    split, which never match a part."""
    parts = (version or "").split(".")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def sketch_resolution(rows: Sequence[Mapping[str, Any]]) -> int:
    """The sketches' most common width: the judge's examples are shrunk to it."""
    widths = Counter(r["width"] for r in rows if r["status"] == "ok" and r["width"])
    return int(widths.most_common(1)[0][0]) if widths else 64


def _same_file(row: Mapping[str, Any], stored: Mapping[str, Any] | None, problem: str | None,
               sha: str | None) -> bool:
    return (stored is not None and stored["png_sha256"] == sha
            and stored["status"] == row["status"] and stored["file_problem"] == problem)


def _reusable(row: Mapping[str, Any], stored: Mapping[str, Any] | None, problem: str | None,
              sha: str | None, version: str) -> bool:
    return _same_file(row, stored, problem, sha) and stored["metrics_version"] == version


def _carried_from(row: Mapping[str, Any], stored: Mapping[str, Any] | None,
                  problem: str | None, sha: str | None, version: str) -> str | None:
    """The gallery the row was scored against, when only the gallery changed since (None
    otherwise): whether it can be carried is then the lineage's to say."""
    if not _same_file(row, stored, problem, sha):
        return None
    old, new = version_parts(stored["metrics_version"]), version_parts(version)
    if old is None or new is None or old[:2] != new[:2]:
        return None
    return old[2]


def _rescorable(row: Mapping[str, Any], stored: Mapping[str, Any] | None, problem: str | None,
                sha: str | None, version: str) -> bool:
    """Only the gallery or the style judge changed since the row was measured."""
    if not _same_file(row, stored, problem, sha):
        return False
    old, new = version_parts(stored["metrics_version"]), version_parts(version)
    return old is not None and new is not None and old[0] == new[0]


def compute_metrics(
    workspace: Workspace,
    identity_spec: EncoderSpec,
    image_spec: EncoderSpec,
    registry: Mapping[str, Style],
    *,
    scope: Scope | None = None,
    text_spec: EncoderSpec | None = None,
    run_id: str = "local",
) -> MetricsReport:
    """Bring ``sketch_metrics`` up to date for every sketch in ``scope``."""
    started, laps = time.perf_counter(), Laps()
    scope = scope or Scope()
    rows = read_scope(workspace, scope).to_pylist()
    if not rows:
        raise LookupError(f"no sketches to validate in {workspace.root} (scope: "
                          f"{scope_filter(scope) or 'all'}): run `clip4sketch generate` first")
    identity = resolve_source(workspace, identity_spec)
    image = resolve_source(workspace, image_spec)
    g_faces, g_identities, g_vectors = gallery(workspace, identity)
    judge = StyleJudge.for_workspace(workspace, registry, image, sketch_resolution(rows),
                                      text_spec)
    version = metrics_version(identity, image, gallery_fingerprint(g_faces, g_identities),
                              judge.fingerprint)
    lineage = galleries.advance(workspace, identity, version_parts(version)[2], g_faces,
                                g_identities)
    stored = {r["sketch_id"]: r for r in storage.read(
        workspace, SKETCH_METRICS, schema=SKETCH_METRICS_SCHEMA).to_pylist()}
    todo: list[tuple[dict, str | None, str | None]] = []
    rescore: dict[str, tuple[dict, str | None, str | None]] = {}
    carry: dict[str, str] = {}  # sketch id -> the gallery it was scored against
    added: dict[str, list[galleries.Pair] | None] = {}  # gallery -> added since, once each
    digests = FileDigests.for_workspace(workspace.root)
    for row in rows:
        problem, sha = None, row["png_sha256"]
        if row["status"] != "nan":
            problem, sha = check_png(row["png_path"], row["png_sha256"], digests)
        old = stored.get(row["sketch_id"])
        if _reusable(row, old, problem, sha, version):
            continue
        scored = _carried_from(row, old, problem, sha, version)
        if scored is not None and scored not in added:
            added[scored] = lineage.added_since(scored)
        if scored is not None and added[scored] is not None:
            carry[row["sketch_id"]] = scored
            rescore[row["sketch_id"]] = (row, problem, sha)  # unless it holds (below)
        elif _rescorable(row, old, problem, sha, version):
            rescore[row["sketch_id"]] = (row, problem, sha)
        else:
            todo.append((row, problem, sha))
    digests.save()
    report = MetricsReport(run_id=run_id, metrics_version=version, sketches=len(rows),
                           computed=0, reused=0, style_method=judge.method,
                           style_classes=judge.classes(), encoded={"identity": 0, "image": 0},
                           vectors_reused={"identity": 0, "image": 0})
    laps.lap("read")
    gallery_ = Gallery(g_faces, g_identities, g_vectors)
    held, known = _holding(workspace, identity, stored, carry, added, gallery_)
    for sid in held:
        del rescore[sid]
    report.carried = len(held)
    report.carried_versions = sorted({stored[sid]["metrics_version"] for sid in held})
    laps.lap("carry")
    rescore_ids = list(rescore)
    for start in range(0, len(rescore_ids), RESCORE_CHUNK):
        part = [stored[sid] for sid in rescore_ids[start:start + RESCORE_CHUNK]]
        out, lost = _rescore_chunk(workspace, part, identity, image, judge,
                                   gallery_, version, run_id, known)
        if out.num_rows:
            storage.upsert(workspace, SKETCH_METRICS, out, "sketch_id")
        report.rescored += out.num_rows
        # A row whose stored identity vector is gone is measured again from its PNG.
        todo += [rescore[sid] for sid in sorted(lost)]
    laps.lap("rescore")
    report.computed = len(todo)
    report.reused = len(rows) - len(todo) - report.rescored - report.carried
    for start in range(0, len(todo), CHUNK):
        part = todo[start:start + CHUNK]
        out = _compute_chunk(workspace, part, identity, image, judge,
                             gallery_, version, run_id, report)
        storage.upsert(workspace, SKETCH_METRICS, out, "sketch_id")
    laps.lap("measure")
    if todo or rescore:
        storage.tag(workspace, SKETCH_METRICS, f"run-{run_id}")
    _trim(workspace, identity, lineage, stored,
          set(rescore) | {row["sketch_id"] for row, _, _ in todo})
    report.style_classifier = judge.source
    report.style_fingerprint = judge.fingerprint
    if judge._classifier is not None:
        report.classifier_cv_accuracy = judge._classifier.cv_accuracy
    report.sources = {s.role: {"table": s.table, "version": s.version, "dim": s.dim}
                      for s in (identity, image)}
    report.metrics_table_version = storage.table_version(workspace, SKETCH_METRICS)
    laps.lap("commit")
    report.step_seconds = laps.seconds
    report.seconds = time.perf_counter() - started
    return report


def _holding(workspace: Workspace, identity: VectorTable, stored: Mapping[str, Mapping[str, Any]],
             scored: Mapping[str, str], added: Mapping[str, list[galleries.Pair] | None],
             gallery_: Gallery) -> tuple[set[str], dict[str, np.ndarray]]:
    """Of the stored rows in ``scored``, those whose margins still hold against today's
    gallery: no face added since the gallery each was scored against is theirs or, of
    another identity, comes as close as their impostor. Rows never scored (no pixels
    measured) hold trivially; a row whose vector is gone does not. Also the stored identity
    vectors it read, which rescoring the others needs again."""
    measured = [sid for sid in scored if stored[sid]["pixel_std"] is not None]
    held = set(scored) - set(measured)
    vectors = stored_sketch_vectors(workspace, identity,
                                    [(sid, stored[sid]["png_sha256"]) for sid in measured])
    groups: dict[str, list[str]] = {}
    for sid in measured:
        if sid in vectors:
            groups.setdefault(scored[sid], []).append(sid)
    for since, ids in groups.items():
        pairs = added[since] or []
        faces = {face for face, _ in pairs}
        if any(face not in gallery_.row for face in faces):
            continue  # a hand-edited lineage naming faces today's gallery lacks: rescored
        rows = [stored[sid] for sid in ids]
        if not pairs:
            held.update(ids)
            continue
        matrix = np.stack([vectors[sid] for sid in ids])
        # The closest added face of another identity (NaN: none), as the full rescoring
        # would find it among the added faces.
        _, closest, _, _ = identity_scores(matrix, matrix, [r["identity_id"] for r in rows],
                                           gallery_.vectors[[gallery_.row[f] for f, _ in pairs]],
                                           [who for _, who in pairs])
        for sid, row, near in zip(ids, rows, closest, strict=True):
            impostor = row["impostor_similarity"]
            if row["face_id"] in faces:
                continue  # its own mugshot arrived: similarity and margin taken again
            if np.isfinite(near) and (impostor is None or near >= impostor):
                continue
            held.add(sid)
    return held, vectors


def _trim(workspace: Workspace, identity: VectorTable, lineage: galleries.Lineage,
          stored: Mapping[str, Mapping[str, Any]], rewritten: set[str]) -> None:
    """Keep the lineage's links only as far back as a stored row still needs them."""
    referenced = {parts[2] for sid, r in stored.items() if sid not in rewritten
                  and (parts := version_parts(r["metrics_version"])) is not None}
    trimmed = lineage.trimmed(referenced)
    if trimmed.links != lineage.links:
        galleries.save(galleries.lineage_path(workspace, identity), trimmed)


def _compute_chunk(workspace: Workspace, part: list[tuple[dict, str | None, str | None]],
                   identity: VectorTable, image: VectorTable, judge: StyleJudge,
                   gallery_: Gallery, version: str, run_id: str,
                   report: MetricsReport) -> pa.Table:
    now = dt.datetime.now(dt.UTC)
    images: dict[str, np.ndarray] = {}
    out: list[dict[str, Any]] = []
    for row, problem, sha in part:
        record = {
            "sketch_id": row["sketch_id"], "metrics_version": version, "png_sha256": sha,
            "face_id": row["face_id"], "identity_id": row["identity_id"],
            "style": row["style"], "generator_version": row["generator_version"],
            "status": row["status"], "file_problem": problem, "run_id": run_id,
            "computed_at": now,
        }
        if row["status"] != "nan" and problem is None:
            pixels = read_image(workspace.root, row["png_path"])
            if pixels is None:
                record["file_problem"] = Reason.UNREADABLE_PNG.value
            else:
                images[row["sketch_id"]] = pixels
                record.update(measure(pixels).as_dict())
        out.append(record)
    ready = [r for r in out if r["sketch_id"] in images]
    if ready:
        items = [(r["sketch_id"], r["png_sha256"]) for r in ready]

        def crops(ids: Sequence[str]) -> np.ndarray:
            return np.stack([to_aligned(images[i]) for i in ids])

        id_vectors, encoded = sketch_vectors(workspace, identity, items, crops, run_id)
        report.encoded["identity"] += encoded
        report.vectors_reused["identity"] += len(items) - encoded
        _score_identities(workspace, identity, ready, id_vectors, gallery_)
        styles = [r["style"] for r in ready]
        predicted: list[str | None] = [None] * len(ready)
        own: list[float | None] = [None] * len(ready)
        if _judges(judge, styles):
            im_vectors, encoded = sketch_vectors(workspace, image, items, crops, run_id)
            report.encoded["image"] += encoded
            report.vectors_reused["image"] += len(items) - encoded
            predicted, own = judge.judge(im_vectors, styles)
        _set_styles(judge, ready, predicted, own)
    return pa.Table.from_pylist(out, schema=SKETCH_METRICS_SCHEMA)


def _rescore_chunk(workspace: Workspace, part: list[dict], identity: VectorTable,
                   image: VectorTable, judge: StyleJudge,
                   gallery_: Gallery, version: str, run_id: str,
                   known: Mapping[str, np.ndarray] | None = None
                   ) -> tuple[pa.Table, set[str]]:
    """Stored rows with their identity scores taken again against today's gallery (and their
    style judged again from the stored image vectors, where the judge changed), and the ids
    of those whose stored vectors are gone (to be measured again)."""
    measured = [r for r in part if r["pixel_std"] is not None]  # decoded, so it was scored
    known = known or {}
    vectors = {r["sketch_id"]: known[r["sketch_id"]] for r in measured if r["sketch_id"] in known}
    unread = [(r["sketch_id"], r["png_sha256"]) for r in measured if r["sketch_id"] not in known]
    if unread:
        vectors |= stored_sketch_vectors(workspace, identity, unread)
    lost = {r["sketch_id"] for r in measured if r["sketch_id"] not in vectors}
    style_part = version_parts(version)[1]
    rejudge = [r for r in measured if r["sketch_id"] not in lost
               and version_parts(r["metrics_version"])[1] != style_part]
    if rejudge and _judges(judge, [r["style"] for r in rejudge]):
        found = stored_sketch_vectors(workspace, image,
                                      [(r["sketch_id"], r["png_sha256"]) for r in rejudge])
        lost |= {r["sketch_id"] for r in rejudge if r["sketch_id"] not in found}
        rejudge = [r for r in rejudge if r["sketch_id"] in found]
        if rejudge:
            predicted, own = judge.judge(np.stack([found[r["sketch_id"]] for r in rejudge]),
                                         [r["style"] for r in rejudge])
            _set_styles(judge, rejudge, predicted, own)
    elif rejudge:  # no judge for these styles any more: no call, as a fresh measurement
        _set_styles(judge, rejudge, [None] * len(rejudge), [None] * len(rejudge))
    now = dt.datetime.now(dt.UTC)
    out = [{**r, "metrics_version": version, "run_id": run_id, "computed_at": now}
           for r in part if r["sketch_id"] not in lost]
    scored = [r for r in out if r["sketch_id"] in vectors]
    if scored:
        _score_identities(workspace, identity, scored,
                          np.stack([vectors[r["sketch_id"]] for r in scored]), gallery_)
    return pa.Table.from_pylist(out, schema=SKETCH_METRICS_SCHEMA), lost


def _judges(judge: StyleJudge, styles: Sequence[str]) -> bool:
    """Whether the judge has a class for any of these styles (else nothing is judged)."""
    return judge.method is not None and bool(set(styles) & set(judge.classes()))


def _set_styles(judge: StyleJudge, records: Sequence[dict], predicted: Sequence[str | None],
                own: Sequence[float | None]) -> None:
    for record, called, score in zip(records, predicted, own, strict=True):
        record.update(style_predicted=called, style_score=score,
                      style_method=judge.method if called else None)


def _score_identities(workspace: Workspace, identity: VectorTable, records: Sequence[dict],
                      vectors: np.ndarray, gallery_: Gallery) -> None:
    """Each record's cosine to its own mugshot and margin over the gallery's closest other
    identity, set in place (a record whose mugshot has no vector gets nulls). A mugshot's
    vector is the gallery's where it is one of its photos (no read)."""
    sources = {r["face_id"]: gallery_.vectors[gallery_.row[r["face_id"]]] for r in records
               if r["face_id"] in gallery_.row}
    if missing := [r["face_id"] for r in records if r["face_id"] not in sources]:
        sources |= current_vectors(workspace, identity, missing)
    nan = np.full(identity.dim, np.nan, np.float32)
    similarity, impostor, impostor_id, margin = identity_scores(
        vectors, np.stack([sources.get(r["face_id"], nan) for r in records]),
        [r["identity_id"] for r in records], gallery_.vectors, gallery_.identities)
    for i, record in enumerate(records):
        record.update(identity_similarity=_finite(similarity[i]),
                      impostor_similarity=_finite(impostor[i]),
                      impostor_identity=impostor_id[i], identity_margin=_finite(margin[i]))


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


@task(name="validate-metrics", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def metrics_task(workspace: str, identity: EncoderSpec, image: EncoderSpec,
                 text: EncoderSpec | None, scope: Scope, run_id: str) -> MetricsReport:
    """Thin Prefect wrapper of ``compute_metrics``; the style registry is the workspace's."""
    return compute_metrics(Workspace.open(workspace), identity, image,
                           styles_for(load_settings(workspace)), scope=scope, text_spec=text,
                           run_id=run_id)
