"""The ``encoder`` recognizer: SFace's first blocks retrained on sketch images.

Real SFace (the bundled ONNX, ported to torch), real Prefect-free training, LanceDB on disk;
tiny data and a few steps so each test takes seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from schemas.encoders import EncoderSpec
from tasks import storage
from tasks.demo.faces import make_demo_source
from tasks.encoders import load
from tasks.faces import crop_stack
from tasks.ingest.run import ingest_source
from tasks.recognize.data import DataError
from tasks.recognize.recognizer import RecognizerError, load_recognizer
from tasks.recognize.sketch_encoder import (
    N_BLOCKS,
    EncoderData,
    augment,
    block_of,
    build_sketch_encoder,
    embed_crops,
    fit_encoder,
    sface_net,
    train_encoder,
)
from tasks.recognize.sketch_side import VectorSet
from tasks.recognize.train import TrainRecognizerRequest, train_recognizer
from tasks.storage import FACES, Workspace

from .synthetic import write_synthetic_sketches

SFACE = EncoderSpec(role="identity", name="sface")
IDENTITIES = 6


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sketch-encoder")
    demo = make_demo_source(root / "demo", identities=IDENTITIES, photos_per_identity=1)
    workspace = Workspace.open(root / "ws")
    ingest_source(workspace, demo / "photos")
    write_synthetic_sketches(workspace)
    return {"root": root, "demo": demo, "workspace": workspace}


def request(site: dict, out: str, **options) -> TrainRecognizerRequest:
    return TrainRecognizerRequest(workspace=str(site["workspace"].root),
                                  out=str(site["root"] / out), identity_encoder=SFACE,
                                  mode="encoder", **{"steps": 1, "batch_size": 4, **options})


def faces_of(workspace: Workspace, kind: str) -> list[str]:
    faces = storage.read(workspace, FACES, columns=["face_id", "kind"]).to_pylist()
    return [f["face_id"] for f in faces if f["kind"] == kind]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_only_the_first_k_blocks_train_and_the_branch_starts_as_the_encoder(site: dict):
    import torch

    module = build_sketch_encoder(None, 2)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and {block_of(n) for n in trainable} == {1, 2}
    assert block_of("net.conv_12_conv2d.weight") == 12  # not block 1
    assert all(not p.requires_grad for n, p in module.named_parameters()
               if (block_of(n) or N_BLOCKS + 1) > 2)
    module.train()
    assert not module.training  # BatchNorm keeps SFace's running statistics

    workspace = site["workspace"]
    photos = faces_of(workspace, "photo")
    crops = crop_stack(workspace, photos)
    ours = embed_crops(module, crops, torch.device("cpu"))
    theirs = unit(load(SFACE).encode(crops))
    assert np.min(np.sum(ours * theirs, axis=1)) > 0.9999  # step 0 is the baseline


def test_augmentation_is_seeded_in_range_and_changes_the_sketch():
    import torch

    x = torch.rand(6, 3, 112, 112) * 2 - 1
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    c = augment(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1.0 and a.max() <= 1.0 and (a - x).abs().mean() > 0.01


def test_a_tiny_run_saves_reloads_and_embeds_the_same_vectors_twice(site: dict):
    workspace = site["workspace"]
    report = train_recognizer(request(site, "tiny"))
    out = Path(report.out)
    config = json.loads((out / "recognizer.json").read_text())
    assert config["mode"] == "encoder" and config["applies_to"] == "sketch"
    assert config["identity_encoder_version"] == load(SFACE).version
    assert report.validation["identities"]["validation"] >= 2
    assert report.seconds_per_epoch and report.probes_per_second
    assert report.steps_this_run == 3  # two k, then the other lambda: one step each
    # real sketches stored in the workspace (never trained on here) are what evaluate embeds
    ingest_source(workspace, str(site["demo"] / "pairs.csv"))
    sketches, photos = faces_of(workspace, "sketch"), faces_of(workspace, "photo")
    baseline = load_recognizer("baseline", SFACE)
    # one step is below the first validation: step 0 is kept, which is the baseline
    assert config["steps"] == 0 and config["chosen"]["adapter"] is None
    first = load_recognizer(str(out)).embed(workspace, sketches + photos)
    theirs = unit(baseline.embed(workspace, sketches + photos))
    assert np.min(np.sum(first * theirs, axis=1)) > 0.9999
    assert np.allclose(first[len(sketches):], theirs[len(sketches):], atol=1e-6)

    # a trained branch (a few steps, no validation) written into the same folder: it
    # reloads and embeds the very same vectors twice; photos stay the frozen encoder's
    import hashlib

    import torch
    from safetensors.torch import save

    vectors = np.random.default_rng(0).normal(size=(2 * IDENTITIES, 128))
    labels = np.repeat(np.arange(IDENTITIES), 2)
    kinds = np.array(["photo", "sketch"] * IDENTITIES)
    data = VectorSet.from_training([f"i{i}" for i in range(IDENTITIES)], labels, kinds,
                                   vectors)
    crops = crop_stack(workspace, sketches[:IDENTITIES])
    module, losses, _, best, _ = train_encoder(
        sface_net(None), EncoderData(data, crops), config["blocks"], 1.0, 0, 3, None,
        torch.device("cpu"), batch=4)
    assert best == 3 and len(losses) == 3 and all(np.isfinite(losses))
    weights = save(module.trainable_state())
    (out / "recognizer.safetensors").write_bytes(weights)
    config.update(weights_sha256=hashlib.sha256(weights).hexdigest(), steps=3)
    (out / "recognizer.json").write_text(json.dumps(config))
    again = load_recognizer(str(out)).embed(workspace, sketches + photos)
    twice = load_recognizer(str(out)).embed(workspace, sketches + photos)
    assert np.array_equal(again, twice)
    assert np.allclose(again[len(sketches):], theirs[len(sketches):], atol=1e-6)
    assert np.max(np.abs(again[:len(sketches)] - first[:len(sketches)])) > 1e-4

    # damaged weights are refused by their checksum
    (out / "recognizer.safetensors").write_bytes(save(
        {k: v + 1 for k, v in module.trainable_state().items()}))
    with pytest.raises(RecognizerError, match="checksum"):
        load_recognizer(str(out))


def test_the_cuda_path_with_autocast_runs_on_the_cpu(site: dict):
    import torch

    workspace = site["workspace"]
    crops = crop_stack(workspace, faces_of(workspace, "photo")[:4])
    vectors = np.random.default_rng(1).normal(size=(8, 128))
    data = VectorSet.from_training(["a", "b", "c", "d"], np.repeat(np.arange(4), 2),
                                   np.array(["photo", "synthetic"] * 4), vectors)
    module, losses, _, _, _ = train_encoder(sface_net(None), EncoderData(data, crops), 1, 0.3,
                                            0, 2, None, torch.device("cpu"), autocast=True,
                                            batch=4)
    assert len(losses) == 2 and all(np.isfinite(losses))
    mixed = embed_crops(module, crops, torch.device("cpu"), autocast=True)
    full = embed_crops(module, crops, torch.device("cpu"), autocast=False)
    assert np.min(np.sum(mixed * full, axis=1)) > 0.98  # bf16 agrees with fp32


def test_a_wrong_encoder_version_is_refused_naming_both(site: dict):
    report = train_recognizer(request(site, "versioned"))
    path = Path(report.out) / "recognizer.json"
    config = json.loads(path.read_text())
    trained_on = config["identity_encoder_version"]
    config["identity_encoder_version"] = "sface@0000other"
    path.write_text(json.dumps(config))
    with pytest.raises(RecognizerError) as error:
        load_recognizer(str(report.out), SFACE)
    assert "sface@0000other" in str(error.value) and trained_on in str(error.value)


def test_pinned_blocks_are_the_only_k_the_search_tries_and_other_modes_refuse_them(site: dict):
    """``encoder_blocks`` narrows the search's k (a validation part too small to choose one
    otherwise falls to the tie rule); a mode that retrains no blocks, an empty list or a k
    outside SFace's 14 blocks is refused when the request is made."""
    report = train_recognizer(request(site, "pinned", encoder_blocks=[2]))
    config = json.loads((Path(report.out) / "recognizer.json").read_text())
    runs = json.loads((Path(report.out) / "validation.json").read_text())["runs"]
    assert {r["blocks"] for r in runs} == {2}
    assert config["blocks"] == 2
    assert report.steps_this_run == 2  # one k, then the other lambda
    assert TrainRecognizerRequest(workspace="/ws", out="/out", identity_encoder=SFACE,
                                  mode="encoder", encoder_blocks=[8, 4, 8]).encoder_blocks \
        == [4, 8]
    for mode, blocks, match in (("adapter", [4], "mode adapter retrains no blocks"),
                                ("encoder", [], r"one or more of 1..14, got \[\]"),
                                ("encoder", [0], r"got \[0\]"),
                                ("encoder", [8, 15], r"got \[8, 15\]")):
        with pytest.raises(ValueError, match=match):
            TrainRecognizerRequest(workspace="/ws", out="/out", identity_encoder=SFACE,
                                   mode=mode, encoder_blocks=blocks)


