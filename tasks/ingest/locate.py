"""Where each file of a source ended up after ingestion: a stored face, or why not.

Evaluation and training name their inputs by file (a manifest row), but ingestion reports
counts, not a per-file answer. Ids are content addresses, so the answer can be recomputed
without changing ingestion: a file's face id is the sha256 of its bytes; a refused file has
a quarantine row with that sha; a re-encoded copy of a stored picture is found by its
pixel digest. A file none of these explain is reported as ``not_ingested``, never dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.records import QUARANTINE_SCHEMA
from schemas.settings import IngestSettings
from tasks import storage
from tasks.ingest.decode import ImageRejected, decode_image
from tasks.ingest.run import pixel_digest
from tasks.ingest.sources import SourceItem
from tasks.storage import FACES, QUARANTINE, Workspace

NOT_INGESTED = "not_ingested"


@dataclass(frozen=True)
class Located:
    """One source file: its stored face (``face_id``) or the reason it has none."""

    identity_id: str
    kind: str
    source_path: str
    sha256: str | None
    face_id: str | None
    reason: str | None  # a QuarantineReason value, or NOT_INGESTED
    detail: str = ""
    manifest_line: int | None = None

    @property
    def ok(self) -> bool:
        return self.face_id is not None

    @property
    def entry_id(self) -> str:
        """A stable id even for a file that never became a face (for reports and joins)."""
        return self.face_id or self.sha256 or f"path:{self.source_path}"


def _rows(workspace: Workspace, table: str, key: str, values: Sequence[str],
          columns: list[str], schema=None) -> list[dict]:
    select = list(dict.fromkeys([key, *columns]))
    return storage.read_ids(workspace, table, key, values, columns=select,
                            schema=schema).to_pylist()


def locate(workspace: Workspace, items: Sequence[SourceItem],
           settings: IngestSettings | None = None) -> list[Located]:
    """One ``Located`` per item, in order; call after ``ingest_source`` on the same source."""
    settings = settings or IngestSettings()
    shas: list[str | None] = []
    early: dict[int, tuple[str, str]] = {}
    for i, item in enumerate(items):
        if item.refusal:
            early[i] = (item.refusal[0].value, item.refusal[1])
            shas.append(None)
            continue
        try:
            shas.append(hashlib.sha256(item.path.read_bytes()).hexdigest())
        except OSError as error:
            early[i] = ("unreadable_file", str(error))
            shas.append(None)
    known = [s for s in shas if s]
    faces = {r["face_id"]: r for r in _rows(workspace, FACES, "face_id", known,
                                             ["identity_id"])}
    unfound = [s for s in known if s not in faces]
    refusals: dict[str, list[dict]] = {}
    for row in _rows(workspace, QUARANTINE, "sha256", unfound,
                     ["identity_id", "kind", "reason", "detail", "quarantined_at"],
                     schema=QUARANTINE_SCHEMA):
        refusals.setdefault(row["sha256"], []).append(row)

    out: list[Located] = []
    pending: list[int] = []  # no bytes match: maybe the same pixels in another file
    for i, (item, sha) in enumerate(zip(items, shas, strict=True)):
        base = dict(identity_id=item.identity_id, kind=item.kind, source_path=str(item.path),
                    sha256=sha, manifest_line=item.manifest_line)
        if i in early:
            reason, detail = early[i]
            out.append(Located(**base, face_id=None, reason=reason, detail=detail))
        elif sha in faces:
            owner = faces[sha]["identity_id"]
            if owner == item.identity_id:
                out.append(Located(**base, face_id=sha, reason=None))
            else:
                out.append(Located(**base, face_id=None, reason="duplicate_identity",
                                   detail=f"the same bytes are filed under identity {owner!r}"))
        elif sha in refusals:
            rows = refusals[sha]
            mine = [r for r in rows if r["identity_id"] == item.identity_id
                    and r["kind"] == item.kind] or rows
            latest = max(mine, key=lambda r: r["quarantined_at"])
            out.append(Located(**base, face_id=None, reason=latest["reason"],
                               detail=latest["detail"]))
        else:
            pending.append(i)
            out.append(Located(**base, face_id=None, reason=NOT_INGESTED,
                               detail="no stored face or quarantine row for these bytes"))
    if pending:
        out = _locate_by_pixels(workspace, items, out, pending, settings)
    return out


def _locate_by_pixels(workspace: Workspace, items: Sequence[SourceItem], out: list[Located],
                      pending: list[int], settings: IngestSettings) -> list[Located]:
    """Files skipped as ``duplicate_picture``: the same pixels stored from another file."""
    digests: dict[int, str] = {}
    for i in pending:
        try:
            decoded = decode_image(items[i].path.read_bytes(), max_pixels=settings.max_pixels,
                                   min_side=settings.min_side)
        except (ImageRejected, OSError):
            continue
        digests[i] = pixel_digest(decoded)
    stored = _rows(workspace, FACES, "pixel_sha256", list(digests.values()),
                   ["face_id", "identity_id"])
    owner = {r["pixel_sha256"]: r for r in stored}
    out = list(out)
    for i, digest in digests.items():
        row = owner.get(digest)
        if row is None:
            continue
        located = out[i]
        if row["identity_id"] == located.identity_id:
            out[i] = Located(located.identity_id, located.kind, located.source_path,
                             located.sha256, row["face_id"], None, "",
                             located.manifest_line)
        else:
            out[i] = Located(located.identity_id, located.kind, located.source_path,
                             located.sha256, None, "duplicate_identity",
                             f"the same picture is filed under identity {row['identity_id']!r}",
                             located.manifest_line)
    return out
