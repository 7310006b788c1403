"""Mutated image files and manifests for fuzzing ingestion, as hypothesis strategies.

Shared by the fuzz tests (a bounded number of examples) and ``benchmarks/fuzz_ingest.py``
(>= 10,000 files). Every case is a small recipe of plain values (a valid base file made here
from a procedural demo face, then header rewrites and byte operations), never a stored file:
a failing case prints as one line that pastes into the corpus test (``test_fuzz_corpus.py``),
and no third-party image is ever copied into the repository.

What a case can do, because each is a way real archives break ingestion:
- base files: JPEG (RGB, grey, CMYK, progressive), PNG (RGB, L, LA, RGBA, P, 1, 16-bit), PGM
  (8 and 16-bit), PPM, WebP (lossy, lossless, alpha), on canvases of odd shapes;
- EXIF: any orientation value (valid 1-8 and nonsense), or a raw EXIF payload of junk;
- declared sizes: the header's width/height rewritten (PNG IHDR, JPEG SOFn, PGM text, WebP
  VP8/VP8L/VP8X), chunk/segment/RIFF length fields, PGM maxval, PNG bit depth and colour type
  (CRC fixed or not), so a decoder believes a size the data does not have;
- bytes: flips, overwrites, truncation, deletion, insertion, repetition, appended junk;
- manifests: encodings (UTF-8, BOM, double BOM, UTF-16, Latin-1), quoting, CRLF and CR line
  ends, huge lines and fields, header tricks, path tricks (``..``, absolute, ``~``, symlinks out,
  symlink loops, dangling links, folders, FIFOs, NUL bytes, names over 255 bytes, paths over
  4096, non-UTF-8 names) and Parquet manifests with odd column types.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from tasks import storage
from tasks.demo.faces import draw_face
from tasks.storage import FACES, QUARANTINE, Workspace

FACE_SIZE = (128, 160)  # (width, height): small, and YuNet still finds the drawn face

# name -> (PIL format, mode, save options, suffix)
BASES: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "jpeg-rgb": ("JPEG", "RGB", {"quality": 90}, ".jpg"),
    "jpeg-grey": ("JPEG", "L", {"quality": 90}, ".jpg"),
    "jpeg-cmyk": ("JPEG", "CMYK", {"quality": 90}, ".jpg"),
    "jpeg-progressive": ("JPEG", "RGB", {"quality": 85, "progressive": True}, ".jpeg"),
    "png-rgb": ("PNG", "RGB", {}, ".png"),
    "png-grey": ("PNG", "L", {}, ".png"),
    "png-grey-alpha": ("PNG", "LA", {}, ".png"),
    "png-rgba": ("PNG", "RGBA", {}, ".png"),
    "png-palette": ("PNG", "P", {}, ".png"),
    "png-bilevel": ("PNG", "1", {}, ".png"),
    "png-16bit": ("PNG", "I;16", {}, ".png"),
    "pgm-8bit": ("PPM", "L", {}, ".pgm"),
    "pgm-16bit": ("PPM", "I;16", {}, ".pgm"),
    "ppm-rgb": ("PPM", "RGB", {}, ".ppm"),
    "webp-lossy": ("WEBP", "RGB", {"quality": 80}, ".webp"),
    "webp-lossless": ("WEBP", "RGB", {"lossless": True}, ".webp"),
    "webp-alpha": ("WEBP", "RGBA", {"quality": 80}, ".webp"),
}
EXIF_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
SUFFIXES = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".webp", ".bmp", ".tif", ".gif", ".JPG")
# Canvas shapes (width, height) the face is pasted on: the normal one, small, and extreme
# aspect ratios that a resize to the detector's longest side can shrink to nothing.
CANVASES = ((0, 0), (40, 40), (31, 200), (2100, 33), (33, 2100), (12000, 40), (40, 9000),
            (70000, 32), (32, 70000))

# The largest side each encoder writes (a canvas is clipped to it).
_MAX_SIDE = {"WEBP": 16383, "JPEG": 65500}

INTERESTING_U32 = (0, 1, 2, 7, 31, 32, 33, 255, 256, 4095, 4096, 8000, 65535, 65536,
                   2**24 - 1, 2**31 - 1, 2**31, 2**32 - 1)


# --------------------------------------------------------------------------- base files


def _canvas(face: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    width, height = shape
    if (width, height) == (0, 0):
        return face
    canvas = np.full((height, width, 3), 200, np.uint8)
    h, w = min(height, face.shape[0]), min(width, face.shape[1])
    canvas[:h, :w] = face[:h, :w]
    return canvas


@functools.lru_cache(maxsize=256)
def base_file(base: str, face: int = 0, orientation: int | None = None,
              exif: bytes | None = None, canvas: tuple[int, int] = (0, 0)) -> bytes:
    """A valid file of ``base`` kind showing demo face ``face`` (cached: cases share bases)."""
    fmt, mode, options, _ = BASES[base]
    limit = _MAX_SIDE.get(fmt, 2**31)
    bgr = _canvas(draw_face(face, 0, size=FACE_SIZE), (min(canvas[0], limit),
                                                       min(canvas[1], limit)))
    image = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))
    if mode == "I;16":
        grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(grey)
    elif mode != "RGB":
        image = image.convert(mode)
    options = dict(options)
    if fmt in EXIF_FORMATS:
        if exif is not None:
            options["exif"] = exif
        elif orientation is not None:
            tags = Image.Exif()
            tags[0x0112] = orientation
            options["exif"] = tags.tobytes()
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


# --------------------------------------------------------------------------- header rewrites


def _png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, declared length, type) of each PNG chunk, as far as the bytes allow."""
    chunks, offset = [], 8
    while offset + 8 <= len(data):
        length = struct.unpack(">I", data[offset:offset + 4])[0]
        chunks.append((offset, length, data[offset + 4:offset + 8]))
        offset += 12 + length
    return chunks


