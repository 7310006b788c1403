"""The sha256 of files a night reads again, remembered across nights by each file's stat:
the workspace's sketch PNGs, and every source's images.

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

Ingest is the same question one step earlier: a face's id is the sha256 of its file, so a
night read and hashed every file of every source to learn that nothing had changed (2,902
files of the real sources, ~1 s here; a mugshot database of millions on mounted storage,
hours). ``source_digests`` keeps one cache per source under ``ingest/digests/``, holding
only the files the source listed last time; ``IngestSettings.verify_files = "all"``
(``CLIP4SKETCH_INGEST_VERIFY_FILES=all``) reads every file.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_module
import time
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from tasks import storage

DIGESTS_FILE = Path("validation") / "png-digests.parquet"
SOURCE_DIGESTS_DIR = Path("ingest") / "digests"
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


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks (weights files run to hundreds of
    MB): the one file hash the generator manifests and published versions check against."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stat(path: Path) -> Stat | None:
    """None for anything but a regular file (missing, a folder, a FIFO...)."""
    try:
        found = path.stat()
    except OSError:
        return None
    if not stat_module.S_ISREG(found.st_mode):
        return None
    return (found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino)


class FileDigests:
    """``sha256(relative)`` for files under ``root``, hashing only what changed; ``save()``
    keeps what it learned for the next run. ``cache``: the file it is kept in, relative to
    ``root`` or absolute; a path outside ``root`` is named by its absolute path (``key``)."""

    def __init__(self, root: Path, trust_stat: bool = True,
                 cache: Path = DIGESTS_FILE) -> None:
        self.root = Path(root)
        self.trust_stat = trust_stat
        self.cache = self.root / cache
        self.hashed = 0  # files read and hashed by this object (what the cache saves is the rest)
        self._known: dict[str, tuple[Stat, str]] = {}
        self._seen: set[str] = set()
        self._changed = False
        path = self.cache
        if trust_stat and path.is_file():
            try:
                rows = storage.read_verified_parquet(path)
                columns = (rows.column(c).to_pylist() for c in SCHEMA.names)
                self._known = {p: ((size, mtime, ctime, inode), sha)
                               for p, size, mtime, ctime, inode, sha in zip(*columns,
                                                                            strict=True)}
            except (OSError, ValueError, KeyError, pa.ArrowException):
                self._changed = True  # damaged: every file hashed again, the file rewritten

    @classmethod
    def for_workspace(cls, root: Path) -> FileDigests:
        """As the workspace's settings say (``verify_pngs``)."""
        from schemas.settings import load_settings  # settings read where the run starts

        return cls(root, trust_stat=load_settings(root).verify_pngs != "all")

    def key(self, path: Path) -> str:
        """How the cache names ``path``: below ``root`` when it is, else as it is."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def __len__(self) -> int:
        """How many files it remembers."""
        return len(self._known)

    def sha256(self, relative: str) -> str | None:
        """The file's sha256; None when it is not a regular file."""
        stat, known = self.known(relative)
        if stat is None:
            return None
        if known is not None:
            return known
        digest = sha256_file(self.root / relative)
        self.learn(relative, digest, stat)
        return digest

    def known(self, relative: str | Path) -> tuple[Stat | None, str | None]:
        """The file's stat now, and its remembered sha256 when that stat is the one it was
        hashed at (else None: read it, then ``learn``)."""
        key = str(relative)
        self._seen.add(key)
        stat = _stat(self.root / relative)
        found = self._known.get(key)
        if self.trust_stat and stat is not None and found is not None and found[0] == stat:
            return stat, found[1]
        return stat, None

    def learn(self, relative: str | Path, digest: str, before: Stat | None) -> None:
        """Remember ``digest`` of a file just read, if its stat ``before`` the read is still
        its stat and old enough to trust (see the module's docstring)."""
        key = str(relative)
        self.hashed += 1
        self._seen.add(key)
        after = _stat(self.root / relative)
        if (self.trust_stat and after is not None and after == before
                and time.time() - after[2] / 1e9 > RACY_SECONDS):
            self._known[key] = (after, digest)
            self._changed = True
        elif self._known.pop(key, None) is not None:
            self._changed = True

    def forget(self, paths: Iterable[str]) -> None:
        """Drop removed files (retention), so the cache holds only what is stored."""
        for relative in paths:
            if self._known.pop(relative, None) is not None:
                self._changed = True

    def save(self, only_seen: bool = False) -> None:
        """Write what changed (callers hold the workspace lock); nothing when nothing did.
        ``only_seen`` keeps only the files asked about since loading: a source's listing,
        so files gone from it do not stay in its cache for ever."""
        if not self.trust_stat:
            return
        if only_seen and not self._seen.issuperset(self._known):
            self._known = {k: v for k, v in self._known.items() if k in self._seen}
            self._changed = True
        if not self._changed:
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
        os.makedirs(self.cache.parent, exist_ok=True)
        storage.write_parquet_atomic(rows, self.cache, page_checksums=True)
        self._changed = False


def source_digests(workspace_root: Path, source: str | Path, root: str | Path | None = None,
                   trust_stat: bool = True) -> FileDigests:
    """The digest cache of one ingest source (a folder or a manifest, with the ``root`` its
    files must stay in), kept in the workspace. Named by the source's resolved path and
    keyed by each file's path below the folder it was reached through, so the same source
    reached through a link shares it."""
    source = Path(source)
    base = Path(root) if root is not None else source if source.is_dir() else source.parent
    name = hashlib.sha256(os.fsencode(source.resolve())).hexdigest()[:16]
    return FileDigests(base, trust_stat=trust_stat,
                       cache=Path(workspace_root) / SOURCE_DIGESTS_DIR / f"{name}.parquet")
