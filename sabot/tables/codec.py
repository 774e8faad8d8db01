"""How a table's keys and values become bytes (store, changelog) and back.

Tagged JSON: plain JSON for str, int, float, bool, None, lists and dicts with
str keys, and ``sabot.bridge.ipc``'s tags for what JSON has no type for
(bytes, tuples, sets, ``sabot.Record`` values), so a windowed table's ``(key, (start, end))`` comes back as
a tuple. Nothing is pickled. What cannot round-trip (a dict with a
non-str key, an object) is refused with
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


#: A set in a table's value (Faust's tables hold them; the bridge's tags do not).
_SET_TAG = "__sabot_set__"
_FROZENSET_TAG = "__sabot_frozenset__"


def _check(value: Any, what: str) -> bool:
    """Refuse what cannot round-trip; whether ``value`` holds a set."""
    has_set = False
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
        elif t is set or t is frozenset:
            has_set = True
            pending.extend(node)
        elif t is bytes or t is bytearray:
            continue
        elif isinstance(node, Record):
            continue  # tagged with its namespace, rebuilt as its class (Faust's tables hold them)
        else:
            raise TableValueError(
                f"{what} {value!r} of type {type(node).__name__} cannot be stored in a table "
                f"(str, int, float, bool, None, bytes, records, tuples, sets, lists and dicts with str keys can)")
    return has_set


def _tag_sets(value: Any) -> Any:
    """Sets as tagged dicts, for ``tag`` (which walks dicts, lists and tuples)."""
    t = type(value)
    if t is set or t is frozenset:
        return {_FROZENSET_TAG if t is frozenset else _SET_TAG: [_tag_sets(v) for v in value]}
    if t is list:
        return [_tag_sets(v) for v in value]
    if t is tuple:
        return tuple(_tag_sets(v) for v in value)
    if t is dict:
        return {k: _tag_sets(v) for k, v in value.items()}
    return value


def _untag_sets(value: Any) -> Any:
    """The inverse of ``_tag_sets``, after ``untag``."""
    t = type(value)
    if t is dict:
        if len(value) == 1 and (_SET_TAG in value or _FROZENSET_TAG in value):
            kind = set if _SET_TAG in value else frozenset
            return kind(_untag_sets(v) for v in next(iter(value.values())))
        return {k: _untag_sets(v) for k, v in value.items()}
    if t is list:
        return [_untag_sets(v) for v in value]
    if t is tuple:
        return tuple(_untag_sets(v) for v in value)
    return value


def _tagged(value: Any, what: str) -> Any:
    return tag(_tag_sets(value) if _check(value, what) else value)


def _untagged(value: Any, data: bytes) -> Any:
    value = untag(value)
    return _untag_sets(value) if _has_set_tag(data) else value


def _has_set_tag(data: Any) -> bool:
    if isinstance(data, str):
        return _SET_TAG in data or _FROZENSET_TAG in data
    data = data if isinstance(data, bytes) else bytes(data)
    return _SET_TAG.encode() in data or _FROZENSET_TAG.encode() in data


def encode(value: Any, what: str = "value") -> bytes:
    """``value`` as tagged JSON bytes; ``TableValueError`` if it cannot round-trip."""
    t = type(value)
    if t is str or t is int:
        return _dumps(value).encode()
    return _dumps(_tagged(value, what)).encode()


def decode(data: bytes) -> Any:
    """The inverse of ``encode``."""
    value = _loads(data)
    t = type(value)
    if t is str or t is int:
        return value
    return _untagged(value, data)


def encode_record(value: Any, source: Optional[str], position: Any) -> bytes:
    """A stored value: the value and the source position of the input that wrote it."""
    t = type(value)
    if not (t is str or t is int):
        value = _tagged(value, "value")
    return _dumps([value, source, position]).encode()


def decode_record(data: bytes) -> Tuple[Any, Optional[str], Any]:
    """``(value, source, position)`` of a stored record."""
    value, source, position = _loads(data)
    t = type(value)
    if not (t is str or t is int):
        value = _untagged(value, data)
    return value, source, position