def _fix_png_crc(data: bytearray, offset: int) -> None:
    length = struct.unpack(">I", data[offset:offset + 4])[0]
    end = offset + 8 + length
    if end + 4 <= len(data):
        data[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(data[offset + 4:end])) & 0xFFFFFFFF)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    """(offset of the marker, marker byte) of each length-carrying JPEG segment before SOS."""
    segments, offset = [], 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            offset += 2
            continue
        segments.append((offset, marker))
        if marker == 0xDA:
            break
        offset += 2 + struct.unpack(">H", data[offset + 2:offset + 4])[0]
    return segments


_PNM = re.compile(rb"^(P[1-7])(\s+)(\d+)(\s+)(\d+)(\s+)(\d+)(\s)", re.S)


def _riff_chunks(data: bytes) -> list[tuple[int, bytes]]:
    chunks, offset = [], 12
    while offset + 8 <= len(data):
        size = struct.unpack("<I", data[offset + 4:offset + 8])[0]
        chunks.append((offset, data[offset:offset + 4]))
        offset += 8 + size + (size & 1)
    return chunks


def set_dims(data: bytes, width: int, height: int, fix_crc: bool = True) -> bytes:
    """Rewrite the width and height the header declares, leaving the pixel data as it is."""
    out = bytearray(data)
    if data.startswith(b"\x89PNG") and len(data) >= 33:
        out[16:24] = struct.pack(">II", width % 2**32, height % 2**32)
        if fix_crc:
            _fix_png_crc(out, 8)
    elif data.startswith(b"\xff\xd8"):
        for offset, marker in _jpeg_segments(data):
            if marker in _SOF and offset + 9 <= len(out):
                out[offset + 5:offset + 9] = struct.pack(">HH", height % 2**16, width % 2**16)
    elif (match := _PNM.match(data)) is not None:
        head = (match[1] + match[2] + str(width).encode() + match[4] + str(height).encode()
                + match[6] + match[7] + match[8])
        return head + data[match.end():]
    elif data.startswith(b"RIFF"):
        for offset, kind in _riff_chunks(data):
            body = offset + 8
            if kind == b"VP8 " and body + 10 <= len(out):
                out[body + 6:body + 10] = struct.pack("<HH", width % 2**16, height % 2**16)
            elif kind == b"VP8L" and body + 5 <= len(out):
                bits = ((width - 1) % 2**14) | (((height - 1) % 2**14) << 14)
                out[body + 1:body + 5] = struct.pack("<I", bits | (out[body + 4] >> 4 << 28))
            elif kind == b"VP8X" and body + 10 <= len(out):
                out[body + 4:body + 7] = ((width - 1) % 2**24).to_bytes(3, "little")
                out[body + 7:body + 10] = ((height - 1) % 2**24).to_bytes(3, "little")
    return bytes(out)