def test_too_few_identities_for_validation_is_an_error_before_training(tmp_path: Path):
    demo = make_demo_source(tmp_path / "demo", identities=3, photos_per_identity=1)
    workspace = Workspace.open(tmp_path / "ws")
    ingest_source(workspace, demo / "photos")
    write_synthetic_sketches(workspace)
    out = tmp_path / "few"
    with pytest.raises(DataError, match="encoder: 3 identities with sketches.*at least 4"):
        train_recognizer(TrainRecognizerRequest(
            workspace=str(workspace.root), out=str(out), identity_encoder=SFACE,
            mode="encoder", steps=1))
    assert not (out / "cache").exists()  # refused before any vector was computed


def test_an_adapter_on_top_saves_and_reloads_with_the_branch(site: dict):
    import torch
    from safetensors.torch import load, save

    workspace = site["workspace"]
    crops = crop_stack(workspace, faces_of(workspace, "photo")[:3])
    branch = build_sketch_encoder(None, 4, adapter_hidden=16)
    plain = embed_crops(branch, crops, torch.device("cpu"))
    assert np.allclose(plain, embed_crops(build_sketch_encoder(None, 4), crops,
                                          torch.device("cpu")), atol=1e-6)  # starts as identity
    with torch.no_grad():
        branch.adapter.up.weight.normal_(0, 0.1)
    state = load(save(branch.trainable_state()))
    assert any(k.startswith("adapter.") for k in state) and \
        {block_of(k) for k in state if not k.startswith("adapter.")} == {1, 2, 3, 4}
    again = build_sketch_encoder(None, 4, adapter_hidden=16)
    again.load_trainable(state)
    ours = embed_crops(again, crops, torch.device("cpu"))
    assert np.array_equal(ours, embed_crops(branch, crops, torch.device("cpu")))
    assert np.max(np.abs(ours - plain)) > 1e-3
    with pytest.raises(ValueError, match="unexpected"):
        build_sketch_encoder(None, 4).load_trainable(state)  # no adapter to take them


