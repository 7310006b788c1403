"""The ``train-recognizer`` flow: a sketch-to-mugshot recognizer from synthetic and/or real
sketches, saved where ``evaluate --recognizer PATH`` loads it.

Default ``out``: ``<workspace>/recognizers/<name>``. A killed run continues with
``resume=True`` (exactly: see ``tasks/recognize/train.py``).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.common import encoder_spec, hold_workspace, resolve, write_run_record
from schemas.encoders import EncoderSpec
from tasks.recognize.train import (
    Loss,
    Mode,
    TrainRecognizerReport,
    TrainRecognizerRequest,
    train_recognizer_task,
)
from tasks.runtime import current_run_id


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def train_recognizer_markdown(report: TrainRecognizerReport, name: str) -> str:
    resumed = f", resumed from step {report.resumed_from}" if report.resumed_from else ""
    per_step = (f"{report.seconds_per_step:.3f} s/step" if report.seconds_per_step
                else "no steps this run")
    if report.seconds_per_epoch:
        per_step += (f", {report.seconds_per_epoch:.0f} s an epoch, "
                     f"{report.probes_per_second:.1f} probes/s embedded")
    loss = (f"{report.first_loss:.3f} -> {report.final_loss:.3f} (means of the first and "
            f"last 10 steps)" if report.final_loss is not None else "n/a")
    lines = [
        f"# Recognizer `{name}` ({report.mode}, {report.loss})", "",
        f"- steps: {report.steps} ({report.steps_this_run} this run{resumed}), {per_step}, "
        f"{report.seconds:.0f} s in all, on {report.device}",
        f"- loss: {loss}; [curve]({Path(report.loss_png).as_uri()})",
        f"- identities: {report.identities}; examples: {_counts(report.examples)}",
        f"- skipped: {_counts(report.skipped)}",
        f"- recognizer dir (for `evaluate`): `{report.recognizer_dir}`",
    ]
    if report.validation:
        v = report.validation
        lines.append(
            f"- chosen on {v['identities']['validation']} validation identities (of the "
            f"training ones, {v['probes']} sketches as probes): {v['chosen']}; validation "
            f"rank-1 {v['best']['rank1']:.3f} vs {v['baseline']['rank1']:.3f} for the "
            f"encoder alone, TAR@FAR=1e-2 {v['best']['tar_at_far_1e-2']:.3f} vs "
            f"{v['baseline']['tar_at_far_1e-2']:.3f}")
        if v.get("guard"):
            g = v["guard"]
            lines.append(
                f"- guard ({g['identities']} identities of other artists, {g['n_probes']} "
                f"sketches never trained on): rank-1 {g['best']['rank1']:.3f} vs "
                f"{g['baseline']['rank1']:.3f} for the encoder alone, TAR@FAR=1e-2 "
                f"{g['best']['tar_at_far_1e-2']:.3f} vs {g['baseline']['tar_at_far_1e-2']:.3f}")
    lines += ["", "## Inputs", ""]
    for source, detail in report.inputs.items():
        lines.append(f"- **{source}**: `{detail}`")
    return "\n".join(lines)


@flow(name="train-recognizer", log_prints=True)
def train_recognizer(
    workspace: str | None = None,
    name: str = "default",
    out: str | None = None,
    dataset: str | list[str] | None = None,
    real_pairs: str | list[str] | None = None,
    real_pairs_root: str | list[str] | None = None,
    include_synthetic: bool = True,
    mode: Mode = "head",
    loss: Loss = "adaface",
    backbone_arch: str = "ir_50",
    backbone_weights: str | None = None,
    steps: int = 1000,
    batch_size: int | None = None,
    samples_per_identity: int = 4,
    lr: float | None = None,
    seed: int = 0,
    resume: bool = False,
    split: str | None = None,
    checkpoint_every: int = 100,
    identity_encoder: EncoderSpec | None = None,
    device: str | None = None,
    drop_test_identities: bool = False,
    hidden: int | None = None,
    synthetic_styles: list[str] | None = None,
    guard_pairs: str | list[str] | None = None,
    guard_pairs_root: str | list[str] | None = None,
    encoder_blocks: list[int] | None = None,
) -> TrainRecognizerReport:
    """``dataset``: synthetic sources, one or several: a published version, a sketches table,
    a Parquet file, an export folder or another workspace (default: the workspace's
    ``sketches`` table), optionally only ``synthetic_styles``; ``real_pairs``: pairs
    manifests of real sketches; ``split``: a bundled split name ("cuhk") or CSV, of which
    only ``train`` identities are used: a source holding its ``test`` identities is
    refused unless ``drop_test_identities``.
    ``mode``: head, backbone, or the sketch-side ``procrustes`` / ``adapter`` / ``encoder``
    (these choose their hyper-parameters on a validation part of the training identities;
    ``encoder`` retrains SFace's first blocks on sketch images, ``steps`` bounding each
    candidate run). ``batch_size``: default 64, 24 for ``encoder``. ``guard_pairs``
    (``encoder``): pairs manifests of other artists, never trained on, on which a trained
    step must score at least the frozen encoder to be chosen. ``encoder_blocks``
    (``encoder``): the k values its search tries (default 4 and 8); one pins k."""
    settings, ws = resolve(workspace)
    run_id = current_run_id()
    request = TrainRecognizerRequest(
        workspace=str(ws.root), out=out or str(ws.root / "recognizers" / name),
        dataset=dataset, real_pairs=real_pairs, real_pairs_root=real_pairs_root,
        include_synthetic=include_synthetic, mode=mode, loss=loss,
        backbone_arch=backbone_arch, backbone_weights=backbone_weights,
        identity_encoder=encoder_spec(settings, "identity", identity_encoder),
        steps=steps, batch_size=batch_size, samples_per_identity=samples_per_identity,
        lr=lr, seed=seed, resume=resume, split=split, checkpoint_every=checkpoint_every,
        device=device, ingest=settings.ingest, run_id=run_id,
        drop_test_identities=drop_test_identities, hidden=hidden,
        synthetic_styles=synthetic_styles, guard_pairs=guard_pairs,
        guard_pairs_root=guard_pairs_root, encoder_blocks=encoder_blocks,
    )
    # The workspace lock for the whole run: a night (or a prune) must not add, rewrite or
    # remove the sketches, faces and PNGs it reads while it trains on them. Inside a night
    # (its ``train`` stage) the night's own hold is re-entered.
    with hold_workspace(settings, ws, "train-recognizer", run_id):
        report = train_recognizer_task(request)
        create_markdown_artifact(markdown=train_recognizer_markdown(report, name),
                                 key=f"train-recognizer-{_slug(name)}-summary",
                                 description="recognizer training summary")
        write_run_record(ws, "train-recognizer", run_id,
                         request.model_dump(mode="json",
                                            exclude={"workspace", "run_id", "ingest"}),
                         {"train": report})
    return report


def _slug(name: str) -> str:
    import re

    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "default"
