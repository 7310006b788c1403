"""What an ingest would do, without doing it: the dry run of ``nightly`` and ``backfill``.

Hashes every file (cheap next to decoding and face detection; a file the source's digest
cache vouches for is not even read, as in ingestion) and compares the hashes with the stored
faces and refusals, so "new" means exactly what ingestion would try. Nothing is written.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import BaseModel, Field

from schemas.records import FACES_SCHEMA, QUARANTINE_SCHEMA, QuarantineRecord
from schemas.settings import IngestSettings
from tasks import storage
from tasks.digests import source_digests
from tasks.ingest.run import read_hashes
from tasks.ingest.sources import read_source
from tasks.storage import FACES, QUARANTINE, Workspace


class SourcePreview(BaseModel):
    source: str
    seen: int = 0
    new: dict[str, int] = Field(default_factory=dict)  # by kind: photo / sketch
    known: int = 0
    already_quarantined: int = 0
    unreadable: int = 0

    @property
    def n_new(self) -> int:
        return sum(self.new.values())


def preview_source(workspace: Workspace, source: str | Path, root: str | Path | None = None,
                   settings: IngestSettings | None = None) -> SourcePreview:
    settings = settings or IngestSettings()
    items = read_source(source, root)
    # Hashed as ingestion hashes (read_hashes, with the source's digest cache), never saved.
    digests = source_digests(workspace.root, source, root, settings.verify_files != "all")
    refusals: list[QuarantineRecord] = []
    readable = read_hashes(items, settings, "preview", refusals, digests=digests)
    stored = set(storage.read(workspace, FACES, columns=["face_id"], schema=FACES_SCHEMA)
                 .column("face_id").to_pylist())
    refused = set(storage.read(workspace, QUARANTINE, columns=["sha256"],
                               where="sha256 IS NOT NULL", schema=QUARANTINE_SCHEMA)
                  .column("sha256").to_pylist())
    preview = SourcePreview(source=str(source), seen=len(items), unreadable=len(refusals))
    new: Counter[str] = Counter()
    for item, sha in readable:
        if sha in stored:
            preview.known += 1
        elif sha in refused:
            preview.already_quarantined += 1
        else:
            new[item.kind] += 1
            stored.add(sha)  # a second copy in the same source is a duplicate, not new
    preview.new = dict(new)
    return preview
