"""The ``generate`` flow: draw the sketches the ``sketches`` table lacks, one task per shard.

Order matters for the user's time: the generator's manifest, weights checksums and encoders
are checked against the workspace first (seconds, no model loaded), so a wrong or damaged
generator fails before any shard is scheduled. Then the plan, the shards, one merge.

Where shards run is chosen per call, through the ``generate-shards`` subflow's task runner:
- default: a thread pool on this machine with one worker per device (every visible GPU, or one
  CPU worker, since a CPU sample already uses every core);
- ``dask_address``: an existing Dask cluster via prefect-dask's ``DaskTaskRunner(address=...)``.
  Start one worker per GPU with one thread each (``CUDA_VISIBLE_DEVICES=i dask worker ADDR
  --nthreads 1``, or dask-cuda's ``LocalCUDACluster``); each worker loads the generator once.
  Give the workers ``PREFECT_API_URL`` of a real Prefect server, or each starts its own
  temporary one (~25 s). On CPU, pixels depend on the intra-op thread count (Dask starts
  workers with OMP/MKL_NUM_THREADS=1); each row records it in ``device``.
Because the runner is picked inside the flow from a parameter, deployments can use Dask too.
"""

from __future__ import annotations

import errno
import time

from prefect import flow

from flows.artifacts import generate_markdown, generate_style_rows, publish_generate
from flows.common import (
    cluster_address,
    encoder_spec,
    hold_workspace,
    resolve,
    task_runner,
    write_run_record,
)
from schemas.encoders import EncoderSpec
from schemas.generation import (
    GenerateReport,
    GenerationContext,
    SamplingParams,
    ShardOutcome,
)
from tasks.embed import embed_texts
from tasks.generate.catalog import checked_generator, find_generator
from tasks.generate.conditions import condition_sources
from tasks.generate.formulations import check_eta, check_style_eta
from tasks.generate.merge import flagged, merge_task, per_style
from tasks.generate.plan import plan_task, read_plan
from tasks.generate.shard import generate_shard_task, local_devices
from tasks.runtime import current_run_id, settle
from tasks.storage import DiskFullError, is_disk_full
from tasks.styles.registry import prompts_for


@flow(name="generate-shards")
def generate_shards(context: GenerationContext, plan_path: str) -> list[ShardOutcome]:
    """One task per shard of the plan; failures are collected, not raised, so that the
    parent still merges every shard that finished."""
    shards = read_plan(plan_path).shard_refs
    futures = [generate_shard_task.submit(context, shard) for shard in shards]
    outcomes = []
    for shard, done in zip(shards, settle(futures, "generate shards"), strict=True):
        raised = done.raised()
        outcomes.append(ShardOutcome(shard_id=shard.shard_id, result=done.result,
                                     error=done.error,
                                     disk_full=raised is not None and is_disk_full(raised)))
    return outcomes


