"""Identity splits: seeded, stratified, identity-disjoint; the bundled CUHK file is reproducible."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tasks.splits import (
    SplitError,
    load_split,
    load_splits,
    make_split,
    prefix_stratum,
    resolve_split,
    write_split,
)

IDS = [f"f-{i:03d}-01" for i in range(10)] + [f"m-{i:03d}-01" for i in range(30)]


def test_split_is_seeded_stratified_and_order_free() -> None:
    split = make_split(IDS, 0.3, seed=0)
    assert split == make_split(list(reversed(IDS)), 0.3, seed=0)
    assert split != make_split(IDS, 0.3, seed=1)
    counts = Counter((prefix_stratum(i), s) for i, s in split.items())
    assert counts == {("f", "test"): 3, ("f", "train"): 7, ("m", "test"): 9, ("m", "train"): 21}


def test_round_trip_and_bundled_cuhk(tmp_path: Path) -> None:
    split = make_split(IDS, 0.25, seed=3)
    assert load_split(write_split(split, tmp_path / "s.csv")) == split
    cuhk = load_split("cuhk")
    assert resolve_split("cuhk").name == "cuhk.csv" and len(cuhk) == 188
    # The committed file is exactly what make_split gives for its own identities.
    assert make_split(cuhk, 0.3, seed=0) == cuhk
    assert Counter(cuhk.values()) == {"train": 131, "test": 57}


def test_bundled_att_is_all_train_and_merges_with_the_sketch_splits() -> None:
    # AT&T has no sketches: every identity trains, none is a probe, none collides.
    att = load_split("att")
    assert att == {f"s{i}": "train" for i in range(1, 41)}
    merged = load_splits(["cuhk", "cufsf", "att"])
    assert len(merged) == 188 + 423 + 40 and Counter(merged.values())["test"] == 57 + 200


@pytest.mark.parametrize(("text", "message"), [
    ("id,split\na,train\n", "header must be identity_id,split"),
    ("identity_id,split\na,validation\n", r":2: split must be train or test"),
    ("identity_id,split\na,train\na,test\n", r":3: identity 'a' is listed twice"),
])
def test_bad_split_files(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(SplitError, match=message):
        load_split(tmp_path / "bad.csv")


def test_unknown_bundled_split_lists_known() -> None:
    with pytest.raises(SplitError, match="unknown split 'lfw'; bundled: att, cufsf, cuhk"):
        load_split("lfw")
