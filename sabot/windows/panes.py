"""Tumbling, hopping and sliding windows: partial aggregates per (key, pane).

Rows are aggregated with ``group_by([key, pane])`` into partials (one row per
key and pane), whatever the number of windows a pane belongs to: batch by
batch when ``current()`` needs the windows each batch updated, otherwise
64k rows at a time (``PaneStore``). The partials are kept as a list of Arrow
tables and compacted (merged by key and pane) when the pending ones outgrow
the compacted state, so the cost per row stays constant.

When the watermark passes a window's end plus grace, the panes of the
windows that closed are expanded into those windows (a pane belongs to
``ceil(width/stride)`` windows: one copy per window, per pane, not per row),
grouped by (key, window), merged, and finished. Window ``w`` covers panes
``[w*stride, w*stride + width)``; windows up to ``closed`` (exclusive) have
been emitted, so panes below ``closed*stride`` are dropped. A row is late
when the earliest window holding it had closed by the watermark the row
found: it goes whole to the late channel rather than into some of its
windows only (no emitted window ever misses an event silently).
"""
from __future__ import annotations

from typing import Any, List, Optional

import pyarrow as pa
import pyarrow.compute as pc

from .aggregations import AggregationPlan
from .arrow_ops import concat, flat, floor_div, group_merge, seconds_text as _s
from .columns import Frame
from .engine import WindowEngine, finish_windows
from .watermark import BatchWatermarks
from .specs import TimeWindowSpec

__all__ = ["PaneStore", "PaneWindows"]

_KEYS = ["__k", "__p"]
#: Compact when this many pending partial rows are waiting (or more than the state holds).
_COMPACT_AT = 131_072
#: Aggregate rows together once this many are waiting (see PaneStore).
_ROWS_AT = 65_536


class PaneStore:
    """Partials per (key, pane) in memory, as Arrow tables: ``__k``, ``__p``, ``s<i>``.

    Rows come in two ways: as partials already aggregated (``add``), or as
    rows ``__k``, ``__p``, ``v<j>`` (``add_rows``) that are aggregated
    together once ``_ROWS_AT`` of them are waiting: one ``group_by`` over
    64k rows costs about half of six over 10k rows each (hashing string keys
    dominates, and each call has a fixed cost), and batches arrive faster
    than they are read. Appending is O(1); ``compact`` merges everything into
    one row per key and pane. Everything here is window state: the seam for
    a durable store is ``add``/``add_rows``, which the operator calls before
    it releases the batch.
    """

    def __init__(self, plan: AggregationPlan) -> None:
        self.plan = plan
        self._compacted: Optional[pa.Table] = None
        self._pending: List[pa.Table] = []
        self._pending_rows = 0
        self._rows: List[pa.Table] = []
        self._rows_waiting = 0
        # Panes of the rows waiting (one pane: grouped by key alone, cheaper).
        self._rows_low: Optional[int] = None
        self._rows_high: Optional[int] = None
        self._min_pane: Optional[int] = None
        self._max_pane: Optional[int] = None

    @property
    def rows(self) -> int:
        """Rows held: partials (compacted and pending) and rows not yet aggregated."""
        compacted = 0 if self._compacted is None else self._compacted.num_rows
        return compacted + self._pending_rows + self._rows_waiting

    @property
    def min_pane(self) -> Optional[int]:
        """The lowest pane held."""
        return self._min_pane

    @property
    def max_pane(self) -> Optional[int]:
        """The highest pane held."""
        return self._max_pane

    def _panes(self, low: int, high: int) -> None:
        if self._min_pane is None or low < self._min_pane:
            self._min_pane = low
        if self._max_pane is None or high > self._max_pane:
            self._max_pane = high

    def add(self, partials: pa.Table, low: int, high: int) -> None:
        """Append partials whose panes lie in ``[low, high]``."""
        self._panes(low, high)
        self._pending.append(partials)
        self._pending_rows += partials.num_rows
        compacted = 0 if self._compacted is None else self._compacted.num_rows
        if self._pending_rows >= max(_COMPACT_AT, compacted):
            self.compact()

    def add_rows(self, rows: pa.Table, low: int, high: int) -> None:
        """Append rows (``__k``, ``__p``, ``v<j>``) to aggregate with the next ones."""
        self._panes(low, high)
        self._rows.append(rows)
        self._rows_waiting += rows.num_rows
        if self._rows_low is None or low < self._rows_low:
            self._rows_low = low
        if self._rows_high is None or high > self._rows_high:
            self._rows_high = high
        if self._rows_waiting >= _ROWS_AT:
            self._aggregate_rows()

    def _aggregate_rows(self) -> None:
        if not self._rows:
            return
        rows = concat(self._rows)
        one_pane = self._rows_low if self._rows_low == self._rows_high else None
        self._rows = []
        self._rows_waiting = 0
        self._rows_low = self._rows_high = None
        plan = self.plan
        if one_pane is not None:
            # Every row in one pane (the usual case: rows in time order): a
            # single key column hashes faster than the (key, pane) pair.
            partials = group_merge(rows.drop_columns(["__p"]), ["__k"], plan.raw_aggregates(),
                                   plan.raw_output_names(), plan.partial_names)
            partials = partials.add_column(1, "__p", pa.repeat(pa.scalar(one_pane, pa.int64()),
                                                               partials.num_rows))
        else:
            partials = group_merge(rows, _KEYS, plan.raw_aggregates(),
                                   plan.raw_output_names(), plan.partial_names)
        self._pending.append(partials)
        self._pending_rows += partials.num_rows
        compacted = 0 if self._compacted is None else self._compacted.num_rows
        if self._pending_rows >= max(_COMPACT_AT, compacted):
            self.compact()

    def table(self) -> Optional[pa.Table]:
        """Every partial row held (not merged)."""
        self._aggregate_rows()
        parts = ([] if self._compacted is None else [self._compacted]) + self._pending
        return concat(parts) if parts else None

    def compact(self) -> None:
        """Merge every partial into one row per (key, pane)."""
        table = self.table()
        if table is None:
            return
        plan = self.plan
        self._compacted = group_merge(table, _KEYS, plan.merge_aggregates(),
                                      plan.merge_output_names(), plan.partial_names)
        self._pending = []
        self._pending_rows = 0

    def drop_below(self, pane: int) -> None:
        """Forget the panes below ``pane`` (their windows are all emitted)."""
        table = self.table()
        if table is None:
            return
        kept = table.filter(pc.greater_equal(table.column("__p"), pane))
        self._compacted = kept if kept.num_rows else None
        self._pending = []
        self._pending_rows = 0
        if kept.num_rows == 0:
            self._min_pane = self._max_pane = None
        else:
            self._min_pane = pc.min(kept.column("__p")).as_py()

    def below(self, pane: int) -> Optional[pa.Table]:
        """The partial rows of panes below ``pane`` (not removed)."""
        table = self.table()
        if table is None:
            return None
        return table.filter(pc.less(table.column("__p"), pane))


