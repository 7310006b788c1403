"""The generator's training set, assembled in memory from the workspace.

An example is one (photo, style) pair: the photo's identity and image vectors, the style's text
vector, and the target sketch (a real sketch paired with the photo, or a renderer's drawing of
it). The conditions always come from the PHOTO, because at generation time only mugshots exist.
Identities outside the split's ``train`` part are dropped first and never read further, so a
held-out identity cannot reach the generator by any later path.

Everything is kept small and in numpy (CUHK: ~130 identities x 3 styles x 64x64 floats, a few
MB); ``batch_source`` turns it into the ``step -> batch`` function the training loop replays
exactly on resume.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from schemas.records import FACES_SCHEMA, embedding_schema
from schemas.styles import PairedSource, RenderSource, Style
from schemas.vectors import VectorTable
from tasks import storage
from tasks.embed import vector_matrix
from tasks.faces import read_crops
from tasks.generate.batches import DatasetError, PreviewRow, TrainingSet
from tasks.generate.inputs import resize_grey, spatial_inputs, start_inputs, to_grey, to_unit
from tasks.storage import FACES, Workspace
from tasks.styles.rendering import render

FACE_ROLES = ("identity", "image")


# --------------------------------------------------------------------------- reading


def read_vectors(workspace: Workspace, table: VectorTable) -> tuple[dict[str, int],
                                                                      dict[str, str], np.ndarray]:
    """(row of each face with a current vector, version of every stored face, vectors)."""
    rows = storage.read(workspace, table.table, columns=["face_id", "encoder_version", "vector"],
                        schema=embedding_schema(table.dim))
    ids = rows.column("face_id").to_pylist()
    versions = dict(zip(ids, rows.column("encoder_version").to_pylist(), strict=True))
    vectors = vector_matrix(rows.column("vector"), table.dim)
    current = {face: i for i, face in enumerate(ids) if versions[face] == table.version}
    return current, versions, vectors


def read_text_vectors(workspace: Workspace, table: VectorTable,
                      prompts: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Current text vectors of the named prompts; refuses stale or missing ones."""
    rows = storage.read(workspace, table.table, columns=["text_id", "text", "encoder_version",
                                                         "vector"])
    found: dict[str, np.ndarray] = {}
    if rows.num_rows:
        for key, text, version, vector in zip(*(rows.column(c).to_pylist() for c in
                                                ("text_id", "text", "encoder_version", "vector")),
                                              strict=True):
            if key in prompts and text == prompts[key] and version == table.version:
                found[key] = np.asarray(vector, np.float32)
    missing = sorted(set(prompts) - set(found))
    if missing:
        raise DatasetError(
            f"no current {table.table} vector for style(s) {', '.join(missing)}: embed the "
            "style prompts first (tasks.generate.fit.embed_style_prompts)"
        )
    return found


# --------------------------------------------------------------------------- targets


def target_image(style: Style, photo: np.ndarray, sketch: np.ndarray | None,
                 size: int) -> np.ndarray:
    """uint8 (size, size) grey target: the paired sketch, or the renderer's drawing.

    Renderers run at the stored 112 px crop size (their parameters are sized for it) and the
    result is resized afterwards, so a style looks the same at every generator resolution.
    """
    source = style.source
    if isinstance(source, PairedSource):
        if sketch is None:
            raise DatasetError(f"style {style.name} needs a paired sketch")
        grey = to_grey(sketch)
    else:
        assert isinstance(source, RenderSource)
        grey = render(source.renderer, photo, **source.params)
    return resize_grey(grey, size)


# --------------------------------------------------------------------------- assembly


@dataclass(frozen=True)
class _Candidate:
    style: str
    photo: str
    sketch: str | None
    identity_id: str


