"""experiments/accelerator.py end to end on the demo workspace: a training set exported,
trained by the same loop where only the exported arrays exist, and adopted back as a
generator of the workspace that the pipeline loads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tasks.generate.config import load_config
from tasks.generate.networks import SketchGenerator

from ..tasks.generate.demo_data import copy_workspace, demo_template

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "accelerator.py"


@pytest.fixture(scope="module")
def accelerator():
    spec = importlib.util.spec_from_file_location("accelerator", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_train_adopt_round_trip(accelerator, tmp_path_factory, tmp_path: Path) -> None:
    workspace = copy_workspace(demo_template(tmp_path_factory), tmp_path / "ws")
    config = json.loads(load_config("tiny-bridge").to_json())
    config["name"] = "tiny-artist"
    # The photo anchor and the feature matching too: their arrays must travel with the design.
    config["training"]["losses"].update(identity=0.1, identity_items=2,
                                        identity_artist_styles=["demo-pencil"],
                                        identity_photo=0.2, identity_features=0.5,
                                        identity_feature_blocks=[1, 2])
    config_path = tmp_path / "tiny-artist.json"
    config_path.write_text(json.dumps(config))
    data, out = tmp_path / "offload", tmp_path / "out"
    common = ["--workspace", str(workspace), "--config", str(config_path), "--style",
              "demo-pencil", "--style", "xdog-lines", "--steps", "3", "--out", str(data)]
    accelerator.main(["export", *common, "--name", "artist"])
    # A second design of the same data shares the pictures; another data set is refused.
    accelerator.main(["export", *common, "--name", "artist-b"])
    with pytest.raises(SystemExit, match="another training set"):
        accelerator.main(["export", "--workspace", str(workspace), "--config", str(config_path),
                          "--style", "demo-pencil", "--out", str(data), "--name", "other"])
    meta = json.loads((data / "artist.json").read_text())
    assert meta["artist_targets"] == {"demo-pencil": {"used": 4, "unusable": 0}}
    with np.load(data / "data.npz") as shared:
        assert shared["sketch_u8"].dtype == np.uint8  # exact on the uint8 grid
    with np.load(data / "artist.npz") as own:
        assert {"id_target", "id_weight", "id_photo", "id_artist"} <= set(own.files)
        assert own["id_artist"].sum() == 4  # the four demo-pencil examples

    accelerator.main(["train", "--data", str(data), "--name", "artist", "--out", str(out),
                      "--work", str(tmp_path / "work"), "--device", "cpu", "--threads", "1"])
    with safe_open(out / "artist-a.safetensors", "pt") as f:
        run = json.loads(f.metadata()["run"])
    assert run["steps"] == 3 and run["device"] == "cpu"

    accelerator.main(["adopt", "--data", str(data), "--name", "artist", "--weights", str(out),
                      "--workspace", str(workspace)])
    final = workspace / "generators" / "artist" / "final"
    generator = SketchGenerator.from_pretrained(final)
    assert generator.config.training.losses.identity_artist_styles == ("demo-pencil",)
    record = json.loads((final / "training.json").read_text())
    assert record["steps"] == 3 and "fp16" in record["trained_on"]
    carried = {**load_file(out / "artist-a.safetensors"), **load_file(out / "artist-b.safetensors")}
    state = generator.state_dict()
    assert set(carried) == set(state)
    for key, value in carried.items():
        torch.testing.assert_close(state[key], value.float())
