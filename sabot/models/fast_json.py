"""A whole fetch of JSON records parsed at once by Arrow's JSON reader.

Parsing each message with ``json.loads`` costs more than building its
record. ``FetchDecoder.decode`` joins the fetch's messages one per line and
lets ``pyarrow.json`` parse them all against a schema made from the record
class, then builds each record from its row. It vouches for a fetch only
when the result is certain to equal the per-message path's
(``TypedCodec.decode``, Faust's rules); otherwise it returns ``None`` and the
caller decodes message by message, which also names the failures:

* each message is one JSON object on one line (starts with ``{``, ends with
  ``}``, holds no line break) and the reader returns exactly one row per
  message, so rows and messages cannot shift;
* every field has a type the reader keeps exactly: numbers, booleans, text,
  nested records, lists of them. Dates, decimals and bytes are read as the
  text they were sent as (Faust keeps it as text unless the class asks for
  ``isodates``/``decimals``, and then it converts that text, as here);
  a class with a ``Dict`` or an untyped field is never parsed this way;
* a value of another JSON type, a field the class does not have (besides
  ``__faust``), a key given twice, bytes that are not UTF-8: the fetch is
  refused;
* a required field that is null might have been missing (a dead letter):
  the fetch is not vouched for;
* the class and every nested one are concrete and no class in the process
  lets a value's ``__faust`` name pick it (``allow_blessed_key``,
  ``polymorphic_fields``), so the namespace cannot change the class.

Records are built column by column, not row by row: each field's column
is converted at once with the class's own conversion of that field (a
column of decimal or ISO date texts in one pass), a null becomes the
field's default, nested records are built from their child columns first,
and then each record is made from its fields' final values by a function
generated for the class (no conversion or check per field in it, only
``__post_init__`` and ``validation=True``'s checks).

A row whose value does not convert or whose record fails to build (a
validation error) is decoded again by the per-message path, which raises
the error with its reason; a nested record that does not build sends the
whole fetch that way.
"""
from __future__ import annotations

import collections.abc as cabc
import datetime
import decimal
import itertools
import operator
import typing
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple, Type

import pyarrow as pa
import pyarrow.json as pajson

from .._fastpath import build_records
from .conversion import Converter, is_optional, is_record_type, passes_typed, strip_optional
from .fields import DECIMAL_MAXLEN, to_datetime, to_decimal
from .namespace import BLESSED_KEY, blessed

__all__ = ["FetchDecoder", "read_schema"]

_SCALARS = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string(),
            # Kept as the text they came as: Faust converts them (or not) itself.
            bytes: pa.string(), decimal.Decimal: pa.string(), datetime.datetime: pa.string(),
            datetime.date: pa.string()}
_LISTS = {list, set, frozenset, typing.List, typing.Set, typing.FrozenSet, cabc.Sequence,
          cabc.MutableSequence, cabc.Set, cabc.MutableSet}
_NAMESPACE = pa.struct([("ns", pa.string())])

#: The first and the last byte of a message.
_first, _last = operator.itemgetter(0), operator.itemgetter(-1)
_OPEN, _CLOSE = {ord("{")}, {ord("}")}
_LF, _CR = ord("\n"), ord("\r")

#: One block for the whole fetch: rows cannot be split between blocks.
_READ_OPTIONS = dict(use_threads=False)


class _Unsupported(Exception):
    """The class has a field the reader would not keep exactly."""


def read_schema(model: Type[Any]) -> Optional[pa.Schema]:
    """The schema the reader parses ``model``'s JSON with (``None``: not this way).

    A class that holds itself (a tree) has no fixed schema: not this way.
    """
    try:
        return pa.schema(_struct_fields(model))
    except (_Unsupported, RecursionError):
        return None


def _struct_fields(model: Type[Any]) -> List[pa.Field]:
    if model.__is_abstract__ or model._options.__dict__.get("_from_typed") is None:
        raise _Unsupported(model)
    fields = []
    for name, typ in model._options.fields.items():
        descr = model._options.descriptors[name]
        fields.append(pa.field(descr.input_name, _read_type(typ)))
    fields.append(pa.field(BLESSED_KEY, _NAMESPACE))
    return fields


def _read_type(typ: Any) -> pa.DataType:
    if is_optional(typ):
        typ = strip_optional(typ)
    if is_record_type(typ):
        return pa.struct(_struct_fields(typ))
    if isinstance(typ, type) and typ in _SCALARS:
        return _SCALARS[typ]
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in _LISTS and len(args) == 1:
        return pa.list_(_read_type(args[0]))
    if origin in (tuple, typing.Tuple) and len(args) == 2 and args[1] is Ellipsis:
        return pa.list_(_read_type(args[0]))
    raise _Unsupported(typ)


