"""Sketch generation throughput: the 112 px bridge beside the 64 px 25-step DDIM generator,
each by a naive one-at-a-time loop, batched sampling and the sharded path.

Run: .venv/bin/python -m benchmarks.generate [--generator DIR] [--n 64] [--no-baseline]

Per generator, the same items with the same model, steps and guidance:
- naive: for each item, build its conditions, sample a batch of one, write a PNG;
- batched: ``SketchGenerator.sample`` on batches (start and spatial images made), no IO;
- sharded: ``run_shard`` end to end (vectors read from LanceDB, crops, batches, PNGs, Parquet).
The network's achieved FLOP/s (one evaluation counted with FlopCounterMode, times the
evaluations made) is compared with this machine's float32 matmul FLOP/s. Without
--generator random-init generators of the bundled configs are used and the workspace holds
random unit vectors and smooth random faces: the figures are about speed, not sketches.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.arrow import to_arrow
from schemas.generation import GenerationContext, SamplingParams
from schemas.records import FACES_SCHEMA, FaceRecord, embedding_schema
from tasks import storage
from tasks.encoders.base import l2_normalise
from tasks.generate.config import load_config
from tasks.generate.saved import read_manifest

os.environ.setdefault("LANCEDB_LOG", "error")


def matmul_flops(device: str, size: int = 2048, repeats: int = 5) -> float:
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        torch.matmul(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def forward_flops(generator) -> int:
    """FLOPs of one network evaluation for one image at full resolution: UNet, pixel
    (un)shuffle and the refine head, as ``SketchGenerator._predict`` runs them."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    size = generator.resolution
    device = generator.device
    x = torch.zeros(1, 1, size, size, device=device)
    spatial = (torch.zeros(1, 1, size, size, device=device)
               if generator.config.spatial_condition != "none" else None)
    tokens = generator.projector.unconditional(1)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        generator._predict(x, torch.tensor([500.0], device=device), tokens, spatial)
    return counter.get_total_flops()


def synthetic_workspace(root: Path, manifest: dict, n_faces: int, styles: list[str]):
    """Faces and unit vectors stored as the pipeline stores them, without running encoders."""
    # Imported here, not at the top: tasks.embed, tasks.generate.shard load prefect, which reads the
    # environment set above.
    import cv2
    import pyarrow as pa

    from tasks.embed import TEXT_SCHEMA_KEY
    from tasks.generate.shard import encode_png

    workspace = storage.Workspace.open(root)
    rng = np.random.default_rng(0)
    now = dt.datetime.now(dt.UTC)

    def face_png() -> bytes:
        # Smooth random shading: enough for the renderers and the spatial input to work on.
        small = rng.integers(40, 220, (14, 14, 3), dtype=np.uint8)
        return encode_png(cv2.resize(small, (112, 112), interpolation=cv2.INTER_CUBIC))

    faces = [FaceRecord(
        face_id=f"{i:064x}", identity_id=f"bench-{i:04d}", kind="photo", source_path="-",
        pixel_sha256="-", width=112, height=112, image_format="PNG", image_mode="RGB",
        exif_transposed=False, alignment="pre-aligned", det_box=[0.0] * 4,
        det_landmarks=[0.0] * 10, det_score=1.0, n_faces=1, aligned_png=face_png(), run_id="bench",
        ingested_at=now) for i in range(n_faces)]
    storage.upsert(workspace, storage.FACES, to_arrow(faces, FACES_SCHEMA), "face_id")
    dims, versions = manifest["condition_dims"], manifest["encoder_versions"]
    for role in ("identity", "image"):
        vectors = l2_normalise(rng.standard_normal((n_faces, dims[role])))
        storage.upsert(workspace, f"emb_{role}_bench_{dims[role]}", pa.table({
            "face_id": [f.face_id for f in faces],
            "identity_id": [f.identity_id for f in faces],
            "kind": ["photo"] * n_faces,
            "encoder": ["bench"] * n_faces,
            "encoder_version": [versions[role]] * n_faces,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)),
                                                        dims[role]),
            "run_id": ["bench"] * n_faces,
            "embedded_at": pa.array([now] * n_faces, pa.timestamp("us", tz="UTC")),
        }, schema=embedding_schema(dims[role])), "face_id")
    texts = l2_normalise(rng.standard_normal((len(styles), dims["text"])))
    storage.upsert(workspace, f"emb_text_bench_{dims['text']}", pa.table({
        TEXT_SCHEMA_KEY: styles, "text": styles,
        "encoder_version": [versions["text"]] * len(styles),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(texts.reshape(-1)), dims["text"]),
        "run_id": ["bench"] * len(styles),
    }), TEXT_SCHEMA_KEY)
    return workspace


def naive_loop(generator, items, conditions_of, steps: int, guidance: float,
               out: Path) -> None:
    """One image at a time: conditions built, sampled and written per item."""
    # Imported here, not at the top: tasks.generate.shard loads prefect, which reads the environment
    # set above.
    from tasks.generate.shard import encode_png

    for item in items:
        image = generator.sample(conditions_of([item]), [item["seed"]], steps=steps,
                                 guidance=guidance)[0]
        (out / f"{item['sketch_id']}.png").write_bytes(encode_png(image))


@dataclass
class Case:
    label: str
    config: str
    steps: int
    guidance: float


