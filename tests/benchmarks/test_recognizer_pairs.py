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


def test_the_guarded_encoder_is_compared_with_the_unguarded_one_and_row_2() -> None:
    names = {"baseline": (1, "baseline"), "row2-encoder": (2, "encoder"),
             "row2-encoder-guarded": (2, "encoder-guarded"), "row4-encoder": (4, "encoder"),
             "row4-encoder-guarded": (4, "encoder-guarded")}
    pairs = comparison_pairs(names)
    assert ("row2-encoder-guarded", "row2-encoder") in pairs
    assert ("row4-encoder-guarded", "row2-encoder-guarded") in pairs
    assert ("row4-encoder-guarded", "row4-encoder") in pairs
    assert len(pairs) == len(set(pairs))


def test_every_guard_is_an_artist_its_row_does_not_train_on(tmp_path) -> None:
    from benchmarks.recognizers import GUARDS, guard_sources, row_sources

    manifests = {f"{n}-train": tmp_path / f"{n}-train.csv" for n in ("cuhk", "cufsf")}
    for row, artists in GUARDS.items():
        trained = str(row_sources(row, manifests, tmp_path, ["syn"], tmp_path / "r", None)
                      .get("real_pairs", []))
        guard = guard_sources(row, manifests, tmp_path)
        assert guard["guard_pairs"] == [str(manifests[f"{a}-train"]) for a in artists]
        assert not any(g in trained for g in guard["guard_pairs"])


def test_a_recognizer_chosen_among_other_candidates_is_not_reused(monkeypatch) -> None:
    """The reuse key holds the request and, for the searched kinds, how their search chose:
    a changed search retrains that kind's rows and keeps the others'."""
    import tasks.recognize.sketch_side as sketch_side
    from benchmarks.recognizers import reuse_key
    from schemas.encoders import EncoderSpec
    from tasks.recognize.train import TrainRecognizerRequest

    def request(mode: str) -> TrainRecognizerRequest:
        return TrainRecognizerRequest(workspace="/ws", out="/out", mode=mode, seed=0,
                                      identity_encoder=EncoderSpec(role="identity",
                                                                   name="sface"))

    modes = ("procrustes", "adapter", "encoder", "head")
    before = {mode: reuse_key(request(mode)) for mode in modes}
    # a kind with no keyed search keeps the stamp recognizers were written with before
    assert before["head"] == request("head").model_dump_json(
        exclude={"run_id", "guard_pairs", "guard_pairs_root", "encoder_blocks"})
    monkeypatch.setitem(sketch_side.CANDIDATE_SEARCH, "adapter", "a later search")
    after = {mode: reuse_key(request(mode)) for mode in modes}
    assert after["adapter"] != before["adapter"]
    assert all(after[mode] == before[mode] for mode in ("procrustes", "encoder", "head"))


def test_fewer_real_identities_are_a_nested_seeded_subset_of_the_train_manifest(tmp_path) -> None:
    import csv

    import pytest

    from benchmarks.recognizers import narrowed_manifest

    train = tmp_path / "cufsf-train.csv"
    rows = [{"identity_id": f"p{i:03d}", "photo": f"photos/{i}.jpg", "sketch": f"s/{i}.jpg"}
            for i in range(40)] + [{"identity_id": "p001", "photo": "photos/1b.jpg",
                                   "sketch": "s/1b.jpg"}]
    with open(train, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def people(path) -> list[str]:
        with open(path, newline="", encoding="utf-8") as handle:
            return [r["identity_id"] for r in csv.DictReader(handle)]

    small = set(people(narrowed_manifest(train, 20, seed=0)))
    larger = people(narrowed_manifest(train, 30, seed=0))
    assert len(small) == 20 and len(set(larger)) == 30 and small <= set(larger)
    assert narrowed_manifest(train, 20, seed=0).name == "cufsf-train-20.csv"
    assert set(people(narrowed_manifest(train, 20, seed=0))) == small  # seeded
    assert set(people(narrowed_manifest(train, 20, seed=1))) != small
    if "p001" in larger:  # every pair of a kept identity is kept
        assert larger.count("p001") == 2
    assert people(narrowed_manifest(train, 40, seed=0)).count("p001") == 2
    for count in (19, 41):
        with pytest.raises(SystemExit, match="has 40 identities"):
            narrowed_manifest(train, count, seed=0)


def test_a_narrowed_row_says_so_in_its_label() -> None:
    from benchmarks.recognizers import row_label

    assert row_label(2, "adapter") == "real CUFSF train pairs only, adapter"
    assert row_label(1, "baseline") == "baseline SFace"
    assert row_label(4, "encoder", 56) == (
        "real CUFSF train + synthetic, encoder (56 of the CUFSF train identities)")
    assert row_label(2, "encoder", 56, [8]) == (
        "real CUFSF train pairs only, encoder (56 of the CUFSF train identities), k from {8} "
        "only")
    assert row_label(2, "encoder-guarded", None, [4, 8]).endswith(
        "encoder-guarded, k from {4, 8} only")


def test_row_7_adds_the_other_artist_to_row_2_and_is_set_beside_rows_2_and_4(tmp_path) -> None:
    """Row 7 is row 4's control: the same real CUFSF pairs plus another artist's real ones
    where row 4 adds drawn ones. It has no artist left to guard it."""
    import pytest

    from benchmarks.recognizers import GUARDED, guard_sources, row_sources

    manifests = {f"{n}-train": tmp_path / f"{n}-train.csv" for n in ("cuhk", "cufsf")}
    two = row_sources(2, manifests, tmp_path, [], None, None)
    seven = row_sources(7, manifests, tmp_path, [], None, None)
    assert seven["real_pairs"] == [*two["real_pairs"], str(manifests["cuhk-train"])]
    assert seven["real_pairs_root"] == [str(tmp_path / "cufsf"), str(tmp_path / "cuhk")]
    assert not seven["include_synthetic"]
    with pytest.raises(SystemExit, match=f"row 7 .* no artist left.*{GUARDED}"):
        guard_sources(7, manifests, tmp_path)
    names = {"baseline": (1, "baseline"), "row2-adapter": (2, "adapter"),
             "row4-adapter": (4, "adapter"), "row7-adapter": (7, "adapter"),
             "row7-procrustes": (7, "procrustes")}
    pairs = comparison_pairs(names)
    assert {("row4-adapter", "row2-adapter"), ("row7-adapter", "row2-adapter"),
            ("row4-adapter", "row7-adapter")} <= set(pairs)
    assert not any("row7-procrustes" in p for p in pairs if p[1] != "baseline")
    assert len(pairs) == len(set(pairs))
