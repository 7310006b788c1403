"""Ingest a source into the ``faces`` and ``quarantine`` tables.

Idempotent by content: a face's id is the sha256 of its bytes, so a re-run only
decodes files it has not stored, and the same bytes filed under two identities are
refused (neither label can be trusted) rather than silently merged. Rows are written
every ``write_every`` files, so a killed run keeps what it finished.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from schemas.arrow import to_arrow
from schemas.records import (
    ALIGNED_SIZE,
    ARCFACE_TEMPLATE,
    FACES_SCHEMA,
    QUARANTINE_SCHEMA,
    FaceRecord,
    QuarantineReason,
    QuarantineRecord,
)
from schemas.settings import IngestSettings
from tasks import storage
from tasks.digests import FileDigests, source_digests
from tasks.ingest.align import align_face, detect_faces, encode_png, pre_aligned
from tasks.ingest.decode import DecodedImage, ImageRejected, decode_image
from tasks.ingest.sources import SourceItem, printable, read_source
from tasks.progress import Progress
from tasks.runtime import retry_transient
from tasks.storage import FACES, QUARANTINE, Workspace


class IngestReport(BaseModel):
    """What one ingest did: the small reference passed on to later tasks and artifacts."""

    source: str
    run_id: str
    seen: int = 0
    ingested: dict[str, int] = Field(default_factory=dict)  # by kind
    skipped: dict[str, int] = Field(default_factory=dict)  # by why
    quarantined: dict[str, int] = Field(default_factory=dict)  # by reason
    faces_version: int | None = None
    quarantine_version: int | None = None
    # Files read and hashed to learn their face id; the others' digests came from the
    # source's digest cache (tasks/digests.py). All of them on a first night, or after the
    # cache was lost; a few on a night that brings a few.
    files_read: int = 0
    seconds: float = 0.0

    @property
    def n_ingested(self) -> int:
        return sum(self.ingested.values())

    @property
    def n_quarantined(self) -> int:
        return sum(self.quarantined.values())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _quarantine(item: SourceItem, reason: QuarantineReason, detail: str, sha: str | None,
                run_id: str) -> QuarantineRecord:
    # A refused name may not be UTF-8 (that can be why it was refused): store it escaped.
    path, identity = printable(str(item.path)), printable(item.identity_id)
    key = "\0".join([path, item.kind, identity, sha or "", reason.value])
    return QuarantineRecord(
        quarantine_id=hashlib.sha256(key.encode()).hexdigest()[:32],
        source_path=path,
        identity_id=identity,
        kind=item.kind,
        sha256=sha,
        reason=reason.value,
        detail=printable(detail),
        manifest_line=item.manifest_line,
        run_id=run_id,
        quarantined_at=_now(),
    )


def _read_bytes(item: SourceItem, limit: int) -> bytes:
    try:
        size = item.path.stat().st_size
        if size > limit:
            raise ImageRejected(QuarantineReason.FILE_TOO_LARGE,
                                f"{size:,} bytes, over the {limit:,}-byte limit")
        return item.path.read_bytes()
    except FileNotFoundError as error:
        raise ImageRejected(QuarantineReason.MISSING_FILE, "file vanished during ingest") from error
    except (PermissionError, IsADirectoryError, OSError) as error:
        if isinstance(error, ImageRejected):
            raise
        raise ImageRejected(QuarantineReason.UNREADABLE_FILE, str(error)) from error


def pixel_digest(decoded: DecodedImage) -> str:
    """Hash of the decoded pixels: the same picture saved in two formats is one face."""
    digest = hashlib.sha256(str(decoded.bgr.shape).encode())
    digest.update(decoded.bgr.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Analysis:
    """What decoding, detection and alignment made of one file's bytes.

    A pure function of the bytes and the ingest settings (``analyse``), so it can be computed
    anywhere (a Dask worker: ``tasks.ingest.shards``) and handed to ``ingest_source``, which
    makes every decision that depends on other files. ``pixel_sha`` is None when decoding
    refused the file (``refusal`` says why); set with a ``refusal``, no face was found;
    otherwise ``face`` holds the record's fields that come from the pixels.
    """

    pixel_sha: str | None = None
    refusal: tuple[QuarantineReason, str] | None = None
    face: dict[str, Any] | None = None


def _face_fields(decoded: DecodedImage, settings: IngestSettings,
                 is_pre_aligned: bool) -> dict[str, Any]:
    """Detect and align one decoded image; raises ImageRejected when there is no face."""
    if is_pre_aligned:
        crop = pre_aligned(decoded.bgr)
        scale_x, scale_y = decoded.width / ALIGNED_SIZE, decoded.height / ALIGNED_SIZE
        landmarks = [v for x, y in ARCFACE_TEMPLATE for v in (x * scale_x, y * scale_y)]
        box, score, n_faces = [0.0, 0.0, float(decoded.width), float(decoded.height)], 1.0, 1
    else:
        faces = detect_faces(decoded.bgr, settings.detection_threshold,
                             settings.detection_max_side)
        if not faces:
            raise ImageRejected(
                QuarantineReason.NO_FACE,
                f"no face at detection threshold {settings.detection_threshold}",
            )
        face = faces[0]
        crop = align_face(decoded.bgr, face.landmarks)
        landmarks = [float(v) for v in face.landmarks.reshape(-1)]
        box, score, n_faces = list(face.box), face.score, len(faces)
    return dict(
        width=decoded.width,
        height=decoded.height,
        image_format=decoded.image_format,
        image_mode=decoded.image_mode,
        exif_transposed=decoded.exif_transposed,
        alignment="pre-aligned" if is_pre_aligned else "detected",
        det_box=box,
        det_landmarks=landmarks,
        det_score=score,
        n_faces=n_faces,
        aligned_png=encode_png(crop),
    )


def _face_record(fields: dict[str, Any], item: SourceItem, face_id: str, pixel_sha: str,
                 run_id: str) -> FaceRecord:
    return FaceRecord(
        face_id=face_id,
        identity_id=item.identity_id,
        kind=item.kind,
        style=item.style,
        paired_face_id=None,
        source_path=str(item.path),
        pixel_sha256=pixel_sha,
        **fields,
        run_id=run_id,
        ingested_at=_now(),
    )


def locate_face(decoded: DecodedImage, item: SourceItem, face_id: str, pixel_sha: str,
                run_id: str, settings: IngestSettings, is_pre_aligned: bool) -> FaceRecord:
    """Detect and align one decoded image; raises ImageRejected when there is no face."""
    return _face_record(_face_fields(decoded, settings, is_pre_aligned), item, face_id,
                        pixel_sha, run_id)


def analyse(data: bytes, settings: IngestSettings, is_pre_aligned: bool) -> Analysis:
    """Decode, detect and align one file's bytes (see ``Analysis``)."""
    try:
        decoded = decode_image(data, max_pixels=settings.max_pixels, min_side=settings.min_side)
    except ImageRejected as rejected:
        return Analysis(refusal=(rejected.reason, rejected.detail))
    pixel_sha = pixel_digest(decoded)
    try:
        return Analysis(pixel_sha, face=_face_fields(decoded, settings, is_pre_aligned))
    except ImageRejected as rejected:
        return Analysis(pixel_sha, refusal=(rejected.reason, rejected.detail))


