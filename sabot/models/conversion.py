"""From decoded JSON to a field's declared type: nested records, containers,
dates and decimals (what Faust's ``TypeExpression`` compiles).

``converter_for(typ, ...)`` looks at a field's annotation once, when its
model class is made, and returns a function applied to each value read from
data, or ``None`` when the value is used as it comes (the common case: a
plain ``int``, ``str``... field of a model that does not coerce). As in
Faust, nested records are always built; dates and decimals inside
containers only when the model asks for them (``isodates``, ``decimals``,
``coerce``).
"""
from __future__ import annotations

import collections.abc as cabc
import datetime
import decimal
import typing
import weakref
from types import UnionType as _UnionType
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from .fields import parse_datetime, to_decimal

if TYPE_CHECKING:
    from .record import ModelOptions

__all__ = ["converter_for", "is_optional", "strip_optional", "is_record_type", "int_to_float",
           "passes_typed"]

Converter = Callable[[Any], Any]

#: Converters that give back a value already of their type unchanged (see
#: ``passes_typed``); held weakly, as the classes that made them may go.
_PASSES_TYPED: "weakref.WeakSet[Converter]" = weakref.WeakSet()


def passes_typed(convert: Converter) -> bool:
    """True when ``convert`` leaves a value that already has its type as it is
    (a built record, a list of them, a float for a ``float``), so a column of
    such values needs no pass through it (``sabot.models.fast_json``)."""
    return convert in _PASSES_TYPED


def _typed_passing(convert: Converter) -> Converter:
    _PASSES_TYPED.add(convert)
    return convert

_SEQUENCES = {list: list, typing.List: list, cabc.Sequence: list, cabc.MutableSequence: list,
              set: set, typing.Set: set, cabc.Set: set, cabc.MutableSet: set,
              frozenset: frozenset, typing.FrozenSet: frozenset,
              tuple: tuple, typing.Tuple: tuple}
_MAPPINGS = {dict, typing.Dict, cabc.Mapping, cabc.MutableMapping}


def is_optional(typ: Any) -> bool:
    """True for ``Optional[X]`` (a union with ``None``)."""
    return typing.get_origin(typ) in (typing.Union, _UnionType) and type(None) in typing.get_args(typ)


def strip_optional(typ: Any) -> Any:
    """``X`` for ``Optional[X]``; a union of several types stays as it is."""
    if not is_optional(typ):
        return typ
    rest = [a for a in typing.get_args(typ) if a is not type(None)]
    return rest[0] if len(rest) == 1 else typ


def is_record_type(typ: Any) -> bool:
    """True when ``typ`` is a ``Record`` class."""
    from .record import Record
    return isinstance(typ, type) and issubclass(typ, Record)


def _record_converter(typ: Any) -> Converter:
    from .namespace import blessed

    def convert(value: Any) -> Any:
        if type(value) is dict and not blessed and not typ.__is_abstract__:
            return typ._from_dict(value)  # no namespace can pick another class
        if value is None or isinstance(value, typ):
            return value
        return typ._from_data_field(value)
    return _typed_passing(convert)


def _nullable(convert: Converter) -> Converter:
    def maybe(value: Any) -> Any:
        return None if value is None else convert(value)
    return _typed_passing(maybe) if passes_typed(convert) else maybe


def int_to_float(value: Any) -> Any:
    """A JSON integer in a ``float`` field as a float (``0`` -> ``0.0``).

    Faust would keep the int; Sabot reads a float field as a float whichever
    way the number was written, so a fetch parsed as Arrow columns (always
    float64) and a message parsed alone give the same record.
    """
    return float(value) if type(value) is int else value


_typed_passing(int_to_float)


def _scalar_converter(typ: Any, options: "ModelOptions") -> Optional[Converter]:
    if typ is float:
        return int_to_float
    if typ is datetime.datetime and (options.isodates or options.coerce):
        parser = options.date_parser or parse_datetime
        return lambda v: v if isinstance(v, datetime.datetime) else parser(v)
    if typ is decimal.Decimal and (options.decimals or options.coerce):
        return to_decimal
    return None


def converter_for(typ: Any, options: "ModelOptions", *, top: bool = False) -> Optional[Converter]:
    """How a value read from data becomes ``typ`` (``None``: as it is).

    With ``top`` (the field's own type, not an item of a container) plain
    types are left to the field's descriptor, which converts them under the
    model's options.
    """
    optional = is_optional(typ)
    inner = strip_optional(typ)
    convert = _converter(inner, options, top)
    if convert is None:
        return None
    return _nullable(convert) if optional else convert


def _converter(typ: Any, options: "ModelOptions", top: bool) -> Optional[Converter]:
    if is_record_type(typ):
        return _record_converter(typ)
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin is None:
        if top and typ is not float:
            return None  # the field's descriptor converts it
        return _scalar_converter(typ, options)
    if origin in _SEQUENCES:
        return _sequence_converter(_SEQUENCES[origin], args, options)
    if origin in _MAPPINGS:
        key = converter_for(args[0], options) if args else None
        value = converter_for(args[1], options) if len(args) > 1 else None
        if key is None and value is None:
            return None
        return _mapping_converter(key, value)
    return None


def _sequence_converter(kind: type, args: Tuple[Any, ...],
                        options: "ModelOptions") -> Optional[Converter]:
    if kind is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
        # Tuple[X, Y, Z]: one type per position.
        items = [converter_for(a, options) for a in args]
        if all(c is None for c in items):
            return None

        def each_position(value: Any) -> Any:
            return tuple(c(v) if c is not None else v for c, v in zip(items, value))
        return each_position
    item = converter_for(args[0], options) if args else None
    if item is None:
        return None

    def each(value: Any) -> Any:
        if type(value) is list:  # what JSON gives
            items = [item(v) for v in value]
            return items if kind is list else kind(items)
        if isinstance(value, (str, bytes, cabc.Mapping)) or not isinstance(value, cabc.Iterable):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        return kind(item(v) for v in value)
    # A list whose items pass gives an equal list back (a set or tuple would not).
    return _typed_passing(each) if kind is list and passes_typed(item) else each


def _mapping_converter(key: Optional[Converter], value: Optional[Converter]) -> Converter:
    def each(mapping: Any) -> Dict[Any, Any]:
        if not isinstance(mapping, cabc.Mapping):
            raise TypeError(f"expected an object, got {type(mapping).__name__}")
        return {(key(k) if key is not None else k): (value(v) if value is not None else v)
                for k, v in mapping.items()}
    return each
