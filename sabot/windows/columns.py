"""Reading a batch as the columns a window needs: key, event time, values.

A ``Frame`` holds, for the rows of one batch that can be windowed, the key,
the event time in integer microseconds and the aggregated columns (renamed
``v<j>``, see ``AggregationPlan``); ``index`` maps its rows back to the
batch's (for late rows and their positions). Rows that cannot be windowed
(no event time, a value of the wrong type, a value that is not a mapping)
are listed in ``invalid`` with the reason, for the dead-letter channel:
nothing from outside is trusted, nothing is dropped.

Event time is a column (``time="ts"``: a ``timestamp`` of any unit, or a
number of seconds, as Faust's timestamps are) or, with ``time=None``, the
message's own timestamp (the batch's ``timestamps``, e.g. Kafka's, or its
``timestamp``). The key is a column or, with ``key=None``, the message key.

A RecordBatch payload is read as it is (no copy); a list of dicts (JSON
values) is converted column by column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from ..types import BatchT
from .aggregations import AggregationPlan

__all__ = ["Frame", "ColumnReader"]

_MISSING = object()
_NUMERIC_AGGS = ("sum",)


@dataclass
class Frame:
    """The windowable rows of one batch (see the module docstring)."""

    keys: pa.Array
    times: pa.Array                      # int64 microseconds, no nulls
    values: Dict[str, pa.Array]          # v<j> -> column
    index: Optional[pa.Array] = None     # frame row -> batch row; None: the same
    invalid: List[Tuple[int, str]] = field(default_factory=list)
    #: The time column's type when it is a timestamp (windows are reported in it).
    time_type: Optional[pa.DataType] = None
    #: Smallest and largest event time (µs), set by ``bounds()``.
    low: int = 0
    high: int = 0

    def bounds(self) -> "Frame":
        """Compute ``low`` and ``high`` (the frame must not be empty)."""
        low, high = pc.min_max(self.times).values()
        self.low, self.high = low.as_py(), high.as_py()
        return self

    def __len__(self) -> int:
        return len(self.times)

    def batch_rows(self, rows: pa.Array) -> List[int]:
        """Batch row numbers of the frame rows ``rows``."""
        if self.index is None:
            return rows.to_pylist()
        return self.index.take(rows).to_pylist()

    def filter(self, mask: pa.Array) -> "Frame":
        """The rows where ``mask`` is true (index kept pointing into the batch)."""
        rows = pc.indices_nonzero(mask)
        index = rows if self.index is None else self.index.take(rows)
        return Frame(self.keys.take(rows), self.times.take(rows),
                     {k: v.take(rows) for k, v in self.values.items()}, index, [],
                     self.time_type)


class ColumnReader:
    """Builds ``Frame`` s for one window operator's key, time and aggregations."""

    def __init__(self, key: Optional[str], time: Optional[str], plan: AggregationPlan) -> None:
        self.key = key
        self.time = time
        self.plan = plan
        self._numeric = {slot.column for slot in plan.slots
                         if slot.column is not None and slot.raw in _NUMERIC_AGGS}

    def read(self, batch: BatchT) -> Frame:
        """The frame of ``batch``; rows that cannot be windowed are in ``invalid``."""
        payload = batch.payload
        n = len(payload)
        bad: Dict[int, str] = {}
        if isinstance(payload, pa.RecordBatch):
            def column(name: str) -> Optional[pa.Array]:
                index = payload.schema.get_field_index(name)
                return None if index < 0 else payload.column(index)
        else:
            rows: Sequence[Any] = payload
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    bad[i] = f"window: the value is a {type(row).__name__}, not a mapping"

            def column(name: str) -> Optional[pa.Array]:
                values = [row.get(name) if isinstance(row, dict) else None for row in rows]
                return _to_array(values, name, bad)

        keys = self._keys(batch, column, n, bad)
        times, time_type = self._times(batch, column, n, bad)
        values: Dict[str, pa.Array] = {}
        for name in self.plan.columns:
            array = column(name)
            if array is None:
                _all_bad(bad, n, f"window: no column {name!r}")
                array = pa.nulls(n)
            elif name in self._numeric and not _is_numeric(array.type):
                _all_bad(bad, n, f"window: column {name!r} is {array.type}, "
                                 f"sum and mean need numbers")
            values[self.plan.value_name(name)] = array
        frame = Frame(keys, times, values, None, [], time_type)
        if bad:
            keep = pa.array([i not in bad for i in range(n)], pa.bool_())
            frame = frame.filter(keep)
            frame.invalid = sorted(bad.items())
        return frame

    def _keys(self, batch: BatchT, column: Any, n: int, bad: Dict[int, str]) -> pa.Array:
        if self.key is not None:
            keys = column(self.key)
            if keys is None:
                _all_bad(bad, n, f"window: no key column {self.key!r}")
                return pa.nulls(n)
            return keys
        if batch.keys is None:
            return pa.nulls(n)
        return _to_array(list(batch.keys), "the message key", bad)

    def _times(self, batch: BatchT, column: Any, n: int,
               bad: Dict[int, str]) -> Tuple[pa.Array, Optional[pa.DataType]]:
        if self.time is None:
            stamps = batch.timestamps
            if stamps is None:
                seconds = pa.repeat(pa.scalar(float(batch.timestamp)), n)
            else:
                seconds = pa.array(list(stamps), pa.float64())
            return _micros(seconds), None
        raw = column(self.time)
        if raw is None:
            _all_bad(bad, n, f"window: no time column {self.time!r}")
            return pa.repeat(pa.scalar(0, pa.int64()), n), None
        kind = raw.type
        if pa.types.is_timestamp(kind):
            micros = pc.cast(pc.cast(raw, pa.timestamp("us", kind.tz)), pa.int64())
            time_type: Optional[pa.DataType] = kind
        elif _is_numeric(kind) and not pa.types.is_decimal(kind):
            micros = _micros(raw)
            time_type = None
        elif pa.types.is_null(kind):
            micros = pa.nulls(n, pa.int64())
            time_type = None
        else:
            _all_bad(bad, n, f"window: time column {self.time!r} is {kind}, expected a "
                             f"timestamp or a number of seconds")
            return pa.repeat(pa.scalar(0, pa.int64()), n), None
        if micros.null_count:
            for i in pc.indices_nonzero(pc.is_null(micros)).to_pylist():
                bad.setdefault(i, f"window: no event time (column {self.time!r} is null)")
            micros = pc.fill_null(micros, 0)
        return micros, time_type


