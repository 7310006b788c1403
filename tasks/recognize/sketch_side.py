"""Recognizers that adapt the sketch side only: ``procrustes`` and ``adapter``.

Why these exist: a head trained with a margin loss on a few hundred identities learns one
artist and forgets the encoder's geometry (METHOD.md: every trained head lost to plain SFace
on CUFSF). Both kinds here leave the photo side exactly the frozen encoder and move sketch
vectors as little as the data justifies:

* ``procrustes``: the closed-form orthogonal map R of sketch vectors onto their identity's
  photo vector (``argmin ||S R - P||``, R = U V^T from the SVD of S^T P), shrunk toward the
  identity map: M = (1 - alpha) I + alpha R. alpha = 0 is the baseline itself, so a
  validation that may choose it can never pick something worse than the baseline *on
  validation*.
* ``adapter``: x + up(gelu(down(x))) with ``up`` zero-initialised (starts as the identity
  map), trained with a multi-positive InfoNCE loss (tau 0.07) of each adapted sketch against
  the frozen photo vectors of every training identity (positives: its own identity's photos)
  plus a preservation term lambda * (1 - cos(adapter(s), s)) that keeps it near the encoder.

Hyper-parameters (alpha, kind weighting, lambda, the real sketches' share of an adapter's
batches, the number of steps) are chosen by the mean score over validation folds of the
*training* identities (``validation_folds``: every identity with a real sketch validates
once), never on test: then the chosen setting is refit on every training identity. Only
vectors are touched, so fitting takes seconds on a CPU and is deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.evaluate.metrics import evaluate_scores
from tasks.recognize.data import DataError

SKETCH_SIDE_MODES = ("procrustes", "adapter")
VALIDATION_SHARE = 0.2
MIN_VALIDATION = 2
# The vector kinds choose their settings by the mean over this many validation folds (every
# identity with a real sketch validates once); the image-level encoder, 5x costlier a fold,
# validates on one.
VALIDATION_FOLDS = 5
ALPHAS = tuple(float(round(a, 2)) for a in np.linspace(0.0, 1.0, 21))
WEIGHTINGS = ("balanced", "pooled")  # per-kind equal weight, or every sketch equal
LAMBDAS = (0.1, 0.3, 1.0)
# Share of a batch drawn from real sketches when other kinds are mixed in: None is
# kind-balanced (each kind equally likely). Many synthetic identities can pull the adapter
# toward the generator's sketches; validation (real sketches when there are any) chooses.
# 1.0 is real sketches alone with every drawn identity's mugshots still among the InfoNCE
# negatives: the drawn identities then teach nothing of the artist's gap (their sketches sit
# where the photo sits), only a photo side crowded with more people to tell apart.
REAL_SHARES: tuple[float | None, ...] = (None, 0.8, 1.0)
REAL_KIND = "sketch"
# A mixed candidate may also shift the other kinds' inputs by a learned vector of their own
# (``kind_offset``, training only: real sketches and every probe pass unshifted). The drawn
# sketches' mean offset from their mugshots is not the artists' (the offset directions agree
# at cos 0.65-0.81 as populations, docs/results/generator.md), and one shared map must
# otherwise split the difference between two mean shifts; shifted, the drawings can teach
# the map how a face moves around the mean without pulling the mean itself.
KIND_OFFSET_SHARES: tuple[float | None, ...] = (None, 0.8)
# Batch schedules: both kinds mixed in every batch (at a real share), or the other kinds
# first and then the real sketches alone, from where the first stage's validation peaked
# (pre-train on many drawn identities, fine-tune on the few real pairs: a mix lets the drawn
# ones outvote the artists at every step). Validation chooses, as for the share.
MIXED, CURRICULUM = "mixed", "synthetic-then-real"
# How each kind's search chooses its settings: the candidates and the validation. A
# recognizer chosen otherwise is another recognizer though its request is the same: whatever
# reuses trained recognizers by their request (benchmarks/recognizers.py) keys on this too. A
# kind missing here keeps the key recognizers were stamped with before searches were keyed.
CANDIDATE_SEARCH = {
    "procrustes": f"1: the mean over {VALIDATION_FOLDS} validation folds",
    "adapter": "5: batch schedules (mixed, synthetic-then-real), real shares "
               f"{REAL_SHARES}, kind offsets at shares {KIND_OFFSET_SHARES}, the mean over "
               f"{VALIDATION_FOLDS} validation folds",
    "encoder": f"4: batch schedules (mixed, synthetic-then-real), real shares {REAL_SHARES}, "
               f"kind offsets at shares {KIND_OFFSET_SHARES}",
}
TAU = 0.07
ADAPTER_HIDDEN = 256
ADAPTER_LR = 1e-3
ADAPTER_BATCH = 256
ADAPTER_MAX_STEPS = 1500
EVAL_EVERY = 10
PATIENCE = 20


def torch_modules() -> dict[str, type]:
    """The two inference modules, built lazily so importing this file never imports torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class ShrunkOrthogonalMap(nn.Module):
        """x -> normalise(x M): M is the shrunk Procrustes matrix, stored as a buffer."""

        def __init__(self, dim: int) -> None:
            super().__init__()
            self.register_buffer("matrix", torch.eye(dim))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = x.float() @ self.matrix
            norms = y.norm(dim=1, keepdim=True).clamp_min(1e-12)
            return y / norms, norms

    class ResidualAdapter(nn.Module):
        """x -> normalise(x + up(gelu(down(x)))); ``up`` starts at zero: the identity map."""

        def __init__(self, dim: int, hidden: int) -> None:
            super().__init__()
            self.down = nn.Linear(dim, hidden)
            self.up = nn.Linear(hidden, dim)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = F.normalize(x.float(), dim=1)
            y = x + self.up(F.gelu(self.down(x)))
            norms = y.norm(dim=1, keepdim=True).clamp_min(1e-12)
            return y / norms, norms

    return {"procrustes": ShrunkOrthogonalMap, "adapter": ResidualAdapter}


