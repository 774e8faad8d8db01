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

A row whose record fails to build (a validation error) is decoded again by
the per-message path, which raises the error with its reason.
"""
from __future__ import annotations

import collections.abc as cabc
import datetime
import decimal
import typing
from typing import Any, Callable, List, Optional, Sequence, Tuple, Type

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from .conversion import is_optional, is_record_type, strip_optional
from .namespace import BLESSED_KEY, blessed

__all__ = ["FetchDecoder", "read_schema"]

_SCALARS = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string(),
            # Kept as the text they came as: Faust converts them (or not) itself.
            bytes: pa.string(), decimal.Decimal: pa.string(), datetime.datetime: pa.string(),
            datetime.date: pa.string()}
_LISTS = {list, set, frozenset, typing.List, typing.Set, typing.FrozenSet, cabc.Sequence,
          cabc.MutableSequence, cabc.Set, cabc.MutableSet}
_NAMESPACE = pa.struct([("ns", pa.string())])

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
    if model.__is_abstract__ or model._options.__dict__.get("_from_values") is None:
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


def _required_paths(model: Type[Any]) -> List[Tuple[str, ...]]:
    """Paths (through structs and lists) of required fields, for the null check."""
    out: List[Tuple[str, ...]] = []

    def walk(m: Type[Any], prefix: Tuple[str, ...]) -> None:
        options = m._options
        for name, typ in options.fields.items():
            key = options.descriptors[name].input_name
            if name not in options.optionalset:
                out.append(prefix + (key,))
            inner = strip_optional(typ)
            if is_record_type(inner):
                walk(inner, prefix + (key,))
            elif typing.get_origin(inner) in _LISTS or typing.get_origin(inner) in (tuple,
                                                                                     typing.Tuple):
                args = typing.get_args(inner)
                if args and is_record_type(strip_optional(args[0])):
                    walk(strip_optional(args[0]), prefix + (key, "[]"))
    walk(model, ())
    return out


def _null_where_present(column: Any, path: Tuple[str, ...]) -> bool:
    """Whether the field at ``path`` is null in some row whose parent is present."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    for step in path:
        if step == "[]":
            arr = arr.flatten()  # the items of the lists that are there
            continue
        valid = arr.is_valid()
        # flatten() merges the parent's validity into the children: rows
        # whose parent is null are null below it too, and not looked at.
        arr = arr.flatten()[arr.type.get_field_index(step)]
        if pc.any(pc.and_(valid, arr.is_null())).as_py():
            return True
    return False


def _has_records(typ: Any) -> bool:
    typ = strip_optional(typ)
    if is_record_type(typ):
        return True
    args = typing.get_args(typ)
    return bool(args) and typing.get_origin(typ) in _LISTS | {tuple, typing.Tuple} \
        and _has_records(args[0])


def _python_values(arr: Any, typ: Any) -> List[Any]:
    """A parsed column as the field's values: nested records are built
    column by column (no dict per record), the rest as Arrow gives them."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not _has_records(typ):
        return arr.to_pylist()
    inner = strip_optional(typ)
    if is_record_type(inner):
        return _records(arr, inner)
    # A list of records: the items of every list at once, then cut.
    items = _python_values(arr.flatten(), typing.get_args(inner)[0])
    out: List[Any] = []
    pos = 0
    for n in arr.value_lengths().to_pylist():
        if n is None:
            out.append(None)
        else:
            out.append(items[pos:pos + n])
            pos += n
    return out


def _records(arr: Any, model: Type[Any]) -> List[Any]:
    children = arr.flatten()  # the parent's validity merged into each child
    options = model._options
    columns = [_python_values(children[arr.type.get_field_index(d.input_name)],
                              options.fields[name])
               for name, d in options.descriptors.items()]
    build = options.__dict__["_from_values"]
    if not arr.null_count:
        return list(map(build, *columns))
    valid = arr.is_valid().to_pylist()
    return [build(*row) if ok else None for ok, row in zip(valid, zip(*columns))]


class FetchDecoder:
    """Decodes many JSON messages of one Record class at once (see the module)."""

    def __init__(self, model: Type[Any]) -> None:
        self.model = model
        #: The record from the values of its fields in order (generated per class).
        self.build: Callable[..., Any] = model._options.__dict__.get("_from_values")
        self.schema = read_schema(model) if self.build is not None else None
        self._names: List[str] = []
        self._required: List[Tuple[str, ...]] = []
        if self.schema is not None:
            self._names = [f.name for f in self.schema][:-1]  # all but __faust
            self._types = list(zip(self._names, model._options.fields.values()))
            self._required = _required_paths(model)
            self._options = pajson.ParseOptions(explicit_schema=self.schema,
                                                unexpected_field_behavior="error")

    def decode(self, payloads: Sequence[Any]) -> Optional[Tuple[List[Any], List[int]]]:
        """``(one record per payload, indices of the rows whose record did not
        build)``, or ``None`` when the fetch must be decoded message by message."""
        if self.schema is None or blessed or not payloads:
            return None
        for p in payloads:
            if type(p) is not bytes or not p.startswith(b"{") or not p.endswith(b"}") \
                    or b"\n" in p or b"\r" in p:
                return None
        data = b"\n".join(payloads)
        try:
            # Arrow does not check UTF-8 in the text it keeps (nor in what it
            # drops): the per-message path refuses such a message, so must this.
            data.decode("utf-8")
            table = pajson.read_json(
                pa.py_buffer(data), parse_options=self._options,
                read_options=pajson.ReadOptions(block_size=len(data) + 1, **_READ_OPTIONS))
        except (pa.ArrowException, ValueError, UnicodeDecodeError):
            return None
        if table.num_rows != len(payloads):
            return None
        columns = {name: table.column(name) for name in self._names}
        for path in self._required:
            column = columns[path[0]]
            if len(path) == 1:
                if column.null_count:
                    return None
            elif _null_where_present(column, path[1:]):
                return None
        try:
            values = [_python_values(columns[name], typ) for name, typ in self._types]
        except Exception:  # noqa: BLE001 - a nested record did not build: message by message
            return None
        build = self.build
        try:
            # Every field's value, in order: no dict per row.
            return list(map(build, *values)), []
        except Exception:  # noqa: BLE001 - some row did not build: find which
            pass
        out: List[Any] = []
        failed: List[int] = []
        for i, row in enumerate(zip(*values)):
            try:
                out.append(build(*row))
            except Exception:  # noqa: BLE001 - the caller redoes this message alone
                out.append(None)
                failed.append(i)
        return out, failed
