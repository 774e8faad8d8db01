"""Checking Python values and RecordBatches against an Arrow schema.

Memory channels and transport codecs share these checks, so a value that does
not fit is reported the same way everywhere: ``SchemaError`` naming the field,
the expected Arrow type and what came instead.
"""
from __future__ import annotations

import datetime
from typing import Any, Callable, Dict, Mapping, Sequence

import pyarrow as pa
import pyarrow.types as pat

from .exceptions import SchemaError

__all__ = ["RowChecker", "check_batch", "rows_to_batch"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _checker_for(t: pa.DataType) -> Callable[[Any], bool]:
    # Fast Python-level checks for the common types; anything else is
    # checked by letting Arrow convert the single value.
    if pat.is_boolean(t):
        return lambda v: isinstance(v, bool)
    if pat.is_integer(t):
        bits = t.bit_width
        low, high = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if pat.is_signed_integer(t)
                     else (0, (1 << bits) - 1))
        return lambda v: _is_int(v) and low <= v <= high
    if pat.is_floating(t):
        return _is_float
    if pat.is_string(t) or pat.is_large_string(t):
        return lambda v: isinstance(v, str)
    if pat.is_binary(t) or pat.is_large_binary(t):
        return lambda v: isinstance(v, (bytes, bytearray, memoryview))
    if pat.is_timestamp(t):
        return lambda v: isinstance(v, (datetime.datetime, int)) and not isinstance(v, bool)
    if pat.is_date(t):
        return lambda v: isinstance(v, (datetime.date, int)) and not isinstance(v, bool)

    def convertible(v: Any) -> bool:
        try:
            pa.scalar(v, type=t)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            return False
        return True
    return convertible


class RowChecker:
    """Checks that dict values fit ``schema``; raises ``SchemaError`` if not."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._fields = [(f.name, f.type, f.nullable, _checker_for(f.type)) for f in schema]
        self._names = frozenset(schema.names)

    def check(self, value: Any) -> None:
        """Raise ``SchemaError`` unless ``value`` is a dict that fits the schema."""
        if not isinstance(value, Mapping):
            raise SchemaError(
                f"value {value!r} is a {type(value).__name__}, expected a dict with fields "
                f"{', '.join(self.schema.names)}", expected=self.schema, got=value)
        for name, typ, nullable, ok in self._fields:
            v = value.get(name)
            if v is None:
                if not nullable:
                    raise SchemaError(f"field {name!r} is missing; expected {typ}",
                                      field=name, expected=typ, got=None)
                continue
            if not ok(v):
                raise SchemaError(
                    f"field {name!r} expected {typ}, got {type(v).__name__} {v!r}",
                    field=name, expected=typ, got=v)
        extra = [k for k in value if k not in self._names]
        if extra:
            raise SchemaError(f"field {extra[0]!r} is not in the schema "
                              f"({', '.join(self.schema.names)})",
                              field=extra[0], expected=self.schema, got=value)


def check_batch(schema: pa.Schema, batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` if it has ``schema``; raise ``SchemaError`` naming the field if not.

    A batch that differs only in declaring a non-nullable field nullable (as
    ``pa.record_batch`` does) is accepted when that column holds no nulls: it
    is re-labelled with ``schema`` over the same buffers, without a copy.
    """
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    got = {f.name: f for f in batch.schema}
    relabel = False
    for field in schema:
        have = got.get(field.name)
        if have is None:
            raise SchemaError(f"field {field.name!r} is missing from the batch; "
                              f"expected {field.type}", field=field.name,
                              expected=field.type, got=None)
        if have.type != field.type:
            raise SchemaError(f"field {field.name!r} expected {field.type}, "
                              f"got {have.type}", field=field.name,
                              expected=field.type, got=have.type)
        if have.nullable != field.nullable:
            if not field.nullable and batch.column(field.name).null_count:
                raise SchemaError(f"field {field.name!r} is not nullable but the batch "
                                  f"has nulls in it", field=field.name,
                                  expected=field.type, got=have.type)
            relabel = True
    if relabel and batch.schema.names == schema.names:
        return pa.RecordBatch.from_arrays(batch.columns, schema=schema)
    extra = [n for n in got if n not in schema.names]
    name = extra[0] if extra else None
    raise SchemaError(f"batch schema {batch.schema} does not match {schema}",
                      field=name, expected=schema, got=batch.schema)


def rows_to_batch(schema: pa.Schema, rows: Sequence[Dict[str, Any]]) -> pa.RecordBatch:
    """Checked dict rows -> one RecordBatch with exactly ``schema``."""
    try:
        return pa.RecordBatch.from_pylist(list(rows), schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise SchemaError(f"rows do not fit schema: {exc}", expected=schema) from exc