def test_a_guard_that_lost_ground_keeps_a_step_from_being_chosen(site: dict):
    """A step whose guard score is under step 0's is recorded, never the best: with the
    floor out of reach every trained step is refused and step 0 (the encoder) is kept; with
    it at -inf the guard changes nothing."""
    import math

    import torch

    workspace = site["workspace"]
    photos = faces_of(workspace, "photo")[:IDENTITIES]
    crops = crop_stack(workspace, photos)
    vectors = np.random.default_rng(2).normal(size=(2 * IDENTITIES, 128))
    labels = np.repeat(np.arange(IDENTITIES), 2)
    data = VectorSet.from_training([f"i{i}" for i in range(IDENTITIES)], labels,
                                   np.array(["photo", "sketch"] * IDENTITIES), vectors)
    encoder = EncoderData(data, crops)
    probes = (crops, np.arange(IDENTITIES), data.photo_vectors, data.photo_labels)
    guard = (crops[:3], np.arange(3), data.photo_vectors, data.photo_labels)
    device = torch.device("cpu")
    # Validation on the training sketches themselves: InfoNCE raises it, so steps win.
    free, _, history, best, _ = train_encoder(
        sface_net(None), encoder, 4, 0.3, 0, 30, probes, device, batch=6,
        step0={"rank1": 0.0, "tar_at_far_1e-2": 0.0, "score": 0.0,
               "guard": {"rank1": 0.0, "tar_at_far_1e-2": 0.0, "score": -math.inf}},
        guard=guard)
    assert best > 0 and all("guard" in h for h in history)
    _, _, refused, kept, _ = train_encoder(
        sface_net(None), encoder, 4, 0.3, 0, 30, probes, device, batch=6,
        step0={"rank1": 0.0, "tar_at_far_1e-2": 0.0, "score": 0.0,
               "guard": {"rank1": 1.0, "tar_at_far_1e-2": 1.0, "score": math.inf}},
        guard=guard)
    assert kept == 0 and len(refused) > 1
    assert [h["score"] for h in refused] == [h["score"] for h in history][:len(refused)]


