"""Turn a source (a folder of identities or a manifest) into a list of files to ingest.

A malformed manifest stops the run before any work, naming the line, because a
half-understood manifest would ingest the wrong identities. A bad *file* does not
stop the run: it becomes an item carrying its refusal, which ingestion quarantines.
"""

from __future__ import annotations

import codecs
import csv
import errno
import io
import os
import re
import stat
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schemas.records import FaceKind, QuarantineReason

IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".pgm", ".ppm", ".pnm", ".pbm", ".tif", ".tiff",
    ".webp", ".gif", ".heic", ".heif", ".avif", ".svg", ".ico", ".jp2", ".psd",
})
REQUIRED_COLUMNS = ("identity_id", "photo_path")
OPTIONAL_COLUMNS = ("sketch_path", "style")
DEFAULT_SKETCH_STYLE = "artist"


class ManifestError(ValueError):
    """The manifest itself is unusable; nothing was ingested."""


@dataclass(frozen=True)
class SourceItem:
    """One file to ingest, or the reason it cannot be (``refusal``)."""

    identity_id: str
    kind: FaceKind
    path: Path
    style: str | None = None
    manifest_line: int | None = None
    # For a sketch, the manifest path of the photo it is paired with.
    pair_path: Path | None = None
    refusal: tuple[QuarantineReason, str] | None = None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass(frozen=True)
class Root:
    """The folder files must stay inside, as it was reached and as it resolves.

    Sources usually arrive through links (a mounted data folder, ``../shared`` as a link):
    a member is judged by comparing *resolved* paths on both sides, so a source reached
    through links ingests as its real path does, while a link inside it that leads out is
    still refused. ``given`` is kept for messages and for paths written relative to it.
    """

    given: Path
    real: Path

    @classmethod
    def of(cls, folder: Path) -> Root:
        folder = Path(os.path.abspath(Path(folder).expanduser()))
        return cls(folder, Path(os.path.realpath(folder)))


class SourceLoopError(ManifestError):
    """A source path whose links lead back to themselves: it names no folder or file."""


def check_no_loop(path: Path) -> None:
    """Refuse a path whose symbolic links loop (a -> b -> a) with the links named.

    ``Path.exists`` answers False for a loop, which would read as "does not exist" and
    send the user looking for a missing folder; strict resolution says what is wrong.
    """
    try:
        os.path.realpath(path, strict=True)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise SourceLoopError(
                f"source {path} is a symbolic link that loops back on itself "
                f"({error.strerror}): point it at a real folder or manifest") from None
        # Missing files are reported by the caller, in its own words.


def printable(text: str) -> str:
    """``text`` as storable UTF-8: a name that is not UTF-8 on disk (decoded by Python with
    surrogate escapes) keeps its undecodable bytes as ``\\xNN``, so a quarantine row can still
    say which file it was; Arrow refuses surrogates outright."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _not_utf8(name: str) -> bool:
    return printable(name) != name


def resolve_member(raw: str, base: Path, root: Root,
                   folders: dict[Path, Path] | None = None) -> tuple[Path, tuple | None]:
    """Resolve ``raw`` against ``base``; refuse it if it (or a symlink in it) leaves ``root``.

    A path the operating system cannot even look up (a NUL byte, a name over 255 bytes, a
    path over PATH_MAX) is refused as unreadable rather than raised: it is one bad row, and
    the rest of the manifest is still good work. ``folders``: resolved folders, kept by a
    caller that resolves many files (``_real_path``).
    """
    if "\0" in raw:
        return Path(raw.replace("\0", "\\0")), (
            QuarantineReason.UNREADABLE_FILE, f"{raw!r} contains a NUL byte: no file has that name")
    try:
        return _resolve_member(raw, base, root, {} if folders is None else folders)
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        return Path(os.path.normpath(base / raw)), (
            QuarantineReason.UNREADABLE_FILE, f"{raw!r} cannot be looked up: {reason}")


# What pathlib's exists() also reads as "nothing there" rather than raising.
_NOTHING_THERE = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)


def _real_path(lexical: Path, folders: dict[Path, Path]
               ) -> tuple[Path, os.stat_result | OSError | None]:
    """``realpath(lexical)`` with its folder resolved once for all its files, and the file's
    own lstat (None: nothing there; the error when it cannot be looked up, e.g. a name over
    255 bytes, raised by the caller once containment is judged). ``os.path.realpath`` looks
    up every component of every path: on a source of millions of files on mounted storage,
    most of a listing's cost."""
    try:
        found: os.stat_result | OSError | None = os.lstat(lexical)
    except OSError as error:
        found = None if error.errno in _NOTHING_THERE else error
    if (not isinstance(found, os.stat_result) or stat.S_ISLNK(found.st_mode)
            or lexical.name in ("", ".", "..")):
        return Path(os.path.realpath(lexical)), found
    folder = folders.get(lexical.parent)
    if folder is None:
        folder = folders[lexical.parent] = Path(os.path.realpath(lexical.parent))
    return folder / lexical.name, found


