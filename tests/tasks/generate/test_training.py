"""The training loop: checkpoints, exact resume, augmentation, on the tiny config (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.generate.config import AugmentSpec
from tasks.generate.networks import SketchGenerator
from tasks.generate.training import (
    TRAINER_FILE,
    TrainingError,
    augment_batch,
    ema_generator,
    list_checkpoints,
    step_generator,
    train,
)

DIMS = {"identity": 8, "image": 12, "text": 6}
SIZE = 16


def make_batch(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2000 + step)
    return {
        "sketch": torch.rand(2, 1, SIZE, SIZE, generator=g) * 2 - 1,
        **{r: torch.randn(2, d, generator=g) for r, d in DIMS.items()},
    }


class Killed(Exception):
    pass


def killed_at(step_to_die: int):
    def batches(step: int) -> dict[str, torch.Tensor]:
        if step == step_to_die:
            raise Killed
        return make_batch(step)

    return batches


def test_resume_after_kill_matches_uninterrupted(tmp_path: Path) -> None:
    steps, every = 3, 2
    straight = SketchGenerator.build("tiny", DIMS, seed=3)
    full = train(straight, make_batch, steps, checkpoint_dir=tmp_path / "a",
                 checkpoint_every=every, seed=11)

    first = SketchGenerator.build("tiny", DIMS, seed=3)
    with pytest.raises(Killed):
        train(first, killed_at(2), steps, checkpoint_dir=tmp_path / "b",
              checkpoint_every=every, seed=11)
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [2]
    # A fresh process would build a new, differently initialised model and resume into it.
    resumed_gen = SketchGenerator.build("tiny", DIMS, seed=99)
    resumed = train(resumed_gen, make_batch, steps, checkpoint_dir=tmp_path / "b",
                    checkpoint_every=every, seed=11, resume=True)

    assert resumed.resumed_from == 2 and resumed.step == steps
    assert resumed.losses == full.losses
    # Bit-for-bit on CPU: every draw of step k comes from a generator seeded by (seed, k).
    for name, tensor in straight.state_dict().items():
        assert torch.equal(resumed_gen.state_dict()[name], tensor), name
    for name, tensor in full.ema.shadow.items():
        assert torch.equal(resumed.ema.shadow[name], tensor), name
    assert not list((tmp_path / "b").glob(".*tmp*"))


def test_checkpoint_contents_and_pruning(tmp_path: Path) -> None:
    gen = SketchGenerator.build("tiny", DIMS)
    state = train(gen, make_batch, 3, checkpoint_dir=tmp_path, checkpoint_every=1,
                  keep_checkpoints=2, augment=False)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]
    assert state.checkpoint == tmp_path / "step-00000003"
    trainer = torch.load(state.checkpoint / TRAINER_FILE, weights_only=True)
    assert "state" in trainer["optimizer"] and "torch" in trainer["rng"]
    # The checkpoint's model is a loadable generator; the EMA copy differs from raw weights.
    loaded = SketchGenerator.from_pretrained(state.checkpoint / "model")
    assert loaded.version == gen.version
    assert ema_generator(gen, state.ema).version != gen.version


def test_resume_refuses_changed_settings(tmp_path: Path) -> None:
    gen = SketchGenerator.build("tiny", DIMS)
    train(gen, make_batch, 1, checkpoint_dir=tmp_path, seed=0)
    with pytest.raises(TrainingError, match="lr"):
        train(gen, make_batch, 2, lr=0.5, checkpoint_dir=tmp_path, seed=0, resume=True)


def test_augmentation_is_seeded_and_moves_spatial_with_sketch() -> None:
    batch = make_batch(0)
    batch["spatial"] = batch["sketch"].clone()
    spec = AugmentSpec(max_shift=0.1, max_scale=0.1, flip_p=0.5)
    a = augment_batch(batch, spec, step_generator(0, 5))
    b = augment_batch(batch, spec, step_generator(0, 5))
    c = augment_batch(batch, spec, step_generator(0, 6))
    torch.testing.assert_close(a["sketch"], b["sketch"])
    torch.testing.assert_close(a["sketch"], a["spatial"])
    assert not torch.equal(a["sketch"], c["sketch"])
    assert not torch.equal(a["sketch"], batch["sketch"])


def test_iterable_batches_skip_what_a_resume_has_done(tmp_path: Path) -> None:
    by_step = SketchGenerator.build("tiny", DIMS, seed=5)
    train(by_step, make_batch, 2, seed=1, augment=False)
    gen = SketchGenerator.build("tiny", DIMS, seed=5)
    train(gen, (make_batch(s) for s in range(2)), 1, checkpoint_dir=tmp_path, seed=1,
          augment=False)
    # The replayed iterable starts again at batch 0; the resume must skip it.
    train(gen, (make_batch(s) for s in range(2)), 2, checkpoint_dir=tmp_path, seed=1,
          augment=False, resume=True)
    assert gen.version == by_step.version
