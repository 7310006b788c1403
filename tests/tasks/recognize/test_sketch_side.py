"""Sketch-side recognizers (procrustes, adapter): what they learn, what they never touch,
how their hyper-parameters are chosen, and the bad inputs they refuse or count."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from schemas.encoders import EncoderSpec
from tasks.demo.faces import make_demo_source
from tasks.evaluate.run import EvaluateRequest, evaluate
from tasks.ingest.run import ingest_source
from tasks.recognize.data import DataError
from tasks.recognize.recognizer import RecognizerError, load_recognizer
from tasks.recognize.sketch_side import (
    EVAL_EVERY,
    VectorSet,
    fit_adapter,
    fit_procrustes,
    validation_folds,
    validation_split,
)
from tasks.recognize.train import TrainRecognizerRequest, train_recognizer
from tasks.storage import FACES, Workspace

from .synthetic import write_synthetic_sketches

SFACE = EncoderSpec(role="identity", name="sface")
DIM = 16


def gap_data(identities: int = 40, gap: float = 1.0, seed: int = 0,
             real: int = 0) -> tuple[VectorSet, np.ndarray]:
    """Photos around identity centres; sketches are a fixed rotation of them (the modality
    gap, ``gap`` = how much of the rotation) plus noise. Returns the data and the rotation."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(identities, DIM))
    q, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    rotation = (1 - gap) * np.eye(DIM) + gap * q
    photos = np.repeat(centres, 2, axis=0) + 0.3 * rng.normal(size=(2 * identities, DIM))
    sketch_labels = np.repeat(np.arange(identities), 2)
    sketches = (centres[sketch_labels] + 0.3 * rng.normal(size=(2 * identities, DIM))) @ rotation
    kinds = np.array(["synthetic"] * len(sketch_labels), dtype=object)
    kinds[np.isin(sketch_labels, np.arange(real))] = "sketch"
    return VectorSet(tuple(f"id{i:03d}" for i in range(identities)), sketches, sketch_labels,
                     kinds, photos, np.repeat(np.arange(identities), 2)), rotation


def test_validation_identities_are_stable_disjoint_and_real_when_there_are_real_sketches():
    data, _ = gap_data(real=12)
    fit, val, probes = validation_split(data, seed=0)
    again = validation_split(data, seed=0)
    assert np.array_equal(fit, again[0]) and np.array_equal(val, again[1])
    assert not set(fit) & set(val) and len(fit) + len(val) == 40
    assert probes == "real" and set(val) <= set(range(12))  # drawn among real-sketch ids
    assert not np.array_equal(val, validation_split(data, seed=1)[1])
    synthetic_only, _ = gap_data(real=0)
    assert validation_split(synthetic_only, seed=0)[2] == "all"
    with pytest.raises(DataError, match="at least 4"):
        validation_split(gap_data(identities=3)[0], seed=0)


def test_validation_folds_split_every_real_identity_once_and_keep_the_one_fold_part():
    data, _ = gap_data(identities=40, real=23)
    folds, probes = validation_folds(data, seed=0, folds=5)
    assert probes == "real" and len(folds) == 5
    parts = [val for _, val in folds]
    assert sorted(np.concatenate(parts).tolist()) == list(range(23))  # each validates once
    assert [len(p) for p in parts] == [5, 5, 5, 4, 4]
    for fit, val in folds:
        assert not set(fit) & set(val) and len(fit) + len(val) == 40
    # the first fold is the one-fold part (5 of 23 at a fifth): a 1-fold search is unchanged
    assert np.array_equal(parts[0], validation_split(data, seed=0)[1])
    again, _ = validation_folds(data, seed=0, folds=5)
    assert all(np.array_equal(a[1], b) for a, b in zip(again, parts, strict=True))
    # a pool too small for five parts of MIN_VALIDATION gets fewer folds, not tiny ones
    small, _ = gap_data(identities=10, real=6)
    assert [len(val) for _, val in validation_folds(small, seed=0, folds=5)[0]] == [2, 2, 2]