def _micros(seconds: pa.Array) -> pa.Array:
    """Seconds as int64 microseconds; NaN, infinite and out-of-range times become null."""
    if pa.types.is_integer(seconds.type):
        try:
            return pc.multiply_checked(pc.cast(seconds, pa.int64()), 1_000_000)
        except pa.ArrowInvalid:  # overflow: seconds beyond year 292,277
            seconds = pc.cast(seconds, pa.float64())
    scaled = pc.round(pc.multiply(seconds, 1_000_000.0))
    try:
        return pc.cast(scaled, pa.int64())
    except pa.ArrowInvalid:
        # The rare batch with a NaN or infinite time: those rows have none.
        fits = pc.and_(pc.is_finite(scaled), pc.less(pc.abs(scaled), 9.2e18))
        return pc.cast(pc.if_else(fits, scaled, pa.scalar(None, pa.float64())), pa.int64())


def _is_numeric(kind: pa.DataType) -> bool:
    return (pa.types.is_integer(kind) or pa.types.is_floating(kind)
            or pa.types.is_decimal(kind) or pa.types.is_null(kind))


def _all_bad(bad: Dict[int, str], n: int, reason: str) -> None:
    for i in range(n):
        bad.setdefault(i, reason)


def _to_array(values: List[Any], name: str, bad: Dict[int, str]) -> pa.Array:
    """``values`` as one Arrow array; values of another kind than the first are bad rows."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    reference = next((v for v in values if v is not None), None)
    kind = _kind(reference)
    clean: List[Any] = []
    for i, value in enumerate(values):
        if value is None or _kind(value) == kind:
            clean.append(value)
        else:
            bad.setdefault(i, f"window: {name} is a {type(value).__name__}, "
                              f"earlier values are {type(reference).__name__}")
            clean.append(None)
    try:
        return pa.array(clean)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        for i in range(len(values)):
            bad.setdefault(i, f"window: {name} cannot be read as a column ({exc})")
        return pa.nulls(len(values))


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__