@dataclass
class _Claims:
    """Which identity owns which content (bytes or pixels); the first claim wins.

    Stored faces claim first, then files in source order. A later claim on the same
    content under another identity is refused, because one picture cannot show two
    people and guessing which label is right would corrupt both identities.
    """

    by_bytes: dict[str, tuple[str, str]] = field(default_factory=dict)  # sha -> (identity, face)
    by_pixels: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def from_store(cls, workspace: Workspace) -> _Claims:
        rows = storage.read(workspace, FACES, columns=["face_id", "identity_id", "pixel_sha256"],
                            schema=FACES_SCHEMA)
        claims = cls()
        columns = (rows.column(c).to_pylist() for c in rows.column_names)
        for face_id, identity, pixels in zip(*columns, strict=True):
            claims.add(face_id, pixels, identity)
        return claims

    def known_picture(self, sha: str, identity: str, pictures: Mapping[str, str]
                      ) -> str | None:
        """The face an earlier night found these bytes to be another encoding of, when that
        face is claimed by ``identity`` (``pictures``: ``known_pictures``); then decoding
        them would only find the same duplicate picture again."""
        owner = self.by_pixels.get(pictures.get(sha, ""))
        return owner[1] if owner is not None and owner[0] == identity else None

    def add(self, face_id: str, pixel_sha: str, identity: str) -> None:
        self.by_bytes.setdefault(face_id, (identity, face_id))
        self.by_pixels.setdefault(pixel_sha, (identity, face_id))