def set_length(data: bytes, index: int, value: int) -> bytes:
    """Rewrite the ``index``-th declared length: a PNG chunk's, a JPEG segment's, a RIFF
    chunk's (index 0 is the RIFF size itself) or a PGM/PPM maxval."""
    out = bytearray(data)
    if data.startswith(b"\x89PNG"):
        chunks = _png_chunks(data)
        if chunks:
            offset = chunks[index % len(chunks)][0]
            out[offset:offset + 4] = struct.pack(">I", value % 2**32)
    elif data.startswith(b"\xff\xd8"):
        segments = _jpeg_segments(data)
        if segments:
            offset = segments[index % len(segments)][0]
            out[offset + 2:offset + 4] = struct.pack(">H", value % 2**16)
    elif (match := _PNM.match(data)) is not None:
        head = match[1] + match[2] + match[3] + match[4] + match[5] + match[6]
        return head + str(value).encode() + match[8] + data[match.end():]
    elif data.startswith(b"RIFF") and len(data) >= 8:
        offsets = [4] + [offset + 4 for offset, _ in _riff_chunks(data)]
        offset = offsets[index % len(offsets)]
        out[offset:offset + 4] = struct.pack("<I", value % 2**32)
    return bytes(out)


def set_png_header(data: bytes, field_index: int, value: int, fix_crc: bool = True) -> bytes:
    """Rewrite IHDR's bit depth (0), colour type (1), compression (2), filter (3) or
    interlace (4) byte: the colour mode the decoder believes."""
    if not data.startswith(b"\x89PNG") or len(data) < 29:
        return data
    out = bytearray(data)
    out[24 + field_index % 5] = value % 256
    if fix_crc:
        _fix_png_crc(out, 8)
    return bytes(out)


def apply_op(data: bytes, op: tuple) -> bytes:
    """One mutation; ops are plain tuples so a case prints as a pasteable recipe."""
    kind, *args = op
    n = len(data)
    if kind == "dims":
        return set_dims(data, *args)
    if kind == "length":
        return set_length(data, *args)
    if kind == "png_header":
        return set_png_header(data, *args)
    if kind == "append":
        return data + args[0]
    if n == 0:
        return data + args[-1] if kind == "insert" else data
    if kind == "flip":
        offset, mask = args
        out = bytearray(data)
        out[offset % n] ^= mask or 1
        return bytes(out)
    if kind == "set":
        offset, value = args
        out = bytearray(data)
        out[offset % n] = value
        return bytes(out)
    if kind == "truncate":
        return data[: args[0] % (n + 1)]
    if kind == "delete":
        offset, count = args
        offset %= n
        return data[:offset] + data[offset + count:]
    if kind == "insert":
        offset, payload = args
        offset %= n + 1
        return data[:offset] + payload + data[offset:]
    if kind == "repeat":
        offset, count = args
        offset %= n
        return data[:offset] + data[offset:offset + count] * 2 + data[offset + count:]
    raise ValueError(f"unknown mutation {kind!r}")


@dataclass(frozen=True)
class FileCase:
    """A recipe for one fuzzed file: a base file, then ``ops`` in order."""

    base: str = "png-rgb"
    face: int = 0
    orientation: int | None = None
    exif: bytes | None = None
    canvas: tuple[int, int] = (0, 0)
    ops: tuple[tuple, ...] = ()
    suffix: str | None = None  # None: the base format's own suffix
    identity: str = "fuzz-a"

    def build(self) -> bytes:
        data = base_file(self.base, self.face, self.orientation, self.exif, self.canvas)
        for op in self.ops:
            data = apply_op(data, op)
        return data

    @property
    def file_suffix(self) -> str:
        return self.suffix or BASES[self.base][3]


# --------------------------------------------------------------------------- strategies

_offsets = st.one_of(st.integers(0, 64), st.integers(0, 4096), st.integers(0, 2**20))
_u32 = st.one_of(st.sampled_from(INTERESTING_U32), st.integers(0, 2**32 - 1))
_dims = st.one_of(st.sampled_from((0, 1, 31, 32, 33, 127, 128, 160, 161, 7999, 8000, 65535,
                                   2**31 - 1, 2**32 - 1)), st.integers(0, 70000))
_payload = st.one_of(st.binary(max_size=64),
                     st.sampled_from((b"\xff\xd9", b"\xff\xd8\xff", b"IEND", b"\x00" * 512,
                                      b"\xff" * 300, b"P5\n1 1\n255\n\x00", b"GIF89a")))