def test_adapters_of_several_folds_stop_together_on_their_mean_score():
    """One step count for every fold (the refit reuses one), chosen on the folds' mean."""
    from tasks.recognize.sketch_side import (
        _adapter_score,
        _validation_gallery,
        _validation_probes,
        train_adapters,
    )

    data, _ = gap_data(identities=40, gap=1.0, real=40)
    folds, probes = validation_folds(data, seed=0, folds=3)
    validated = [(data.subset(fit), (*_validation_probes(data, val, probes),
                                     *_validation_gallery(data, val))) for fit, val in folds]
    modules, losses, history, best = train_adapters(validated, 0.1, 0, 300, hidden=32)
    assert len(modules) == 3 and best > 0 and best % EVAL_EVERY == 0
    entry = next(h for h in history if h["step"] == best)
    assert len(entry["fold_scores"]) == 3
    assert entry["score"] == pytest.approx(np.mean(entry["fold_scores"]))
    assert entry["score"] == max(h["score"] for h in history)
    # every fold's module is its weights at that one step: scoring them again gives the entry
    again = [_adapter_score(m, v)["score"] for m, (_, v) in zip(modules, validated, strict=True)]
    assert again == pytest.approx(entry["fold_scores"])
    assert history[0]["step"] == 0 and history[0]["score"] < entry["score"]


def test_procrustes_undoes_a_rotation_and_keeps_the_identity_map_without_a_gap():
    data, rotation = gap_data(gap=1.0)
    fitted = fit_procrustes(data, seed=0)
    best, base = fitted.validation["best"], fitted.validation["baseline"]
    assert best["rank1"] > base["rank1"] + 0.3  # a rotated sketch side is mostly lost
    assert fitted.chosen["alpha"] >= 0.5
    matrix = fitted.state["matrix"].numpy()
    # the map takes sketches back toward their photos: close to the inverse rotation
    expected = (1 - fitted.chosen["alpha"]) * np.eye(DIM) + fitted.chosen["alpha"] * rotation.T
    assert np.abs(matrix - expected).max() < 0.2
    # no modality gap: every alpha ties on validation and the tie goes to the identity map
    same, _ = gap_data(gap=0.0)
    assert fit_procrustes(same, seed=0).chosen["alpha"] == 0.0


def test_adapter_starts_at_identity_and_learns_the_gap_on_validation_identities():
    import torch

    from tasks.recognize.sketch_side import torch_modules

    adapter = torch_modules()["adapter"](DIM, 32)
    x = torch.randn(5, DIM)
    y, _ = adapter(x)
    assert torch.allclose(y, torch.nn.functional.normalize(x, dim=1), atol=1e-6)

    data, _ = gap_data(gap=1.0)
    fitted = fit_adapter(data, seed=0, max_steps=300, lambdas=(0.1,), hidden=64)
    best, base = fitted.validation["best"], fitted.validation["baseline"]
    assert best["score"] > base["score"]
    assert fitted.chosen["steps"] > 0 and fitted.chosen["steps"] % EVAL_EVERY == 0
    assert fitted.validation["history"][0]["step"] == 0  # the identity map is a candidate
    # without a gap nothing beats the identity map on validation: it is kept (0 steps)
    same, _ = gap_data(gap=0.0, seed=3)
    kept = fit_adapter(same, seed=0, max_steps=200, lambdas=(1.0,), hidden=32)
    if kept.chosen["steps"] == 0:
        module = torch_modules()["adapter"](DIM, 32)
        module.load_state_dict(kept.state)
        out, _ = module(x)
        assert torch.allclose(out, torch.nn.functional.normalize(x, dim=1), atol=1e-6)
    else:
        assert kept.validation["best"]["score"] > kept.validation["baseline"]["score"]