def _resolve_member(raw: str, base: Path, root: Root,
                    folders: dict[Path, Path]) -> tuple[Path, tuple | None]:
    candidate = Path(raw).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    lexical = Path(os.path.normpath(candidate))
    real, found = _real_path(lexical, folders)
    if not _inside(real, root.real):
        if _inside(lexical, root.given) or _inside(lexical, root.real):
            return lexical, (
                QuarantineReason.PATH_OUTSIDE_ROOT,
                f"{raw!r} is a symlink to {real}, outside {root.given}",
            )
        return lexical, (QuarantineReason.PATH_OUTSIDE_ROOT,
                         f"{raw!r} resolves outside {root.given}")
    if isinstance(found, OSError):
        raise found  # refused as unreadable by resolve_member
    if found is not None and stat.S_ISLNK(found.st_mode):
        try:
            found = os.stat(lexical)  # what the link leads to
        except OSError as error:
            if error.errno not in _NOTHING_THERE:
                raise
            return lexical, (QuarantineReason.MISSING_FILE,
                             f"{raw!r} is a symlink that leads nowhere (broken or looping)")
    if found is None:
        return lexical, (QuarantineReason.MISSING_FILE, f"{raw!r} does not exist")
    if not stat.S_ISREG(found.st_mode):
        return lexical, (QuarantineReason.UNREADABLE_FILE, f"{raw!r} is not a regular file")
    if _not_utf8(str(lexical)):
        # Every path is stored as text (source_path); one that is not UTF-8 cannot be, and a
        # mangled copy would point at no file.
        return lexical, (QuarantineReason.UNREADABLE_FILE,
                         f"path {printable(str(lexical))!r} is not valid UTF-8: rename it")
    return lexical, None