operations = st.one_of(
    st.tuples(st.just("flip"), _offsets, st.integers(1, 255)),
    st.tuples(st.just("set"), _offsets, st.sampled_from((0, 0xFF, 0x7F, 0x80, 0x01))),
    st.tuples(st.just("truncate"), _offsets),
    st.tuples(st.just("delete"), _offsets, st.integers(1, 256)),
    st.tuples(st.just("insert"), _offsets, _payload),
    st.tuples(st.just("repeat"), _offsets, st.integers(1, 512)),
    st.tuples(st.just("append"), _payload),
    st.tuples(st.just("dims"), _dims, _dims, st.booleans()),
    st.tuples(st.just("length"), st.integers(0, 12), _u32),
    st.tuples(st.just("png_header"), st.integers(0, 4),
              st.sampled_from((0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 255)), st.booleans()),
)

orientations = st.one_of(st.none(), st.integers(0, 9), st.sampled_from((255, 256, 65535)))
exif_payloads = st.one_of(
    st.none(), st.none(), st.none(),
    st.binary(max_size=40),
    st.builds(lambda tail: b"Exif\x00\x00MM\x00*" + tail, st.binary(max_size=40)),
    st.builds(lambda tail: b"Exif\x00\x00II*\x00" + tail, st.binary(max_size=40)),
)


def file_cases(identities: tuple[str, ...] = ("fuzz-a", "fuzz-b")) -> st.SearchStrategy:
    """A mutated image file: mostly few ops on a normal canvas, sometimes odd shapes."""
    return st.builds(
        FileCase,
        base=st.sampled_from(sorted(BASES)),
        face=st.integers(0, 2),
        orientation=orientations,
        exif=exif_payloads,
        canvas=st.one_of(st.just((0, 0)), st.just((0, 0)), st.sampled_from(CANVASES)),
        ops=st.lists(operations, max_size=4).map(tuple),
        suffix=st.one_of(st.none(), st.none(), st.sampled_from(SUFFIXES)),
        identity=st.sampled_from(identities),
    )


# --------------------------------------------------------------------------- manifests

# Symbolic paths, materialised by ``ManifestRoot``: each is a trick a manifest can play.
PATH_TOKENS: dict[str, str] = {
    "ok": "good0.png",
    "ok-jpeg": "good1.jpg",
    "dot": "./good0.png",
    "dotdot-inside": "sub/../good1.jpg",
    "dotdot-out": "../outside.png",
    "deep-dotdot": "sub/" + "../" * 40 + "etc/hostname",
    "abs-in": "{root}/good1.jpg",
    "abs-out": "{outside}/outside.png",
    "etc": "/etc/hostname",
    "dev": "/dev/zero",
    "proc": "/proc/self/environ",
    "tilde": "~/good0.png",
    "symlink-out": "escape.png",
    "symlink-in": "alias.png",
    "symlink-loop": "loop.png",
    "dangling": "dangling.png",
    "dir": "folder.png",
    "fifo": "pipe.png",
    "empty-file": "empty.png",
    "nul": "good0.png\x00.jpg",
    "long-name": "n" * 300 + ".png",
    "long-path": "/".join(["d" * 200] * 25) + ".png",
    "spaces": "  good0.png  ",
    "comma-quote": 'we"ird,name.png',
    "newline": "line\nbreak.png",
    "non-utf8": "caf\udce9.png",
    "unicode": "caf\u00e9-\u00fc.png",
    "backslash": "sub\\..\\good0.png",
    "url": "file:///etc/hostname",
    "missing": "nope.png",
    "empty": "",
}
IDENTITY_TOKENS = ("id-a", "id-b", "stored-0", "", " ", "a,b", 'q"uote', "tab\tid", "nul\x00id",
                   "new\nline", "\u00e9t\u00e9", "\udcff-bad", "x" * 2000, "'; DROP TABLE faces;--")
ENCODINGS = ("utf-8", "utf-8-sig", "utf-8-double-bom", "utf-16", "latin-1", "cp1252")
NEWLINES = ("\n", "\r\n", "\r", "\n\r")
HEADERS = (
    ("identity_id", "photo_path", "sketch_path", "style"),
    ("identity_id", "photo_path"),
    (" identity_id ", " photo_path ", "sketch_path"),
    ("IDENTITY_ID", "photo_path"),
    ("identity_id", "identity_id", "photo_path"),
    ("photo_path", "identity_id", "style", "sketch_path", "extra"),
    ("identity_id",),
    (),
)
QUOTINGS = ("minimal", "all", "none", "raw")


