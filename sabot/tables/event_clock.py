"""Event time per partition: the watermark, and partitions that fall idle.

A partition's watermark is the largest event time seen in it minus the
allowed lateness; it never goes back. Windows compare their end (plus grace)
with it to know they are complete.

A partition that receives nothing would hold its windows open for ever (the
pain of Faust's windows, which only close on the next event). So once a
partition has been silent for ``idle_timeout`` seconds of wall time, its event
time is taken to have moved on with the wall clock since its last event:
``largest event time + seconds since that event``. Its windows then close as
if the stream had kept flowing, and an event that arrives afterwards for a
closed window is late (and reported as such), not silently counted in a
window that was already reported closed.

Partitions are whatever the caller names them (a Kafka partition number,
``None`` for a memory channel); they are independent, as a Kafka
partition's order is.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, Hashable, List, Optional

__all__ = ["EventClock"]

NO_WATERMARK = -math.inf


class _Partition:
    __slots__ = ("max_event_time", "watermark", "last_seen")

    def __init__(self) -> None:
        self.max_event_time = NO_WATERMARK
        self.watermark = NO_WATERMARK
        #: Wall-clock (monotonic) time of the last event, for idleness.
        self.last_seen = 0.0


class EventClock:
    """Watermarks of the partitions of one stream of events."""

    def __init__(self, allowed_lateness: float = 0.0, idle_timeout: Optional[float] = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.allowed_lateness = allowed_lateness
        self.idle_timeout = idle_timeout
        self._monotonic = monotonic
        self._partitions: Dict[Hashable, _Partition] = {}

    def __repr__(self) -> str:
        marks = {p: s.watermark for p, s in self._partitions.items()}
        return f"<EventClock lateness={self.allowed_lateness} idle={self.idle_timeout} {marks}>"

    def watermark(self, partition: Hashable) -> float:
        """The partition's watermark (``-inf`` before its first event)."""
        state = self._partitions.get(partition)
        return state.watermark if state is not None else NO_WATERMARK

    def max_event_time(self, partition: Hashable) -> float:
        """The largest event time seen in the partition (``-inf`` before any)."""
        state = self._partitions.get(partition)
        return state.max_event_time if state is not None else NO_WATERMARK

    @property
    def partitions(self) -> List[Hashable]:
        """Every partition seen so far."""
        return list(self._partitions)

    def observe(self, partition: Hashable, event_time: float) -> float:
        """Record an event of ``partition``; returns the partition's watermark."""
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = _Partition()
        state.last_seen = self._monotonic()
        if event_time > state.max_event_time:
            state.max_event_time = event_time
            mark = event_time - self.allowed_lateness
            if mark > state.watermark:
                state.watermark = mark
        return state.watermark

    def advance_idle(self) -> List[Hashable]:
        """Move the watermark of every idle partition; returns those that moved."""
        timeout = self.idle_timeout
        if timeout is None:
            return []
        now = self._monotonic()
        moved = []
        for partition, state in self._partitions.items():
            silent = now - state.last_seen
            if silent < timeout or state.max_event_time == NO_WATERMARK:
                continue
            mark = state.max_event_time + silent - self.allowed_lateness
            if mark > state.watermark:
                state.watermark = mark
                moved.append(partition)
        return moved

    def forget(self, partition: Hashable) -> None:
        """Drop a partition (revoked: its new owner keeps its own clock)."""
        self._partitions.pop(partition, None)