def mixed_kinds(site: dict, seed: int) -> tuple[EncoderData, np.ndarray]:
    """A photo, a real sketch and a drawn one for each of the site's first identities (the
    sketches are crops of the photo, their vectors random): both kinds mix in a batch."""
    crops = crop_stack(site["workspace"], faces_of(site["workspace"], "photo")[:IDENTITIES])
    vectors = np.random.default_rng(seed).normal(size=(3 * IDENTITIES, 128))
    labels = np.repeat(np.arange(IDENTITIES), 3)
    kinds = np.array(["photo", "sketch", "synthetic"] * IDENTITIES)
    data = VectorSet.from_training([f"i{i}" for i in range(IDENTITIES)], labels, kinds, vectors)
    return EncoderData(data, np.repeat(crops, 2, axis=0)), crops


def test_the_curriculum_continues_from_the_drawn_stage_under_the_encoders_guard_floor(
        site: dict):
    """The second stage starts from the first stage's weights (zero steps give them back,
    not the frozen encoder's), its guard floor is still the frozen encoder's, and with real
    and drawn sketches mixed the fit tries it beside the mixed batches and reports both
    stages' steps."""
    import math

    import torch

    from tasks.recognize.sketch_side import CURRICULUM, MIXED

    encoder, crops = mixed_kinds(site, seed=4)
    data = encoder.vectors
    drawn = encoder.of_kinds(real=False)
    assert set(drawn.vectors.sketch_kinds) == {"synthetic"} and len(drawn.crops) == IDENTITIES
    device = torch.device("cpu")
    probes = (crops, np.arange(IDENTITIES), data.photo_vectors, data.photo_labels)
    first, _, _, _, _ = train_encoder(sface_net(None), drawn, 4, 0.3, 0, 3, None, device, batch=6)
    start = (first.trainable_state(), {"step": 3, "rank1": 0.5, "tar_at_far_1e-2": 0.5,
                                       "score": 1.0,
                                       "guard": {"rank1": 0.0, "tar_at_far_1e-2": 0.0,
                                                 "score": 0.0}})
    frozen = {"rank1": 0.0, "tar_at_far_1e-2": 0.0, "score": 0.0,
              "guard": {"rank1": 1.0, "tar_at_far_1e-2": 1.0, "score": math.inf}}
    # every step falls under the frozen encoder's guard: stage 2 keeps its start
    second, _, history, best, _ = train_encoder(
        sface_net(None), encoder.of_kinds(real=True), 4, 0.3, 0, 20, probes, device, batch=6,
        step0=frozen, guard=(crops[:3], np.arange(3), data.photo_vectors, data.photo_labels),
        start=start)
    # the start's result is this stage's step 0, whatever step of its own stage it was
    assert best == 0 and history[0] == {**start[1], "step": 0} and len(history) > 1
    assert [h["step"] for h in history] == sorted({h["step"] for h in history})
    for key, value in second.trainable_state().items():
        assert torch.equal(value, start[0][key])
    untrained = train_encoder(sface_net(None), drawn, 4, 0.3, 0, 0, None, device)[0]
    assert any(not torch.equal(value, start[0][key])
               for key, value in untrained.trainable_state().items())

    fitted = fit_encoder(encoder, sface_net(None), 0, 10, device, blocks=(4,), lambdas=(0.3,),
                         batch=6)
    schedules = [r["schedule"] for r in fitted.validation["runs"]]
    assert schedules.count(CURRICULUM) == 1 and MIXED in schedules
    # every real share is a mixed candidate, real sketches alone (drawn identities as
    # negatives only) among them
    assert [r["real_share"] for r in fitted.validation["runs"]
            if r["schedule"] == MIXED and not r["kind_offset"]] == [None, 0.8, 1.0]
    # then the mixed batches with the drawn kind's vectors shifted, after the curriculum
    assert [(r["schedule"], r["real_share"]) for r in fitted.validation["runs"]
            if r["kind_offset"]] == [(MIXED, None), (MIXED, 0.8)]
    for run in fitted.validation["runs"]:
        assert sum(run["stage_steps"]) == run["best_step"]
    assert fitted.chosen["schedule"] in (MIXED, CURRICULUM)
    assert "kind_offset" in fitted.chosen


