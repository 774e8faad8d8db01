"""How a table's keys and values become bytes (store, changelog) and back.

Tagged JSON: plain JSON for str, int, float, bool, None, lists and dicts with
str keys, and ``sabot.bridge.ipc``'s tags for what JSON has no type for
(bytes, tuples, ``sabot.Record`` values), so a windowed table's ``(key, (start, end))`` comes back as
a tuple. Nothing is pickled. What cannot round-trip (a set outside a
``SetTable``, a dict with a non-str key, an object) is refused with
``TableValueError`` instead of being changed silently.

A stored value is a *record*: ``[value, source, position]``, the value and
where the input that last wrote it came from (the source partition and its
position, ``null`` for a memory channel). That is what makes replayed input
recognisable per key (see ``sabot.tables.table``).
"""
from __future__ import annotations

import json
from typing import Any, Optional, Tuple

from ..bridge.ipc import tag, untag
from ..exceptions import SabotError
from ..models.record import Record

__all__ = ["TableValueError", "encode", "decode", "encode_record", "decode_record"]

_dumps = json.dumps
_loads = json.loads
_PLAIN = (str, int, float, bool, type(None))


class TableValueError(SabotError, ValueError):
    """A key or value a table cannot hold (unhashable, wrong type, not encodable).

    Raised inside the agent, so the agent's ``on_error`` (by default
    ``"dead_letter"``) sends the value to the dead-letter channel with this
    message as the reason.
    """


def _check(value: Any, what: str) -> None:
    pending = [value]
    while pending:
        node = pending.pop()
        t = type(node)
        if t in _PLAIN:
            continue
        if t is dict:
            for k, v in node.items():
                if type(k) is not str:
                    raise TableValueError(
                        f"{what} {value!r}: dict key {k!r} ({type(k).__name__}) cannot be "
                        f"stored (JSON would turn it into a string)")
                pending.append(v)
        elif t is list or t is tuple:
            pending.extend(node)
        elif t is bytes or t is bytearray:
            continue
        elif isinstance(node, Record):
            continue  # tagged with its namespace, rebuilt as its class (Faust's tables hold them)
        else:
            raise TableValueError(
                f"{what} {value!r} of type {type(node).__name__} cannot be stored in a table "
                f"(str, int, float, bool, None, bytes, records, tuples, lists and dicts with str keys can)")


def encode(value: Any, what: str = "value") -> bytes:
    """``value`` as tagged JSON bytes; ``TableValueError`` if it cannot round-trip."""
    t = type(value)
    if t is str or t is int:
        return _dumps(value).encode()
    _check(value, what)
    return _dumps(tag(value)).encode()


def decode(data: bytes) -> Any:
    """The inverse of ``encode``."""
    value = _loads(data)
    t = type(value)
    if t is str or t is int:
        return value
    return untag(value)


def encode_record(value: Any, source: Optional[str], position: Any) -> bytes:
    """A stored value: the value and the source position of the input that wrote it."""
    t = type(value)
    if not (t is str or t is int):
        _check(value, "value")
        value = tag(value)
    return _dumps([value, source, position]).encode()


def decode_record(data: bytes) -> Tuple[Any, Optional[str], Any]:
    """``(value, source, position)`` of a stored record."""
    value, source, position = _loads(data)
    t = type(value)
    if not (t is str or t is int):
        value = untag(value)
    return value, source, position
