"""A Record class as an Arrow schema, and records as one ``RecordBatch``.

Each field maps to a column (a nested record to a struct):

=====================  ==========================================
field type             Arrow type
=====================  ==========================================
``bool``               ``bool``
``int``                ``int64``
``float``              ``float64``
``str``                ``string``
``bytes``              ``binary``
``datetime``           ``timestamp[us, tz=UTC]`` (naive = UTC)
``date``               ``date32``
``Decimal``            ``decimal128(max_digits, max_decimal_places)``
                       of its ``DecimalField``, else ``decimal128(38, 18)``
``List[X]``, sets      ``list<X>``
``Dict[str, X]``       ``map<string, X>``
a ``Record``           ``struct`` of its fields
``Optional[X]``        ``X``, nullable
=====================  ==========================================

A field is nullable unless it is required in a ``validation=True`` model
(the only kind where a required field can never hold ``None``). A type with
no Arrow counterpart (``Any``, a union) makes ``schema_for`` raise
``SchemaError`` naming the field.

``records_to_batch`` builds the columns straight from the records'
attributes, column by column. Faust does not coerce without
``isodates``/``decimals``/``validation``, so a date or decimal field may
still hold the text it was sent as: it is converted here. A value that no
conversion fits (text in an ``int`` field of a model without validation)
makes that row fail: ``split_batch`` names it, so the stream can send it to
the dead-letter channel and hand the agent the rest.
"""
from __future__ import annotations

import collections.abc as cabc
import datetime
import decimal
import operator
import typing
from typing import Any, Callable, List, Optional, Sequence, Tuple, Type

import pyarrow as pa

from ..exceptions import SchemaError
from .conversion import is_optional, is_record_type, strip_optional
from .fields import DecimalField, parse_datetime, to_decimal

__all__ = ["schema_for", "records_to_batch", "split_batch", "DEFAULT_DECIMAL"]

#: The Arrow type of a ``Decimal`` field that gives no digits or places.
DEFAULT_DECIMAL = pa.decimal128(38, 18)
UTC = datetime.timezone.utc

_PLAIN = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string(),
          bytes: pa.binary(), datetime.datetime: pa.timestamp("us", tz="UTC"),
          datetime.date: pa.date32()}
_LISTS = {list, set, frozenset, tuple, typing.List, typing.Set, typing.FrozenSet,
          typing.Tuple, cabc.Sequence, cabc.MutableSequence, cabc.Set, cabc.MutableSet}
_MAPS = {dict, typing.Dict, cabc.Mapping, cabc.MutableMapping}


def schema_for(model: Type[Any]) -> pa.Schema:
    """The Arrow schema of a Record class (cached on the class)."""
    cached = model.__dict__.get("_arrow")
    if cached is not None:
        return cached[0]
    fields = []
    options = model._options
    _making.append(model)
    try:
        for name, typ in options.fields.items():
            descr = options.descriptors[name]
            if descr.exclude:
                continue
            arrow_type = _arrow_type(typ, f"{model.__name__}.{name}", descr)
            nullable = not (options.validation and descr.required and not is_optional(typ))
            fields.append(pa.field(descr.output_name, arrow_type, nullable=nullable))
    finally:
        _making.pop()
    schema = pa.schema(fields)
    model._arrow = (schema, _column_builders(model))
    return schema


#: Record classes whose schema is being made (a class that holds itself has none).
_making: List[Any] = []


def _arrow_type(typ: Any, where: str, descr: Any = None) -> pa.DataType:
    typ = strip_optional(typ)
    if is_record_type(typ):
        if typ in _making:
            raise SchemaError(f"field {where}: {typ.__name__} holds itself, and an Arrow "
                              f"schema cannot nest without end", field=where, got=typ)
        return pa.struct(list(schema_for(typ)))
    if typ is decimal.Decimal:
        if isinstance(descr, DecimalField) and descr.max_digits:
            return pa.decimal128(descr.max_digits, descr.max_decimal_places or 0)
        return DEFAULT_DECIMAL
    if isinstance(typ, type) and typ in _PLAIN:
        return _PLAIN[typ]
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in _LISTS and args:
        if origin in (tuple, typing.Tuple) and not (len(args) == 2 and args[1] is Ellipsis):
            if len(set(args)) != 1:
                raise SchemaError(f"field {where}: a tuple of mixed types has no Arrow type",
                                  field=where, expected=None, got=typ)
        return pa.list_(_arrow_type(args[0], where))
    if origin in _MAPS and len(args) == 2:
        return pa.map_(_arrow_type(args[0], where), _arrow_type(args[1], where))
    raise SchemaError(f"field {where}: type {typ!r} has no Arrow type", field=where,
                      expected=None, got=typ)


# -- values into columns -------------------------------------------------------------

Convert = Callable[[Any], Any]


def _value_converter(typ: Any) -> Optional[Convert]:
    """How a field's Python value becomes what ``pa.array`` takes (None: as it is)."""
    typ = strip_optional(typ)
    if is_record_type(typ):
        builders = _column_builders(typ)

        def struct(v: Any) -> Any:
            if v is None:
                return None
            if isinstance(v, dict):
                v = typ.from_data(v, preferred_type=typ)
            d = v.__dict__
            return {out: (c(d.get(name)) if c is not None else d.get(name))
                    for name, out, c in builders}
        return struct
    if typ is datetime.datetime:
        return _to_datetime
    if typ is decimal.Decimal:
        return lambda v: None if v is None else to_decimal(v)
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in _LISTS and args:
        item = _value_converter(args[0])
        if item is None:
            return lambda v: None if v is None else list(v)
        return lambda v: None if v is None else [item(x) for x in v]
    if origin in _MAPS and len(args) == 2:
        key, val = _value_converter(args[0]), _value_converter(args[1])
        if key is None and val is None:
            return lambda v: None if v is None else list(v.items())
        return lambda v: None if v is None else [
            (key(k) if key else k, val(x) if val else x) for k, x in v.items()]
    return None


