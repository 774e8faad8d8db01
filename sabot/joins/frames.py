"""A stream batch as a join reads it: rows, a key and an event time per row.

Both joins take the same input: a batch's payload (a ``pyarrow.RecordBatch``,
or a list of dict values) and its envelope (message keys, timestamps,
positions). ``read_frame`` turns it into a ``Frame``: the rows that can take
part as one RecordBatch, the join key of each (a column, a field, a
callable's result or the message key), optionally its event time in seconds,
and the rows that cannot, each with the reason (they go to the dead-letter
channel; nothing is dropped without a word).

A problem with the batch as a whole (the key column is missing, or of a type
that cannot be a key) is a ``SchemaError`` naming the column: that is the
stream's shape being wrong, not one bad message.
"""
from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.compute as pc

from ..exceptions import SchemaError
from ..models import Record

__all__ = ["Frame", "Reject", "KeySpec", "TimeSpec", "read_frame", "rows_to_batch", "conform", "key_column",
           "time_column", "plain_value", "ARROW_ERRORS"]

#: A row that cannot be joined: its index in the source batch, and why.
Reject = Tuple[int, str]
#: ``on=``: a column or field name, a callable on each value, or ``None``
#: for the message key.
KeySpec = Union[None, str, Callable[[Any], Any]]
#: ``time=``: a column or field name, or ``None`` for the message timestamp.
TimeSpec = Optional[str]

#: What pyarrow raises on values that do not convert.
ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError,
                ValueError, OverflowError)

_NO_VALUE = object()
#: Types ``plain_value`` hands back untouched (dicts are not copied).
_AS_THEY_ARE = frozenset({dict, str, int, float, bool, bytes, type(None)})


class Frame(NamedTuple):
    """The joinable rows of one batch (see the module docstring)."""

    #: The rows that can be joined, in their order in the source batch.
    rows: pa.RecordBatch
    #: Index in the source batch of each row of ``rows``.
    origin: List[int]
    #: The join key of each row: an Arrow array (from a column) or a list.
    keys: Union[pa.Array, List[Any]]
    #: Event time of each row in seconds (``None`` when not asked for).
    times: Optional[pa.Array]
    #: Rows left out, with the reason.
    rejects: List[Reject]


def plain_value(value: Any) -> Any:
    """A dict for a mapping, a ``Record`` or a dataclass (they become columns), a sorted
    list for a set (a ``SetTable``'s value); other values as they are.

    A nested record becomes a nested dict (a struct column).
    """
    if type(value) in _AS_THEY_ARE:  # the common case, without the ABC checks
        return value
    if isinstance(value, Record):
        return {name: plain_value(field) for name, field in value.asdict().items()}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, AbstractSet):  # a SetTable's value: a list column, sorted
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _is_key_type(t: pa.DataType) -> bool:
    return (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_boolean(t)
            or pa.types.is_date(t) or pa.types.is_timestamp(t)
            or pa.types.is_fixed_size_binary(t) or pa.types.is_decimal(t)
            or pa.types.is_string_view(t) or pa.types.is_binary_view(t))


def key_column(rows: pa.RecordBatch, on: str) -> pa.Array:
    """Column ``on`` of ``rows`` as a join key (a dictionary column is decoded).

    Raises ``SchemaError`` naming the column when it is missing or of a type
    that cannot be a key (floats, lists, structs, ...).
    """
    index = rows.schema.get_field_index(on)
    if index < 0:
        raise SchemaError(
            f"join key column {on!r} is missing from the stream's batch "
            f"(columns: {', '.join(rows.schema.names) or 'none'})", field=on)
    column = rows.column(index)
    t = column.type
    if pa.types.is_dictionary(t):
        t = t.value_type
        column = column.cast(t)
    if not _is_key_type(t):
        raise SchemaError(
            f"join key column {on!r} has type {t}; a join key must be an integer, string, "
            f"binary, boolean, date or timestamp column", field=on, got=t)
    return column


