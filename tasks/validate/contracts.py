"""The frames the data contracts run on, and running them.

GX checks what is in a frame, so whatever it cannot compute itself (a vector's norm, whether
a sketch's face is stored) is derived here first; the suites in ``data_contracts.suites``
only state what must hold. great-expectations is imported inside ``run_contracts`` only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from data_contracts.run import ContractReport, run_suites
from data_contracts.suites import (
    SuiteSpec,
    diversity_suite,
    embeddings_suite,
    faces_suite,
    identity_bar_suite,
    metrics_suite,
    sketches_suite,
    style_pairs_suite,
)
from data_contracts.thresholds import Thresholds
from schemas.records import FACES_SCHEMA, SKETCHES_SCHEMA
from schemas.validation import GroupDiversity, IdentityBar, StylePairs
from tasks import storage
from tasks.storage import FACES, Workspace
from tasks.validate.metrics import HEALTH_COLUMNS, healthy

FACE_COLUMNS = ["face_id", "identity_id", "kind", "style", "det_score", "n_faces"]


def faces_frame(workspace: Workspace) -> tuple[pd.DataFrame, dict[str, str]]:
    """The faces table without its crops (only whether each has one), and face -> identity."""
    rows = storage.read(workspace, FACES, columns=FACE_COLUMNS, schema=FACES_SCHEMA)
    missing = set(storage.read(workspace, FACES, columns=["face_id"],
                               where="aligned_png IS NULL", schema=FACES_SCHEMA)
                  .column("face_id").to_pylist())
    frame = rows.to_pandas()
    frame["aligned_png"] = [None if f in missing else b"" for f in frame["face_id"]]
    identity = dict(zip(frame["face_id"], frame["identity_id"], strict=True))
    return frame, identity


def embeddings_frame(workspace: Workspace, table: str, face_ids: Collection[str]
                     ) -> pd.DataFrame:
    """One row per stored vector with the derived columns ``embeddings_suite`` expects;
    ``face_ids``: the stored faces."""
    rows = storage.read(workspace, table, columns=["face_id", "encoder_version", "vector"])
    vectors = rows.column("vector").combine_chunks()
    dim = vectors.type.list_size if rows.num_rows else 0
    matrix = vectors.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim) if dim else (
        np.zeros((0, 1)))
    return pd.DataFrame({
        "face_id": rows.column("face_id").to_pylist(),
        "face_known": [f in face_ids for f in rows.column("face_id").to_pylist()],
        "encoder_version": rows.column("encoder_version").to_pylist(),
        "vector_dim": [dim] * rows.num_rows,
        "vector_norm": np.linalg.norm(matrix, axis=1) if rows.num_rows else [],
    })


def sketches_frame(sketches: pa.Table, face_identity: Mapping[str, str]) -> pd.DataFrame:
    frame = sketches.to_pandas()
    frame["face_known"] = [f in face_identity for f in frame["face_id"]]
    frame["identity_matches_face"] = [face_identity.get(f) == i for f, i in
                                      zip(frame["face_id"], frame["identity_id"], strict=True)]
    return frame


def metrics_frame(rows: Sequence[Mapping[str, Any]], verdicts: Mapping[str, list[str]],
                  version: str, artist_styles: Collection[str] = ()) -> pd.DataFrame:
    """One row per sketch in scope, with the derived columns ``metrics_suite`` expects.

    ``artist_styles``: styles whose identity the identity-bar suite judges against their
    artists; their sketches' identity columns are null here, so the absolute shares skip
    them.
    """
    records = []
    for row in rows:
        no_pixels = row.get("metrics_version") is None or row.get("pixel_std") is None
        similarity, margin = row.get("identity_similarity"), row.get("identity_margin")
        similarity = -1.0 if similarity is None else similarity
        margin = -2.0 if (margin is None and no_pixels) else margin
        if row["style"] in artist_styles:
            similarity = margin = None
        records.append({
            "sketch_id": row["sketch_id"],
            "metrics_version": row.get("metrics_version") or "missing",
            "has_metrics": row.get("metrics_version") == version,
            "identity_similarity": similarity,
            "identity_margin": margin,
            "healthy": healthy(verdicts[row["sketch_id"]]),
            "style_score": row.get("style_score"),
            **{c: row.get(c) for c in HEALTH_COLUMNS},
        })
    frame = pd.DataFrame.from_records(records, columns=[
        "sketch_id", "metrics_version", "has_metrics", "identity_similarity", "identity_margin",
        "healthy", "style_score", *HEALTH_COLUMNS])
    for column in ("identity_similarity", "identity_margin", "style_score", *HEALTH_COLUMNS):
        frame[column] = frame[column].astype("float64")
    return frame


def diversity_frame(groups: Iterable[GroupDiversity]) -> pd.DataFrame:
    kept = [g for g in groups if g.mean_pairwise_similarity is not None]
    return pd.DataFrame({
        "group": [f"{g.identity_id}|{g.style}" for g in kept],
        "samples": [g.samples for g in kept],
        "mean_pairwise_similarity": pd.Series([g.mean_pairwise_similarity for g in kept],
                                              dtype="float64"),
    })


def identity_bar_frame(bars: Mapping[str, IdentityBar]) -> pd.DataFrame:
    """One row per style judged against its artists, for ``identity_bar_suite``."""
    kept = {s: b for s, b in bars.items() if b.mode == "artists"}
    return pd.DataFrame({
        "style": list(kept),
        "faces": [b.faces for b in kept.values()],
        "headroom_identity": pd.Series([b.headroom_identity for b in kept.values()],
                                       dtype="float64"),
        "headroom_margin": pd.Series([b.headroom_margin for b in kept.values()],
                                     dtype="float64"),
    })


def style_pairs_frame(pairs: Mapping[str, StylePairs]) -> pd.DataFrame:
    """One row per style in scope for ``style_pairs_suite``: ``share_won`` is the share of
    its same-face comparisons won, 0 where nothing could be compared (not judged)."""
    return pd.DataFrame({
        "style": list(pairs),
        "mode": [p.mode for p in pairs.values()],
        "compared": [p.compared for p in pairs.values()],
        "won": [p.won for p in pairs.values()],
        "share_won": pd.Series([p.gate_share for p in pairs.values()], dtype="float64"),
    })


def checks(workspace: Workspace, thresholds: Thresholds, *, sketches: pa.Table,
           metrics: pd.DataFrame, diversity: pd.DataFrame, style_pairs: pd.DataFrame,
           identity_bar: pd.DataFrame, styles: Sequence[str],
           embedding_tables: Mapping[str, str]) -> list[tuple[SuiteSpec, pd.DataFrame]]:
    """Every suite of the validate stage with its frame: faces, embeddings, sketches,
    metrics, diversity, the identity bar of drawn styles and the style contract."""
    faces, face_identity = faces_frame(workspace)
    found: list[tuple[SuiteSpec, pd.DataFrame]] = [(faces_suite(thresholds), faces)]
    for table in sorted(embedding_tables.values()):
        dim = int(table.rsplit("_", 1)[1])
        found.append((embeddings_suite(table, dim, thresholds),
                      embeddings_frame(workspace, table, face_identity.keys())))
    found.append((sketches_suite(thresholds, SKETCHES_SCHEMA.names, sorted(styles)),
                  sketches_frame(sketches, face_identity)))
    found.append((metrics_suite(thresholds), metrics))
    found.append((diversity_suite(thresholds), diversity))
    found.append((identity_bar_suite(), identity_bar))
    found.append((style_pairs_suite(thresholds), style_pairs))
    return found


def run_contracts(workspace: Workspace,
                  suites: list[tuple[SuiteSpec, pd.DataFrame]]) -> ContractReport:
    # The file context lives in <workspace>/gx, Data Docs under gx/uncommitted/data_docs.
    return run_suites(workspace.root, suites)