class _MaybeMissing(Exception):
    """A required field is null where its record is present: it may have been
    missing, which the reader cannot tell (the fetch is not vouched for)."""


def _has_records(typ: Any) -> bool:
    typ = strip_optional(typ)
    if is_record_type(typ):
        return True
    args = typing.get_args(typ)
    return bool(args) and typing.get_origin(typ) in _LISTS | {tuple, typing.Tuple} \
        and _has_records(args[0])


Column = Callable[[List[Any]], List[Any]]
#: A parsed column (an Arrow array) as Python values.
Reader = Callable[[Any], List[Any]]


def _decimal_column(texts: List[Any]) -> List[Any]:
    # to_decimal for every text of a column, one check of the lengths.
    if texts and max(map(len, texts)) > DECIMAL_MAXLEN:
        raise ValueError(f"a number of more than {DECIMAL_MAXLEN} characters is too long")
    return list(map(decimal.Decimal, texts))


def _datetime_column(texts: List[Any]) -> List[Any]:
    # to_datetime (parse_datetime) for every text of a column.
    return list(map(datetime.datetime.fromisoformat, texts))


#: A field's conversion of one text, and the same for a whole column of texts.
_TEXT_COLUMNS: Dict[Converter, Column] = {to_decimal: _decimal_column,
                                          to_datetime: _datetime_column}


class _Field(NamedTuple):
    """How a parsed column becomes a field's values (see ``_fields``)."""

    #: The column's values as Python values (records built).
    read: Reader
    #: The field's conversion of one value (None: the column's values are final).
    convert: Optional[Converter]
    #: The same conversion for a whole column of texts, where there is one.
    column: Optional[Column]
    #: What a null becomes (the default of an optional field).
    default: Any
    #: Whether the field must be there (a null in it may be a missing field).
    required: bool


def _fields(model: Type[Any]) -> List[_Field]:
    """``model``'s fields in order, as the reader gives them (cached per class).

    The conversions are the class's own (``Record._from_dict``'s), except
    that one passing values of its type unchanged (records built here,
    lists of them, floats) is not applied to values built or parsed as
    that type already.
    """
    options = model._options
    cached = options.__dict__.get("_fetch_fields")
    if cached is not None:
        return cached
    converters = options.__dict__.get("_to_python", {})
    fields = []
    for name, typ in options.fields.items():
        convert = converters.get(name)
        if convert is not None and passes_typed(convert):
            convert = None
        column = _TEXT_COLUMNS.get(convert) if _read_type(typ) == pa.string() else None
        fields.append(_Field(_reader(typ), convert, column, options.defaults.get(name),
                             name not in options.optionalset))
    options.__dict__["_fetch_fields"] = fields
    return fields


def _final(arr: Any, field: _Field) -> List[Any]:
    """A parsed column as the field's values (``Record._from_dict`` for each
    value, a column at a time)."""
    return _converted(field.read(arr), arr.null_count, field)


def _converted(values: List[Any], nulls: int, field: _Field) -> List[Any]:
    """A column's values converted as the field converts them, a null as its default."""
    convert, column, default = field.convert, field.column, field.default
    if not nulls:
        if convert is None:
            return values
        return column(values) if column is not None else list(map(convert, values))
    if convert is None:
        return values if default is None else [default if v is None else v for v in values]
    if column is not None:
        done = iter(column([v for v in values if v is not None]))
        return [default if v is None else next(done) for v in values]
    return [default if v is None else convert(v) for v in values]


def _final_or_failed(arr: Any, field: _Field, failed: Set[int]) -> List[Any]:
    """``_final``, with the rows whose value does not convert added to ``failed``
    (a nested record that does not build raises)."""
    values = field.read(arr)
    try:
        return _converted(values, arr.null_count, field)
    except Exception:  # noqa: BLE001 - some value does not convert: find which
        pass
    out = []
    for i, v in enumerate(values):
        try:
            out.append(_converted([v], v is None, field)[0])
        except Exception:  # noqa: BLE001 - the caller redoes this message alone
            out.append(None)
            failed.add(i)
    return out


def _chunk(column: Any) -> Any:
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def _plain(arr: Any) -> List[Any]:
    return arr.to_pylist()


def _reader(typ: Any) -> Reader:
    """How a parsed column of ``typ`` becomes Python values: nested records
    are built column by column (no dict per record), the rest as Arrow gives
    them. Made once per field."""
    if not _has_records(typ):
        return _plain
    inner = strip_optional(typ)
    if is_record_type(inner):
        return _record_reader(inner)
    return _list_reader(_reader(typing.get_args(inner)[0]))