def time_column(rows: pa.RecordBatch, name: str) -> pa.Array:
    """Column ``name`` as event time in seconds (float64), nulls kept.

    A timestamp column is read in its unit; a numeric column is seconds.
    Raises ``SchemaError`` naming the column when it is missing or neither.
    """
    index = rows.schema.get_field_index(name)
    if index < 0:
        raise SchemaError(
            f"event time column {name!r} is missing from the stream's batch "
            f"(columns: {', '.join(rows.schema.names) or 'none'})", field=name)
    column = rows.column(index)
    t = column.type
    if pa.types.is_timestamp(t):
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[t.unit]
        ticks = column.cast(pa.int64())
        return pc.divide(ticks.cast(pa.float64()), float(per_second))
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return column.cast(pa.float64())
    raise SchemaError(
        f"event time column {name!r} has type {t}; event time must be a timestamp column "
        f"or a number of seconds", field=name, got=t)


def _seconds(value: Any) -> float:
    # An event time found in a dict value: seconds, or a datetime.
    if isinstance(value, bool):
        raise TypeError("a boolean is not an event time")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.timestamp()
    raise TypeError(f"{type(value).__name__} is not an event time (seconds or a datetime)")


def _describe_key(on: KeySpec) -> str:
    if on is None:
        return "the message key"
    if isinstance(on, str):
        return f"field {on!r}"
    return f"on={getattr(on, '__qualname__', repr(on))}"


def read_frame(payload: Any, *, on: KeySpec, time: TimeSpec = None, with_time: bool = False,
               keys: Optional[Sequence[Any]] = None,
               timestamps: Optional[Sequence[float]] = None, timestamp: float = 0.0,
               schema: Optional[pa.Schema] = None) -> Frame:
    """The joinable rows of ``payload`` with their keys (and event times).

    ``keys``/``timestamps``/``timestamp`` are the batch's envelope: message
    keys for ``on=None``, message timestamps for ``time=None`` (when
    ``with_time``). ``schema`` converts dict values (the channel's schema,
    or the one the join settled on); without it pyarrow infers one.
    """
    if isinstance(payload, pa.RecordBatch):
        return _read_record_batch(payload, on, time, with_time, keys, timestamps, timestamp)
    if isinstance(payload, list):
        return _read_values(payload, on, time, with_time, keys, timestamps, timestamp, schema)
    raise SchemaError(f"a join reads RecordBatches or lists of dict values, "
                      f"got a batch of {type(payload).__name__}")


def _message_times(n: int, timestamps: Optional[Sequence[float]], timestamp: float,
                   index: Sequence[int]) -> pa.Array:
    if timestamps is None:
        return pa.array([float(timestamp)] * len(index), pa.float64())
    return pa.array([float(timestamps[i]) for i in index], pa.float64())


def _read_record_batch(rows: pa.RecordBatch, on: KeySpec, time: TimeSpec, with_time: bool,
                       keys: Optional[Sequence[Any]], timestamps: Optional[Sequence[float]],
                       timestamp: float) -> Frame:
    n = rows.num_rows
    rejects: List[Reject] = []
    key_values: Union[pa.Array, List[Any]]
    if isinstance(on, str):
        key_values = key_column(rows, on)
    elif on is None:
        if keys is None:
            raise SchemaError("the stream's messages carry no keys: give on= a column name")
        key_values = list(keys)
    else:
        key_values = []
        for i, row in enumerate(rows.to_pylist()):
            try:
                key_values.append(on(row))
            except Exception as exc:
                rejects.append((i, f"{_describe_key(on)} raised {type(exc).__name__}: {exc}"))
                key_values.append(_NO_VALUE)
    times: Optional[pa.Array] = None
    if with_time:
        if time is not None:
            times = time_column(rows, time)
            if times.null_count:
                valid = times.is_valid()
                for i, ok in enumerate(valid.to_pylist()):
                    if not ok:
                        rejects.append((i, f"null event time in column {time!r}"))
        else:
            times = _message_times(n, timestamps, timestamp, range(n))
    if not rejects:
        return Frame(rows, list(range(n)), key_values, times, [])
    rejects.sort()
    bad = {i for i, _ in rejects}
    index = [i for i in range(n) if i not in bad]
    take = pa.array(index, pa.int64())
    kept_keys: Union[pa.Array, List[Any]] = (
        key_values.take(take) if isinstance(key_values, pa.Array)
        else [key_values[i] for i in index])
    return Frame(rows.take(take), index, kept_keys,
                 times.take(take) if times is not None else None, rejects)