def scan_folder(folder: Path) -> list[SourceItem]:
    """One sub-folder per identity; image files directly inside it are that identity's photos."""
    root = Root.of(folder)
    items: list[SourceItem] = []
    # Each identity folder resolved once, from its directory entry where it is no link (no
    # lookup at all): its files are then resolved against it (``_real_path``).
    folders: dict[Path, Path] = {}
    with os.scandir(folder) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    # DirEntry.is_dir raises on a looping link, which os.path.isdir reads as "not a folder".
    identities = [Path(e.path) for e in entries if not e.name.startswith(".") and (
        e.is_dir(follow_symlinks=False) or e.is_symlink() and os.path.isdir(e.path))]
    if not identities:
        raise ManifestError(
            f"{folder} has no identity sub-folders; expected {folder}/<identity_id>/<photo>"
        )
    for dead in (Path(e.path) for e in entries
                 if e.is_symlink() and not os.path.exists(e.path)):
        # A link that loops or leads nowhere is no folder to scan; say so, not skip it.
        items.append(SourceItem(dead.name, "photo", dead, refusal=(
            QuarantineReason.MISSING_FILE,
            "identity folder is a symlink that leads nowhere (broken or looping)")))
    linked = {e.name for e in entries if e.is_symlink()}
    for identity in identities:
        real = (Path(os.path.realpath(identity)) if identity.name in linked
                else root.real / identity.name)
        if not _inside(real, root.real):
            items.append(SourceItem(
                identity.name, "photo", identity,
                refusal=(QuarantineReason.PATH_OUTSIDE_ROOT,
                         f"identity folder is a symlink to {real}"),
            ))
            continue
        folders[Path(os.path.normpath(identity))] = real
        try:
            entries = sorted(identity.iterdir())
        except OSError as error:
            items.append(SourceItem(identity.name, "photo", identity, refusal=(
                QuarantineReason.UNREADABLE_FILE,
                f"identity folder cannot be listed: {error.strerror or error}")))
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path, refusal = resolve_member(entry.name, identity, root, folders)
            if refusal is None and _not_utf8(identity.name):
                # The folder name is the identity label: one we cannot store faithfully
                # would file the face under a mangled identity.
                refusal = (QuarantineReason.UNREADABLE_FILE,
                           f"identity folder name {printable(identity.name)!r} is not valid "
                           "UTF-8: rename it")
            items.append(SourceItem(identity.name, "photo", path, refusal=refusal))
    return items


