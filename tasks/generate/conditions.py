"""Which stored vectors condition a saved generator, and fetching them for a shard.

A generator is only meaningful with vectors from the encoders it was trained on. Its manifest
records each role's vector size and encoder version; the workspace keeps one table per encoder
(``emb_<role>_<encoder>_<dim>``) whose rows carry the encoder version. Matching the two here,
before any shard is scheduled, turns a wrong encoder into one clear error instead of thousands
of sketches drawn from meaningless conditions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from schemas.generation import CONDITION_ROLES
from schemas.vectors import VectorTable, table_dim
from tasks import storage
from tasks.embed import TEXT_SCHEMA_KEY, current_vectors, stored_versions, vector_matrix
from tasks.generate.saved import check_encoders
from tasks.storage import Workspace

_HINTS = {
    "identity": "run `clip4sketch embed` with the generator's identity encoder",
    "image": "run `clip4sketch embed` with the generator's image encoder",
    "text": "embed the style prompts with the generator's text encoder",
}


class ConditionError(LookupError):
    """The workspace lacks the vectors a generator needs (not a retryable failure)."""


def condition_sources(
    workspace: Workspace,
    manifest: Mapping[str, Any],
    roles: Iterable[str] = CONDITION_ROLES,
) -> dict[str, VectorTable]:
    """For each role, the table holding vectors from the generator's encoder.

    Raises GeneratorMismatchError (worded by the generator core) when the workspace holds
    vectors of that role only from other encoders, and ConditionError when it holds none.
    """
    dims = manifest.get("condition_dims", {})
    versions = manifest.get("encoder_versions", {})
    tables = storage.table_names(workspace)
    sources: dict[str, VectorTable] = {}
    for role in roles:
        candidates = sorted(t for t in tables if t.startswith(f"emb_{role}_"))
        if not candidates:
            raise ConditionError(
                f"the workspace {workspace.root} holds no {role} vectors: {_HINTS[role]}"
            )
        want_dim, want_version = int(dims.get(role, -1)), versions.get(role)
        found = {t: stored_versions(workspace, t) for t in candidates}
        matches = [t for t in candidates if table_dim(t) == want_dim and found[t][want_version]]
        if matches:
            sources[role] = VectorTable(role=role, table=matches[0], dim=want_dim,
                                        version=want_version)
            continue
        # Compare with the workspace's likeliest table, so the message names both encoders.
        best = max(candidates, key=lambda t: (table_dim(t) == want_dim, found[t].total()))
        stored = found[best].most_common(1)[0][0] if found[best] else None
        check_encoders(manifest, {role: (table_dim(best) or 0, stored)})
        raise ConditionError(
            f"{role}: no vectors from encoder {want_version} ({want_dim}-d) in "
            f"{', '.join(candidates)}: {_HINTS[role]}"
        )
    return sources


def face_vectors(workspace: Workspace, source: VectorTable,
                 face_ids: list[str]) -> np.ndarray:
    """(len(face_ids), dim) vectors in the given order; every face must have one."""
    found = current_vectors(workspace, source, face_ids)
    missing = sorted(set(face_ids) - set(found))
    if missing:
        raise ConditionError(
            f"{len(missing)} faces lost their {source.table} vectors since planning "
            f"(first: {missing[0]}); plan again"
        )
    if not face_ids:
        return np.zeros((0, source.dim), np.float32)
    return np.stack([found[f] for f in face_ids])


def text_vectors(workspace: Workspace, source: VectorTable,
                 names: list[str]) -> dict[str, tuple[np.ndarray, str]]:
    """``{text_id: (vector, text)}`` for the named texts from the generator's text encoder."""

    unique = sorted(set(names))
    if not unique:
        return {}
    rows = storage.read(
        workspace, source.table, columns=[TEXT_SCHEMA_KEY, "text", "vector"],
        where=f"{storage.where_in(TEXT_SCHEMA_KEY, unique)} "
              f"AND encoder_version = {storage.quote(source.version)}",
    )
    vectors = vector_matrix(rows.column("vector"), source.dim)
    found = {
        key: (vectors[i], text)
        for i, (key, text) in enumerate(zip(rows.column(TEXT_SCHEMA_KEY).to_pylist(),
                                            rows.column("text").to_pylist(), strict=True))
    }
    missing = [n for n in unique if n not in found]
    if missing:
        raise ConditionError(
            f"no {source.table} vector from {source.version} for style(s) "
            f"{', '.join(missing)}: {_HINTS['text']}"
        )
    return found