def test_a_kind_offset_shifts_drawn_vectors_in_training_only(site: dict):
    """The shifted run learns an offset for the drawn kind (reported with each validation),
    and the branch it returns holds SFace's blocks only: probes are embedded unshifted."""
    import torch

    encoder, crops = mixed_kinds(site, seed=5)
    data = encoder.vectors
    device = torch.device("cpu")
    probes = (crops, np.arange(IDENTITIES), data.photo_vectors, data.photo_labels)
    module, losses, history, _, _ = train_encoder(
        sface_net(None), encoder, 4, 0.3, 0, 10, probes, device, batch=6, kind_offset=True)
    assert len(losses) >= 5 and all(np.isfinite(losses))
    assert set(history[-1]["offset_norms"]) == {"synthetic"}
    assert history[-1]["offset_norms"]["synthetic"] > 0.0
    plain = train_encoder(sface_net(None), encoder, 4, 0.3, 0, 0, None, device)[0]
    assert set(module.trainable_state()) == set(plain.trainable_state())


def test_guard_pairs_are_read_never_trained_on_and_reported(site: dict, tmp_path: Path):
    """Guard pairs go through real-pairs reading (identities also trained on are counted)
    and the choice records the guard's figures beside validation's; asking for a guard on a
    kind without trained blocks, or one with no usable sketch, is a clear error."""
    workspace, demo = site["workspace"], site["demo"]
    report = train_recognizer(request(site, "guarded", steps=10,
                                      guard_pairs=[str(demo / "pairs.csv")],
                                      guard_pairs_root=[str(demo)]))
    guard = report.validation["guard"]
    assert guard["identities"] == IDENTITIES and guard["n_probes"] == IDENTITIES
    assert guard["best"]["score"] >= guard["baseline"]["score"]
    on_top = report.validation["adapter_on_top"]
    if report.validation["chosen"]["adapter"]:  # kept only where the guard holds with it
        assert on_top["guard"]["score"] >= guard["baseline"]["score"]
    assert report.inputs["guard_pairs"]["identities_also_trained"] == IDENTITIES
    stored = json.loads((Path(report.out) / "validation.json").read_text())
    assert all("guard" in h for h in stored["history"])
    with pytest.raises(ValueError, match="guard_pairs.*mode adapter"):
        TrainRecognizerRequest(workspace=str(workspace.root), out=str(tmp_path / "no"),
                               identity_encoder=SFACE, mode="adapter",
                               guard_pairs=[str(demo / "pairs.csv")])

    blank = tmp_path / "blank"
    (blank / "s").mkdir(parents=True)
    import cv2

    rows = ["identity_id,photo_path,sketch_path,style"]
    for i in range(2):
        cv2.imwrite(str(blank / "s" / f"{i}.png"), np.full((240, 192, 3), 255, np.uint8))
        cv2.imwrite(str(blank / "s" / f"p{i}.png"), np.full((240, 192, 3), 128, np.uint8))
        rows.append(f"blank-{i},s/p{i}.png,s/{i}.png,demo-pencil")
    (blank / "pairs.csv").write_text("\n".join(rows) + "\n")
    unusable = "guard pairs .*0 identities.*'unusable_sketch_no_face': 2"
    with pytest.raises(DataError, match=unusable):
        train_recognizer(request(site, "blank-guard", guard_pairs=[str(blank / "pairs.csv")],
                                 guard_pairs_root=[str(blank)]))


def test_an_adapter_on_top_answers_to_the_guard(site: dict):
    """The guard's figure of the chosen branch with an adapter on top: the identity adapter
    (its ``up`` starts at zero) keeps the frozen encoder's guard score exactly; a scrambling
    one loses it, which is what makes ``train`` drop the adapter."""
    import torch

    from tasks.recognize.sketch_encoder import guard_score
    from tasks.recognize.sketch_side import torch_modules

    workspace = site["workspace"]
    crops = crop_stack(workspace, faces_of(workspace, "photo")[:IDENTITIES])
    device = torch.device("cpu")
    module = build_sketch_encoder(None, 4)
    frozen = embed_crops(module, crops, device)
    labels = np.arange(IDENTITIES)
    data = VectorSet(tuple(f"i{i}" for i in labels), frozen, labels,
                     np.array(["sketch"] * IDENTITIES), frozen, labels)
    guard = EncoderData(data, crops)
    floor = guard_score(module, guard, 0, device)
    assert floor["rank1"] == 1.0  # the sketches are the gallery photos themselves
    module.adapter = torch_modules()["adapter"](128, 16)
    assert guard_score(module, guard, 0, device) == floor
    with torch.no_grad():
        torch.manual_seed(0)
        module.adapter.up.weight.normal_(0.0, 50.0)
        module.adapter.down.weight.normal_(0.0, 50.0)
    assert guard_score(module, guard, 0, device)["score"] < floor["score"]
