"""The gallery lineage: which earlier galleries today's only grew from, and what each added."""

from __future__ import annotations

from pathlib import Path

from schemas.vectors import VectorTable
from tasks.storage import Workspace
from tasks.validate import galleries
from tasks.validate.galleries import Lineage


def _chain() -> Lineage:
    # g0 -> g1 (+a) -> g2 (+b, +c) -> g3 (+d): today's is g3.
    return Lineage("g3", [], {"g1": ("g0", [("a", "A")]),
                              "g2": ("g1", [("b", "B"), ("c", "C")]),
                              "g3": ("g2", [("d", "D")])})


def test_what_was_added_since_an_earlier_gallery_is_every_link_walked_back_to_it():
    lineage = _chain()
    assert lineage.added_since("g3") == []
    assert lineage.added_since("g2") == [("d", "D")]
    assert sorted(lineage.added_since("g0")) == [("a", "A"), ("b", "B"), ("c", "C"),
                                                 ("d", "D")]
    assert lineage.added_since("elsewhere") is None  # not grown from it: rescored whole


def test_a_broken_or_looping_chain_carries_nothing_over_the_break():
    broken = Lineage("g3", [], {"g3": ("g2", [("d", "D")])})  # g2 came after a removal
    assert broken.added_since("g2") == [("d", "D")]
    assert broken.added_since("g1") is None
    looping = Lineage("g1", [], {"g1": ("g2", []), "g2": ("g1", [])})
    assert looping.added_since("g0") is None  # a cycle ends the walk, not the process


def test_trimming_keeps_the_links_back_to_the_oldest_gallery_a_row_still_names():
    lineage = _chain()
    assert set(lineage.trimmed({"g1", "g3"}).links) == {"g3", "g2"}
    assert set(lineage.trimmed({"g0"}).links) == {"g3", "g2", "g1"}
    assert lineage.trimmed({"g3"}).links == {}
    assert lineage.trimmed({"off-the-chain"}).links == {}


def test_advancing_links_a_grown_gallery_and_not_one_that_lost_a_face(tmp_path: Path):
    workspace = Workspace.open(tmp_path / "ws")
    source = VectorTable(role="identity", table="emb_identity_sface_128", version="v1", dim=128)
    first = galleries.advance(workspace, source, "g0", ["f1", "f2"], ["A", "B"])
    assert first.links == {} and first.pairs == [("f1", "A"), ("f2", "B")]
    grown = galleries.advance(workspace, source, "g1", ["f1", "f2", "f3"], ["A", "B", "C"])
    assert grown.added_since("g0") == [("f3", "C")]
    path = galleries.lineage_path(workspace, source)
    assert galleries.load(path) == grown  # stored, and read back the same
    again = galleries.advance(workspace, source, "g1", ["f1", "f2", "f3"], ["A", "B", "C"])
    assert again == grown
    relabelled = galleries.advance(workspace, source, "g2", ["f1", "f2", "f3"], ["A", "B", "X"])
    assert relabelled.added_since("g1") is None and relabelled.added_since("g0") is None
    other = VectorTable(role="identity", table="emb_identity_sface_128", version="v2", dim=128)
    assert galleries.lineage_path(workspace, other) != path  # one lineage per encoder version