def _stored_refusals(workspace: Workspace) -> set[tuple[str, str, str]]:
    """Content already refused, so unchanged bad files are not decoded again every night."""
    rows = storage.read(workspace, QUARANTINE, columns=["sha256", "identity_id", "kind"],
                        where="sha256 IS NOT NULL", schema=QUARANTINE_SCHEMA)
    return set(zip(*(rows.column(c).to_pylist() for c in ("sha256", "identity_id", "kind")),
                   strict=True))


def read_hashes(items: list[SourceItem], settings: IngestSettings, run_id: str,
                quarantine: list[QuarantineRecord],
                keep: Callable[[str, bytes], None] | None = None,
                digests: FileDigests | None = None) -> list[tuple[SourceItem, str]]:
    """Each readable item with the sha256 of its bytes (its face id); the others refused into
    ``quarantine``. ``keep(sha, data)`` receives the bytes of each file read, for a caller that
    decodes them here; a sharded run keeps none (its workers read the files again).
    ``digests``: a file whose stat is the one it was last hashed at is not read again (its
    bytes then reach no ``keep``: ``read_unchanged`` reads them when they are needed)."""
    readable = []
    for item in items:
        if item.refusal:
            quarantine.append(_quarantine(item, item.refusal[0], item.refusal[1], None, run_id))
            continue
        stat, sha, key = None, None, ""
        if digests is not None:
            key = digests.key(item.path)
            stat, sha = digests.known(key)
            if sha is not None and stat is not None and stat[0] <= settings.max_file_bytes:
                readable.append((item, sha))
                continue
        try:
            data = _read_bytes(item, settings.max_file_bytes)
        except ImageRejected as rejected:
            quarantine.append(_quarantine(item, rejected.reason, rejected.detail, None, run_id))
            continue
        sha = hashlib.sha256(data).hexdigest()
        if digests is not None:
            digests.learn(key, sha, stat)
        if keep is not None:
            keep(sha, data)
        readable.append((item, sha))
    return readable


def read_unchanged(path: Path, sha: str, limit: int) -> bytes | None:
    """The file's bytes when they still hash to ``sha``; None when it changed, grew over
    ``limit`` or vanished since it was hashed (its next ingest reads it afresh)."""
    try:
        if path.stat().st_size > limit:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha else None


def to_analyse(workspace: Workspace, readable: list[tuple[SourceItem, str]],
               retry_quarantined: bool = False,
               pictures: Mapping[str, str] | None = None) -> list[tuple[SourceItem, str]]:
    """The first item of every content ``ingest_source`` may have to decode: not stored yet,
    not refused before under the same identity and kind (unless retried), and not a known
    duplicate picture of a stored face of its identity (``pictures``, ``known_pictures``). A
    superset of what it decodes (a file whose bytes an earlier file of the run claims is not
    decoded), so a sharded run has an analysis for every content its replay asks for."""
    claims = _Claims.from_store(workspace)
    refused = set() if retry_quarantined else _stored_refusals(workspace)
    pictures = pictures or {}
    chosen: dict[str, SourceItem] = {}
    for item, sha in readable:
        if sha in claims.by_bytes or sha in chosen or (sha, item.identity_id, item.kind) in refused:
            continue
        if claims.known_picture(sha, item.identity_id, pictures) is not None:
            continue  # ingest_source skips it as a duplicate picture without decoding it
        chosen[sha] = item
    return [(item, sha) for sha, item in chosen.items()]


PICTURES_SCHEMA = pa.schema([pa.field("sha256", pa.string(), nullable=False),
                             pa.field("pixel_sha256", pa.string(), nullable=False)])


def _pictures_path(digests: FileDigests) -> Path:
    return digests.cache.with_name(f"{digests.cache.stem}.pictures.parquet")


