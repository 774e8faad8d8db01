"""Session windows: per key, events less than ``gap`` apart, merged columnar.

An open session is a row ``(__k, __s, __e, partials)``: its first event time,
its last event time plus the gap (the window's end), and its partial
aggregates. A batch's rows are intervals ``[t, t + gap)`` of one event each;
they are merged with the open sessions of the same keys in one pass with no
per-row Python: the interval ends are sorted by (key, time, end-before-start)
and a running sum of +1 (start) / -1 (end) finds where the count of open
intervals leaves zero: there a merged session ends. (The sum returns to zero
at the end of each key, so keys never bleed into each other.) An
out-of-order event that bridges two sessions merges them.

A session closes when the watermark passes its end plus grace. An event is
late when its time is below the watermark it finds minus grace: it could
belong to a session already emitted, so it goes to the late channel.
"""
from __future__ import annotations

from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from .aggregations import AggregationPlan
from .arrow_ops import concat, flat, group_merge, seconds_text as _s
from .columns import Frame
from .engine import MergedWindows
from .specs import Session
from .watermark import BatchWatermarks

__all__ = ["SessionWindows"]


class SessionWindows(MergedWindows):
    """Open sessions as one Arrow table; see the module docstring."""

    def __init__(self, spec: Session, plan: AggregationPlan, grace_us: int) -> None:
        super().__init__(plan, grace_us)
        self.spec = spec
        self.gap_us = spec.gap_us
        self._state: Optional[pa.Table] = None

    def late_mask(self, frame: Frame, marks: BatchWatermarks) -> Optional[pa.Array]:
        # Below the watermark minus grace, a row could belong to a session
        # already closed: late.
        if marks.upper is None or frame.low >= marks.upper - self.grace_us:
            return None
        return pc.less(pc.add(frame.times, self.grace_us), marks.rows())

    def late_reason(self, time_us: int, watermark_us: Optional[int]) -> str:
        bound = None if watermark_us is None else watermark_us - self.grace_us
        return (f"late: event time {_s(time_us)} < watermark {_s(watermark_us)} for "
                f"session windows closed up to {_s(bound)} "
                f"(gap {_s(self.gap_us)}, grace {_s(self.grace_us)})")

    def add(self, frame: Frame, touched: bool = False) -> Optional[pa.Table]:
        plan = self.plan
        n = len(frame)
        columns = {"__k": frame.keys, "__s": frame.times,
                   "__e": pc.add(frame.times, self.gap_us)}
        columns.update(zip(plan.partial_names, plan.row_partials(frame.values, n)))
        columns["__t"] = pa.repeat(pa.scalar(1, pa.int8()), n)
        rows = pa.table(columns)
        state = self._state
        if state is None:
            merged = self._merge(rows)
            self._state = merged.drop_columns(["__t"])
            return merged
        keys = pc.unique(frame.keys)
        mine = pc.is_in(state.column("__k"), value_set=keys, skip_nulls=False)
        related = state.filter(mine)
        related = related.append_column("__t", pa.repeat(pa.scalar(0, pa.int8()),
                                                         related.num_rows))
        merged = self._merge(concat([related, rows]))
        self._state = concat([state.filter(pc.invert(mine)), merged.drop_columns(["__t"])])
        return merged

    def _merge(self, table: pa.Table) -> pa.Table:
        """Merge intervals closer than the gap, per key (see the module docstring)."""
        n = table.num_rows
        ids = pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), 1)
        keys = table.column("__k")
        ends = pa.table({"__k": keys, "__x": table.column("__s"),
                         "__d": pa.repeat(pa.scalar(1, pa.int64()), n), "__i": ids})
        ends = concat([ends, pa.table({"__k": keys, "__x": table.column("__e"),
                                       "__d": pa.repeat(pa.scalar(-1, pa.int64()), n),
                                       "__i": ids})])
        ends = ends.sort_by([("__k", "ascending"), ("__x", "ascending"), ("__d", "ascending")])
        delta = flat(ends.column("__d"))
        running = pc.cumulative_sum(delta)
        begins = pc.and_(pc.equal(delta, 1), pc.equal(running, 1))
        group = pc.cumulative_sum(pc.cast(begins, pa.int64()))
        starts = pc.equal(delta, 1)
        start_ids = flat(ends.column("__i")).filter(starts)
        start_groups = group.filter(starts)
        of_row = start_groups.take(pc.sort_indices(start_ids))
        table = table.append_column("__g", of_row)
        plan = self.plan
        aggregates = [("__s", "min"), ("__e", "max")] + plan.merge_aggregates() + [("__t", "max")]
        outputs = ["__s_min", "__e_max"] + plan.merge_output_names() + ["__t_max"]
        names = ["__s", "__e"] + plan.partial_names + ["__t"]
        merged = group_merge(table, ["__k", "__g"], aggregates, outputs, names)
        return merged.drop_columns(["__g"])

    def close(self, watermark_us: Optional[int]) -> Optional[pa.Table]:
        if watermark_us is None:
            return None
        bound = watermark_us - self.grace_us
        state = self._state
        if state is None:
            return None
        done = pc.less_equal(state.column("__e"), bound)
        if not pc.any(done).as_py():
            return None
        closed = state.filter(done)
        rest = state.filter(pc.invert(done))
        self._state = rest if rest.num_rows else None
        return self._finish(closed)

    def flush(self) -> Optional[pa.Table]:
        state, self._state = self._state, None
        return None if state is None else self._finish(state)

    def next_close_us(self) -> Optional[int]:
        if self._state is None:
            return None
        end = pc.min(self._state.column("__e")).as_py()
        return None if end is None else end + self.grace_us

    @property
    def open_rows(self) -> int:
        return 0 if self._state is None else self._state.num_rows
