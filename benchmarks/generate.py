"""Sketch generation throughput: the sharded, batched path beside a naive one-at-a-time loop.

Run: .venv/bin/python benchmarks/generate.py [--generator DIR] [--n 16] [--steps 3]

Both paths draw the same items with the same model and DDIM steps (classifier-free guidance,
so two UNet passes per step):
- naive: for each item, build its conditions, run the DDIM loop on a batch of one, write a PNG;
- batched: ``SketchGenerator.sample`` on batches, no IO;
- sharded: ``run_shard`` end to end (vectors read from LanceDB, batches, PNGs, shard Parquet).
The UNet's achieved FLOP/s (FLOPs of one forward counted with FlopCounterMode, times the
forwards made) is compared with this machine's float32 matmul FLOP/s. Without --generator a
random-init generator of --config is used and the workspace holds random unit vectors: the
figures are about speed, not sketches.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import numpy as np

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


def unet_forward_flops(generator) -> int:
    """FLOPs of one UNet forward for one image (the CFG pair counts as two)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    size = generator.resolution
    device = generator.device
    x = torch.zeros(1, generator.unet.config.in_channels, size, size, device=device)
    tokens = generator.projector.unconditional(1)
    labels = tokens.mean(dim=1) if generator.config.unet.pooled_to_time else None
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        generator.unet(x, torch.tensor([500], device=device), encoder_hidden_states=tokens,
                       class_labels=labels)
    return counter.get_total_flops()