def known_pictures(digests: FileDigests | None) -> dict[str, str]:
    """The source's files found last time to be another encoding of a stored picture, as
    their bytes' sha256 -> their pixels' sha256. Without it a night decoded every such file
    again to learn the same thing (the AT&T folder's 280 PNG copies of its PGMs: 0.56 s a
    night). The pixel digest is a function of the bytes, so this holds whatever the stat
    says; a missing or damaged file only means decoding them once more."""
    if digests is None:
        return {}
    try:
        rows = storage.read_verified_parquet(_pictures_path(digests))
        return dict(zip(rows.column("sha256").to_pylist(),
                        rows.column("pixel_sha256").to_pylist(), strict=True))
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return {}


def save_pictures(digests: FileDigests, found: dict[str, str], known: dict[str, str]) -> None:
    """Keep this run's duplicate pictures (only them: the source's files as listed now)."""
    if found == known:
        return
    items = sorted(found.items())
    rows = pa.table({"sha256": [k for k, _ in items], "pixel_sha256": [v for _, v in items]},
                    schema=PICTURES_SCHEMA)
    _pictures_path(digests).parent.mkdir(parents=True, exist_ok=True)
    storage.write_parquet_atomic(rows, _pictures_path(digests), page_checksums=True)


def ingest_source(
    workspace: Workspace,
    source: str | Path,
    *,
    root: str | Path | None = None,
    is_pre_aligned: bool = False,
    settings: IngestSettings | None = None,
    run_id: str = "local",
    retry_quarantined: bool = False,
    progress: Callable[[int, int], None] | None = None,
    analyses: Callable[[SourceItem, str], Analysis | None] | None = None,
    items: list[SourceItem] | None = None,
    readable: list[tuple[SourceItem, str]] | None = None,
    quarantine: list[QuarantineRecord] | None = None,
    digests: FileDigests | None = None,
) -> IngestReport:
    """Ingest one source: read, decide and write (see the module's docstring).

    ``analyses(item, sha)`` gives the decoding and detection of an item's bytes; by default
    they are computed here. A sharded run (``tasks.ingest.shards``) computes them on workers
    and passes them in, with the ``items``, ``readable`` and ``quarantine`` it read while
    planning: every decision below is then made exactly as in a local run.

    ``digests``: the source's digest cache (``tasks.digests.source_digests``, made here as
    ``settings.verify_files`` says when not given; a sharded run passes the one its plan
    read with). It is saved with the duplicate pictures' memo (``known_pictures``) once the
    source is written, and its count of files read goes into the report.
    """
    started = time.perf_counter()
    settings = settings or IngestSettings()
    if items is None:
        items = read_source(source, root)
    report = IngestReport(source=printable(str(source)), run_id=run_id, seen=len(items))
    quarantine = [] if quarantine is None else list(quarantine)
    if readable is None or analyses is None:
        if digests is None:
            digests = source_digests(workspace.root, source, root,
                                     trust_stat=settings.verify_files != "all")
        data_of: dict[str, bytes] = {}
        readable = read_hashes(items, settings, run_id, quarantine, keep=data_of.setdefault,
                               digests=digests)

        def analyses(item: SourceItem, sha: str) -> Analysis | None:
            # A file the digest cache vouched for is read only now, when it needs decoding
            # (new content, or a stored face removed since); None: it changed meanwhile.
            data = data_of.pop(sha, None) or read_unchanged(item.path, sha, settings.max_file_bytes)
            if data is None:  # not trusted again: hashed afresh next time
                digests.forget([digests.key(item.path)])
                return None
            return analyse(data, settings, is_pre_aligned)

    claims = _Claims.from_store(workspace)
    refused = set() if retry_quarantined else _stored_refusals(workspace)
    pictures, found_pictures = known_pictures(digests), {}
    skipped: Counter[str] = Counter()
    ingested: Counter[str] = Counter()
    # Where each source path's face ended up, to pair sketches with their photos.
    face_of_path: dict[Path, str] = {}
    faces: list[FaceRecord] = []
    added: set[str] = set()

    def refuse(item: SourceItem, reason: QuarantineReason, detail: str, sha: str) -> None:
        quarantine.append(_quarantine(item, reason, detail, sha, run_id))

    def flush() -> None:
        if faces:
            result = storage.upsert(workspace, FACES, to_arrow(faces, FACES_SCHEMA), "face_id")
            report.faces_version = result.version
            faces.clear()

    for done, (item, sha) in enumerate(readable, start=1):
        if progress:
            progress(done, len(readable))
        owner = claims.by_bytes.get(sha)
        if owner is not None:
            if owner[0] != item.identity_id:
                refuse(item, QuarantineReason.DUPLICATE_IDENTITY,
                       f"the same bytes are already filed under identity {owner[0]!r}", sha)
            else:
                face_of_path[item.path] = owner[1]
                skipped["duplicate_file" if owner[1] in added else "unchanged"] += 1
            continue
        if (sha, item.identity_id, item.kind) in refused:
            skipped["already_quarantined"] += 1
            continue
        same = claims.known_picture(sha, item.identity_id, pictures)
        if same is not None:
            face_of_path[item.path] = same
            skipped["duplicate_picture"] += 1
            found_pictures[sha] = pictures[sha]
            continue
        try:
            analysis = analyses(item, sha)
            if analysis is None:
                # The file changed or vanished after it was hashed. Not a refusal of its
                # content; the next run reads it afresh.
                skipped["changed_during_ingest"] += 1
                continue
            pixel_sha = analysis.pixel_sha
            if pixel_sha is None:  # not decodable
                raise ImageRejected(*analysis.refusal)
            owner = claims.by_pixels.get(pixel_sha)
            if owner is not None and owner[0] != item.identity_id:
                raise ImageRejected(
                    QuarantineReason.DUPLICATE_IDENTITY,
                    f"the same picture (pixel-identical) is already filed under identity "
                    f"{owner[0]!r}",
                )
            if owner is not None:
                face_of_path[item.path] = owner[1]
                skipped["duplicate_picture"] += 1
                found_pictures[sha] = pixel_sha
                continue
            if analysis.face is None:  # no face
                raise ImageRejected(*analysis.refusal)
            record = _face_record(analysis.face, item, sha, pixel_sha, run_id)
        except ImageRejected as rejected:
            refuse(item, rejected.reason, rejected.detail, sha)
            continue
        if item.kind == "sketch" and item.pair_path in face_of_path:
            record.paired_face_id = face_of_path[item.pair_path]
        claims.add(sha, pixel_sha, item.identity_id)
        added.add(sha)
        face_of_path[item.path] = sha
        faces.append(record)
        ingested[item.kind] += 1
        if len(faces) >= settings.write_every:
            flush()
    flush()

    storage.ensure_table(workspace, FACES, FACES_SCHEMA)
    if quarantine:
        unique = {q.quarantine_id: q for q in quarantine}
        result = storage.upsert(workspace, QUARANTINE,
                                to_arrow(list(unique.values()), QUARANTINE_SCHEMA),
                                "quarantine_id")
        report.quarantine_version = result.version
    else:
        storage.ensure_table(workspace, QUARANTINE, QUARANTINE_SCHEMA)
    for name in (FACES, QUARANTINE):
        storage.tag(workspace, name, f"run-{run_id}")
        storage.export_parquet(workspace, name)
    report.ingested = dict(ingested)
    report.skipped = dict(skipped)
    report.quarantined = dict(Counter(q.reason for q in quarantine))
    if digests is not None:
        digests.save(only_seen=True)
        save_pictures(digests, found_pictures, pictures)
        report.files_read = digests.hashed
    report.seconds = time.perf_counter() - started
    return report


@task(name="ingest", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE)
def ingest_task(workspace: str, source: str, root: str | None = None,
                pre_aligned: bool = False, settings: IngestSettings | None = None,
                run_id: str = "local", retry_quarantined: bool = False) -> IngestReport:
    """Thin Prefect wrapper; takes a workspace path, never a connection, so it pickles."""
    with Progress(f"ingest {Path(source).name}", unit="file") as progress:
        return ingest_source(Workspace.open(workspace), source, root=root,
                             is_pre_aligned=pre_aligned, settings=settings, run_id=run_id,
                             retry_quarantined=retry_quarantined, progress=progress)
