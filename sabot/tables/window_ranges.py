"""Faust's window types for windowed tables: which windows a timestamp falls in.

``HoppingWindow``, ``TumblingWindow`` and ``SlidingWindow`` answer what
``faust.windows`` answers, with the same numbers, so that a windowed table's
keys are Faust's: ``(key, (start, end))`` where a hopping or tumbling window's
``end`` is ``start + size - 0.1`` (Faust's ``WindowRange_from_start``) and a
sliding window's range is ``(t - before, t + after)``. Sabot's Faust users
read and write ``table[key, window_range]``; the same numbers keep that code
and a shared changelog working.

Two things are Sabot's own, for event time: ``closes_at(range)`` is the
instant a window is complete (``start + size`` for hopping and tumbling, the
range's end for sliding), which the watermark is compared with; and hopping
ranges are computed in floating point, so sub-second windows work (Faust
steps with ``range(int(start), int(t) + 1, int(step))``, which gives the same
windows for whole seconds and fails for ``step < 1``).
"""
from __future__ import annotations

import abc
from typing import List, Optional, Tuple

from ..durations import Seconds, want_seconds
from ..exceptions import ConfigurationError

__all__ = ["WindowRange", "Seconds", "Window", "HoppingWindow", "TumblingWindow",
           "SlidingWindow", "want_seconds"]

#: ``(start, end)`` in seconds since the epoch (Faust's ``WindowRange``).
WindowRange = Tuple[float, float]

#: Faust ends a window 0.1 s before the next one starts.
_END_MARGIN = 0.1


def range_from_start(start: float, size: float) -> WindowRange:
    """Faust's ``WindowRange_from_start``: ``(start, start + size - 0.1)``."""
    return (start, start + size - _END_MARGIN)


class Window(abc.ABC):
    """A window type: the ranges of a timestamp, and when a range is stale."""

    #: Seconds after which a window's data is removed (``None``: kept).
    expires: Optional[float]

    @abc.abstractmethod
    def ranges(self, timestamp: float) -> List[WindowRange]:
        """Every window range ``timestamp`` falls in, oldest first."""

    @abc.abstractmethod
    def current(self, timestamp: float) -> WindowRange:
        """The latest window range that ``timestamp`` falls in."""

    @abc.abstractmethod
    def earliest(self, timestamp: float) -> WindowRange:
        """The earliest window range that ``timestamp`` falls in."""

    def delta(self, timestamp: float, d: Seconds) -> WindowRange:
        """The current window of ``timestamp - d`` (Faust's ``delta``)."""
        return self.current(timestamp - want_seconds(d, "delta", allow_zero=True))

    @abc.abstractmethod
    def stale(self, timestamp: float, latest_timestamp: float) -> bool:
        """Whether a window ending at ``timestamp`` has expired by ``latest_timestamp``."""

    @abc.abstractmethod
    def closes_at(self, window_range: WindowRange) -> float:
        """The event time at which ``window_range`` holds all its events."""


class HoppingWindow(Window):
    """Fixed-size, overlapping windows that start every ``step`` seconds."""

    def __init__(self, size: Seconds, step: Seconds, expires: Optional[Seconds] = None) -> None:
        self.size = want_seconds(size, "window size")
        self.step = want_seconds(step, "window step")
        if self.step > self.size:
            raise ConfigurationError(
                f"window step ({self.step}) is larger than its size ({self.size}): "
                f"events between windows would belong to none")
        self.expires = want_seconds(expires, "expires") if expires else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} size={self.size} step={self.step} expires={self.expires}>"

    # Windows are numbered: window ``n`` starts at ``n * step - size + step``
    # (Faust's ``_start_initial_range`` of a timestamp in step ``n``). Computing
    # a start from its number alone gives the same float for every timestamp
    # that falls in it, so a window is always the same table key.
    def _start(self, n: int) -> float:
        return n * self.step - self.size + self.step

    def _numbers(self, timestamp: float) -> range:
        first = int(timestamp // self.step)
        # At least one: a rounding error must never leave an event in no window.
        count = max(int((timestamp - self._start(first)) // self.step) + 1, 1)
        return range(first, first + count)

    def ranges(self, timestamp: float) -> List[WindowRange]:
        return [range_from_start(self._start(n), self.size) for n in self._numbers(timestamp)]

    def current(self, timestamp: float) -> WindowRange:
        return range_from_start(self._start(self._numbers(timestamp)[-1]), self.size)

    def earliest(self, timestamp: float) -> WindowRange:
        return range_from_start(self._start(int(timestamp // self.step)), self.size)

    def stale(self, timestamp: float, latest_timestamp: float) -> bool:
        if not self.expires:
            return False
        return timestamp <= self.current(latest_timestamp - self.expires)[0]

    def closes_at(self, window_range: WindowRange) -> float:
        return window_range[0] + self.size


class TumblingWindow(HoppingWindow):
    """Fixed-size, non-overlapping, gap-less windows."""

    def __init__(self, size: Seconds, expires: Optional[Seconds] = None) -> None:
        super().__init__(size, size, expires)

    def __repr__(self) -> str:
        return f"<TumblingWindow size={self.size} expires={self.expires}>"

    # One window per timestamp: the same numbers as HoppingWindow's, computed once.
    def ranges(self, timestamp: float) -> List[WindowRange]:
        return [self.current(timestamp)]

    def current(self, timestamp: float) -> WindowRange:
        start = self._start(int(timestamp // self.step))
        return (start, start + self.size - _END_MARGIN)

    def earliest(self, timestamp: float) -> WindowRange:
        return self.current(timestamp)


class SlidingWindow(Window):
    """One window per event: ``(t - before, t + after)`` (Faust's sliding window)."""

    def __init__(self, before: Seconds, after: Seconds, expires: Optional[Seconds] = None) -> None:
        self.before = want_seconds(before, "before", allow_zero=True)
        self.after = want_seconds(after, "after", allow_zero=True)
        self.expires = want_seconds(expires, "expires") if expires else None

    def __repr__(self) -> str:
        return (f"<SlidingWindow before={self.before} after={self.after} "
                f"expires={self.expires}>")

    def ranges(self, timestamp: float) -> List[WindowRange]:
        return [self.current(timestamp)]

    def current(self, timestamp: float) -> WindowRange:
        return (timestamp - self.before, timestamp + self.after)

    def earliest(self, timestamp: float) -> WindowRange:
        return self.current(timestamp)

    def stale(self, timestamp: float, latest_timestamp: float) -> bool:
        if not self.expires:
            return False
        return timestamp <= latest_timestamp - self.expires

    def closes_at(self, window_range: WindowRange) -> float:
        return window_range[1]
