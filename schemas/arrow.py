"""Arrow schemas derived from the pydantic record models.

Deriving the storage schema from the record model keeps one definition of every
column: a field added to a record appears in Parquet and LanceDB without a second
edit, and a mismatch between what a stage writes and what the store holds is caught
by pyarrow at write time instead of by a reader weeks later.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from dataclasses import dataclass

import pyarrow as pa
from pydantic import BaseModel


@dataclass(frozen=True)
class Vector:
    """Marks a ``list[float]`` field as a fixed-size float32 vector (LanceDB's vector type)."""

    dim: int


_SCALARS: dict[type, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    bytes: pa.binary(),
    dt.datetime: pa.timestamp("us", tz="UTC"),
}


def _arrow_type(annotation: typing.Any, metadata: list[typing.Any]) -> tuple[pa.DataType, bool]:
    nullable = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return pa.string(), nullable
    if origin is list:
        (item,) = typing.get_args(annotation)
        vector = next((m for m in metadata if isinstance(m, Vector)), None)
        item_type, _ = _arrow_type(item, [])
        if vector is not None:
            return pa.list_(pa.float32(), vector.dim), nullable
        return pa.list_(item_type), nullable
    if annotation in _SCALARS:
        return _SCALARS[annotation], nullable
    raise TypeError(f"no Arrow type for annotation {annotation!r}")


def arrow_schema(model: type[BaseModel], **vector_dims: int) -> pa.Schema:
    """Schema for ``model``; ``vector_dims`` sizes vector fields whose size is per-table."""
    fields = []
    for name, info in model.model_fields.items():
        metadata = list(info.metadata)
        if name in vector_dims:
            metadata.append(Vector(vector_dims[name]))
        arrow_type, nullable = _arrow_type(info.annotation, metadata)
        fields.append(pa.field(name, arrow_type, nullable=nullable))
    return pa.schema(fields)


def to_arrow(records: typing.Sequence[BaseModel], schema: pa.Schema) -> pa.Table:
    rows = [record.model_dump() for record in records]
    return pa.Table.from_pylist(rows, schema=schema)