def _list_reader(item: Reader) -> Reader:
    def read(arr: Any) -> List[Any]:
        # The items of every list at once, then cut.
        if not arr.null_count:
            offsets = arr.offsets.to_pylist()
            first, end = offsets[0], offsets[-1]
            values = arr.values  # as stored (list_flatten would cost a compute call)
            if first or end != len(values):  # a slice of the lists
                values = values.slice(first, end - first)
                offsets = [o - first for o in offsets]
            items = item(values)
            return list(map(operator.getitem, itertools.repeat(items),
                            map(slice, offsets, offsets[1:])))
        items = item(arr.flatten())
        out: List[Any] = []
        pos = 0
        for n in arr.value_lengths().to_pylist():
            if n is None:
                out.append(None)
            else:
                out.append(items[pos:pos + n])
                pos += n
        return out
    return read


def _record_reader(model: Type[Any]) -> Reader:
    fields = _fields(model)
    build = model._options.__dict__["_from_typed"]
    names = model._options.__dict__["_typed_names"]

    def read(arr: Any) -> List[Any]:
        children = arr.flatten()  # the parent's validity merged into each child
        # A child is null at least where its record is, so it has more nulls
        # exactly when it is null somewhere its record is present.
        present = arr.null_count
        for child, field in zip(children, fields):
            if field.required and child.null_count > present:
                raise _MaybeMissing(field)
        columns = [_final(child, field) for child, field in zip(children, fields)]
        if not arr.null_count:
            return build_records(build, model, names, columns)
        valid = arr.is_valid().to_pylist()
        return [build(*row) if ok else None for ok, row in zip(valid, zip(*columns))]
    return read


class FetchDecoder:
    """Decodes many JSON messages of one Record class at once (see the module)."""

    def __init__(self, model: Type[Any]) -> None:
        self.model = model
        #: The record from the final values of its fields in order (generated per class).
        self.build: Callable[..., Any] = model._options.__dict__.get("_from_typed")
        self._typed_names = model._options.__dict__.get("_typed_names")
        # A class without fields has no columns to count its rows by: not this way.
        self.schema = read_schema(model) if self.build is not None and \
            model._options.fields else None
        self._names: List[str] = []
        if self.schema is not None:
            self._names = [f.name for f in self.schema][:-1]  # all but __faust
            self._fields = _fields(model)
            self._options = pajson.ParseOptions(explicit_schema=self.schema,
                                                unexpected_field_behavior="error")

    def decode(self, payloads: Sequence[Any]) -> Optional[Tuple[List[Any], List[int]]]:
        """``(one record per payload, indices of the rows whose record did not
        build)``, or ``None`` when the fetch must be decoded message by message."""
        if self.schema is None or blessed or not payloads:
            return None
        kinds = set(map(type, payloads))
        if len(kinds) != 1 or bytes not in kinds:
            return None
        try:
            if set(map(_first, payloads)) != _OPEN or set(map(_last, payloads)) != _CLOSE:
                return None
        except IndexError:  # an empty message
            return None
        # One JSON object per line: no line break inside a message (an int
        # looked for in bytes is one memchr, no scan of a pattern).
        if any(map(operator.contains, payloads, itertools.repeat(_LF))) \
                or any(map(operator.contains, payloads, itertools.repeat(_CR))):
            return None
        data = b"\n".join(payloads)
        try:
            # Arrow does not check UTF-8 in the text it keeps (nor in what it
            # drops): the per-message path refuses such a message, so must this.
            if not data.isascii():
                data.decode("utf-8")
            table = pajson.read_json(
                pa.py_buffer(data), parse_options=self._options,
                read_options=pajson.ReadOptions(block_size=len(data) + 1, **_READ_OPTIONS))
        except (pa.ArrowException, ValueError, UnicodeDecodeError):
            return None
        if table.num_rows != len(payloads) or table.column_names[:-1] != self._names:
            return None
        columns = list(map(_chunk, table.columns))  # in the fields' order, __faust last
        for column, field in zip(columns, self._fields):
            if field.required and column.null_count:
                return None  # a null in a required field may have been a missing field
        failed: Set[int] = set()
        try:
            values = [_final_or_failed(column, field, failed)
                      for column, field in zip(columns, self._fields)]
        except Exception:  # noqa: BLE001 - a nested record did not build (or may miss a
            return None  # required field): message by message
        build = self.build
        if not failed:
            try:
                # Every field's final value, in order: no dict per row.
                return build_records(build, self.model, self._typed_names, values), []
            except Exception:  # noqa: BLE001 - some row did not build: find which
                pass
        out: List[Any] = []
        for i, row in enumerate(zip(*values)):
            if i not in failed:
                try:
                    out.append(build(*row))
                    continue
                except Exception:  # noqa: BLE001 - the caller redoes this message alone
                    failed.add(i)
            out.append(None)
        return out, sorted(failed)
