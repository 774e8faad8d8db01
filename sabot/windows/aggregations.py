"""What a window computes: ``count()``, ``sum(col)``, ``min(col)``, ``max(col)``, ``mean(col)``.

Every aggregation is kept as *partials* that merge: a count is summed, a sum
is summed, a minimum is the minimum of minimums, a mean is a sum and a count.
So rows are aggregated once per batch into partials (``pa.Table.group_by``
with the *raw* function: ``count_all``, ``sum``, ...), partials are merged
with the *merge* function (pane into pane, pane into window, session into
session), and the result is computed from the partials when a window is
emitted (``finish``).

A partial is a ``Slot``: a source column (or none) and a raw function.
Aggregations that need the same slot share it (``sum("x")`` and
``mean("x")`` keep one sum of ``x``).

``first``/``last`` are left out on purpose: "first" in a window made of panes
that arrived out of order needs the arrival sequence of every row kept as a
partial, which the other aggregations do not pay for.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from ..exceptions import ConfigurationError

__all__ = ["Slot", "Aggregation", "Count", "Sum", "Min", "Max", "Mean", "count_rows",
           "sum", "min", "max", "mean", "AggregationPlan"]


@dataclass(frozen=True)
class Slot:
    """One partial: ``raw`` applied to ``column`` (``None``: to the rows) in a group_by."""

    column: Optional[str]
    raw: str          # hash function over the rows: count_all, count, sum, min, max
    merge: str        # hash function over partials: sum, min, max

    def row_partial(self, values: Optional[pa.Array], length: int) -> pa.Array:
        """The partial of each row alone (a session or count window merges rows one by one)."""
        if self.raw == "count_all":
            return pa.repeat(pa.scalar(1, pa.int64()), length)
        assert values is not None
        if self.raw == "count":
            return pc.cast(pc.is_valid(values), pa.int64())
        if self.raw == "sum":
            # hash_sum widens integers to 64 bits; do the same row by row.
            if pa.types.is_integer(values.type):
                return pc.cast(values, pa.uint64() if pa.types.is_unsigned_integer(values.type)
                               else pa.int64())
            if pa.types.is_floating(values.type):
                return pc.cast(values, pa.float64())
        return values


class Aggregation:
    """Base of the aggregations: its slots, and its result from their merged values."""

    name = ""
    column: Optional[str] = None

    def slots(self) -> Sequence[Slot]:
        """The partials this aggregation is computed from."""
        raise NotImplementedError

    def finish(self, partials: Sequence[pa.Array]) -> pa.Array:
        """The result from the merged partials (in ``slots()`` order)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.name}({'' if self.column is None else repr(self.column)})"


class Count(Aggregation):
    """Rows in the window (``count()``), or rows where ``column`` is not null."""

    name = "count"

    def __init__(self, column: Optional[str] = None) -> None:
        self.column = _column(column, "count", optional=True)

    def slots(self) -> Sequence[Slot]:
        if self.column is None:
            return (Slot(None, "count_all", "sum"),)
        return (Slot(self.column, "count", "sum"),)

    def finish(self, partials: Sequence[pa.Array]) -> pa.Array:
        return pc.fill_null(pc.cast(partials[0], pa.int64()), 0)


class _Single(Aggregation):
    raw = ""
    merge = ""

    def __init__(self, column: str) -> None:
        self.column = _column(column, self.name)

    def slots(self) -> Sequence[Slot]:
        return (Slot(self.column, self.raw, self.merge),)

    def finish(self, partials: Sequence[pa.Array]) -> pa.Array:
        return partials[0]


class Sum(_Single):
    """Sum of ``column`` (nulls skipped; null when every value is null)."""

    name = raw = merge = "sum"


class Min(_Single):
    """Smallest value of ``column``."""

    name = raw = merge = "min"


class Max(_Single):
    """Largest value of ``column``."""

    name = raw = merge = "max"


class Mean(Aggregation):
    """Mean of ``column`` (nulls skipped; null when every value is null)."""

    name = "mean"

    def __init__(self, column: str) -> None:
        self.column = _column(column, "mean")

    def slots(self) -> Sequence[Slot]:
        return (Slot(self.column, "sum", "sum"), Slot(self.column, "count", "sum"))

    def finish(self, partials: Sequence[pa.Array]) -> pa.Array:
        total, n = partials
        n = pc.cast(n, pa.float64())
        mean = pc.divide(pc.cast(total, pa.float64()), n)
        return pc.if_else(pc.equal(n, 0.0), pa.scalar(None, pa.float64()), mean)


