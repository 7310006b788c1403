"""Which earlier galleries a stored identity margin still holds for: the nights whose gallery
only grew.

A sketch's margin is its cosine to its own mugshot minus its cosine to the closest mugshot of
another identity in the gallery. When a night only adds mugshots, a margin taken against the
old gallery changes only if one of the added faces, of another identity, comes at least as
close as the stored impostor (or is the sketch's own mugshot, newly given a vector). Checking
that needs the added faces alone, so the other rows of ``sketch_metrics`` are kept as they
are. Rescoring every row against each night's gallery rewrote the whole table every night (and
so every night's compaction rewrote it again), a cost that grew with every night's sketches.

The lineage lives in ``validation/galleries/<identity table>-<version>.json``: the current
gallery's (face, identity) pairs, and the links, each gallery's parent and the pairs it
added. A gallery is named by the gallery part of the metrics version (a hash of its pairs),
so a walk from the current gallery back to a row's, link by link, proves that the current
gallery holds the row's and names exactly what was added. A night whose gallery lost or
re-labelled a face records no link: rows scored before it are rescored whole, as before. A
missing or damaged file is the same as no link at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from schemas.vectors import VectorTable
from tasks import storage
from tasks.storage import Workspace

LINEAGE_DIR = "validation/galleries"
FORMAT = "gallery-lineage-1"

Pair = tuple[str, str]  # (face id, identity id)


def gallery_part(gallery_key: str) -> str:
    """A gallery's name in the metrics version (``<pixels>.<style>.<gallery>``)."""
    return hashlib.sha256(gallery_key.encode()).hexdigest()[:8]


@dataclass
class Lineage:
    current: str
    pairs: list[Pair]
    # child gallery -> (parent gallery, the pairs the child added)
    links: dict[str, tuple[str, list[Pair]]] = field(default_factory=dict)

    def added_since(self, gallery: str) -> list[Pair] | None:
        """The pairs the current gallery added to ``gallery``; None unless the current one
        grew from it by additions only (as far as the links say)."""
        added: list[Pair] = []
        node, seen = self.current, set()
        while node != gallery:
            if node in seen or node not in self.links:
                return None
            seen.add(node)
            node, pairs = self.links[node]
            added.extend(pairs)
        return added

    def trimmed(self, referenced: Iterable[str]) -> Lineage:
        """Only the links from the current gallery back to the oldest of ``referenced`` it
        grew from: all a stored row can still be carried over."""
        wanted = set(referenced)
        walked: list[str] = []
        node, needed = self.current, 0
        while node in self.links and node not in walked:
            walked.append(node)
            node = self.links[node][0]
            if node in wanted:
                needed = len(walked)
        return Lineage(self.current, self.pairs, {n: self.links[n] for n in walked[:needed]})

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "current": self.current,
                           "pairs": [list(p) for p in self.pairs],
                           "links": {child: {"parent": parent, "added": [list(p) for p in added]}
                                     for child, (parent, added) in sorted(self.links.items())}},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Lineage:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        return cls(str(data["current"]), [_pair(p) for p in data["pairs"]],
                   {str(child): (str(link["parent"]), [_pair(p) for p in link["added"]])
                    for child, link in data["links"].items()})


def _pair(value: Sequence[str]) -> Pair:
    face, identity = value
    return str(face), str(identity)


def lineage_path(workspace: Workspace, identity: VectorTable) -> Path:
    version = hashlib.sha256(identity.version.encode()).hexdigest()[:12]
    return workspace.root / LINEAGE_DIR / f"{identity.table}-{version}.json"


def load(path: Path) -> Lineage | None:
    try:
        return Lineage.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing or damaged: no link, every older row rescored whole


def advance(workspace: Workspace, identity: VectorTable, gallery: str,
            face_ids: Sequence[str], identity_ids: Sequence[str]) -> Lineage:
    """The lineage with today's gallery ``gallery`` (of these pairs) as its current one,
    linked to the last recorded gallery when it only added to it."""
    path = lineage_path(workspace, identity)
    pairs = list(zip(face_ids, identity_ids, strict=True))
    before = load(path)
    if before is not None and before.current == gallery:
        return before
    links = dict(before.links) if before is not None else {}
    if before is not None:
        old, new = set(before.pairs), set(pairs)
        if old <= new:
            links[gallery] = (before.current, sorted(new - old))
        else:
            links.pop(gallery, None)
    lineage = Lineage(gallery, pairs, links)
    save(path, lineage)
    return lineage


def save(path: Path, lineage: Lineage) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.write_bytes_atomic(lineage.to_json().encode(), path)
