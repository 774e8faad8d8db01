"""A table's values as the columns a stream-table join adds.

Values that are dicts (or dataclasses) become one column per field; any
other value (a number, a string) becomes one column named after the table.
The Arrow type is ``value_schema=`` when the join was given one (a
``pa.Schema`` for dict values, a ``pa.DataType`` for scalars), so every
output batch has the same columns. Without it the type is inferred from the
values found and kept from batch to batch: fields seen once stay (null where
a value lacks them) and numbers widen (int to float) rather than flip.
A value that cannot take that type is reported with the reason, and the rows
that found it go to the dead-letter channel.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

import pyarrow as pa

from .frames import ARROW_ERRORS, Reject, plain_value

__all__ = ["ValueColumns"]


def _unify(a: pa.DataType, b: pa.DataType) -> Optional[pa.DataType]:
    # The type that holds values of both a and b, or None.
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    try:
        if pa.types.is_struct(a) and pa.types.is_struct(b):
            merged = pa.unify_schemas([pa.schema(list(a)), pa.schema(list(b))],
                                      promote_options="permissive")
            return pa.struct(list(merged))
        if pa.types.is_struct(a) or pa.types.is_struct(b):
            return None
        merged = pa.unify_schemas([pa.schema([("v", a)]), pa.schema([("v", b)])],
                                  promote_options="permissive")
        return merged.field("v").type
    except ARROW_ERRORS:
        return None


class ValueColumns:
    """Converts looked-up values to an Arrow array and that array to named columns."""

    __slots__ = ("table_name", "prefix", "fixed", "value_type")

    def __init__(self, table_name: str, prefix: str = "",
                 value_schema: Union[None, pa.Schema, pa.DataType] = None) -> None:
        self.table_name = table_name
        self.prefix = prefix
        #: True when the type came from ``value_schema=`` and never changes.
        self.fixed = value_schema is not None
        #: The Arrow type of the values (``None`` until one was found).
        self.value_type: Optional[pa.DataType] = (
            pa.struct(list(value_schema)) if isinstance(value_schema, pa.Schema)
            else value_schema)

    def convert(self, values: List[Any]) -> Tuple[pa.Array, List[Reject]]:
        """``values`` (``None`` for missing) as one array; the ones that do not fit.

        A value that does not fit is null in the array and listed with its
        index in ``values`` and the reason.
        """
        plain = [plain_value(v) for v in values]
        known = self.value_type
        # Inferred, then cast: pa.array(values, type=t) would truncate 2.5
        # to 2 and drop unknown fields without a word; a safe cast refuses.
        try:
            inferred: Optional[pa.Array] = pa.array(plain)
        except ARROW_ERRORS:
            inferred = None
        if inferred is not None:
            if known is None:
                if not pa.types.is_null(inferred.type):
                    self.value_type = inferred.type
                return inferred, []
            target = known if self.fixed else _unify(known, inferred.type)
            if target is not None:
                try:
                    out = inferred.cast(target)
                except ARROW_ERRORS:
                    pass
                else:
                    self.value_type = target
                    return out, []
        if known is None:
            for value in plain:
                if value is None:
                    continue
                try:
                    known = pa.array([value]).type
                    break
                except ARROW_ERRORS:
                    continue
        if known is None:  # not one value converts on its own
            return pa.nulls(len(plain)), [
                (i, f"table {self.table_name!r} value does not convert to Arrow")
                for i, v in enumerate(plain) if v is not None]
        self.value_type = known
        return self._one_by_one(plain, known)

    def _one_by_one(self, plain: List[Any], target: pa.DataType) -> Tuple[pa.Array, List[Reject]]:
        bad: List[Reject] = []
        parts: List[pa.Array] = []
        for i, value in enumerate(plain):
            if value is None:
                parts.append(pa.nulls(1, target))
                continue
            try:
                parts.append(pa.array([value]).cast(target))
            except ARROW_ERRORS as exc:
                bad.append((i, f"table {self.table_name!r} value does not convert to "
                               f"{target}: {exc}"))
                parts.append(pa.nulls(1, target))
        if not parts:
            return pa.nulls(0, target), bad
        return pa.concat_arrays(parts), bad

    def columns(self, taken: pa.Array) -> List[Tuple[str, pa.Array]]:
        """Named output columns of ``taken`` (values aligned with the output rows).

        Dict values give a column per field, other values one column named
        after the table. Before any value was found (and without
        ``value_schema=``) there is nothing to add.
        """
        t = self.value_type
        if t is None:
            return []
        if taken.type != t:
            taken = taken.cast(t)
        if pa.types.is_struct(t):
            if isinstance(taken, pa.ChunkedArray):
                taken = taken.combine_chunks()
            children = taken.flatten()
            return [(self.prefix + t.field(i).name, child) for i, child in enumerate(children)]
        return [(self.prefix + self.table_name, taken)]