def test_the_real_share_of_adapter_batches_is_a_validated_choice_only_for_mixed_kinds():
    from tasks.recognize.sketch_side import REAL_KIND, _sample, real_shares

    kinds = np.array([REAL_KIND] * 10 + ["synthetic"] * 90)
    rng = np.random.default_rng(0)
    balanced = _sample(rng, kinds, 4000)
    heavy = _sample(rng, kinds, 4000, real_share=0.8)
    assert abs(np.mean(kinds[balanced] == REAL_KIND) - 0.5) < 0.03
    assert abs(np.mean(kinds[heavy] == REAL_KIND) - 0.8) < 0.03
    # share 1.0: the drawn sketches never enter a batch (their identities stay negatives)
    assert set(kinds[_sample(rng, kinds, 4000, real_share=1.0)]) == {REAL_KIND}
    assert real_shares(kinds) == (None, 0.8, 1.0)
    assert real_shares(np.array([REAL_KIND] * 5)) == (None,)
    assert real_shares(np.array(["synthetic"] * 5)) == (None,)
    # one kind only: the share changes nothing
    only = np.array(["synthetic"] * 7)
    assert np.array_equal(_sample(np.random.default_rng(1), only, 50, real_share=0.8),
                          _sample(np.random.default_rng(1), only, 50))


def test_the_curriculum_trains_on_drawn_sketches_then_on_the_real_ones_from_there():
    """Synthetic first, then real alone from the first stage's best weights: a validated
    candidate beside the mixed batches, only when both kinds are there, and its refit runs
    the two stages for the step counts validation chose."""
    import torch

    from tasks.recognize.sketch_side import (
        CURRICULUM,
        MIXED,
        REAL_KIND,
        _adapter_run,
        of_kinds,
        schedules,
        torch_modules,
        train_adapter,
    )

    data, _ = gap_data(identities=40, gap=1.0, real=16)
    assert schedules(data.sketch_kinds) == (MIXED, CURRICULUM)
    assert schedules(np.array([REAL_KIND] * 4)) == (MIXED,)
    drawn, real = of_kinds(data, real=False), of_kinds(data, real=True)
    assert set(drawn.sketch_kinds) == {"synthetic"} and set(real.sketch_kinds) == {REAL_KIND}
    for part in (drawn, real):  # every photo stays a negative in both stages
        assert np.allclose(part.photo_vectors, data.photo_vectors)

    # a start is continued from: zero steps give back the start's map, not the identity
    first, *_ = train_adapter(drawn, 0.1, 0, 40, None, 32)
    again, *_ = train_adapter(real, 0.1, 0, 0, None, 32, start={
        k: v.clone() for k, v in first.state_dict().items()})
    x = torch.randn(6, DIM)
    assert torch.allclose(first(x)[0], again(x)[0])
    assert not torch.allclose(again(x)[0], torch.nn.functional.normalize(x, dim=1), atol=1e-3)

    fitted = fit_adapter(data, seed=0, max_steps=200, lambdas=(0.1,), hidden=32)
    runs = {r["schedule"]: r for r in fitted.validation["runs"] if r["real_share"] is None}
    assert set(runs) == {MIXED, CURRICULUM}
    # every mixed share is a candidate, real sketches alone (drawn identities as negatives)
    # among them
    assert [r["real_share"] for r in fitted.validation["runs"]
            if r["schedule"] == MIXED and not r["kind_offset"]] == [None, 0.8, 1.0]
    assert sum(runs[CURRICULUM]["stage_steps"]) == runs[CURRICULUM]["best_step"]
    assert fitted.chosen["schedule"] in (MIXED, CURRICULUM)
    assert sum(fitted.chosen["stage_steps"]) == fitted.chosen["steps"]
    # the refit is the chosen schedule run again on every identity for those step counts
    modules, *_ = _adapter_run([(data, None)], fitted.chosen["lambda"], 0,
                               fitted.chosen["schedule"], fitted.chosen["real_share"],
                               tuple(fitted.chosen["stage_steps"]), 32,
                               fitted.chosen["kind_offset"])
    rebuilt = torch_modules()["adapter"](DIM, 32)
    rebuilt.load_state_dict(fitted.state)
    assert torch.allclose(modules[0](x)[0], rebuilt(x)[0])


