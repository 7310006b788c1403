"""Identity-disjoint train/test splits, stored as small CSV files of identity names.

The generator and the recogniser train on ``train`` identities only and evaluation probes come
from ``test``; a split is a file (not a seed passed around) so every stage and every later run
reads the very same partition. Bundled splits live in ``schemas/splits/<name>.csv``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np

from tasks.storage import write_bytes_atomic

SplitName = Literal["train", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "test")
COLUMNS = ("identity_id", "split")
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "schemas" / "splits"


class SplitError(ValueError):
    """A malformed split file or a split that cannot be made."""


def prefix_stratum(identity_id: str) -> str:
    """CUHK names encode the subset and sex before the first dash (f, f1, m2, ...)."""
    return identity_id.split("-", 1)[0]


def make_split(
    ids: Iterable[str],
    test_fraction: float,
    seed: int,
    stratum: Callable[[str], str] = prefix_stratum,
) -> dict[str, SplitName]:
    """A seeded split, stratified so each stratum keeps about ``test_fraction`` in test.

    Ids are sorted and each stratum shuffled by its own seeded generator, so the result depends
    only on the set of ids, the fraction and the seed (not on input order or on other strata).
    """
    if not 0.0 < test_fraction < 1.0:
        raise SplitError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    unique = sorted(set(ids))
    if not unique:
        raise SplitError("no identities to split")
    groups: dict[str, list[str]] = {}
    for identity in unique:
        groups.setdefault(stratum(identity), []).append(identity)
    result: dict[str, SplitName] = {}
    for name in sorted(groups):
        members = groups[name]
        key = [int(seed), *name.encode("utf-8")]
        order = np.random.default_rng(np.random.SeedSequence(key)).permutation(len(members))
        n_test = int(len(members) * test_fraction + 0.5)
        for rank, index in enumerate(order):
            result[members[index]] = "test" if rank < n_test else "train"
    return dict(sorted(result.items()))


def split_csv(split: Mapping[str, SplitName]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for identity in sorted(split):
        writer.writerow([identity, split[identity]])
    return out.getvalue()


def write_split(split: Mapping[str, SplitName], path: str | Path) -> Path:
    return write_bytes_atomic(split_csv(split).encode("utf-8"), Path(path))


def resolve_split(name_or_path: str | Path) -> Path:
    """A bare name ("cuhk") is a bundled split; anything path-like is that file."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith(".csv"):
        path = Path(text).expanduser()
    else:
        path = BUNDLED_DIR / f"{text}.csv"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in BUNDLED_DIR.glob("*.csv"))) or "none"
            raise SplitError(f"unknown split {text!r}; bundled: {known} (or give a CSV path)")
    if not path.is_file():
        raise SplitError(f"split file {path} does not exist")
    return path


def load_splits(names: str | Path | list[str | Path]) -> dict[str, SplitName]:
    """Several splits as one (``cuhk`` + ``cufsf`` for a generator trained on both sources).

    An identity listed by two splits must sit on the same side in both, or a held-out
    identity of one could be trained on through the other.
    """
    merged: dict[str, SplitName] = {}
    for name in [names] if isinstance(names, str | Path) else names:
        for identity, side in load_split(name).items():
            if merged.get(identity, side) != side:
                raise SplitError(f"identity {identity!r} is {merged[identity]} in one split and "
                                 f"{side} in {name}")
            merged[identity] = side
    return dict(sorted(merged.items()))


def load_split(path: str | Path) -> dict[str, SplitName]:
    """``{identity_id: "train" | "test"}``; errors name the file and line."""
    path = resolve_split(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != COLUMNS:
            raise SplitError(f"{path}: the header must be {','.join(COLUMNS)}, got {header}")
        split: dict[str, SplitName] = {}
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2 or not row[0].strip():
                raise SplitError(f"{path}:{line}: expected identity_id,split, got {row}")
            identity, which = row[0].strip(), row[1].strip()
            if which not in SPLITS:
                raise SplitError(f"{path}:{line}: split must be train or test, got {which!r}")
            if identity in split:
                raise SplitError(f"{path}:{line}: identity {identity!r} is listed twice")
            split[identity] = which  # type: ignore[assignment]
    return split