class PaneWindows(WindowEngine):
    """Tumbling, hopping and sliding windows over panes; see the module docstring."""

    def __init__(self, spec: TimeWindowSpec, plan: AggregationPlan, grace_us: int) -> None:
        super().__init__(plan, grace_us)
        self.spec = spec
        self.pane_us = spec.pane_us
        self.size_us = spec.size_us
        self.stride = spec.stride
        self.width = spec.width
        self.per_pane = spec.windows_per_pane
        self.anchored = spec.anchored
        self.store = PaneStore(plan)
        #: Windows below this index have been emitted (None: none yet).
        self.closed: Optional[int] = None

    # -- lateness ------------------------------------------------------------------
    def _first_end(self, panes: Any) -> Any:
        """End (in panes) of the earliest window holding each pane (ints or an array)."""
        if self.anchored or self.stride == self.width:
            return panes + 1 if isinstance(panes, int) else pc.add(panes, 1)
        if isinstance(panes, int):
            return ((panes - self.width) // self.stride + 1) * self.stride + self.width
        windows = pc.add(floor_div(pc.subtract(panes, self.width), self.stride), 1)
        return pc.add(pc.multiply(windows, self.stride), self.width)

    def late_mask(self, frame: Frame, marks: BatchWatermarks) -> Optional[pa.Array]:
        # A row is late when the earliest window holding it had closed (its
        # end plus grace reached by the watermark the row found): it goes
        # whole to the late channel, never into only some of its windows.
        upper = marks.upper
        if upper is None:
            return None
        pane_us = self.pane_us
        if self._first_end(frame.low // pane_us) * pane_us + self.grace_us > upper:
            return None
        ends = self._first_end(floor_div(frame.times, pane_us, frame.low))
        closes = pc.add(pc.multiply(ends, pane_us), self.grace_us)
        return pc.less_equal(closes, marks.rows())

    def late_reason(self, time_us: int, watermark_us: Optional[int]) -> str:
        pane = time_us // self.pane_us
        if self.anchored:
            window = pane - self.width + 1
        else:
            window = (pane - self.width) // self.stride + 1
        start = window * self.stride * self.pane_us
        return (f"late: event time {_s(time_us)} < watermark {_s(watermark_us)} for "
                f"{self.spec.kind} window [{_s(start)}, {_s(start + self.size_us)}) "
                f"(closed at its end plus grace {_s(self.grace_us)})")

    # -- input -----------------------------------------------------------------------
    def add(self, frame: Frame, touched: bool = False) -> Optional[pa.Table]:
        pane_us = self.pane_us
        panes = floor_div(frame.times, pane_us, frame.low)
        columns = {"__k": frame.keys, "__p": panes}
        columns.update(frame.values)
        rows = pa.table(columns)
        low, high = frame.low // pane_us, frame.high // pane_us
        if not touched:
            self.store.add_rows(rows, low, high)
            return None
        plan = self.plan
        partials = group_merge(rows, _KEYS, plan.raw_aggregates(), plan.raw_output_names(),
                               plan.partial_names)
        self.store.add(partials, low, high)
        return partials

    # -- output ----------------------------------------------------------------------
    def _expand(self, table: pa.Table, low: Optional[int], high: Optional[int],
                marker: Optional[int] = None) -> pa.Table:
        """One row per (pane, window holding it) for windows in ``[low, high)``."""
        if self.per_pane == 1 and self.stride == 1 and marker is None and not self.anchored:
            # Tumbling, closing: the window is the pane, and the caller passes
            # only panes below ``high`` of windows not yet emitted.
            return table.append_column("__w", table.column("__p"))
        panes = flat(table.column("__p"))
        base = floor_div(panes, self.stride)
        parts = []
        for j in range(self.per_pane):
            window = pc.subtract(base, j) if j else base
            mask = pc.greater(pc.add(pc.multiply(window, self.stride), self.width), panes)
            if low is not None:
                mask = pc.and_(mask, pc.greater_equal(window, low))
            if high is not None:
                mask = pc.and_(mask, pc.less(window, high))
            part = table.filter(mask).append_column("__w", window.filter(mask))
            if self.anchored:
                anchor = pc.equal(panes.filter(mask),
                                  pc.add(window.filter(mask), self.width - 1))
                part = part.append_column("__a", pc.cast(anchor, pa.int8()))
            if marker is not None:
                part = part.append_column("__t", pa.repeat(pa.scalar(marker, pa.int8()),
                                                           part.num_rows))
            parts.append(part)
        return concat(parts)

    def _windows(self, expanded: pa.Table, touched_only: bool = False) -> Optional[pa.Table]:
        plan = self.plan
        aggregates = plan.merge_aggregates()
        outputs = plan.merge_output_names()
        names = list(plan.partial_names)
        if self.anchored:
            aggregates.append(("__a", "max"))
            outputs.append("__a_max")
            names.append("__a")
        if touched_only:
            aggregates.append(("__t", "max"))
            outputs.append("__t_max")
            names.append("__t")
        grouped = group_merge(expanded.select(["__k", "__w"] + [a[0] for a in aggregates]),
                              ["__k", "__w"], aggregates, outputs, names)
        if self.anchored:
            grouped = grouped.filter(pc.equal(grouped.column("__a"), 1))
        if touched_only:
            grouped = grouped.filter(pc.equal(grouped.column("__t"), 1))
        start = pc.multiply(flat(grouped.column("__w")), self.stride * self.pane_us)
        return finish_windows(plan, grouped, flat(grouped.column("__k")), start,
                              pc.add(start, self.size_us))

    def current(self, touched: Optional[pa.Table]) -> Optional[pa.Table]:
        if touched is None or touched.num_rows == 0:
            return None
        table = self.store.table()
        assert table is not None
        keys = pc.unique(flat(touched.column("__k")))
        mine = table.filter(pc.is_in(table.column("__k"), value_set=keys, skip_nulls=False))
        nulls = touched.select(["__k", "__p"])
        for name in self.plan.partial_names:
            nulls = nulls.append_column(name, pa.nulls(nulls.num_rows,
                                                       table.schema.field(name).type))
        expanded = concat([self._expand(nulls, self.closed, None, marker=1),
                           self._expand(mine, self.closed, None, marker=0)])
        return self._windows(expanded, touched_only=True)

    def close(self, watermark_us: Optional[int]) -> Optional[pa.Table]:
        if watermark_us is None:
            return None
        bound_pane = (watermark_us - self.grace_us) // self.pane_us
        # Window w ends at pane w*stride + width: closed when that is <= bound_pane.
        upto = (bound_pane - self.width) // self.stride + 1
        return self._close_until(upto)

    def _close_until(self, upto: int) -> Optional[pa.Table]:
        if self.closed is not None and upto <= self.closed:
            return None
        store = self.store
        out = None
        if store.min_pane is not None and store.min_pane < (upto - 1) * self.stride + self.width:
            rows = store.below((upto - 1) * self.stride + self.width)
            if rows is not None and rows.num_rows:
                out = self._windows(self._expand(rows, self.closed, upto))
            store.drop_below(upto * self.stride)
        self.closed = upto
        return out

    def flush(self) -> Optional[pa.Table]:
        top = self.store.max_pane
        if top is None:
            return None
        return self._close_until(top // self.stride + 1)

    def next_close_us(self) -> Optional[int]:
        low = self.store.min_pane
        if low is None:
            return None
        window = (low - self.width) // self.stride + 1
        if self.closed is not None and window < self.closed:
            window = self.closed
        return (window * self.stride + self.width) * self.pane_us + self.grace_us

    @property
    def open_rows(self) -> int:
        return self.store.rows