def run_case(case: Case, args: argparse.Namespace, tmp: Path, device: str) -> list[tuple]:
    """Seconds per path for one generator config; rows for the table."""
    # Imported here, not at the top: tasks.faces, tasks.generate.conditions, tasks.generate.dataset,
    # tasks.generate.networks, tasks.generate.plan, tasks.generate.shard load diffusers and prefect
    # and torch.
    import torch

    from tasks.faces import read_crops
    from tasks.generate.conditions import condition_sources, face_vectors, text_vectors
    from tasks.generate.inputs import spatial_inputs, start_inputs
    from tasks.generate.networks import SketchGenerator
    from tasks.generate.plan import plan_generation
    from tasks.generate.shard import load_generator, run_shard

    root = tmp / case.config
    path = Path(args.generator) if args.generator else SketchGenerator.build(
        case.config, {"identity": 128, "image": 1280, "text": 384},
        {"identity": "bench-id", "image": "bench-img", "text": "bench-txt"}, seed=0,
    ).save_pretrained(root / "generator")
    manifest = read_manifest(path)
    styles = ["bench-a", "bench-b"]
    workspace = synthetic_workspace(root / "ws", manifest, max(1, args.n // 4), styles)
    sources = condition_sources(workspace, manifest)
    plan = plan_generation(workspace, manifest["version"], sources, styles,
                           samples_per_face=2, shard_size=args.n)
    shard = plan.shard_refs[0]
    sampling = SamplingParams(steps=case.steps, guidance=case.guidance,
                              batch_size=args.batch_size)
    context = GenerationContext(
        workspace=str(workspace.root), generator_path=str(path),
        generator_version=manifest["version"], generator_config=manifest["config_name"],
        conditions=sources, sampling=sampling, devices=[device], run_id="bench")
    generator = load_generator(path, device, context.expected_encoders())
    config = generator.config
    items = storage.read_parquet(workspace.root / shard.items_path).to_pylist()
    faces = sorted({i["face_id"] for i in items})
    vectors = {role: dict(zip(faces, face_vectors(workspace, sources[role], faces), strict=True))
               for role in ("identity", "image")}
    texts = text_vectors(workspace, sources["text"], styles)
    crops = read_crops(workspace, faces)

    def conditions_of(batch: list[dict]) -> dict:
        photos = [crops[i["face_id"]] for i in batch]
        made = {"identity": np.stack([vectors["identity"][i["face_id"]] for i in batch]),
                "image": np.stack([vectors["image"][i["face_id"]] for i in batch]),
                "text": np.stack([texts[i["style"]][0] for i in batch])}
        if config.spatial_condition != "none":
            made["spatial"] = spatial_inputs(photos, config.spatial_condition, config.resolution)
        if generator.needs_start:
            made["start"] = start_inputs(photos, config.formulation.start, config.resolution)
        return made

    n = len(items)
    generator.sample(conditions_of(items[:1]), [0], steps=1, guidance=case.guidance)  # warm-up

    def timed(fn) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - started

    naive_dir = root / "naive"
    naive_dir.mkdir(parents=True, exist_ok=True)

    def naive() -> None:
        naive_loop(generator, items, conditions_of, case.steps, case.guidance, naive_dir)

    def batched() -> None:
        for at in range(0, n, args.batch_size):
            batch = items[at:at + args.batch_size]
            generator.sample(conditions_of(batch), [i["seed"] for i in batch],
                             steps=case.steps, guidance=case.guidance)

    def sharded() -> None:
        (workspace.root / shard.result_path).unlink(missing_ok=True)  # else it is skipped
        run_shard(context, shard)

    paths = {"naive, one image at a time": naive, "batched sample()": batched,
             "sharded run_shard (end to end)": sharded}
    # Alternating the paths and keeping each one's best run damps other load on the machine.
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(args.repeats):
        for name, fn in paths.items():
            best[name] = min(best[name], timed(fn))
    passes = 2 if case.guidance != 1.0 else 1  # classifier-free guidance doubles the batch
    flops = forward_flops(generator) * case.steps * passes
    params = sum(p.numel() for p in generator.parameters()) / 1e6
    label = (f"{case.label} ({config.resolution} px, {case.steps} steps, guidance "
             f"{case.guidance:g}, {params:.1f} M params, {flops / 1e9:.2f} GFLOP a sketch)")
    return [(label, name, seconds, n, flops) for name, seconds in best.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", help="a saved generator directory (default: random init "
                                            "of each compared config)")
    parser.add_argument("--n", type=int, default=64, help="sketches per path")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2,
                        help="best of this many runs per path (paths alternate)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the old 64 px 25-step DDIM generator (cpu-ddpm)")
    args = parser.parse_args()

    # Imported here, not at the top: tasks.generate.shard loads prefect, which reads the environment
    # set above.
    import torch

    from tasks.generate.shard import resolve_device

    device = resolve_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    bridge = load_config("cpu").formulation
    cases = [Case("bridge (cpu)", "cpu", bridge.default_steps, bridge.default_guidance)]
    if args.baseline and not args.generator:
        cases.append(Case("DDIM (cpu-ddpm)", "cpu-ddpm", 25, 2.0))
    rows = [row for case in cases for row in run_case(case, args, tmp, device)]
    peak = matmul_flops(device)
    print(f"device {device}, {torch.get_num_threads()} threads; float32 matmul "
          f"{peak / 1e9:.1f} GFLOP/s; batch {args.batch_size}")
    naive_s = {label: s for label, name, s, _, _ in rows if name.startswith("naive")}
    current = None
    for label, name, seconds, n, flops in rows:
        if label != current:
            current = label
            print(f"\n{label}\n{'path':34} {'seconds':>8} {'sketch/s':>9} {'vs naive':>9} "
                  f"{'GFLOP/s':>8} {'% matmul':>9}")
        achieved = flops * n / seconds
        print(f"{name:34} {seconds:8.2f} {n / seconds:9.2f} {naive_s[label] / seconds:8.2f}x "
              f"{achieved / 1e9:8.1f} {100 * achieved / peak:8.1f}%")


if __name__ == "__main__":
    main()
