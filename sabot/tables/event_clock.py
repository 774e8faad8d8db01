"""Event time per table partition, in seconds, on ``sabot.windows.watermark``.

A windowed table's keys live in one partition each, so each partition's
windows close by that partition's own watermark: the largest event time seen
in it minus the allowed lateness, never going back. The watermark logic,
idleness included, is the Arrow windows' (``sabot.windows.watermark``): one
``Watermarks`` per partition, so its "every partition idle" rule is this
partition's own: once a partition has been silent for ``idle_timeout``
seconds of wall time, its event time goes on with the wall clock since its
last event, and its last windows close without waiting for another event.
An event that arrives afterwards for a closed window is late (and reported),
not silently counted in a window already reported closed.

This module only adapts units (seconds as floats here, microseconds there)
and remembers which watermark each partition's windows were last closed at.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional

from ..windows.watermark import Watermarks

__all__ = ["EventClock", "NO_WATERMARK"]

#: The watermark of a partition before its first event.
NO_WATERMARK = -math.inf
_US = 1_000_000


class EventClock:
    """Watermarks of the partitions of one windowed table."""

    def __init__(self, allowed_lateness: float = 0.0, idle_timeout: Optional[float] = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.allowed_lateness = allowed_lateness
        self.idle_timeout = idle_timeout
        self._lateness_us = round(allowed_lateness * _US)
        self._monotonic = monotonic
        self._partitions: Dict[int, Watermarks] = {}
        #: The watermark each partition had when last observed or advanced.
        self._last: Dict[int, float] = {}
        #: When each partition's last event came (``monotonic``), to tell idleness cheaply.
        self._seen: Dict[int, float] = {}

    def __repr__(self) -> str:
        marks = {p: self.watermark(p) for p in self._partitions}
        return f"<EventClock lateness={self.allowed_lateness} idle={self.idle_timeout} {marks}>"

    def watermark(self, partition: int) -> float:
        """The partition's watermark now, idleness included (``-inf`` before its first event)."""
        known = self._last.get(partition)
        if known is None:
            return NO_WATERMARK
        timeout = self.idle_timeout
        if timeout is None or self._monotonic() - self._seen[partition] < timeout:
            return known  # not idle: what the last event made it
        current = self._partitions[partition].current()
        if current is not None and current / _US > known:
            known = self._last[partition] = current / _US
        return known

    def max_event_time(self, partition: int) -> float:
        """The largest event time seen in the partition (``-inf`` before any)."""
        marks = self._partitions.get(partition)
        own = marks.partition_watermark(partition) if marks is not None else None
        return NO_WATERMARK if own is None else (own + self._lateness_us) / _US

    @property
    def partitions(self) -> List[int]:
        """Every partition seen so far."""
        return list(self._partitions)

    def observe(self, partition: int, event_time: float) -> float:
        """Record an event of ``partition``; returns the partition's watermark."""
        known = self.watermark(partition)  # an idle advance first, so it never goes back
        marks = self._partitions.get(partition)
        if marks is None:
            marks = self._partitions[partition] = Watermarks(
                self._lateness_us, self.idle_timeout, self._monotonic)
        event_us = round(event_time * _US)
        marks.observe(partition, event_us)
        self._seen[partition] = self._monotonic()
        # Just observed, so not idle: the watermark is the largest event time
        # minus the lateness, never less than before (Watermarks.current's rule).
        mark = (event_us - self._lateness_us) / _US
        if mark < known:
            return known
        self._last[partition] = mark
        return mark

    def advance_idle(self) -> List[int]:
        """The partitions whose watermark idleness moved since it was last read."""
        if self.idle_timeout is None:
            return []
        moved = []
        for partition in self._partitions:
            before = self._last.get(partition, NO_WATERMARK)
            if self.watermark(partition) > before:
                moved.append(partition)
        return moved

    def forget(self, partition: int) -> None:
        """Drop a partition (revoked: its new owner keeps its own clock)."""
        self._partitions.pop(partition, None)
        self._last.pop(partition, None)
        self._seen.pop(partition, None)