def test_kind_offsets_learn_the_drawn_sketches_own_shift_and_leave_real_ones_alone():
    """Drawn sketches displaced by one constant vector beyond the artists' gap: the mixed
    candidate with kind offsets learns a shift against that vector for them, none for the
    real kind, and saves a plain adapter (the shift is training-only)."""
    import torch

    from tasks.recognize.sketch_side import (
        CURRICULUM,
        MIXED,
        REAL_KIND,
        KindOffsets,
        _adapter_run,
        kind_offset_shares,
        torch_modules,
        train_adapter,
    )

    data, _ = gap_data(identities=40, gap=1.0, real=16)
    drawn = data.sketch_kinds != REAL_KIND
    direction = np.zeros(DIM)
    direction[0] = 1.0
    vectors = data.sketch_vectors.copy()
    vectors[drawn] += 6.0 * direction
    shifted = VectorSet(data.identities, vectors, data.sketch_labels, data.sketch_kinds,
                        data.photo_vectors, data.photo_labels)

    module, _, _, _ = train_adapter(shifted, 0.1, 0, 200, None, 32, real_share=0.8,
                                    kind_offset=True)
    # the saved adapter is the plain kind: the same weights, nothing of the shift
    assert set(module.state_dict()) == set(torch_modules()["adapter"](DIM, 32).state_dict())
    offsets = KindOffsets(shifted.sketch_kinds, DIM)
    assert offsets.names == ["synthetic"]
    # the real kind's row is a fixed zero: its sketches pass through only normalised
    x = torch.from_numpy(vectors.astype(np.float32))
    items = torch.arange(len(x))
    with torch.no_grad():
        offsets.learned.fill_(0.5)
        moved = offsets.shift(x, items)
    real = torch.from_numpy(~drawn)
    assert torch.allclose(moved[real], torch.nn.functional.normalize(x[real], dim=1))
    assert not torch.allclose(moved[~real], torch.nn.functional.normalize(x[~real], dim=1))

    # trained in lockstep with validation, the shift grows from zero and is reported
    from tasks.recognize.sketch_side import _validation_gallery, _validation_probes

    folds, probes = validation_folds(shifted, seed=0, folds=1)
    validated = [(shifted.subset(fit), (*_validation_probes(shifted, val, probes),
                                        *_validation_gallery(shifted, val)))
                 for fit, val in folds]
    _, _, history, _ = _adapter_run(validated, 0.1, 0, MIXED, 0.8, 200, 32, True)
    norms = history[-1]["offset_norms"][0]
    assert set(norms) == {"synthetic"} and norms["synthetic"] > 0.1
    assert history[0]["offset_norms"][0]["synthetic"] == 0.0  # step 0 shifts nothing
    # offsets only where real and drawn sketches mix, and only in mixed batches
    assert kind_offset_shares(shifted.sketch_kinds) == (None, 0.8)
    assert kind_offset_shares(np.array([REAL_KIND] * 4)) == ()
    with pytest.raises(ValueError, match="mixed batches"):
        _adapter_run(validated, 0.1, 0, CURRICULUM, None, 20, 32, True)

    fitted = fit_adapter(shifted, seed=0, max_steps=100, lambdas=(0.1,), hidden=32)
    with_offsets = [r for r in fitted.validation["runs"] if r["kind_offset"]]
    assert [(r["schedule"], r["real_share"]) for r in with_offsets] == [(MIXED, None),
                                                                         (MIXED, 0.8)]
    assert "kind_offset" in fitted.chosen


def test_a_kind_offset_moves_drawn_sketches_against_their_own_displacement(monkeypatch):
    """The direction the offset learns: opposite the displacement of the drawn sketches."""
    import torch

    from tasks.recognize.sketch_side import REAL_KIND, KindOffsets, train_adapters

    data, _ = gap_data(identities=40, gap=0.0, real=20)
    drawn = data.sketch_kinds != REAL_KIND
    vectors = data.sketch_vectors.copy()
    vectors[drawn, 0] += 6.0
    moved = VectorSet(data.identities, vectors, data.sketch_labels, data.sketch_kinds,
                      data.photo_vectors, data.photo_labels)
    captured: list[KindOffsets] = []
    original = KindOffsets.__init__

    def keep(self, *args):  # the run's own offsets, to read after training
        original(self, *args)
        captured.append(self)

    monkeypatch.setattr(KindOffsets, "__init__", keep)
    train_adapters([(moved, None)], 0.1, 0, 300, hidden=32, real_share=0.5, kind_offset=True)
    learned = captured[0].learned.detach()[0]
    assert float(learned[0]) < 0 and float(learned[0]) < -0.5 * float(learned.norm())
    assert torch.isfinite(learned).all()