def count_rows(column: Optional[str] = None) -> Count:
    """``count()``: rows in the window; ``count(col)``: rows where ``col`` is not null."""
    return Count(column)


def sum(column: str) -> Sum:  # noqa: A001 (the name users expect)
    """``sum(col)``: the sum of ``col`` in the window."""
    return Sum(column)


def min(column: str) -> Min:  # noqa: A001
    """``min(col)``: the smallest ``col`` in the window."""
    return Min(column)


def max(column: str) -> Max:  # noqa: A001
    """``max(col)``: the largest ``col`` in the window."""
    return Max(column)


def mean(column: str) -> Mean:
    """``mean(col)``: the mean of ``col`` in the window."""
    return Mean(column)


def _column(column: Optional[str], what: str, optional: bool = False) -> Optional[str]:
    if column is None and optional:
        return None
    if not isinstance(column, str) or not column:
        raise ConfigurationError(f"{what}(column): the column must be a name (str), "
                                 f"got {column!r}")
    return column


class AggregationPlan:
    """The named aggregations of one ``.agg(...)``, their shared slots and columns.

    Slot ``i`` is kept in a partial column named ``s<i>``; the source column
    of a slot is read into ``v<j>`` (one per distinct source column), so a
    group_by's output names (``v0_sum``, ``count_all``) never collide with
    the user's.
    """

    def __init__(self, aggs: Mapping[str, Aggregation]) -> None:
        if not aggs:
            raise ConfigurationError("agg() needs at least one aggregation, "
                                     "e.g. agg(n=count(), total=sum('amount'))")
        for name, agg in aggs.items():
            if not isinstance(agg, Aggregation):
                raise ConfigurationError(
                    f"agg({name}=...): expected an aggregation such as count() or "
                    f"sum('amount'), got {agg!r}")
        self.aggs: Dict[str, Aggregation] = dict(aggs)
        self.slots: List[Slot] = []
        self._slot_of: List[List[int]] = []
        for agg in self.aggs.values():
            indices = []
            for slot in agg.slots():
                if slot not in self.slots:
                    self.slots.append(slot)
                indices.append(self.slots.index(slot))
            self._slot_of.append(indices)
        #: The user's columns the aggregations read, in ``v<j>`` order.
        self.columns: List[str] = []
        for slot in self.slots:
            if slot.column is not None and slot.column not in self.columns:
                self.columns.append(slot.column)
        self.partial_names = [f"s{i}" for i in range(len(self.slots))]

    def value_name(self, column: str) -> str:
        """The internal name of a source column (``v<j>``)."""
        return f"v{self.columns.index(column)}"

    def raw_aggregates(self) -> List[Tuple[object, str]]:
        """``(column, function)`` pairs for ``TableGroupBy.aggregate`` over rows."""
        out: List[Tuple[object, str]] = []
        for slot in self.slots:
            if slot.raw == "count_all":
                out.append(([], "count_all"))
            else:
                assert slot.column is not None
                out.append((self.value_name(slot.column), slot.raw))
        return out

    def raw_output_names(self) -> List[str]:
        """What ``raw_aggregates`` produces, in slot order."""
        names = []
        for slot in self.slots:
            if slot.raw == "count_all":
                names.append("count_all")
            else:
                assert slot.column is not None
                names.append(f"{self.value_name(slot.column)}_{slot.raw}")
        return names

    def merge_aggregates(self) -> List[Tuple[object, str]]:
        """``(partial column, function)`` pairs that merge partials."""
        return [(name, slot.merge) for name, slot in zip(self.partial_names, self.slots)]

    def merge_output_names(self) -> List[str]:
        """What ``merge_aggregates`` produces, in slot order."""
        return [f"{name}_{slot.merge}" for name, slot in zip(self.partial_names, self.slots)]

    def row_partials(self, values: Mapping[str, pa.Array], length: int) -> List[pa.Array]:
        """Each row's own partials (slot order), from the ``v<j>`` columns."""
        return [slot.row_partial(None if slot.column is None
                                 else values[self.value_name(slot.column)], length)
                for slot in self.slots]

    def finish(self, table: pa.Table) -> Dict[str, pa.Array]:
        """The named results from a table of merged partial columns ``s<i>``."""
        out: Dict[str, pa.Array] = {}
        for (name, agg), indices in zip(self.aggs.items(), self._slot_of):
            partials = [_flat(table.column(self.partial_names[i])) for i in indices]
            out[name] = agg.finish(partials)
        return out


def _flat(column: pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)

