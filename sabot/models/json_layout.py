"""Faust's JSON layout, written byte for byte as Faust writes it.

A record is its fields plus ``"__faust": {"ns": "<namespace>"}``; a nested
record carries its own. Compact separators, ASCII escapes, and Faust's
conversions (``faust.utils.json.on_default``): a ``datetime`` or ``time`` in
ISO 8601 with ``Z`` for UTC, a ``date`` as midnight of that day, ``Decimal``,
``UUID`` as strings, ``bytes`` as UTF-8 text (Faust writes
their ``repr``, ``"b'...'"``, which no reader can use), an ``Enum`` as its value, sets, tuples
and deques as lists. So a Faust app reads what Sabot writes, and the other
way round (``sabot.models.codec`` reads).
"""
from __future__ import annotations

import collections
import datetime
import decimal
import enum
import json
import uuid
from typing import Any, Callable

from ..codecs import JsonCodec, get_codec
from ..exceptions import EncodeError

__all__ = ["on_default", "dumps", "dumps_data", "loads_data", "to_plain"]

_TEXTUAL = (decimal.Decimal, uuid.UUID, bytes)
_SEQUENCES = (set, frozenset, collections.deque, tuple)


def on_default(o: Any) -> Any:
    """What Faust's JSON encoder writes for a value JSON has no type for."""
    if isinstance(o, _TEXTUAL):
        return o.decode("utf-8", "backslashreplace") if isinstance(o, bytes) else str(o)
    if isinstance(o, collections.Counter):
        return dict(o)
    if isinstance(o, (datetime.date, datetime.time)):
        if not isinstance(o, (datetime.datetime, datetime.time)):
            o = datetime.datetime(o.year, o.month, o.day)
        text = o.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(o, enum.Enum):
        return o.value
    if isinstance(o, _SEQUENCES):
        return list(o)
    to_json = getattr(o, "__json__", None)  # a Record (ours or Faust's)
    if to_json is not None:
        return to_json()
    raise TypeError(f"JSON cannot serialize {type(o).__name__!r}: {o!r}")


_encode: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), default=on_default).encode


def dumps(obj: Any) -> bytes:
    """``obj`` (a record, or anything holding records) as Faust's JSON bytes."""
    try:
        return _encode(obj).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise EncodeError(f"cannot write {type(obj).__name__} as JSON: {exc}") from exc


def to_plain(obj: Any) -> Any:
    """``obj`` with records and Faust's special types turned into plain
    dicts, lists, strings and numbers (for a codec other than JSON)."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return to_plain(on_default(obj))


def dumps_data(codec: Any, obj: Any) -> bytes:
    """``obj`` written with ``codec`` (a name or a codec): Faust's JSON for ``json``."""
    resolved = get_codec(codec)
    if isinstance(resolved, JsonCodec):
        return dumps(obj)
    return resolved.encode(to_plain(obj))


def loads_data(codec: Any, data: bytes) -> Any:
    """``data`` decoded with ``codec`` (a name or a codec) into plain data."""
    return get_codec(codec).decode(data)