# --------------------------------------------------------------------------- end to end

IDENTITIES = 8
HELD_OUT = ("demo-001", "demo-004")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sketch-side")
    demo = make_demo_source(root / "demo", identities=IDENTITIES, photos_per_identity=2)
    workspace = Workspace.open(root / "ws")
    ingest_source(workspace, demo / "photos")
    write_synthetic_sketches(workspace)
    split = root / "split.csv"
    split.write_text("identity_id,split\n" + "".join(
        f"demo-{i:03d},{'test' if f'demo-{i:03d}' in HELD_OUT else 'train'}\n"
        for i in range(IDENTITIES)))
    return {"root": root, "demo": demo, "workspace": workspace, "split": split}


def request(site: dict, out: str, **options) -> TrainRecognizerRequest:
    return TrainRecognizerRequest(workspace=str(site["workspace"].root),
                                  out=str(site["root"] / out), identity_encoder=SFACE,
                                  **{"steps": 100, **options})


@pytest.mark.parametrize("mode", ["procrustes", "adapter"])
def test_sketch_side_recognizer_maps_sketches_and_leaves_photos_alone(site: dict, mode: str):
    report = train_recognizer(request(site, mode, mode=mode))
    out = Path(report.out)
    config = json.loads((out / "recognizer.json").read_text())
    assert config["mode"] == mode and config["applies_to"] == "sketch"
    assert report.validation["identities"]["validation"] >= 2
    assert (out / "validation.json").is_file() and (out / "loss.png").stat().st_size > 0

    workspace = site["workspace"]
    from tasks import storage

    faces = storage.read(workspace, FACES, columns=["face_id", "kind"]).to_pylist()
    photos = [f["face_id"] for f in faces if f["kind"] == "photo"]
    recognizer = load_recognizer(str(out))
    baseline = load_recognizer("baseline", SFACE)
    ours, theirs = recognizer.embed(workspace, photos), baseline.embed(workspace, photos)
    theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    assert np.allclose(ours, theirs, atol=1e-5)  # the photo side is the frozen encoder

    report = evaluate(EvaluateRequest(
        workspace=str(workspace.root), pairs=str(site["demo"] / "pairs.csv"),
        out=str(site["root"] / f"eval-{mode}"), recognizers=["baseline", str(out)],
        identity_encoder=SFACE, bootstrap=100))
    assert set(report.recognizers) == {"baseline", mode}
    assert report.recognizers[mode]["ci95"]["n_resamples"] == 100


def test_a_recognizer_of_another_encoder_version_is_refused_naming_both(site: dict):
    report = train_recognizer(request(site, "versioned", mode="procrustes"))
    path = Path(report.out) / "recognizer.json"
    config = json.loads(path.read_text())
    trained_on = config["identity_encoder_version"]
    config["identity_encoder_version"] = "sface@0000other"
    path.write_text(json.dumps(config))
    with pytest.raises(RecognizerError) as error:
        load_recognizer(str(report.out), SFACE)
    assert "sface@0000other" in str(error.value) and trained_on in str(error.value)


def test_a_source_with_test_identities_is_refused_unless_they_are_dropped(site: dict):
    pairs = str(site["demo"] / "pairs.csv")
    with pytest.raises(DataError, match=r"2 identities of the test part.*demo-001"):
        train_recognizer(request(site, "leak", mode="procrustes", split=str(site["split"]),
                                 real_pairs=pairs))
    with pytest.raises(DataError, match="sketches holds 2 identities of the test part"):
        train_recognizer(request(site, "leak", mode="procrustes", split=str(site["split"])))
    report = train_recognizer(request(site, "dropped", mode="procrustes",
                                      split=str(site["split"]), real_pairs=pairs,
                                      drop_test_identities=True))
    trained = set((Path(report.out) / "identities.txt").read_text().split())
    assert not trained & set(HELD_OUT) and report.skipped["held_out"] > 0


