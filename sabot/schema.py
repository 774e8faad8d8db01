"""Checking Python values and RecordBatches against an Arrow schema.

Memory channels and transport codecs share these checks, so a value that does
not fit is reported the same way everywhere: ``SchemaError`` naming the field,
the expected Arrow type and what came instead.
"""
from __future__ import annotations

import datetime
import decimal
from typing import Any, Callable, Dict, List, Mapping, Sequence

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
        return _is_int
    if pat.is_floating(t):
        return _is_float
    if pat.is_string(t) or pat.is_large_string(t):
        return lambda v: isinstance(v, str)
    if pat.is_binary(t) or pat.is_large_binary(t):
        return lambda v: isinstance(v, (bytes, bytearray, memoryview))
    if pat.is_timestamp(t) or pat.is_date(t):
        return lambda v: isinstance(v, (datetime.date, int))
    if pat.is_decimal(t):
        return lambda v: isinstance(v, (decimal.Decimal, int))

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


def check_batch(schema: pa.Schema, batch: pa.RecordBatch) -> None:
    """Raise ``SchemaError`` when ``batch`` does not have ``schema``."""
    if batch.schema.equals(schema, check_metadata=False):
        return
    got = {f.name: f.type for f in batch.schema}
    for field in schema:
        if field.name not in got:
            raise SchemaError(f"field {field.name!r} is missing from the batch; "
                              f"expected {field.type}", field=field.name,
                              expected=field.type, got=None)
        if got[field.name] != field.type:
            raise SchemaError(f"field {field.name!r} expected {field.type}, "
                              f"got {got[field.name]}", field=field.name,
                              expected=field.type, got=got[field.name])
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