def _candidates(style: Style, faces: pa.Table, split: Mapping[str, str] | None,
                skipped: Counter[str]) -> list[_Candidate]:
    """The style's (photo, target) pairs among allowed identities; the rest counted by reason."""
    face_ids = faces.column("face_id").to_pylist()
    identity = dict(zip(face_ids, faces.column("identity_id").to_pylist(), strict=True))
    kind = dict(zip(face_ids, faces.column("kind").to_pylist(), strict=True))
    label = dict(zip(face_ids, faces.column("style").to_pylist(), strict=True))
    paired = dict(zip(face_ids, faces.column("paired_face_id").to_pylist(), strict=True))

    def allowed(identity_id: str) -> bool:
        if split is None:
            return True
        where = split.get(identity_id)
        if where == "train":
            return True
        skipped["held_out" if where == "test" else "not_in_split"] += 1
        return False

    found: list[_Candidate] = []
    source = style.source
    for face in face_ids:
        if isinstance(source, PairedSource):
            if kind[face] != "sketch" or label[face] != source.sketch_style:
                continue
            if not allowed(identity[face]):
                continue
            photo = paired[face]
            if photo is None:
                skipped["unpaired_sketch"] += 1
            elif photo not in kind or kind[photo] != "photo":
                skipped["missing_photo"] += 1
            elif identity[photo] != identity[face]:
                skipped["pair_identity_mismatch"] += 1
            else:
                found.append(_Candidate(style.name, photo, face, identity[face]))
        elif kind[face] == "photo" and allowed(identity[face]):
            found.append(_Candidate(style.name, face, None, identity[face]))
    return sorted(found, key=lambda c: (c.identity_id, c.photo, c.sketch or ""))


def assemble(
    workspace: Workspace,
    styles: Sequence[Style],
    vectors: Mapping[str, VectorTable],
    text_vectors: Mapping[str, np.ndarray],
    resolution: int,
    split: Mapping[str, str] | None = None,
    spatial_mode: str = "none",
    preview_identities: int = 4,
    start: str | None = None,
    identity_targets: Callable[[np.ndarray], np.ndarray] | None = None,
    artist_styles: Collection[str] = (),
    photo_vectors: bool = False,
) -> TrainingSet:
    """Build the training set for ``styles``; styles left with no example are listed empty.

    ``vectors`` gives the identity and image tables of the encoders the generator is built
    with; a photo lacking a current vector in either is skipped (counted per reason), never
    embedded here: embedding is the embed stage's job and its versions must stay coherent.
    ``split`` maps identity -> "train"/"test"; only "train" identities are used.
    ``start`` names a bridge's start image (tasks.generate.inputs.start_images), made once per
    example here rather than every step; ``identity_targets`` maps aligned BGR crops to the
    vectors the identity loss compares with (tasks.generate.objectives.identity_targets).
    For ``artist_styles`` that target is the vector of the artist's own sketch of the person
    (see ``artist_target_vectors``); with ``photo_vectors`` the examples also keep the
    mugshot's vector (``id_photo``), for the loss's terms that compare with the person
    (``LossSpec.needs_photo_vectors``).
    """
    missing_roles = [r for r in FACE_ROLES if r not in vectors]
    if missing_roles:
        raise DatasetError(f"no vector table given for {', '.join(missing_roles)}")
    faces = storage.read(workspace, FACES,
                         columns=["face_id", "identity_id", "kind", "style", "paired_face_id"],
                         schema=FACES_SCHEMA)
    tables = {role: read_vectors(workspace, vectors[role]) for role in FACE_ROLES}

    kept: list[_Candidate] = []
    skipped: dict[str, dict[str, int]] = {}
    for style in styles:
        reasons: Counter[str] = Counter()
        for cand in _candidates(style, faces, split, reasons):
            problem = _vector_problem(cand.photo, tables)
            if problem:
                reasons[problem] += 1
            else:
                kept.append(cand)
        skipped[style.name] = dict(sorted(reasons.items()))

    present = [s for s in styles if any(c.style == s.name for c in kept)]
    empty = tuple(s.name for s in styles if s not in present)
    names = tuple(s.name for s in present)
    by_name = {s.name: s for s in present}
    crops = read_crops(workspace, [c.photo for c in kept] +
                       [c.sketch for c in kept if c.sketch is not None])

    n = len(kept)
    sketch = np.empty((n, 1, resolution, resolution), np.float32)
    grey_targets: list[np.ndarray] = []
    for i, cand in enumerate(kept):
        grey = target_image(by_name[cand.style], crops[cand.photo],
                            crops.get(cand.sketch) if cand.sketch else None, resolution)
        grey_targets.append(grey)
        sketch[i, 0] = to_unit(grey)
    photo_ids = [c.photo for c in kept]
    face_vectors = {
        role: (tables[role][2][[tables[role][0][p] for p in photo_ids]] if n
               else np.zeros((0, vectors[role].dim), np.float32))
        for role in FACE_ROLES
    }
    spatial = None
    if spatial_mode != "none":
        spatial = spatial_inputs([crops[p] for p in photo_ids], spatial_mode, resolution)
    starts = None
    if start is not None:
        starts = start_inputs([crops[p] for p in photo_ids], start, resolution)
    id_target = id_weight = id_photo = id_artist = None
    artist_counts: dict[str, dict[str, int]] = {}
    if identity_targets is not None:
        unique = sorted(set(photo_ids))
        vectors = identity_targets(np.stack([crops[p] for p in unique])) if unique else None
        row = {p: i for i, p in enumerate(unique)}
        id_target = (vectors[[row[p] for p in photo_ids]] if vectors is not None
                     else np.zeros((0, 128), np.float32))
        id_weight = np.ones(n, np.float32)
        if photo_vectors:
            id_photo = id_target.copy()
        if artist_styles:
            id_artist = np.array([c.style in artist_styles for c in kept], np.float32)
        artist_counts = artist_target_vectors(kept, crops, set(artist_styles), identity_targets,
                                              id_target, id_weight)

    training = TrainingSet(
        styles=names,
        style_index=np.array([names.index(c.style) for c in kept], np.int64),
        face_id=tuple(photo_ids),
        identity_id=tuple(c.identity_id for c in kept),
        identity=face_vectors["identity"],
        image=face_vectors["image"],
        text=(np.stack([np.asarray(text_vectors[s], np.float32) for s in names]) if names
              else np.zeros((0, 0), np.float32)),
        sketch=sketch,
        spatial=spatial,
        start=starts,
        id_target=id_target,
        id_weight=id_weight,
        id_photo=id_photo,
        id_artist=id_artist,
        artist_targets=artist_counts,
        skipped=skipped,
        empty_styles=empty,
    )
    training.preview = _preview(training, crops, grey_targets, preview_identities)
    return training