def build_sketch_module(config: dict[str, Any]) -> Any:
    """The inference module a config describes (weights loaded by the caller)."""
    modules = torch_modules()
    if config["mode"] == "procrustes":
        return modules["procrustes"](config["in_dim"])
    return modules["adapter"](config["in_dim"], config.get("hidden") or ADAPTER_HIDDEN)


# --------------------------------------------------------------------------- data


@dataclass
class VectorSet:
    """Unit vectors of a training set, split by side; ``labels`` index ``identities``."""

    identities: tuple[str, ...]
    sketch_vectors: np.ndarray  # (S, D)
    sketch_labels: np.ndarray  # (S,)
    sketch_kinds: np.ndarray  # (S,) "sketch" (real) or "synthetic"
    photo_vectors: np.ndarray  # (P, D)
    photo_labels: np.ndarray  # (P,)
    prototypes: np.ndarray = field(init=False)  # (I, D) unit mean photo per identity

    def __post_init__(self) -> None:
        self.sketch_vectors = _unit(self.sketch_vectors)
        self.photo_vectors = _unit(self.photo_vectors)
        sums = np.zeros((len(self.identities), self.photo_vectors.shape[1]), np.float64)
        np.add.at(sums, self.photo_labels, self.photo_vectors)
        self.prototypes = _unit(sums)

    @classmethod
    def from_training(cls, identities: Sequence[str], labels: np.ndarray, kinds: np.ndarray,
                      vectors: np.ndarray) -> VectorSet:
        photo = kinds == "photo"
        return cls(tuple(identities), vectors[~photo], labels[~photo], kinds[~photo],
                   vectors[photo], labels[photo])

    def subset(self, identities: Sequence[int]) -> VectorSet:
        """The same data restricted to these label indices (relabelled from 0)."""
        keep = np.asarray(sorted(set(int(i) for i in identities)), dtype=np.int64)
        relabel = np.full(len(self.identities), -1, dtype=np.int64)
        relabel[keep] = np.arange(len(keep))
        s = np.isin(self.sketch_labels, keep)
        p = np.isin(self.photo_labels, keep)
        return VectorSet(tuple(self.identities[i] for i in keep), self.sketch_vectors[s],
                         relabel[self.sketch_labels[s]], self.sketch_kinds[s],
                         self.photo_vectors[p], relabel[self.photo_labels[p]])


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def validation_folds(data: VectorSet, seed: int, folds: int = 1,
                     share: float = VALIDATION_SHARE,
                     ) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """([(fit labels, validation labels)] per fold, which probes validate) from the training
    identities.

    Validation identities are drawn among those with *real* sketches when at least
    2 * MIN_VALIDATION identities have them (the real artist is what test probes are), else
    among all; the draw orders identities by a seeded hash, so it is stable across runs and
    machines and independent of the order data arrived in. A validation identity leaves its
    fold's fit set entirely (photos, real and synthetic sketches).

    One fold holds out ``share`` of the pool. Several folds split the whole ordered pool into
    that many disjoint parts (the first is the one-fold part when the sizes allow), so every
    identity with a real sketch validates once: of 45 validation identities one probe is
    0.022 of rank-1, about what separates two candidates, and the mean over 5 folds reads
    all 223 of CUFSF's.
    """

    real = set(data.sketch_labels[data.sketch_kinds == "sketch"].tolist())
    pool = sorted(real) if len(real) >= 2 * MIN_VALIDATION else sorted(
        set(data.sketch_labels.tolist()))
    probes = "real" if len(real) >= 2 * MIN_VALIDATION else "all"
    if len(pool) < 2 * MIN_VALIDATION or len(data.identities) < 2 * MIN_VALIDATION:
        raise DataError(f"{len(pool)} identities with sketches: choosing hyper-parameters "
                        f"needs at least {2 * MIN_VALIDATION} (half of them for validation)")

    def rank(label: int) -> str:
        return hashlib.sha256(f"{seed}\0{data.identities[label]}".encode()).hexdigest()

    ordered = sorted(pool, key=rank)
    folds = min(folds, len(pool) // MIN_VALIDATION)
    if folds > 1:
        parts = np.array_split(np.asarray(ordered, dtype=np.int64), folds)
    else:
        n_val = min(len(pool) - MIN_VALIDATION, max(MIN_VALIDATION, round(share * len(pool))))
        parts = [np.asarray(ordered[:n_val], dtype=np.int64)]
    everyone = np.arange(len(data.identities))
    return [(np.setdiff1d(everyone, part), np.sort(part)) for part in parts], probes


def validation_split(data: VectorSet, seed: int, share: float = VALIDATION_SHARE,
                     ) -> tuple[np.ndarray, np.ndarray, str]:
    """(fit labels, validation labels, which probes validate): one fold of
    ``validation_folds``, what a training too costly to repeat per fold validates on."""
    folds, probes = validation_folds(data, seed, 1, share)
    return folds[0][0], folds[0][1], probes


def validation_score(sketches: np.ndarray, sketch_labels: np.ndarray, gallery: np.ndarray,
                     gallery_labels: np.ndarray) -> dict[str, float]:
    """Rank-1 and TAR@FAR=1e-2 of sketches against a photo gallery; ``score`` is their sum.

    Both goals of the issue count, so neither is traded away for the other; the gallery
    holds every training photo (fit identities are distractors a map that overfits would
    pull validation sketches toward).
    """

    scores = _unit(sketches) @ _unit(gallery).T
    result = evaluate_scores(scores, sketch_labels, gallery_labels, ranks=(1,), fars=(1e-2,))
    rank1, tar = result.rank(1), result.tar_at_far[1e-2]
    return {"rank1": rank1, "tar_at_far_1e-2": tar, "score": rank1 + tar}


# --------------------------------------------------------------------------- procrustes


def sketch_weights(kinds: np.ndarray, weighting: str) -> np.ndarray:
    """Per-sketch weights: ``balanced`` gives each kind (real, synthetic) equal total weight,
    so a few real sketches are not drowned by many generated ones; ``pooled`` weighs all
    sketches alike."""
    weights = np.ones(len(kinds), np.float64)
    if weighting == "balanced":
        for kind in np.unique(kinds):
            members = kinds == kind
            weights[members] = 1.0 / members.sum()
    return weights / weights.sum()


def procrustes_rotation(data: VectorSet, weighting: str) -> np.ndarray:
    """The orthogonal R minimising sum_i w_i ||s_i R - p(i)||^2 (p: identity prototype)."""
    w = sketch_weights(data.sketch_kinds, weighting)
    cross = (data.sketch_vectors * w[:, None]).T @ data.prototypes[data.sketch_labels]
    u, _, vt = np.linalg.svd(cross)
    return u @ vt


def shrunk(rotation: np.ndarray, alpha: float) -> np.ndarray:
    return (1.0 - alpha) * np.eye(len(rotation)) + alpha * rotation


@dataclass
class Fitted:
    """A fitted sketch-side map and how its hyper-parameters were chosen."""

    mode: str
    state: dict[str, Any]  # tensors for safetensors
    chosen: dict[str, Any]
    validation: dict[str, Any]
    losses: list[float]


def fit_procrustes(data: VectorSet, seed: int, folds: int = VALIDATION_FOLDS) -> Fitted:
    """Choose (alpha, weighting) by the mean validation score over folds of the training
    identities, then refit on all of them."""
    import torch

    parts, probes = validation_folds(data, seed, folds)
    gallery, gallery_labels = _validation_gallery(data, parts[0][1])
    per_fold: list[list[dict[str, Any]]] = []
    for fit, val in parts:
        train = data.subset(fit)
        vs, vl = _validation_probes(data, val, probes)
        per_fold.append([])
        for weighting in WEIGHTINGS:
            rotation = procrustes_rotation(train, weighting)
            for alpha in ALPHAS:
                result = validation_score(vs @ shrunk(rotation, alpha), vl, gallery,
                                          gallery_labels)
                per_fold[-1].append({"weighting": weighting, "alpha": alpha, **result})
    grid = [{**cells[0], **mean_scores(cells)} for cells in zip(*per_fold, strict=True)]
    # best score; ties go to the smaller alpha (closer to the encoder) then "balanced"
    best = max(grid, key=lambda g: (round(g["score"], 9), -g["alpha"],
                                    g["weighting"] == "balanced"))
    matrix = shrunk(procrustes_rotation(data, best["weighting"]), best["alpha"])
    baseline = next(g for g in grid if g["alpha"] == 0.0)
    return Fitted("procrustes",
                  {"matrix": torch.from_numpy(matrix.astype(np.float32)).contiguous()},
                  {"alpha": best["alpha"], "weighting": best["weighting"]},
                  {**_fold_sizes(data, parts, probes), "n_gallery": len(gallery_labels),
                   "grid": grid, "best": best,
                   "baseline": {k: baseline[k] for k in SCORES}},
                  [g["score"] for g in grid if g["weighting"] == best["weighting"]])


SCORES = ("rank1", "tar_at_far_1e-2", "score")


def mean_scores(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The validation figures averaged over folds (each fold's score kept beside them when
    there are several, to show how far the folds disagree)."""
    mean = {k: float(np.mean([r[k] for r in results])) for k in SCORES}
    return mean if len(results) == 1 else {**mean, "fold_scores": [r["score"] for r in results]}


def _fold_sizes(data: VectorSet, parts: Sequence[tuple[np.ndarray, np.ndarray]],
                probes: str) -> dict[str, Any]:
    """How many identities fit and validate: ``validation`` counts every identity that
    validated once, ``fit`` the fewest any fold trained on."""
    return {"identities": {"fit": min(len(fit) for fit, _ in parts),
                           "validation": sum(len(val) for _, val in parts),
                           "folds": len(parts)},
            "probes": probes,
            "n_probes": sum(len(_validation_probes(data, val, probes)[1]) for _, val in parts)}


def _validation_probes(data: VectorSet, val: np.ndarray, probes: str,
                       ) -> tuple[np.ndarray, np.ndarray]:
    chosen = np.isin(data.sketch_labels, val)
    if probes == "real":
        chosen &= data.sketch_kinds == "sketch"
    return data.sketch_vectors[chosen], data.sketch_labels[chosen]


def _validation_gallery(data: VectorSet, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    del val  # every training photo: validation identities' own and the fit ones as distractors
    return data.photo_vectors, data.photo_labels


# --------------------------------------------------------------------------- adapter


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: the adapter's tensors are tiny (256 x 128), and on a shared
    2-core machine two OpenMP threads spinning for them were measured 5x slower (25 vs
    190 ms a step under load) than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)



def infonce(y: Any, labels: Any, photos: Any, photo_labels: Any) -> Any:
    """Multi-positive InfoNCE of sketch embeddings ``y`` against every frozen photo vector:
    the photos of a sketch's own identity are its positives (tensor methods only, so this
    module still loads without torch)."""
    logits = y @ photos.T / TAU  # (B, P)
    positive = labels[:, None] == photo_labels[None, :]
    return (logits.logsumexp(dim=1)
            - logits.masked_fill(~positive, -1e9).logsumexp(dim=1)).mean()


def optimizer_step(loss: Any, optimizer: Any, scaler: Any = None) -> None:
    """One backward pass and update, through fp16 autocast's gradient scaler when there is one."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


@dataclass
class EarlyStopping:
    """The best validation score so far, its step and weights; ``patience`` evaluations
    without a better one end the run."""

    patience: int
    state: Any
    step: int = 0
    score: float = -math.inf
    stale: int = 0

    def update(self, step: int, score: float, state: Any) -> bool:
        """Record one evaluation (``state``: a callable giving the weights, taken only when
        they are the best); True when training should stop."""
        if score > self.score + 1e-9:
            self.state, self.step, self.score, self.stale = state(), step, score, 0
            return False
        self.stale += 1
        return self.stale >= self.patience


def _sample(rng: np.random.Generator, kinds: np.ndarray, size: int,
            real_share: float | None = None) -> np.ndarray:
    """Sketch indices, kind-balanced (each kind equally likely, then a member uniformly), or
    with ``real_share`` of the items from real sketches and the rest spread over the others."""
    names = list(np.unique(kinds))
    groups = [np.flatnonzero(kinds == k) for k in names]
    if real_share is None or REAL_KIND not in names or len(names) == 1:
        which = rng.integers(0, len(groups), size)
    else:
        real = names.index(REAL_KIND)
        others = [g for g in range(len(groups)) if g != real]
        which = np.where(rng.random(size) < real_share, real,
                         np.asarray(others)[rng.integers(0, len(others), size)])
    return np.asarray([groups[g][rng.integers(len(groups[g]))] for g in which], np.int64)


def real_shares(kinds: np.ndarray) -> tuple[float | None, ...]:
    """The batch mixes worth trying: only kind-balanced unless real and other kinds mix."""
    return REAL_SHARES if _mixed_kinds(kinds) else (None,)


def schedules(kinds: np.ndarray) -> tuple[str, ...]:
    """The batch schedules worth trying: the curriculum needs both real and other kinds."""
    return (MIXED, CURRICULUM) if _mixed_kinds(kinds) else (MIXED,)


def kind_offset_shares(kinds: np.ndarray) -> tuple[float | None, ...]:
    """The mixed candidates that also learn each other kind's input shift: none unless real
    and other kinds mix (with real sketches alone there is nothing to shift)."""
    return KIND_OFFSET_SHARES if _mixed_kinds(kinds) else ()


def _mixed_kinds(kinds: np.ndarray) -> bool:
    names = set(np.unique(kinds).tolist())
    return REAL_KIND in names and len(names) > 1


def of_kinds(data: VectorSet, real: bool) -> VectorSet:
    """The same identities and photos with only the real sketches, or only the others: every
    photo stays an InfoNCE negative in both stages of the curriculum."""
    keep = (data.sketch_kinds == REAL_KIND) == real
    return VectorSet(data.identities, data.sketch_vectors[keep], data.sketch_labels[keep],
                     data.sketch_kinds[keep], data.photo_vectors, data.photo_labels)


Validate = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def train_adapter(data: VectorSet, lam: float, seed: int, steps: int,
                  validate: Validate | None, hidden: int = ADAPTER_HIDDEN,
                  real_share: float | None = None, start: dict[str, Any] | None = None,
                  kind_offset: bool = False,
                  ) -> tuple[Any, list[float], list[dict[str, Any]], int]:
    """Train one adapter; with ``validate`` stop early and return the best step's weights.
    ``start``: weights to continue from (the curriculum's second stage) instead of the
    identity map; ``kind_offset``: learn each other kind's input shift (``KindOffsets``)."""
    modules, losses, history, best = train_adapters(
        [(data, validate)], lam, seed, steps, hidden, real_share,
        None if start is None else [start], kind_offset)
    return modules[0], losses, history, best


class KindOffsets:
    """A learned vector per sketch kind other than the real one, added to those sketches'
    unit vectors (then normalised again) in training only: the adapter's inputs, or the
    encoder branch's outputs before its InfoNCE term.

    The real kind's row is a fixed zero, so the recognizer a run saves is used exactly as
    without offsets: on real probes, unshifted. ``learned`` stays at zero for data with no
    other kind, and then shifts nothing."""

    def __init__(self, kinds: np.ndarray, dim: int, device: Any = None) -> None:
        import torch

        self.names = sorted(k for k in np.unique(kinds).tolist() if k != REAL_KIND)
        rows = {name: i + 1 for i, name in enumerate(self.names)}
        self.index = torch.from_numpy(np.asarray([rows.get(k, 0) for k in kinds.tolist()],
                                                 np.int64)).to(device)
        self.learned = torch.nn.Parameter(torch.zeros(len(self.names), dim, device=device))

    def shift(self, x: Any, items: Any) -> Any:
        """``x`` (vectors of the items ``items``, indices into the kinds given at
        construction) moved by their kinds' offsets."""
        import torch
        import torch.nn.functional as F

        table = torch.cat([self.learned.new_zeros(1, self.learned.shape[1]), self.learned])
        return F.normalize(F.normalize(x, dim=1) + table[self.index[items.to(self.index.device)]],
                           dim=1)

    def norms(self) -> dict[str, float]:
        """Each learned offset's length (a unit vector's shift: 0 is none)."""
        return {name: round(float(row.norm()), 4)
                for name, row in zip(self.names, self.learned.detach(), strict=True)}


def train_adapters(folds: Sequence[tuple[VectorSet, Validate | None]], lam: float, seed: int,
                   steps: int, hidden: int = ADAPTER_HIDDEN, real_share: float | None = None,
                   starts: Sequence[dict[str, Any]] | None = None,
                   kind_offset: bool = False,
                   ) -> tuple[list[Any], list[float], list[dict[str, Any]], int]:
    """Train one adapter per fold in lockstep; with validation, stop early on the folds'
    *mean* score and return every fold's weights at that one best step (a step count is what
    the refit on all identities reuses, so it must be one for all folds).

    Negatives are every training identity's photo prototype (photos are frozen, so this is
    exact and free); positives are the sketch's own identity's photos (multi-positive: one
    term per photo of that identity, averaged in log-sum-exp form). Losses are the folds'
    mean. ``kind_offset``: each fold also learns its other kinds' input shifts
    (``KindOffsets``), whose lengths join the validation history.
    """
    import torch
    import torch.nn.functional as F

    validating = all(v is not None for _, v in folds)
    runs = []
    for i, (data, validate) in enumerate(folds):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = torch_modules()["adapter"](data.sketch_vectors.shape[1], hidden)
        if starts is not None:
            module.load_state_dict(starts[i])
        offsets = (KindOffsets(data.sketch_kinds, data.sketch_vectors.shape[1])
                   if kind_offset else None)
        runs.append({
            "module": module, "data": data, "validate": validate, "offsets": offsets,
            "optimizer": torch.optim.AdamW(
                [*module.parameters(), *([offsets.learned] if offsets else [])],
                lr=ADAPTER_LR, weight_decay=1e-4),
            "photos": torch.from_numpy(data.photo_vectors.astype(np.float32)),
            "photo_labels": torch.from_numpy(data.photo_labels),
            "sketches": torch.from_numpy(data.sketch_vectors.astype(np.float32)),
            "labels": torch.from_numpy(data.sketch_labels),
            "rng": np.random.default_rng([seed, 0xADA] + ([i] if i else [])),
            "batch": min(ADAPTER_BATCH, 4 * len(data.sketch_kinds))})

    def states() -> list[dict[str, Any]]:
        return [_state(run["module"]) for run in runs]

    def scores() -> dict[str, Any]:
        found = mean_scores([_adapter_score(run["module"], run["validate"]) for run in runs])
        if kind_offset:
            found["offset_norms"] = [run["offsets"].norms() for run in runs]
        return found

    losses: list[float] = []
    history: list[dict[str, Any]] = []
    best = EarlyStopping(PATIENCE, states())
    if validating:
        first = scores()
        best.score = first["score"]
        history.append({"step": 0, **first})
    for run in runs:
        run["module"].train()
    for step in range(1, steps + 1):
        step_losses = []
        for run in runs:
            index = torch.from_numpy(_sample(run["rng"], run["data"].sketch_kinds,
                                             run["batch"], real_share))
            x = run["sketches"][index]
            if run["offsets"] is not None:
                x = run["offsets"].shift(x, index)
            y, _ = run["module"](x)
            preserve = (1.0 - F.cosine_similarity(y, F.normalize(x, dim=1), dim=1)).mean()
            loss = (infonce(y, run["labels"][index], run["photos"], run["photo_labels"])
                    + lam * preserve)
            optimizer_step(loss, run["optimizer"])
            step_losses.append(float(loss.detach()))
        losses.append(float(np.mean(step_losses)))
        if validating and step % EVAL_EVERY == 0:
            result = scores()
            history.append({"step": step, **result})
            if best.update(step, result["score"], states):
                break
    if not validating:
        best.state, best.step = states(), steps
    for run, state in zip(runs, best.state, strict=True):
        run["module"].load_state_dict(state)
        run["module"].eval()
    return [run["module"] for run in runs], losses, history, best.step


def _state(module: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _adapter_score(module: Any, validate: tuple[np.ndarray, ...]) -> dict[str, float]:
    import torch

    probes, probe_labels, gallery, gallery_labels = validate
    was_training = module.training
    module.eval()
    with torch.inference_mode():
        y, _ = module(torch.from_numpy(probes.astype(np.float32)))
    module.train(was_training)
    return validation_score(y.numpy(), probe_labels, gallery, gallery_labels)


def _adapter_run(folds: Sequence[tuple[VectorSet, Validate | None]], lam: float, seed: int,
                 schedule: str, share: float | None, steps: int | tuple[int, int],
                 hidden: int, kind_offset: bool = False,
                 ) -> tuple[list[Any], list[float], list[dict[str, Any]], tuple[int, int]]:
    """One candidate over the validation folds (``steps``: the cap of each stage) or its
    refit (one fold of every identity, no validation; ``steps``: the (first stage, second
    stage) step counts validation chose). Returns a module per fold, losses, the validation
    history of the last stage and the best steps per stage. ``kind_offset``: mixed batches
    only (the curriculum's stages each see one kind)."""
    caps = steps if isinstance(steps, tuple) else (steps, steps)
    if kind_offset and schedule != MIXED:
        raise ValueError(f"kind offsets need mixed batches, not the {schedule!r} schedule")
    if schedule == MIXED:
        modules, losses, history, best = train_adapters(folds, lam, seed, caps[0], hidden,
                                                        share, kind_offset=kind_offset)
        return modules, losses, history, (best, 0)
    first, losses, _, best_first = train_adapters(
        [(of_kinds(data, real=False), v) for data, v in folds], lam, seed, caps[0], hidden)
    modules, more, history, best_second = train_adapters(
        [(of_kinds(data, real=True), v) for data, v in folds], lam, seed, caps[1], hidden,
        starts=[_state(m) for m in first])
    return modules, losses + more, history, (best_first, best_second)


def fit_adapter(data: VectorSet, seed: int, max_steps: int = ADAPTER_MAX_STEPS,
                lambdas: Sequence[float] = LAMBDAS, hidden: int = ADAPTER_HIDDEN,
                folds: int = VALIDATION_FOLDS) -> Fitted:
    """Choose lambda, the batch schedule and the step count by the mean validation score
    over folds of the training identities, then refit on all.

    A setting whose best validation step is step 0 (the identity map) means the adapter
    did not help on held-out identities: the refit then keeps the identity map (0 steps),
    which is the baseline, rather than a map validation could not justify.
    """
    parts, probes = validation_folds(data, seed, folds)
    gallery, gallery_labels = _validation_gallery(data, parts[0][1])
    validated = [(data.subset(fit), (*_validation_probes(data, val, probes), gallery,
                                     gallery_labels)) for fit, val in parts]
    kinds = validated[0][0].sketch_kinds
    candidates = [(MIXED, share, False) for share in real_shares(kinds)]
    candidates += [(CURRICULUM, None, False)] if CURRICULUM in schedules(kinds) else []
    candidates += [(MIXED, share, True) for share in kind_offset_shares(kinds)]
    runs = []
    for schedule, share, shifted in candidates:
        for lam in lambdas:
            _, losses, history, stages = _adapter_run(validated, lam, seed, schedule, share,
                                                      max_steps, hidden, shifted)
            last = stages[1] if schedule == CURRICULUM else stages[0]
            best = next(h for h in history if h["step"] == last)
            runs.append({"lambda": lam, "schedule": schedule, "real_share": share,
                         "kind_offset": shifted, "best_step": sum(stages),
                         "stage_steps": list(stages), "best": best,
                         "history": history, "steps_run": len(losses)})
    # Ties: the larger lambda (closer to the encoder), then mixed batches (one stage), then
    # no kind offsets (fewer parameters), then the kind-balanced mix.
    chosen = max(runs, key=lambda r: (round(r["best"]["score"], 9), r["lambda"],
                                      r["schedule"] == MIXED, not r["kind_offset"],
                                      r["real_share"] is None))
    # The refit sees every identity (5/4 of a fold's for 5 folds); keep the step counts chosen.
    modules, losses, _, _ = _adapter_run([(data, None)], chosen["lambda"], seed,
                                         chosen["schedule"], chosen["real_share"],
                                         tuple(chosen["stage_steps"]), hidden,
                                         chosen["kind_offset"])
    state = {k: v.detach().cpu().contiguous() for k, v in modules[0].state_dict().items()}
    baseline = runs[0]["history"][0]  # the identity map, step 0 of every mixed candidate
    return Fitted("adapter", state,
                  {"lambda": chosen["lambda"], "schedule": chosen["schedule"],
                   "real_share": chosen["real_share"], "kind_offset": chosen["kind_offset"],
                   "steps": chosen["best_step"],
                   "stage_steps": chosen["stage_steps"], "tau": TAU,
                   "hidden": hidden, "lr": ADAPTER_LR, "batch": ADAPTER_BATCH},
                  {**_fold_sizes(data, parts, probes), "n_gallery": len(gallery_labels),
                   "runs": [{k: r[k] for k in ("lambda", "schedule", "real_share",
                                               "kind_offset", "best_step", "stage_steps",
                                               "best", "steps_run")}
                            for r in runs],
                   "history": chosen["history"], "best": chosen["best"],
                   "baseline": {k: baseline[k] for k in SCORES}},
                  losses)


def fit_sketch_side(mode: str, identities: Sequence[str], labels: np.ndarray,
                    kinds: np.ndarray, vectors: np.ndarray, seed: int,
                    max_steps: int = ADAPTER_MAX_STEPS, hidden: int | None = None) -> Fitted:
    """Fit a ``procrustes`` or ``adapter`` recognizer on a training set's encoder vectors."""
    data = VectorSet.from_training(identities, labels, kinds, vectors)
    if mode == "procrustes":
        return fit_procrustes(data, seed)
    if mode == "adapter":
        with one_thread():
            return fit_adapter(data, seed, max_steps=max_steps,
                               hidden=hidden or ADAPTER_HIDDEN)
    raise ValueError(f"unknown sketch-side mode {mode!r}; known: {', '.join(SKETCH_SIDE_MODES)}")