def test_sketches_without_a_face_are_reported_and_counted(site: dict):
    root = site["root"]
    blank = root / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 192, 3), 200, np.uint8))
    with open(site["demo"] / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    manifest = root / "noface.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            row["photo_path"] = str(site["demo"] / row["photo_path"])
            row["sketch_path"] = str(blank if row["identity_id"] == "demo-005"
                                     else site["demo"] / row["sketch_path"])
            writer.writerow(row)
    messages: list[str] = []
    report = train_recognizer(request(site, "noface", mode="procrustes",
                                      real_pairs=[str(manifest)], real_pairs_root=[str(root)],
                                      include_synthetic=False), progress=messages.append)
    assert report.skipped["unusable_sketch_no_face"] == 1
    assert report.inputs["real_pairs"]["unusable"] == {"sketch": {"no_face": 1}}
    assert report.examples["sketch"] == IDENTITIES - 1
    assert any("1 sketch(s) unusable" in m for m in messages)


def test_other_pixels_under_the_same_sketch_ids_are_encoded_again(site: dict, tmp_path: Path):
    """A sketch id names a drawing, not its pixels (another sampling noise draws others under
    it): the training set's fingerprint, and so the vectors cache and what a benchmark
    reuses a trained recognizer by, follow the checksum."""
    from tasks.recognize.train import training_fingerprint

    cache = tmp_path / "cache"
    copy = Workspace.open(shutil.copytree(site["workspace"].root, tmp_path / "drawn"))
    cached, recorded = {}, {}
    for renderer in ("pencil-dodge", "xdog"):  # the same source folder, drawn again
        write_synthetic_sketches(copy, renderer=renderer)
        asked = request(site, f"pixels-{renderer}", mode="procrustes",
                        dataset=[str(copy.root)], vectors_cache=str(cache))
        report = train_recognizer(asked)
        assert report.examples["synthetic"] == IDENTITIES * 2
        new = set(cache.glob("vectors-*.npy")) - set(cached.values())
        assert len(new) == 1  # encoded afresh, not read back from the other drawing's file
        cached[renderer] = new.pop()
        config = json.loads((Path(report.out) / "recognizer.json").read_text())
        recorded[renderer] = config["training_data"]["fingerprint"]
        assert training_fingerprint(asked) == recorded[renderer]
    assert recorded["pencil-dodge"] != recorded["xdog"]
    first, second = (np.load(cached[r]) for r in ("pencil-dodge", "xdog"))
    assert first.shape == second.shape and not np.allclose(first, second)


def test_several_sources_mix_real_and_synthetic(site: dict):
    rendered = site["root"] / "rendered.parquet"
    from tasks import storage

    storage.write_parquet_atomic(storage.read(site["workspace"], "sketches"), rendered)
    report = train_recognizer(request(
        site, "mixed", mode="procrustes", real_pairs=[str(site["demo"] / "pairs.csv")],
        dataset=["sketches", str(rendered)]))
    assert report.examples["sketch"] == IDENTITIES
    assert report.examples["synthetic"] == 2 * IDENTITIES  # the same rows twice: deduplicated
    assert report.skipped["duplicate"] == 2 * IDENTITIES
    assert isinstance(report.inputs["synthetic"], list) and len(report.inputs["synthetic"]) == 2
    # a style filter keeps one style of a source that holds several
    other = train_recognizer(request(
        site, "styled", mode="procrustes", real_pairs=[str(site["demo"] / "pairs.csv")],
        dataset=["sketches"], synthetic_styles=["xdog-lines"]))
    assert "synthetic" not in other.examples
    assert other.inputs["synthetic"]["other_styles"] == 2 * IDENTITIES
