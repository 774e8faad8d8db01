"""The contract between the window operator and the state of one kind of window.

An engine owns the open windows of one ``stream.window(...).agg(...)``:
partial aggregates, columnar, in memory. It is the seam where a durable
store would hold them (the stateful core's job): ``add`` is the only way
state changes with input, and the operator releases (acknowledges) a batch
only after ``add`` returned. State is **in memory**: a crash loses the open
windows, and since their input was acknowledged, it is not delivered again.

Every table an engine returns has the columns ``__k`` (the key),
``window_start`` and ``window_end`` (int64 microseconds of event time) and
then one column per aggregation, in the order of ``.agg(...)``.
"""
from __future__ import annotations

import abc
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc

from .aggregations import AggregationPlan
from .arrow_ops import flat
from .columns import Frame
from .watermark import BatchWatermarks

__all__ = ["WindowEngine", "finish_windows"]


class WindowEngine(abc.ABC):
    """Open windows of one kind; see the module docstring."""

    def __init__(self, plan: AggregationPlan, grace_us: int) -> None:
        self.plan = plan
        self.grace_us = grace_us

    @abc.abstractmethod
    def late_mask(self, frame: Frame, marks: BatchWatermarks) -> Optional[pa.Array]:
        """Rows whose window the watermark they found had closed (``None``: none).

        ``marks.upper`` bounds every row's watermark and ``frame.low`` is the
        earliest time: a frame with no late row is answered without a pass.
        """

    @abc.abstractmethod
    def late_reason(self, time_us: int, watermark_us: Optional[int]) -> str:
        """Why a row at ``time_us`` is late, for the late channel."""

    @abc.abstractmethod
    def add(self, frame: Frame, touched: bool = False) -> Any:
        """Fold the (not late) rows into the state.

        With ``touched``, returns what ``current`` needs to report the
        windows these rows updated (an engine may fold rows more cheaply
        when nobody asks).
        """

    @abc.abstractmethod
    def current(self, touched: Any) -> Optional[pa.Table]:
        """The current aggregates of the windows ``add`` just updated."""

    @abc.abstractmethod
    def close(self, watermark_us: Optional[int]) -> Optional[pa.Table]:
        """Remove and return the windows the watermark closed (``None``: none)."""

    @abc.abstractmethod
    def flush(self) -> Optional[pa.Table]:
        """Remove and return every open window (the stream ended)."""

    @abc.abstractmethod
    def next_close_us(self) -> Optional[int]:
        """The watermark at which the next window would close (``None``: none open)."""

    @property
    @abc.abstractmethod
    def open_rows(self) -> int:
        """Rows of partial state held (panes, sessions or count windows)."""


def finish_windows(plan: AggregationPlan, table: pa.Table, keys: pa.Array,
                   start: pa.Array, end: pa.Array) -> Optional[pa.Table]:
    """The output table from merged partials ``s<i>`` and the window bounds."""
    if table.num_rows == 0:
        return None
    results = plan.finish(table)
    columns = {"__k": keys, "window_start": start, "window_end": end}
    columns.update(results)
    out = pa.table(columns)
    return out.sort_by([("window_start", "ascending"), ("window_end", "ascending"),
                        ("__k", "ascending")])


class MergedWindows(WindowEngine):
    """Engines whose state is one merged row per window (sessions, count windows).

    Rows carry the key ``__k``, the window's ``__s``/``__e`` and ``__t`` (1 on
    the windows the last ``add`` touched).
    """

    def _finish(self, table: pa.Table) -> Optional[pa.Table]:
        return finish_windows(self.plan, table, flat(table.column("__k")),
                              flat(table.column("__s")), flat(table.column("__e")))

    def current(self, touched: Optional[pa.Table]) -> Optional[pa.Table]:
        if touched is None:
            return None
        return self._finish(touched.filter(pc.equal(touched.column("__t"), 1)))