@dataclass(frozen=True)
class ManifestCase:
    """A recipe for one manifest: rows of (identity, photo, sketch, style) over a header,
    written with an encoding, line ends and quoting (or as Parquet)."""

    rows: tuple[tuple[str, str, str, str], ...] = (("id-a", "ok", "", ""),)
    header: tuple[str, ...] = HEADERS[0]
    encoding: str = "utf-8"
    newline: str = "\n"
    quoting: str = "minimal"
    parquet: bool = False
    huge_line: int = 0  # characters of junk appended to the last line
    trailing: bytes = b""  # raw bytes after the text


def _resolve_token(token: str, root: Path, outside: Path) -> str:
    raw = PATH_TOKENS.get(token, token)
    return raw.replace("{root}", str(root)).replace("{outside}", str(outside))


def _field_values(case: ManifestCase, root: Path, outside: Path) -> list[list[str]]:
    rows = []
    for identity, photo, sketch, style in case.rows:
        by_column = {"identity_id": identity, "photo_path": _resolve_token(photo, root, outside),
                     "sketch_path": _resolve_token(sketch, root, outside), "style": style,
                     "extra": "x"}
        rows.append([by_column.get(c.strip().lower(), "") for c in case.header])
    return rows


def _encode(text: str, encoding: str) -> bytes:
    if encoding == "utf-8-double-bom":
        return b"\xef\xbb\xbf\xef\xbb\xbf" + text.encode("utf-8", "surrogateescape")
    if encoding in ("utf-8", "utf-8-sig"):
        return text.encode(encoding, "surrogateescape")
    if encoding == "utf-16":
        return text.encode(encoding, "surrogatepass")
    return text.encode(encoding, "replace")


def write_manifest(case: ManifestCase, root: Path, outside: Path, name: str = "m") -> Path:
    """The manifest file ``case`` describes, in ``root``."""
    rows = _field_values(case, root, outside)
    if case.parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        def clean(value: str) -> str:
            return value.encode("utf-8", "replace").decode("utf-8")

        columns = {c: [clean(r[i]) for r in rows] for i, c in enumerate(dict.fromkeys(case.header))}
        path = root / f"{name}.parquet"
        pq.write_table(pa.table(columns) if columns else pa.table({"x": [1]}), path)
        return path
    out = io.StringIO()
    if case.quoting == "raw":
        lines = [",".join(case.header)] + [",".join(r) for r in rows]
        out.write(case.newline.join(lines) + case.newline)
    else:
        quoting = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL,
                   "none": csv.QUOTE_NONE}[case.quoting]
        writer = csv.writer(out, quoting=quoting, lineterminator=case.newline, escapechar="\\")
        writer.writerow(case.header)
        writer.writerows(rows)
    text = out.getvalue()
    if case.huge_line:
        text = text.rstrip("\r\n") + "," + "h" * case.huge_line + case.newline
    path = root / f"{name}.csv"
    path.write_bytes(_encode(text, case.encoding) + case.trailing)
    return path


_tokens = st.one_of(st.sampled_from(sorted(PATH_TOKENS)),
                    st.text(st.characters(codec="utf-8"), max_size=30))
_identities = st.one_of(st.sampled_from(IDENTITY_TOKENS[:3]), st.sampled_from(IDENTITY_TOKENS),
                        st.text(st.characters(codec="utf-8", exclude_categories=("Cc",)),
                                min_size=1, max_size=20))
manifest_rows = st.tuples(_identities, _tokens,
                          st.one_of(st.just(""), st.just(""), _tokens),
                          st.sampled_from(("", "artist", "pencil", "x" * 300)))


def manifest_cases() -> st.SearchStrategy:
    return st.builds(
        ManifestCase,
        rows=st.lists(manifest_rows, min_size=0, max_size=6).map(tuple),
        header=st.one_of(st.just(HEADERS[0]), st.just(HEADERS[1]), st.sampled_from(HEADERS)),
        encoding=st.one_of(st.just("utf-8"), st.sampled_from(ENCODINGS)),
        newline=st.sampled_from(NEWLINES),
        quoting=st.sampled_from(QUOTINGS),
        parquet=st.sampled_from((False, False, False, True)),
        huge_line=st.sampled_from((0, 0, 0, 100, 140_000, 1_000_000)),
        trailing=st.sampled_from((b"", b"", b"\x00", b"\xff\xfe", b"\x1a", b",,,\n")),
    )