def _to_datetime(v: Any) -> Any:
    if v is None:
        return None
    if not isinstance(v, datetime.datetime):
        v = parse_datetime(v)
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v


def _column_builders(model: Type[Any]) -> List[Tuple[str, str, Optional[Convert]]]:
    options = model._options
    return [(name, d.output_name, _value_converter(options.fields[name]))
            for name, d in options.descriptors.items() if not d.exclude]


def records_to_batch(model: Type[Any], records: Sequence[Any]) -> pa.RecordBatch:
    """``records`` as one RecordBatch of ``model``'s schema.

    Raises ``SchemaError`` when a value fits no column (``split_batch`` finds
    which rows).
    """
    schema = schema_for(model)
    builders = model._arrow[1]
    try:
        rows = [r if isinstance(r, model) else _as_record(model, r) for r in records]
    except SchemaError:
        raise
    except Exception as exc:  # noqa: BLE001 - a dict that is no record of the model
        raise SchemaError(f"a value is no {model.__name__}: {type(exc).__name__}: {exc}",
                          expected=model.__name__) from exc
    columns = []
    fields = model._options.fields
    for (name, out, _), field in zip(builders, schema):
        try:
            columns.append(_column(_gather(rows, name), fields[name], field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError,
                ArithmeticError, AttributeError) as exc:
            raise SchemaError(f"field {out!r} of {model.__name__} does not fit "
                              f"{field.type}: {exc}", field=out, expected=field.type) from exc
        if not field.nullable and columns[-1].null_count:
            raise SchemaError(f"field {out!r} of {model.__name__} is required but holds "
                              f"nulls", field=out, expected=field.type)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _gather(records: Sequence[Any], name: str, nulls: bool = False) -> List[Any]:
    """Each record's value of field ``name`` (``None`` for a missing record, with ``nulls``).

    Read as attributes, as ``record.field`` reads it: a record keeps its
    values in its instance slots and makes a ``__dict__`` object only when
    one is asked for (``sabot.models.record``).
    """
    getter = operator.attrgetter(name)
    try:
        if nulls:
            return [None if r is None else getter(r) for r in records]
        return list(map(getter, records))
    except AttributeError:  # a required field never given a value: null, as before
        return [None if r is None else r.__dict__.get(name) for r in records]


def _has_records(typ: Any) -> bool:
    typ = strip_optional(typ)
    if is_record_type(typ):
        return True
    args = typing.get_args(typ)
    return typing.get_origin(typ) in _LISTS and bool(args) and _has_records(args[0])


def _column(values: List[Any], typ: Any, arrow_type: pa.DataType) -> pa.Array:
    """One column from the values of one field, nested records column by column
    (their fields gathered into child arrays, no dict per record)."""
    if not _has_records(typ):
        convert = _value_converter(typ)
        return pa.array(values if convert is None else [convert(v) for v in values],
                        type=arrow_type)
    typ = strip_optional(typ)
    missing = [v is None for v in values]  # not `None in values`: that calls __eq__ per record
    mask = pa.array(missing) if True in missing else None
    if is_record_type(typ):
        records = [v if v is None or isinstance(v, typ) else _as_record(typ, v)
                   for v in values]
        options = typ._options
        children = [
            _column(_gather(records, name, mask is not None), options.fields[name], field.type)
            for (name, _, _), field in zip(_column_builders(typ), arrow_type)]
        return pa.StructArray.from_arrays(children, fields=list(arrow_type), mask=mask)
    # A list of records: the items as one column, cut by offsets.
    offsets = [0]
    items: List[Any] = []
    for v in values:
        if v is not None:
            items.extend(v)
        offsets.append(len(items))
    child = _column(items, typing.get_args(typ)[0], arrow_type.value_type)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), child, type=arrow_type,
                                    mask=mask)


def _as_record(model: Type[Any], value: Any) -> Any:
    if isinstance(value, dict):
        return model.from_data(value, preferred_type=model)
    if value is None:
        raise SchemaError(f"a null value (tombstone) is no {model.__name__} row",
                          expected=model.__name__, got=None)
    if not hasattr(value, "__dict__"):
        raise SchemaError(f"{type(value).__name__} value is no {model.__name__} row",
                          expected=model.__name__, got=value)
    return value


def split_batch(model: Type[Any], records: Sequence[Any]) -> Tuple[pa.RecordBatch,
                                                                   List[Tuple[int, str]]]:
    """``(batch of the rows that fit, [(index, reason) of those that do not])``.

    A class with no Arrow schema raises ``SchemaError`` (no row is to blame).
    """
    schema_for(model)
    try:
        return records_to_batch(model, records), []
    except SchemaError:
        pass
    good: List[Any] = []
    bad: List[Tuple[int, str]] = []
    for i, record in enumerate(records):
        try:
            records_to_batch(model, [record])
        except Exception as exc:  # noqa: BLE001 - whatever it is, this row does not fit
            bad.append((i, str(exc)))
            continue
        good.append(record)
    return records_to_batch(model, good), bad


def empty_batch(model: Type[Any]) -> pa.RecordBatch:
    """A batch of no rows with ``model``'s schema."""
    schema = schema_for(model)
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema],
                                      schema=schema)

