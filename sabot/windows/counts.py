"""Count windows: per key, a window of every ``n`` events, in arrival order.

An open count window is a row ``(__k, __c, __s, __e, partials)``: the events
counted so far (fewer than ``n``), the smallest and largest event time, and
the partial aggregates. A batch's rows are stacked under the open windows of
their keys, sorted stably by key (arrival order is kept), and numbered
within their key by a running count that starts at the open window's count;
row ``i`` of a key then belongs to window ``i // n``. One group_by merges
them; windows that reach ``n`` are complete and emitted, at most one per key
stays open. Event time only labels the windows (``window_start``/``_end``
are the first and last event times in them): there is no watermark, no
grace and nothing is late. When the stream ends, the incomplete windows are
emitted too (their ``count`` says how full they got).
"""
from __future__ import annotations

from typing import List, Optional

import pyarrow as pa
import pyarrow.compute as pc

from .aggregations import AggregationPlan
from .arrow_ops import concat, flat, group_merge
from .columns import Frame
from .engine import MergedWindows
from .specs import Count
from .watermark import BatchWatermarks

__all__ = ["CountWindows"]


class CountWindows(MergedWindows):
    """Open count windows as one Arrow table; see the module docstring."""

    def __init__(self, spec: Count, plan: AggregationPlan) -> None:
        super().__init__(plan, 0)
        self.n = spec.n
        self._state: Optional[pa.Table] = None
        self._complete: List[pa.Table] = []

    def late_mask(self, frame: Frame, marks: BatchWatermarks) -> Optional[pa.Array]:
        return None

    def late_reason(self, time_us: int, watermark_us: Optional[int]) -> str:
        raise AssertionError("count windows have no late events")

    def add(self, frame: Frame, touched: bool = False) -> pa.Table:
        plan = self.plan
        m = len(frame)
        one = pa.repeat(pa.scalar(1, pa.int64()), m)
        columns = {"__k": frame.keys, "__c": one, "__s": frame.times, "__e": frame.times}
        columns.update(zip(plan.partial_names, plan.row_partials(frame.values, m)))
        columns["__t"] = pa.repeat(pa.scalar(1, pa.int8()), m)
        rows = pa.table(columns)
        state = self._state
        rest = None
        if state is not None:
            mine = pc.is_in(state.column("__k"), value_set=pc.unique(frame.keys),
                            skip_nulls=False)
            related = state.filter(mine)
            rest = state.filter(pc.invert(mine))
            related = related.append_column("__t", pa.repeat(pa.scalar(0, pa.int8()),
                                                             related.num_rows))
            # Open windows first: the stable sort keeps them ahead of new rows.
            rows = concat([related, rows])
        ids = pc.dictionary_encode(flat(rows.column("__k")), null_encoding="encode").indices
        order = pc.sort_indices(ids)          # stable: arrival order within a key
        rows = rows.take(order)
        ids = ids.take(order)
        weight = flat(rows.column("__c"))
        before = pc.subtract(pc.cumulative_sum(weight), weight)   # events ahead, all keys
        total = len(ids)
        previous = pa.concat_arrays([pa.array([-1], ids.type), ids.slice(0, total - 1)])
        first = pc.not_equal(ids, previous)
        run = pc.subtract(pc.cumulative_sum(pc.cast(first, pa.int64())), 1)
        base = before.filter(first).take(run)
        window = pc.divide(pc.subtract(before, base), self.n)   # >= 0: truncation is floor
        rows = rows.append_column("__w", window)
        aggregates = ([("__c", "sum"), ("__s", "min"), ("__e", "max")]
                      + plan.merge_aggregates() + [("__t", "max")])
        outputs = (["__c_sum", "__s_min", "__e_max"] + plan.merge_output_names()
                   + ["__t_max"])
        names = ["__c", "__s", "__e"] + plan.partial_names + ["__t"]
        merged = group_merge(rows, ["__k", "__w"], aggregates, outputs, names)
        full = pc.equal(merged.column("__c"), self.n)
        complete = merged.filter(full)
        if complete.num_rows:
            self._complete.append(complete)
        still_open = merged.filter(pc.invert(full)).drop_columns(["__w", "__t"])
        parts = [t for t in (rest, still_open) if t is not None and t.num_rows]
        self._state = concat(parts) if parts else None
        return merged

    def close(self, watermark_us: Optional[int]) -> Optional[pa.Table]:
        if not self._complete:
            return None
        complete, self._complete = concat(self._complete), []
        return self._finish(complete)

    def flush(self) -> Optional[pa.Table]:
        parts = self._complete + ([self._state] if self._state is not None else [])
        self._complete, self._state = [], None
        if not parts:
            return None
        names = ["__k", "__c", "__s", "__e"] + self.plan.partial_names
        return self._finish(concat([p.select(names) for p in parts]))

    def next_close_us(self) -> Optional[int]:
        return None

    @property
    def open_rows(self) -> int:
        return 0 if self._state is None else self._state.num_rows
