"""The train-generator flow on the demo workspace: tiny config, a few steps, real encoders."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.train_generator import train_generator
from tasks import storage
from tasks.generate.dataset import DatasetError
from tasks.generate.fit import TRAINING_FILE, PlanError, TrainRequest, fit_generator
from tasks.generate.networks import SketchGenerator
from tasks.generate.saved import read_manifest
from tasks.locking import WorkspaceBusyError, workspace_lock
from tasks.splits import write_split
from tasks.storage import Workspace
from tasks.styles.registry import StyleError

from ..tasks.generate.demo_data import (
    IDENTITY,
    IMAGE,
    TEXT,
    copy_workspace,
    demo_template,
    single_thread,  # noqa: F401  (fixture)
)

pytestmark = pytest.mark.usefixtures("prefect_harness", "single_thread")

STEPS, EVERY = 4, 2


@pytest.fixture
def workspace(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    return copy_workspace(demo_template(tmp_path_factory), tmp_path / "ws")


@pytest.fixture
def split(tmp_path: Path) -> Path:
    return write_split({"demo-000": "train", "demo-001": "test", "demo-002": "train",
                        "demo-003": "train"}, tmp_path / "split.csv")


def request(workspace: Path, **overrides) -> TrainRequest:
    fields = dict(workspace=str(workspace), config="tiny", steps=STEPS, sample_every=EVERY,
                  identity_encoder=IDENTITY, image_encoder=IMAGE, text_encoder=TEXT,
                  sample_steps=2, preview_identities=2)
    return TrainRequest(**{**fields, **overrides})


def stored_versions(root: Path) -> dict[str, str]:
    """The encoder version of every vector the workspace holds, per role (one each here)."""
    ws = Workspace.open(root)
    found = {}
    for role in ("identity", "image", "text"):
        [table] = [t for t in storage.table_names(ws) if t.startswith(f"emb_{role}_")]
        found[role] = set(storage.column_values(ws, table, "encoder_version"))
    assert all(len(v) == 1 for v in found.values()), found
    return {role: v.pop() for role, v in found.items()}


async def _artifacts(key: str):
    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_flow_trains_saves_and_reports(workspace: Path, split: Path) -> None:
    report = train_generator(workspace=str(workspace), config="tiny", steps=STEPS,
                             sample_every=EVERY, split=str(split), name="demo")
    assert report.steps == STEPS and report.resumed_from is None
    assert report.styles == ["demo-pencil", "pencil-dodge", "xdog-lines"]
    assert report.examples_per_style == {"demo-pencil": 3, "pencil-dodge": 6, "xdog-lines": 6}
    assert report.skipped["pencil-dodge"] == {"held_out": 2}

    final = Path(report.generator_dir)
    assert final == workspace / "generators" / "demo" / "final"
    versions = stored_versions(workspace)
    dims = {"identity": 128, "image": 1280, "text": 384}
    loaded = SketchGenerator.from_pretrained(
        final, expected_encoders={r: (dims[r], v) for r, v in versions.items()})
    assert loaded.encoder_versions == versions == report.encoder_versions
    assert loaded.version == report.generator_version
    training = json.loads((final / TRAINING_FILE).read_text())
    assert training["identities"] == 3 and training["split"] == str(split)

    reports = workspace / "generators" / "demo" / "reports"
    for step in (2, 4):
        assert (reports / f"step-{step:08d}-loss.png").read_bytes()[:4] == b"\x89PNG"
        assert (reports / f"step-{step:08d}-samples.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (reports / "index.html").read_text()
    summary = asyncio.run(_artifacts("train-generator-demo-summary"))
    assert summary and "demo-pencil" in summary[0].data
    assert asyncio.run(_artifacts("train-generator-demo-samples"))
    assert asyncio.run(_artifacts("train-generator-demo-report"))
    record = json.loads((workspace / "runs" / f"train-generator-{report.run_id}.json")
                        .read_text())
    # the template embedded them: every registry style (cufsf-artist among them)
    assert record["stages"]["style_texts"]["reused"] == 5
    assert record["stages"]["train"]["generator_dir"] == str(final)


class Killed(Exception):
    pass


def test_resume_after_kill_matches_uninterrupted_run(workspace: Path) -> None:
    straight = train_generator(workspace=str(workspace), config="tiny", steps=STEPS,
                               sample_every=EVERY, name="straight")

    def die_after_first_checkpoint(checkpoint) -> None:
        raise Killed(checkpoint.step)

    with pytest.raises(Killed):
        fit_generator(request(workspace, name="killed", sample_steps=10,
                              preview_identities=4),
                      on_checkpoint=die_after_first_checkpoint)
    root = workspace / "generators" / "killed"
    assert not (root / "final").exists()
    with pytest.raises(PlanError, match="resume=True"):
        train_generator(workspace=str(workspace), config="tiny", steps=STEPS,
                        sample_every=EVERY, name="killed")

    resumed = train_generator(workspace=str(workspace), config="tiny", steps=STEPS,
                              sample_every=EVERY, name="killed", resume=True)
    assert resumed.resumed_from == EVERY and resumed.steps_this_run == STEPS - EVERY
    assert resumed.generator_version == straight.generator_version
    a = SketchGenerator.from_pretrained(straight.generator_dir).state_dict()
    b = SketchGenerator.from_pretrained(resumed.generator_dir).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_manifest(resumed.generator_dir)["version"] == straight.generator_version
    assert (root / "reports" / "step-00000002-samples.png").is_file()


def test_resume_refuses_a_changed_plan(workspace: Path) -> None:
    fit_generator(request(workspace, name="plan", steps=EVERY))
    with pytest.raises(PlanError, match="batch_size changed"):
        fit_generator(request(workspace, name="plan", batch_size=3, resume=True))


def test_a_second_run_on_the_same_generator_is_refused(workspace: Path) -> None:
    root = workspace / "generators" / "busy"
    with workspace_lock(root, "another training run"), \
            pytest.raises(WorkspaceBusyError, match="another training run"):
        fit_generator(request(workspace, name="busy"))


def test_requested_styles_are_checked(workspace: Path) -> None:
    with pytest.raises(StyleError,
                       match="unknown style 'crayon'; known: cufsf-artist, demo-pencil"):
        fit_generator(request(workspace, styles=["crayon"]))
    with pytest.raises(DatasetError, match="no training examples for style.*forensic-artist"):
        fit_generator(request(workspace, styles=["forensic-artist", "pencil-dodge"]))


def artist_config(tmp_path: Path, styles: list[str], **losses: object) -> str:
    """The tiny config with the identity loss aimed at the artist's sketch of ``styles``."""
    from tasks.generate.config import load_config

    config = json.loads(load_config("tiny").to_json())
    config["name"] = "tiny-artist"
    config["training"]["losses"].update(identity=0.1, identity_items=2,
                                        identity_artist_styles=styles, **losses)
    path = tmp_path / "tiny-artist.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_artist_target_on_a_rendered_style_is_refused_naming_it(workspace: Path,
                                                                tmp_path: Path) -> None:
    config = artist_config(tmp_path, ["demo-pencil", "xdog-lines"])
    with pytest.raises(PlanError, match="'xdog-lines', which has no paired sketches"):
        fit_generator(request(workspace, config=config, styles=["demo-pencil", "xdog-lines"]))
    assert not (workspace / "generators" / "default").exists()
    with pytest.raises(PlanError, match="'crayon', which is not a registered style"):
        fit_generator(request(workspace, config=artist_config(tmp_path, ["crayon"])))


def test_artist_target_run_reports_which_examples_got_it(workspace: Path,
                                                         tmp_path: Path) -> None:
    """... with the SFace feature matching and the offset's direction on too: the run's
    batches mark the artist items and carry the mugshots' vectors (the direction term
    refuses a batch without them)."""
    config = artist_config(tmp_path, ["demo-pencil"], identity_features=0.5,
                           identity_feature_blocks=[1, 2], identity_direction=0.5)
    report = fit_generator(request(workspace, name="artist", steps=EVERY, config=config,
                                   styles=["demo-pencil", "xdog-lines"]))
    assert report.artist_targets == {"demo-pencil": {"used": 4, "unusable": 0}}
    saved = (workspace / "generators" / "artist" / "final" / "generator_config.json").read_text()
    assert "identity_features" in saved and '"identity_direction": 0.5' in saved
    assert "artist identity targets" in Path(report.report_html).read_text()