# A crop this flat is no drawing of a face: an empty page, a failed scan.
_BLANK_STD = 2.0


def artist_target_vectors(kept: Sequence[_Candidate], crops: Mapping[str, np.ndarray],
                          artist_styles: set[str],
                          identity_targets: Callable[[np.ndarray], np.ndarray],
                          id_target: np.ndarray, id_weight: np.ndarray
                          ) -> dict[str, dict[str, int]]:
    """Point the identity target of ``artist_styles`` examples at the artist's sketch.

    Fills ``id_target`` / ``id_weight`` in place and returns per style how many examples
    got the artist's vector ("used") and how many could not ("unusable": a blank crop or a
    vector that is not finite). An unusable one keeps its example, with weight 0 for the
    identity term: the drawing still teaches the style; only the target is missing, and
    falling back to the photo would teach the very gap the artist target removes.
    """
    rows = [i for i, c in enumerate(kept) if c.style in artist_styles and c.sketch is not None]
    counts = {s: {"used": 0, "unusable": 0} for s in sorted(artist_styles)
              if any(c.style == s for c in kept)}
    if not rows:
        return counts
    sketches = np.stack([crops[kept[i].sketch] for i in rows])  # type: ignore[index]
    vectors = np.asarray(identity_targets(sketches), np.float32)
    for i, crop, vector in zip(rows, sketches, vectors, strict=True):
        usable = (float(crop.std()) >= _BLANK_STD and bool(np.isfinite(vector).all())
                  and float(np.linalg.norm(vector)) > 0)
        counts[kept[i].style]["used" if usable else "unusable"] += 1
        if usable:
            id_target[i] = vector
        else:
            id_weight[i] = 0.0
    return counts


def _vector_problem(photo: str, tables: Mapping[str, tuple[dict, dict, np.ndarray]]) -> str | None:
    for role in FACE_ROLES:
        current, versions, _ = tables[role]
        if photo not in current:
            return f"stale_{role}_vector" if photo in versions else f"missing_{role}_vector"
    return None


def _preview(training: TrainingSet, crops: Mapping[str, np.ndarray],
             grey_targets: Sequence[np.ndarray], count: int) -> list[PreviewRow]:
    """The first ``count`` identities (sorted), each with its first photo and style targets."""
    rows: list[PreviewRow] = []
    for identity in sorted(training.identities)[:count]:
        indices = [i for i, who in enumerate(training.identity_id) if who == identity]
        photo = training.face_id[indices[0]]
        targets: dict[str, np.ndarray] = {}
        for i in indices:
            if training.face_id[i] == photo:
                targets.setdefault(training.styles[training.style_index[i]], grey_targets[i])
        first = indices[0]
        rows.append(PreviewRow(
            identity_id=identity, face_id=photo, photo=crops[photo],
            identity=training.identity[first], image=training.image[first],
            spatial=None if training.spatial is None else training.spatial[first],
            targets=targets,
            start=None if training.start is None else training.start[first],
        ))
    return rows