@dataclass
class ManifestRoot:
    """The folder a fuzzed manifest points into: good files and every path trick's target."""

    root: Path
    outside: Path
    made: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, base: Path) -> ManifestRoot:
        root, outside = base / "root", base / "outside"
        (root / "sub").mkdir(parents=True)
        outside.mkdir()
        # Not the bytes or pixels ``seed_workspace`` stores, so a good row is a new face.
        (root / "good0.png").write_bytes(base_file("png-rgb", 0, canvas=(150, 170)))
        (root / "good1.jpg").write_bytes(base_file("jpeg-rgb", 1))
        (root / "caf\u00e9-\u00fc.png").write_bytes(base_file("webp-lossy", 2))
        (outside / "outside.png").write_bytes(base_file("png-rgb", 2))
        (root / "escape.png").symlink_to(outside / "outside.png")
        (root / "alias.png").symlink_to(root / "good0.png")
        (root / "loop.png").symlink_to(root / "loop.png")
        (root / "dangling.png").symlink_to(root / "nowhere.png")
        (root / "folder.png").mkdir()
        (root / "empty.png").write_bytes(b"")
        os.mkfifo(root / "pipe.png")
        weird = os.fsencode(root) + b"/caf\xe9.png"
        with open(weird, "wb") as handle:
            handle.write(base_file("pgm-8bit", 0))
        return cls(root, outside)


def folder_with_weird_names(base: Path) -> Path:
    """A folder source whose identity and file names are not UTF-8 or are odd."""
    root = base / "weird"
    root.mkdir()
    raw = os.fsencode(root)
    for identity, name, face in ((b"id\xe9", b"a.png", 0), (b"ok", b"\xff\xfe.jpg", 1),
                                 (b"ok", b"sp ace.png", 2), (b"ok", b"." + b"h" * 20 + b".png", 0),
                                 (b"ok", b"n" * 250 + b".png", 2)):
        folder = raw + b"/" + identity
        os.makedirs(folder, exist_ok=True)
        with open(folder + b"/" + name, "wb") as handle:
            handle.write(base_file("jpeg-rgb" if name.endswith(b".jpg") else "png-rgb", face,
                                   canvas=(150, 170)))
    return root



# --------------------------------------------------------------------------- invariants


def stored_rows(workspace: Any) -> dict[tuple[str, str], dict]:
    """Every stored face and quarantine row by (table, key): what a run must leave alone."""

    rows = {}
    for table, key in ((FACES, "face_id"), (QUARANTINE, "quarantine_id")):
        for row in storage.read(workspace, table).to_pylist():
            rows[(table, row[key])] = row
    return rows


def changed_rows(before: dict[tuple[str, str], dict], after: dict[tuple[str, str], dict]
                 ) -> list[tuple[str, str]]:
    """Keys of rows stored before a run that the run altered or removed."""
    return [key for key, row in before.items() if after.get(key) != row]


def unaccounted(report: Any) -> int:
    """Files a report neither ingested, skipped nor quarantined (must be 0): every file in a
    source is one of the three, so a file that vanished from the counts was lost silently."""
    return report.seen - (report.n_ingested + sum(report.skipped.values())
                          + report.n_quarantined)


def seed_workspace(root: Path) -> Path:
    """A workspace holding three stored faces and one quarantined file, made by a real ingest:
    the rows a fuzzed run must leave untouched. Returns the workspace folder."""
    # Imported here, not at the top: tasks.ingest.run loads prefect, which reads the environment set
    # above.
    from tasks.ingest.run import ingest_source

    source = root / "stored-source"
    for face in range(3):
        folder = source / f"stored-{face}"
        folder.mkdir(parents=True)
        (folder / "0.png").write_bytes(base_file("png-rgb", face))
    (source / "stored-0" / "cut.jpg").write_bytes(base_file("jpeg-rgb", 0)[:700])
    workspace = Workspace.open(root / "workspace")
    report = ingest_source(workspace, source, run_id="seed")
    assert report.ingested == {"photo": 3} and report.quarantined == {"truncated_image": 1}
    return workspace.root


def write_files(cases: list[FileCase], folder: Path) -> list[Path]:
    """Each case's bytes as ``folder/<identity>/<n><suffix>``: a folder source."""
    paths = []
    for n, case in enumerate(cases):
        path = folder / case.identity / f"{n:05d}{case.file_suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case.build())
        paths.append(path)
    return paths
