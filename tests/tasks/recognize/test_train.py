"""Recognizer training on drawn demo faces: loss, checkpoints, exact resume, held-out ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from schemas.encoders import EncoderSpec
from tasks import storage
from tasks.demo.faces import make_demo_source
from tasks.evaluate.run import EvaluateRequest, evaluate
from tasks.ingest.run import ingest_source
from tasks.recognize.data import (
    DataError,
    Example,
    assemble,
    batch_indices,
    read_synthetic_sketches,
)
from tasks.recognize.recognizer import RecognizerError, load_recognizer
from tasks.recognize.train import (
    TrainRecognizerRequest,
    list_checkpoints,
    train_recognizer,
)
from tasks.storage import FACES, Workspace

from .synthetic import write_synthetic_sketches

SFACE = EncoderSpec(role="identity", name="sface")
IDENTITIES = 8
HELD_OUT = ("demo-001", "demo-004", "demo-006")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("recognize")
    demo = make_demo_source(root / "demo", identities=IDENTITIES, photos_per_identity=2)
    workspace = Workspace.open(root / "ws")
    ingest_source(workspace, demo / "photos")
    n = write_synthetic_sketches(workspace)
    split = root / "split.csv"
    split.write_text("identity_id,split\n" + "".join(
        f"demo-{i:03d},{'test' if f'demo-{i:03d}' in HELD_OUT else 'train'}\n"
        for i in range(IDENTITIES)))
    return {"root": root, "demo": demo, "workspace": workspace, "synthetic": n,
            "split": split}


def request(site: dict, out: str, **options) -> TrainRecognizerRequest:
    defaults = {"steps": 30, "batch_size": 16, "checkpoint_every": 10}
    return TrainRecognizerRequest(workspace=str(site["workspace"].root),
                                  out=str(site["root"] / out), identity_encoder=SFACE,
                                  **{**defaults, **options})


@pytest.fixture(scope="module")
def head_run(site: dict):
    return train_recognizer(request(site, "head"))


def test_synthetic_adapter_keeps_only_usable_rows(site: dict):
    rows, provenance = read_synthetic_sketches(site["workspace"])
    assert rows.num_rows == site["synthetic"] == 2 * IDENTITIES
    assert provenance["kind"] == "table" and provenance["rows"] == rows.num_rows + 1
    assert provenance["version"] is not None


def test_an_unknown_dataset_name_is_an_error_not_an_empty_training_set(site: dict):
    with pytest.raises(DataError, match="no dataset 'ds-000000000000'.*none yet"):
        read_synthetic_sketches(site["workspace"], "ds-000000000000")


def test_head_training_reduces_the_loss_and_writes_a_recognizer(site: dict, head_run):
    out = Path(head_run.out)
    assert head_run.examples == {"photo": 2 * IDENTITIES, "synthetic": 2 * IDENTITIES}
    assert head_run.final_loss < head_run.first_loss
    assert [step for step, _ in list_checkpoints(out / "checkpoints")] == [20, 30]
    for name in ("recognizer.json", "recognizer.safetensors", "loss.png", "identities.txt",
                 "training.json"):
        assert (out / name).stat().st_size > 0
    checkpoint = out / "checkpoints" / "step-00000030"
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert state["state"] and state["param_groups"]
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["training_data"]["inputs"]["synthetic"]["table"] == "sketches"
    assert config["identity_encoder_version"].startswith("sface")


def test_killed_run_resumes_to_the_uninterrupted_result(site: dict, head_run):
    class Killed(Exception):
        pass

    def kill_at_25(step: int, loss: float) -> None:
        if step == 25:
            raise Killed

    with pytest.raises(Killed):
        train_recognizer(request(site, "killed"), on_step=kill_at_25)
    assert [s for s, _ in list_checkpoints(site["root"] / "killed" / "checkpoints")] == [10, 20]
    with pytest.raises(DataError, match="resume=True"):
        train_recognizer(request(site, "killed"))
    with pytest.raises(DataError, match="lr changed"):
        train_recognizer(request(site, "killed", resume=True, lr=0.5))
    resumed = train_recognizer(request(site, "killed", resume=True))
    assert resumed.resumed_from == 20 and resumed.steps_this_run == 10
    ours = load_file(str(site["root"] / "killed" / "recognizer.safetensors"))
    theirs = load_file(str(Path(head_run.out) / "recognizer.safetensors"))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    losses = json.loads((site["root"] / "killed" / "checkpoints" / "step-00000030" /
                         "state.json").read_text())["losses"]
    expected = json.loads((Path(head_run.out) / "checkpoints" / "step-00000030" /
                           "state.json").read_text())["losses"]
    assert losses == expected


def test_held_out_identities_never_reach_training(site: dict):
    with pytest.raises(DataError, match="test part of split"):
        train_recognizer(request(site, "split", split=str(site["split"]), steps=3,
                                 real_pairs=str(site["demo"] / "pairs.csv")))
    report = train_recognizer(request(site, "split", split=str(site["split"]), steps=3,
                                      real_pairs=str(site["demo"] / "pairs.csv"),
                                      drop_test_identities=True))
    trained = set((Path(report.out) / "identities.txt").read_text().split())
    assert trained == {f"demo-{i:03d}" for i in range(IDENTITIES)} - set(HELD_OUT)
    assert report.skipped["held_out"] > 0
    assert report.examples["sketch"] == IDENTITIES - len(HELD_OUT)  # real pairs, train only
    examples = [Example(i, "photo", f"p{i}", "t") for i in HELD_OUT + ("demo-000", "demo-002")]
    examples += [Example(i, "sketch", f"s{i}", "t") for i in HELD_OUT + ("demo-000", "demo-002")]
    training = assemble(examples, {i: "test" for i in HELD_OUT}
                        | {"demo-000": "train", "demo-002": "train"})
    assert set(training.identities) == {"demo-000", "demo-002"}
    assert training.skipped == {"held_out": 2 * len(HELD_OUT)}


def test_batches_are_a_function_of_seed_and_step_and_mix_modalities(site: dict):
    examples = [Example(f"id{i}", kind, f"{kind}{i}-{n}", "t")
                for i in range(6) for kind in ("photo", "synthetic") for n in range(3)]
    training = assemble(examples)
    first = batch_indices(training, seed=3, step=7, identities_per_batch=4,
                          samples_per_identity=4)
    assert np.array_equal(first, batch_indices(training, 3, 7, 4, 4))
    assert not np.array_equal(first, batch_indices(training, 3, 8, 4, 4))
    for block in first.reshape(4, 4):
        assert len(set(training.labels[block])) == 1
        assert set(training.kinds[block]) == {"photo", "synthetic"}


def test_backbone_mode_trains_a_tiny_arch_on_cpu(site: dict):
    report = train_recognizer(request(site, "backbone", mode="backbone", backbone_arch="ir_tiny",
                                      steps=2, batch_size=2, checkpoint_every=1,
                                      samples_per_identity=2))
    assert report.device == "cpu" and report.steps_this_run == 2
    recognizer = load_recognizer(report.out)
    faces = storage.read(site["workspace"], FACES, columns=["face_id"]).column(
        "face_id").to_pylist()[:3]
    vectors = recognizer.embed(site["workspace"], faces)
    assert vectors.shape == (3, 512)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_trained_head_loads_in_evaluate_and_refuses_another_encoder(site: dict, head_run):
    report = evaluate(EvaluateRequest(
        workspace=str(site["workspace"].root), pairs=str(site["demo"] / "pairs.csv"),
        out=str(site["root"] / "eval"), recognizers=["baseline", head_run.out],
        identity_encoder=SFACE))
    assert set(report.recognizers) == {"baseline", "head"}
    assert report.recognizers["head"]["version"].startswith("head-adaface@")
    assert report.recognizers["head"]["n_probes"] == IDENTITIES
    # trained without a split: every probe identity was seen in training, and it says so
    assert report.recognizers["head"]["probe_identities_seen_in_training"] == IDENTITIES
    assert report.recognizers["baseline"]["probe_identities_seen_in_training"] is None
    assert "Warning" in Path(report.metrics_md).read_text()

    config_path = Path(head_run.out) / "recognizer.json"
    config = json.loads(config_path.read_text())
    config["identity_encoder_version"] = "sface-other@000000000000"
    mismatched = site["root"] / "mismatched"
    mismatched.mkdir()
    (mismatched / "recognizer.json").write_text(json.dumps(config))
    (mismatched / "recognizer.safetensors").write_bytes(
        (Path(head_run.out) / "recognizer.safetensors").read_bytes())
    with pytest.raises(RecognizerError, match="trained on identity vectors from"):
        load_recognizer(str(mismatched), SFACE)
    with pytest.raises(RecognizerError, match="not a trained recognizer"):
        load_recognizer(str(site["root"]))


def test_nothing_to_train_on_is_refused(site: dict):
    with pytest.raises(DataError, match="nothing to train on"):
        train_recognizer(request(site, "none", include_synthetic=False))