def _read_rows(manifest: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Rows with the line (CSV) or row number (Parquet) a user can find them by."""
    if manifest.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(manifest)
        except Exception as error:
            raise ManifestError(f"{manifest}: not a readable Parquet file ({error})") from error
        columns = table.column_names
        rows = [
            (number, {k: ("" if v is None else str(v)) for k, v in row.items()})
            for number, row in enumerate(table.to_pylist(), start=1)
        ]
        return columns, rows
    text = _utf8_text(manifest)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = columns
        rows = []
        for row in reader:
            if None in row:
                raise ManifestError(
                    f"{manifest}, line {reader.line_num}: more fields than the header's "
                    f"{len(columns)} columns"
                )
            rows.append((reader.line_num, {k: (v or "").strip() for k, v in row.items()}))
    except csv.Error as error:
        # The inner reader has counted the lines it consumed, the bad one included
        # (DictReader's own line_num only moves on rows it returned).
        raise ManifestError(f"{manifest}, line {max(reader.reader.line_num, 1)}: malformed CSV "
                            f"({error})") from error
    return columns, rows


def _utf8_text(manifest: Path) -> str:
    """The manifest as text (one leading BOM allowed); not UTF-8 names the line to fix.

    Read whole, so a decoding error's position is the file's own and the message can say
    which line holds the bad bytes (a name saved as Latin-1, say) instead of an offset.
    """
    raw = manifest.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = len(re.split(rb"\r\n|\r|\n", raw[:error.start]))
        raise ManifestError(
            f"{manifest}, line {line}: not UTF-8 text (byte 0x{raw[error.start]:02x}: "
            f"{error.reason}); save the manifest as UTF-8") from error


def read_manifest(manifest: Path, root: Path | None = None) -> list[SourceItem]:
    """Rows ``identity_id, photo_path[, sketch_path, style]``; paths relative to the manifest.

    ``root`` bounds where files may live (default: the manifest's folder), so a manifest
    cannot pull in arbitrary files from the machine.
    """
    # Relative paths mean what the operating system makes of them: from the real folder.
    base = manifest.parent.resolve()
    root = Root.of(root or base)
    what = "line" if manifest.suffix.lower() != ".parquet" else "row"
    columns, rows = _read_rows(manifest)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(
            f"{manifest}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(columns) or 'none'}"
            f" (need {', '.join(REQUIRED_COLUMNS)}, optionally {', '.join(OPTIONAL_COLUMNS)})"
        )
    repeated = sorted(c for c in set(columns) if columns.count(c) > 1)
    if repeated:
        raise ManifestError(f"{manifest}: column(s) {', '.join(repeated)} appear more than once; "
                            "which one holds the value is ambiguous")
    if not rows:
        raise ManifestError(f"{manifest}: no rows")
    for number, row in rows:
        if not row["identity_id"]:
            raise ManifestError(f"{manifest}, {what} {number}: empty identity_id")
        if any(unicodedata.category(c) == "Cc" for c in row["identity_id"]):
            raise ManifestError(
                f"{manifest}, {what} {number}: identity_id {row['identity_id']!r} contains a "
                "control character (NUL, tab, line break...): not a label anyone typed")
        if not row["photo_path"] and not row.get("sketch_path"):
            raise ManifestError(f"{manifest}, {what} {number}: neither photo_path nor sketch_path")
    items: list[SourceItem] = []
    folders: dict[Path, Path] = {}
    for number, row in rows:
        identity = row["identity_id"]
        photo = None
        if row["photo_path"]:
            photo, refusal = resolve_member(row["photo_path"], base, root, folders)
            items.append(SourceItem(identity, "photo", photo, manifest_line=number,
                                    refusal=refusal))
        if row.get("sketch_path"):
            sketch, refusal = resolve_member(row["sketch_path"], base, root, folders)
            items.append(SourceItem(
                identity, "sketch", sketch, style=row.get("style") or DEFAULT_SKETCH_STYLE,
                manifest_line=number, pair_path=photo, refusal=refusal,
            ))
    return items


def read_source(source: str | Path, root: str | Path | None = None) -> list[SourceItem]:
    source = Path(source).expanduser()
    check_no_loop(source)
    if source.is_dir():
        if root is not None:
            raise ManifestError("--root applies to manifests; a folder source is its own root")
        return scan_folder(source)
    if not source.exists():
        raise ManifestError(f"source {source} does not exist")
    if source.suffix.lower() not in (".csv", ".parquet"):
        raise ManifestError(
            f"source {source} is neither a folder of identities nor a .csv/.parquet manifest"
        )
    return read_manifest(source, Path(root).expanduser() if root else None)


def _write_pairs_manifest(root: Path, out: Path, style: str, layout: str,
                          sketch_name: Callable[[Path], str]) -> int:
    """Pairs manifest for a photos/ + sketches/ layout; a photo without its sketch keeps an
    empty sketch_path (a mugshot is still a mugshot)."""
    photos = sorted((root / "photos").glob("*.jpg"))
    if not photos:
        raise ManifestError(f"{root}/photos has no .jpg files: not the {layout} layout")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identity_id", "photo_path", "sketch_path", "style"])
        for photo in photos:
            sketch = root / "sketches" / sketch_name(photo)
            writer.writerow([photo.stem, str(photo.resolve()),
                             str(sketch.resolve()) if sketch.exists() else "", style])
    return len(photos)


def write_cuhk_manifest(cuhk: Path, out: Path, style: str = DEFAULT_SKETCH_STYLE) -> int:
    """Pairs manifest for the CUHK layout: photos/NAME.jpg with sketches/NAME-sz1.jpg."""
    return _write_pairs_manifest(cuhk, out, style, "CUHK", lambda p: f"{p.stem}-sz1.jpg")


def write_cufsf_manifest(cufsf: Path, out: Path, style: str = DEFAULT_SKETCH_STYLE) -> int:
    """Pairs manifest for the CUFSF layout: photos/NAME.jpg with sketches/NAME.jpg.

    CUFSF's sketches are by other artists than CUHK's; give them their own ``style`` label
    (e.g. ``cufsf-artist``) so a generator can learn the two apart.
    """
    return _write_pairs_manifest(cufsf, out, style, "CUFSF", lambda p: p.name)


MANIFEST_LAYOUTS = {"cuhk": write_cuhk_manifest, "cufsf": write_cufsf_manifest}
