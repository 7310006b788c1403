"""The vector table of one role and encoder: its name, and which vectors in it count.

Every stage that reads stored vectors (training the generator, planning and drawing shards,
validating sketches) asks the same question: which table holds this role's vectors from this
encoder, and which encoder version is current there. One frozen model answers it for all of
them, and it is a pydantic model because it travels: a generation run's context carries one per
role to every shard task, on whatever Dask worker that runs.

The naming is pure string work and lives here, beside the model, so that the embed stage (which
creates the tables) and every reader agree on it without the schemas importing a stage.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas.encoders import EncoderSpec

_DIM = re.compile(r"_(\d+)$")


def encoder_slug(name: str) -> str:
    """An encoder's registry name as a table-name part (lower case, underscores)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def table_prefix(role: str, encoder_name: str) -> str:
    """What every table of ``role`` from ``encoder_name`` starts with, whatever its size."""
    return f"emb_{role}_{encoder_slug(encoder_name)}_"


def table_name(role: str, encoder_name: str, dim: int) -> str:
    """``emb_<role>_<encoder>_<dim>``: the size is in the name, so a re-sized encoder (other
    weights, other architecture) gets its own table instead of clashing with the old one."""
    return f"{table_prefix(role, encoder_name)}{dim}"


def table_dim(table: str) -> int | None:
    """The vector size an embedding table's name ends with (``emb_<role>_<name>_<dim>``)."""
    match = _DIM.search(table)
    return int(match.group(1)) if match else None


class VectorTable(BaseModel):
    """Where one role's vectors are stored and which encoder version counts as current.

    ``spec`` says how to load that encoder again, for the stages that encode more with it
    (validation encodes sketches into ``sketch_table``); it is None where vectors are only
    read, such as a generator's conditions, which come from its manifest and not a spec.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str
    table: str
    version: str
    dim: int
    spec: EncoderSpec | None = None

    @classmethod
    def of(cls, role: str, encoder: Any, spec: EncoderSpec | None = None) -> VectorTable:
        """The table a loaded encoder (anything with ``name``, ``dim`` and ``version``)
        writes for ``role``; typed loosely so the schemas need not import the encoders."""
        return cls(role=role, table=table_name(role, encoder.name, encoder.dim),
                   version=encoder.version, dim=encoder.dim, spec=spec)

    @property
    def sketch_table(self) -> str:
        """Where validation keeps sketch vectors from the same encoder (``sketch_emb_...``)."""
        return f"sketch_{self.table}"