def _read_values(values: List[Any], on: KeySpec, time: TimeSpec, with_time: bool,
                 keys: Optional[Sequence[Any]], timestamps: Optional[Sequence[float]],
                 timestamp: float, schema: Optional[pa.Schema]) -> Frame:
    rejects: List[Reject] = []
    good: List[dict] = []
    index: List[int] = []
    key_values: List[Any] = []
    times: List[float] = []
    if on is None and keys is None and values:
        raise SchemaError("the stream's messages carry no keys: give on= a field name "
                          "or a callable")
    for i, value in enumerate(values):
        row = plain_value(value)
        if not isinstance(row, dict):
            rejects.append((i, f"a join reads dict values; got {type(value).__name__}"))
            continue
        try:
            if on is None:
                assert keys is not None  # checked above
                key = keys[i]
            elif isinstance(on, str):
                key = row.get(on, _NO_VALUE)
                if key is _NO_VALUE:
                    rejects.append((i, f"value has no field {on!r} (the join key)"))
                    continue
            else:
                key = on(value)
        except Exception as exc:
            rejects.append((i, f"{_describe_key(on)} raised {type(exc).__name__}: {exc}"))
            continue
        if with_time:
            if time is None:
                seconds = float(timestamp if timestamps is None else timestamps[i])
            else:
                raw = row.get(time, _NO_VALUE)
                if raw is _NO_VALUE or raw is None:
                    rejects.append((i, f"value has no event time in field {time!r}"))
                    continue
                try:
                    seconds = _seconds(raw)
                except TypeError as exc:
                    rejects.append((i, f"field {time!r}: {exc}"))
                    continue
            times.append(seconds)
        good.append(row)
        index.append(i)
        key_values.append(key)
    rows, failed = rows_to_batch(good, schema)
    if failed:
        bad = {j for j, _ in failed}
        rejects.extend((index[j], reason) for j, reason in failed)
        index = [x for j, x in enumerate(index) if j not in bad]
        key_values = [x for j, x in enumerate(key_values) if j not in bad]
        times = [x for j, x in enumerate(times) if j not in bad]
    rejects.sort()
    return Frame(rows, index, key_values, pa.array(times, pa.float64()) if with_time else None,
                 rejects)


def conform(rows: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``rows`` with exactly ``schema``'s columns: missing ones null, others cast safely.

    (Not ``from_pylist(rows, schema=)``: that truncates 2.5 to 2 without a word.)
    """
    if rows.schema == schema:
        return rows
    n = rows.num_rows
    arrays = []
    for field in schema:
        index = rows.schema.get_field_index(field.name)
        column = rows.column(index) if index >= 0 else pa.nulls(n, field.type)
        arrays.append(column if column.type == field.type else column.cast(field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def rows_to_batch(rows: List[dict], schema: Optional[pa.Schema]) -> Tuple[pa.RecordBatch,
                                                                        List[Reject]]:
    """``rows`` as one RecordBatch, and the rows that do not convert (index in ``rows``).

    Converted whole when they can be (the usual case, one pyarrow call);
    otherwise row by row against ``schema`` or the first row's own schema,
    so one malformed value costs only itself.
    """
    try:
        whole = pa.RecordBatch.from_pylist(rows)
        return (whole if schema is None else conform(whole, schema)), []
    except ARROW_ERRORS:
        pass
    target = schema
    failed: List[Reject] = []
    kept: List[pa.RecordBatch] = []
    for j, row in enumerate(rows):
        try:
            one = pa.RecordBatch.from_pylist([row])
            if target is None:
                target = one.schema
            kept.append(conform(one, target))
        except ARROW_ERRORS as exc:
            failed.append((j, f"value does not convert to the schema "
                              f"({_schema_text(target)}): {exc}"))
    if target is None:
        return pa.RecordBatch.from_pylist([]), failed
    if not kept:
        return pa.RecordBatch.from_pylist([], schema=target), failed
    return pa.Table.from_batches(kept, schema=target).combine_chunks().to_batches()[0], failed


def _schema_text(schema: Optional[pa.Schema]) -> str:
    if schema is None:
        return "none"
    return ", ".join(f"{f.name}: {f.type}" for f in schema)
