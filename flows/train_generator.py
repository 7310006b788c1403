"""The ``train-generator`` flow: train the sketch generator on the workspace's faces.

Embeds the style prompts, assembles (photo, style) examples from the train identities, trains
with checkpoints and per-checkpoint reports, and saves the EMA generator to
``<workspace>/generators/<name>/final/``. A killed run continues with ``resume=True``.
"""

from __future__ import annotations

from prefect import flow

from flows.artifacts import publish, train_generator_markdown
from flows.common import encoder_spec, hold_workspace, resolve, write_run_record
from schemas.encoders import EncoderSpec
from tasks.generate.fit import (
    TrainReport,
    TrainRequest,
    embed_style_prompts_task,
    train_generator_task,
)
from tasks.runtime import current_run_id
from tasks.styles.registry import style_dirs


@flow(name="train-generator", log_prints=True)
def train_generator(
    workspace: str | None = None,
    config: str = "cpu",
    styles: list[str] | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    split: str | list[str] | None = None,
    resume: bool = False,
    name: str = "default",
    identity_encoder: EncoderSpec | None = None,
    image_encoder: EncoderSpec | None = None,
    text_encoder: EncoderSpec | None = None,
    seed: int = 0,
    sample_every: int | None = None,
    device: str | None = None,
) -> TrainReport:
    """``styles=None`` trains every registered style that has examples in the workspace;
    ``split`` is a bundled split name ("cuhk") or a CSV path, and only its train identities
    are used; ``sample_every`` sets the checkpoint (and report) interval."""
    settings, ws = resolve(workspace)
    run_id = current_run_id()
    request = TrainRequest(
        workspace=str(ws.root), config=config, styles=styles, steps=steps,
        batch_size=batch_size, split=split, resume=resume, name=name,
        identity_encoder=encoder_spec(settings, "identity", identity_encoder),
        image_encoder=encoder_spec(settings, "image", image_encoder),
        text_encoder=encoder_spec(settings, "text", text_encoder),
        styles_dirs=[str(d) for d in style_dirs(settings)],
        seed=seed, sample_every=sample_every, device=device, run_id=run_id,
    )
    # The workspace lock covers the one write to shared tables (the prompts' text vectors).
    # Training only reads a snapshot and writes generators/<name>/ under that folder's own
    # lock, so an hour of training does not make the nightly run wait and give up.
    with hold_workspace(settings, ws, "train-generator", run_id):
        texts = embed_style_prompts_task(request)
    report = train_generator_task(request)
    publish(f"train-generator-{name}-summary", train_generator_markdown(report))
    write_run_record(ws, "train-generator", run_id,
                     request.model_dump(mode="json", exclude={"workspace", "run_id"}),
                     {"style_texts": texts, "train": report})
    return report
