"""The sha256 of the workspace's sketch PNGs, remembered across nights by each file's stat.

Every night checks every stored drawing against the sha256 its row recorded, twice: the
generate stage's plan (a damaged PNG is redrawn) and the validate stage (a changed one is
refused). On the real-data night's workspace that read and hashed 12,000 files twice a night
(0.8 s of the plan's 1.25 s), and a year of nights at a data team's scale is millions. Like
git's index, this keeps, per file, its size, mtime, ctime and inode beside its digest, and
hashes again only a file whose stat differs: any write to a file, or a file put in its
place, changes its ctime and usually its inode, and a tool cannot set ctime back. A file
whose ctime is within ``RACY_SECONDS`` of the check is hashed and not remembered (a write in
the same clock tick of a coarse file system would leave its stat unchanged); last night's
drawings are hours old.

What a stat cannot see is a disk changing a file's bytes by itself; ``Settings.verify_pngs =
"all"`` (``CLIP4SKETCH_VERIFY_PNGS=all``) hashes every file every time, e.g. for a monthly
scrub. The cache lives in ``validation/png-digests.parquet``; a missing or damaged one only
means hashing everything once more. It is written by runs that hold the workspace lock.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from tasks import storage

DIGESTS_FILE = Path("validation") / "png-digests.parquet"
RACY_SECONDS = 2.0
SCHEMA = pa.schema([
    pa.field("path", pa.string(), nullable=False),
    pa.field("size", pa.int64(), nullable=False),
    pa.field("mtime_ns", pa.int64(), nullable=False),
    pa.field("ctime_ns", pa.int64(), nullable=False),
    pa.field("inode", pa.uint64(), nullable=False),  # some file systems use all 64 bits
    pa.field("sha256", pa.string(), nullable=False),
])

Stat = tuple[int, int, int, int]


def _stat(path: Path) -> Stat | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino)


class FileDigests:
    """``sha256(relative)`` for files under ``root``, hashing only what changed; ``save()``
    keeps what it learned for the next run."""

    def __init__(self, root: Path, trust_stat: bool = True) -> None:
        self.root = Path(root)
        self.trust_stat = trust_stat
        self.hashed = 0  # files read and hashed by this object (what the cache saves is the rest)
        self._known: dict[str, tuple[Stat, str]] = {}
        self._changed = False
        path = self.root / DIGESTS_FILE
        if trust_stat and path.is_file():
            try:
                self._known = {
                    r["path"]: ((r["size"], r["mtime_ns"], r["ctime_ns"], r["inode"]),
                                r["sha256"])
                    for r in storage.read_verified_parquet(path).to_pylist()}
            except (OSError, ValueError, KeyError, pa.ArrowException):
                self._changed = True  # damaged: every file hashed again, the file rewritten

    @classmethod
    def for_workspace(cls, root: Path) -> FileDigests:
        """As the workspace's settings say (``verify_pngs``)."""
        from schemas.settings import load_settings  # settings read where the run starts

        return cls(root, trust_stat=load_settings(root).verify_pngs != "all")

    def __len__(self) -> int:
        """How many files it remembers."""
        return len(self._known)

    def sha256(self, relative: str) -> str | None:
        """The file's sha256; None when it is not a regular file."""
        path = self.root / relative
        if not path.is_file():
            return None
        stat = _stat(path)
        known = self._known.get(relative)
        if self.trust_stat and stat is not None and known is not None and known[0] == stat:
            return known[1]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.hashed += 1
        after = _stat(path)
        if (self.trust_stat and after is not None and after == stat
                and time.time() - after[2] / 1e9 > RACY_SECONDS):
            self._known[relative] = (after, digest)
            self._changed = True
        elif self._known.pop(relative, None) is not None:
            self._changed = True
        return digest

    def forget(self, paths: Iterable[str]) -> None:
        """Drop removed files (retention), so the cache holds only what is stored."""
        for relative in paths:
            if self._known.pop(relative, None) is not None:
                self._changed = True

    def save(self) -> None:
        """Write what changed (callers hold the workspace lock); nothing when nothing did."""
        if not self.trust_stat or not self._changed:
            return
        items = sorted(self._known.items())
        rows = pa.table({
            "path": [p for p, _ in items],
            "size": [s[0] for _, (s, _) in items],
            "mtime_ns": [s[1] for _, (s, _) in items],
            "ctime_ns": [s[2] for _, (s, _) in items],
            "inode": [s[3] for _, (s, _) in items],
            "sha256": [d for _, (_, d) in items],
        }, schema=SCHEMA)
        os.makedirs(self.root / DIGESTS_FILE.parent, exist_ok=True)
        storage.write_parquet_atomic(rows, self.root / DIGESTS_FILE, checksum=True)
        self._changed = False
