"""Which paired differences the recognizer comparison reports (benchmarks/recognizers.py)."""

from __future__ import annotations

from benchmarks.recognizers import comparison_pairs


def test_row_4_is_compared_with_row_2_for_every_kind_present_the_encoder_included() -> None:
    names = {"baseline": (1, "baseline"), "row2-adapter": (2, "adapter"),
             "row2-encoder": (2, "encoder"), "row4-adapter": (4, "adapter"),
             "row4-encoder": (4, "encoder"), "row3-encoder": (3, "encoder")}
    pairs = comparison_pairs(names)
    assert [p for p in pairs if p[1] == "baseline"] == [
        (n, "baseline") for n in names if n != "baseline"]
    assert ("row4-adapter", "row2-adapter") in pairs
    assert ("row4-encoder", "row2-encoder") in pairs
    assert ("row2-encoder", "row2-adapter") in pairs and ("row4-encoder", "row4-adapter") in pairs
    assert not any(b == "row2-encoder" and a != "row4-encoder" for a, b in pairs)
    assert len(pairs) == len(set(pairs))


def test_a_row_without_its_partner_gets_no_row_pair() -> None:
    pairs = comparison_pairs({"baseline": (1, "baseline"), "row4-procrustes": (4, "procrustes")})
    assert pairs == [("row4-procrustes", "baseline")]