def synthetic_workspace(root: Path, manifest: dict, n_faces: int, styles: list[str]):
    """Faces and unit vectors stored as the pipeline stores them, without running encoders."""
    import pyarrow as pa

    from schemas.arrow import to_arrow
    from schemas.records import FACES_SCHEMA, FaceRecord, embedding_schema
    from tasks import storage
    from tasks.embed import TEXT_SCHEMA_KEY
    from tasks.encoders.base import l2_normalise

    workspace = storage.Workspace.open(root)
    rng = np.random.default_rng(0)
    now = dt.datetime.now(dt.UTC)
    faces = [FaceRecord(
        face_id=f"{i:064x}", identity_id=f"bench-{i:04d}", kind="photo", source_path="-",
        pixel_sha256="-", width=112, height=112, image_format="PNG", image_mode="RGB",
        exif_transposed=False, alignment="pre-aligned", det_box=[0.0] * 4,
        det_landmarks=[0.0] * 10, det_score=1.0, n_faces=1, aligned_png=b"", run_id="bench",
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


def naive_loop(generator, items, vectors, texts, steps: int, guidance: float,
               out: Path) -> None:
    """The textbook diffusers loop, one image at a time."""
    import torch
    from diffusers import DDIMScheduler

    from tasks.generate.shard import encode_png

    device = generator.device
    size = generator.resolution
    for item in items:
        conditions = {
            "identity": torch.as_tensor(vectors["identity"][item["face_id"]][None], device=device),
            "image": torch.as_tensor(vectors["image"][item["face_id"]][None], device=device),
            "text": torch.as_tensor(texts[item["style"]][0][None], device=device),
        }
        with torch.no_grad():
            tokens = torch.cat([generator.projector(conditions, batch_size=1),
                                generator.projector.unconditional(1)])
            labels = tokens.mean(dim=1) if generator.config.unet.pooled_to_time else None
            scheduler = DDIMScheduler(**generator.scheduler_config)
            scheduler.set_timesteps(steps, device=device)
            seeded = torch.Generator("cpu").manual_seed(int(item["seed"]))
            x = torch.randn((1, 1, size, size), generator=seeded).to(device)
            for t in scheduler.timesteps:
                eps = generator.unet(torch.cat([x, x]), t, encoder_hidden_states=tokens,
                                     class_labels=labels).sample
                cond, uncond = eps.chunk(2)
                x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
        image = ((x[0, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        (out / f"{item['sketch_id']}.png").write_bytes(encode_png(image))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", help="a saved generator directory (default: random init)")
    parser.add_argument("--config", default="cpu", help="config for the random-init generator")
    parser.add_argument("--n", type=int, default=16, help="sketches per path")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=1,
                        help="best of this many runs per path (paths alternate)")
    args = parser.parse_args()

    import torch

    from schemas.generation import GenerationContext, SamplingParams
    from tasks.generate.conditions import condition_sources, face_vectors, text_vectors
    from tasks.generate.config import load_config
    from tasks.generate.model import SketchGenerator, read_manifest
    from tasks.generate.plan import plan_generation
    from tasks.generate.shard import load_generator, resolve_device, run_shard

    device = resolve_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    # The benchmark's workspace holds vectors, not photos, so the generator is built without
    # the spatial input: one more input channel costs next to nothing in the UNet.
    config = load_config(args.config).model_copy(update={"spatial_condition": "none"})
    path = Path(args.generator) if args.generator else SketchGenerator.build(
        config, {"identity": 128, "image": 1280, "text": 384},
        {"identity": "bench-id", "image": "bench-img", "text": "bench-txt"}, seed=0,
    ).save_pretrained(tmp / "generator")
    manifest = read_manifest(path)
    styles = ["bench-a", "bench-b"]
    workspace = synthetic_workspace(tmp / "ws", manifest, max(1, args.n // 4), styles)
    sources = condition_sources(workspace, manifest)
    plan = plan_generation(workspace, manifest["version"], sources, styles,
                           samples_per_face=2, shard_size=args.n)
    shard = plan.shard_refs[0]
    sampling = SamplingParams(steps=args.steps, guidance=args.guidance,
                              batch_size=args.batch_size)
    context = GenerationContext(
        workspace=str(workspace.root), generator_path=str(path),
        generator_version=manifest["version"], generator_config=manifest["config_name"],
        conditions=sources, sampling=sampling, devices=[device], run_id="bench")
    generator = load_generator(path, device, context.expected_encoders())
    from tasks import storage

    items = storage.read_parquet(workspace.root / shard.items_path).to_pylist()
    faces = sorted({i["face_id"] for i in items})
    vectors = {role: dict(zip(faces, face_vectors(workspace, sources[role], faces), strict=True))
               for role in ("identity", "image")}
    texts = text_vectors(workspace, sources["text"], styles)
    n = len(items)
    generator.sample({r: np.stack([vectors[r][faces[0]]]) for r in ("identity", "image")}
                     | {"text": texts[styles[0]][0][None]}, [0], steps=1)  # warm-up

    def timed(fn) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - started

    naive_dir = tmp / "naive"
    naive_dir.mkdir()

    def naive() -> None:
        naive_loop(generator, items, vectors, texts, args.steps, args.guidance, naive_dir)

    def batched() -> None:
        for start in range(0, n, args.batch_size):
            batch = items[start:start + args.batch_size]
            generator.sample(
                {"identity": np.stack([vectors["identity"][i["face_id"]] for i in batch]),
                 "image": np.stack([vectors["image"][i["face_id"]] for i in batch]),
                 "text": np.stack([texts[i["style"]][0] for i in batch])},
                [i["seed"] for i in batch], steps=args.steps, guidance=args.guidance)

    def sharded() -> None:
        (workspace.root / shard.result_path).unlink(missing_ok=True)  # else it is skipped
        run_shard(context, shard)

    paths = {"naive, one image at a time": naive, "batched sample() (no IO)": batched,
             "sharded run_shard (end to end)": sharded}
    # Alternating the paths and keeping each one's best run damps other load on the machine.
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(args.repeats):
        for name, fn in paths.items():
            best[name] = min(best[name], timed(fn))
    naive_s = best["naive, one image at a time"]

    flops_per_image = unet_forward_flops(generator) * args.steps * 2  # CFG: two passes a step
    peak = matmul_flops(device)
    params = sum(p.numel() for p in generator.unet.parameters())
    print(f"generator {manifest['version']} ({params / 1e6:.1f} M UNet params, "
          f"{generator.resolution}x{generator.resolution}), {n} sketches, {args.steps} DDIM "
          f"steps, guidance {args.guidance}, batch {args.batch_size}, device {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"UNet forward: {flops_per_image / args.steps / 2 / 1e9:.2f} GFLOP per image; "
          f"float32 matmul on this machine: {peak / 1e9:.1f} GFLOP/s\n")
    print(f"{'path':34} {'seconds':>8} {'img/s':>8} {'vs naive':>9} {'UNet GFLOP/s':>13} "
          f"{'% of matmul':>12}")
    for name, seconds in best.items():
        achieved = flops_per_image * n / seconds
        print(f"{name:34} {seconds:8.2f} {n / seconds:8.2f} {naive_s / seconds:8.2f}x "
              f"{achieved / 1e9:13.1f} {100 * achieved / peak:11.1f}%")


if __name__ == "__main__":
    main()