@flow(name="generate", log_prints=True)
def generate(
    workspace: str | None = None,
    generator: str | None = None,
    styles: list[str] | None = None,
    samples_per_face: int | None = None,
    shard_size: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    eta: float | None = None,
    style_eta: dict[str, float] | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    dask_address: str | None = None,
    faces: list[str] | None = None,
    text_encoder: EncoderSpec | None = None,
) -> GenerateReport:
    """Generate missing sketches of the stored mugshots for ``styles`` with a saved generator.

    ``generator`` is a folder or the version of a generator saved in the workspace (default
    ``<workspace>/generators/default/final``); ``faces`` restricts
    the run to these face or identity ids (e.g. a held-out split); ``styles`` defaults to
    every active style of the registry. Options left unset come from the settings
    (``CLIP4SKETCH_GENERATE_*``; see schemas/settings.py), so a deployment and a backfill
    draw the same way; ``dask_address`` also comes from ``CLIP4SKETCH_DASK_ADDRESS``, the
    cluster every sharded stage uses. Sampling noise: ``eta`` sets every style's; otherwise
    each style takes ``style_eta`` (then the settings' ``style_eta``, then the generator's
    own per-style noise), and a style none of them names the generator's default.
    """
    started = time.perf_counter()
    settings, ws = resolve(workspace)
    run_id = current_run_id()
    given = settings.generate
    samples_per_face = samples_per_face or given.samples_per_face
    shard_size = shard_size or given.shard_size
    steps = steps or given.steps
    guidance = given.guidance if guidance is None else guidance
    batch_size = batch_size or given.batch_size
    device = device or given.device
    dask_address = cluster_address(settings, dask_address, "generate")
    generator_path = find_generator(ws.root, generator or given.generator)
    manifest = checked_generator(generator_path)
    # Generators saved before formulations recorded no defaults: DDIM's 50 steps, guidance 2.
    steps = steps or manifest.get("default_steps") or 50
    guidance = manifest.get("default_guidance", 2.0) if guidance is None else guidance
    style_eta = {} if eta is not None else {**manifest.get("style_eta", {}),
                                            **given.style_eta, **(style_eta or {})}
    eta = manifest.get("default_eta", 0.0) if eta is None else eta
    # Generators saved before formulations recorded none are ddpm.
    check_eta(manifest.get("formulation", "ddpm"), eta)
    check_style_eta(manifest.get("formulation", "ddpm"), style_eta)
    # One writer per workspace: generation writes shard files, the sketches table and the
    # style prompts' vectors, so it holds the lock like every other writing flow.
    with hold_workspace(settings, ws, "generate", run_id):
        sources = condition_sources(ws, manifest, roles=("identity", "image"))
        texts = prompts_for(settings, styles)
        embed_texts(ws, texts, encoder_spec(settings, "text", text_encoder), run_id=run_id)
        sources |= condition_sources(ws, manifest, roles=("text",))
        sampling = SamplingParams(steps=steps, guidance=guidance, eta=eta, style_eta=style_eta,
                                  batch_size=batch_size)
        devices = [device] if dask_address else local_devices(device)
        context = GenerationContext(
            workspace=str(ws.root), generator_path=str(generator_path),
            generator_version=manifest["version"], generator_config=manifest["config_name"],
            conditions=sources, sampling=sampling, devices=devices, run_id=run_id,
        )
        plan = plan_task(str(ws.root), manifest["version"], sources, list(texts), samples_per_face,
                         shard_size, faces)
        print(f"generator {manifest['version']}: {plan.items_todo} sketches to draw in "
              f"{plan.shards} shards on {', '.join(devices)}"
              + (f" (Dask at {dask_address})" if dask_address else ""))
        outcomes: list[ShardOutcome] = []
        if plan.shards:
            runner = task_runner(dask_address, len(devices))
            outcomes = generate_shards.with_options(task_runner=runner)(context, plan.plan_path)
        merged = merge_task(str(ws.root), plan.plan_path, run_id)
        report = GenerateReport(
            run_id=run_id, workspace=str(ws.root), generator=str(generator_path),
            generator_version=manifest["version"], styles=plan.styles, devices=devices,
            task_runner=f"dask:{dask_address}" if dask_address else f"threads:{len(devices)}",
            shards=plan.shards,
            shards_skipped=sum(1 for o in outcomes if o.result and o.result.skipped),
            failed_shards={o.shard_id: o.error or "failed" for o in outcomes if o.result is None},
            per_style=per_style(plan, outcomes), skipped_faces=plan.skipped_faces,
            flagged=flagged(outcomes), merge=merged,
        )
        report.seconds = time.perf_counter() - started
        publish_generate(generate_markdown(report, plan), generate_style_rows(report))
        record = write_run_record(
            ws, "generate", run_id,
            {"generator": str(generator_path), "styles": plan.styles,
             "samples_per_face": samples_per_face, "shard_size": shard_size,
             "sampling": sampling.model_dump(), "device": device, "dask_address": dask_address,
             "faces": faces},
            {"plan": plan, "generate": report},
        )
        report.run_record = str(record)
    if report.failed_shards:
        message = (
            f"{len(report.failed_shards)} of {plan.shards} shards failed (the others are "
            f"merged; run again to finish): "
            + "; ".join(f"{k}: {v}" for k, v in sorted(report.failed_shards.items())[:5])
        )
        if any(o.disk_full for o in outcomes):
            raise DiskFullError(errno.ENOSPC, f"disk full: {message}")
        raise RuntimeError(message)
    return report
