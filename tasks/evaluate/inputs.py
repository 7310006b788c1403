"""Probes and gallery of one evaluation: ingested like any other source, every file accounted.

Probes are the pairs manifest's sketches, the gallery its photos plus the distractors'
photos. Both go through the normal ingestion, so detection, alignment and quarantine are the
ones every other stage sees. A file that could not be used stays in the lists with its
reason: a failed probe is scored as a miss (see ``scoring``), a failed gallery photo is
reported, and neither is silently dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from schemas.settings import IngestSettings
from tasks.ingest.locate import Located, locate
from tasks.ingest.run import IngestReport, ingest_source
from tasks.ingest.sources import SourceItem, read_source
from tasks.splits import load_split
from tasks.storage import Workspace

PAIRS = "pairs"
DISTRACTORS = "distractors"


class InputsError(ValueError):
    """Nothing to evaluate: no probes or no gallery left after the split and ingestion."""


@dataclass(frozen=True)
class Entry:
    """A probe or gallery file, where it came from, and its stored face (or why none)."""

    located: Located
    origin: str  # PAIRS or DISTRACTORS

    @property
    def ok(self) -> bool:
        return self.located.ok

    @property
    def entry_id(self) -> str:
        return self.located.entry_id

    @property
    def identity_id(self) -> str:
        return self.located.identity_id


@dataclass
class EvaluationInputs:
    probes: list[Entry]
    gallery: list[Entry]
    ingest: list[IngestReport]
    split_excluded: int = 0  # identities of the pairs outside the evaluated split part
    ignored: dict[str, int] = field(default_factory=dict)

    def usable(self, role: str) -> list[Entry]:
        return [e for e in getattr(self, role) if e.ok]

    def failed(self, role: str) -> list[Entry]:
        return [e for e in getattr(self, role) if not e.ok]

    def failures_by_reason(self, role: str) -> dict[str, int]:
        return dict(sorted(Counter(e.located.reason for e in self.failed(role)).items()))


def split_identities(split: str | Path, part: str) -> set[str]:
    """Identities of one part of a split file (``identity_id,split``)."""

    chosen = {identity for identity, where in load_split(split).items() if where == part}
    if not chosen:
        raise InputsError(f"split {split} has no identity in part {part!r}")
    return chosen


def _unique(entries: list[Entry]) -> list[Entry]:
    """One entry per stored face (usable) or per file (failed), first occurrence kept."""
    seen: set[str] = set()
    out = []
    for entry in entries:
        key = entry.located.face_id or f"path:{entry.located.source_path}"
        if key not in seen:
            seen.add(key)
            out.append(entry)
    return out


def collect(
    workspace: Workspace,
    pairs: str | Path,
    *,
    root: str | Path | None = None,
    distractors: str | Path | None = None,
    distractors_root: str | Path | None = None,
    identities: set[str] | None = None,
    settings: IngestSettings | None = None,
    run_id: str = "local",
) -> EvaluationInputs:
    """Ingest the pairs (and distractors) and place every probe and gallery file.

    ``identities`` restricts the pairs to those identities (the test part of a split);
    distractors are other people and are never restricted.
    """
    settings = settings or IngestSettings()
    reports = [ingest_source(workspace, pairs, root=root, settings=settings, run_id=run_id)]
    items: list[SourceItem] = read_source(pairs, root)
    excluded = 0
    if identities is not None:
        kept = [i for i in items if i.identity_id in identities]
        excluded = len({i.identity_id for i in items} - identities)
        items = kept
    placed = locate(workspace, items, settings)
    probes = [Entry(p, PAIRS) for p in placed if p.kind == "sketch"]
    gallery = [Entry(p, PAIRS) for p in placed if p.kind == "photo"]
    ignored: Counter[str] = Counter()
    if distractors is not None:
        reports.append(ingest_source(workspace, distractors, root=distractors_root,
                                     settings=settings, run_id=run_id))
        extra = read_source(distractors, distractors_root)
        ignored["distractor_sketches"] = sum(1 for i in extra if i.kind != "photo")
        extra = [i for i in extra if i.kind == "photo"]
        gallery += [Entry(p, DISTRACTORS) for p in locate(workspace, extra, settings)]
    probes = _unique(probes)
    gallery = _unique(gallery)
    if not probes:
        raise InputsError(f"{pairs} has no sketches to use as probes"
                          + (" among the split's identities" if identities is not None else ""))
    return EvaluationInputs(probes, gallery, reports, excluded,
                            {k: v for k, v in ignored.items() if v})
