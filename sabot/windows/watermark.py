"""Event-time progress: one watermark per source partition, combined by minimum.

A partition's watermark is the largest event time seen in it minus the
allowed ``lateness``: the promise that no event older than that is still to
come from it. The operator's watermark is the minimum over partitions, so a
partition that lags holds windows open until it catches up (otherwise its
events would all be late).

A partition that goes quiet would hold the watermark for ever, and the last
windows would close only when the next event arrives (Faust's windows, and
Kafka Streams' suppression, behave so). With ``idle_timeout``, a partition
that has had no event for that many seconds of wall clock is *idle*:

* while another partition is active, the idle one no longer holds the
  minimum back (Flink's ``withIdleness``);
* when every partition is idle, event time is assumed to go on with the wall
  clock: an idle partition's watermark is its own plus the seconds since its
  last event. So the last windows close about ``end + grace`` after their
  end, as the clock tells, without another event.

An idle partition that wakes up with old events finds their windows closed:
those events are late, and go to the late channel.

Partitions are told apart by the position of a batch's first value
(``sabot.types.Position``): everything but its last element names the log
the offset belongs to (``(topic, partition)`` for Kafka, ``(stream,)`` for
Redis); a batch with no positions (memory) is one partition.

Times are integer microseconds of event time; the clock is
``time.monotonic`` seconds.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Hashable, Optional

from ..types import BatchT

__all__ = ["Watermarks", "partition_of"]


def partition_of(batch: BatchT) -> Hashable:
    """The source partition a batch came from (``None`` when it has no position)."""
    positions = batch.positions
    if not positions:
        return None
    first = positions[0]
    if isinstance(first, tuple) and len(first) > 1:
        return first[:-1]
    return None


class _Partition:
    __slots__ = ("max_event", "last_seen")

    def __init__(self, max_event: int, last_seen: float) -> None:
        self.max_event = max_event
        self.last_seen = last_seen


class Watermarks:
    """Per-partition watermarks and their minimum, which never goes back."""

    def __init__(self, lateness_us: int = 0, idle_timeout: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lateness_us = lateness_us
        self.idle_timeout = idle_timeout
        self.clock = clock
        self._partitions: Dict[Any, _Partition] = {}
        self._current: Optional[int] = None

    def observe(self, partition: Hashable, max_event_us: int) -> None:
        """Events up to ``max_event_us`` arrived from ``partition`` just now."""
        now = self.clock()
        state = self._partitions.get(partition)
        if state is None:
            self._partitions[partition] = _Partition(max_event_us, now)
        else:
            if max_event_us > state.max_event:
                state.max_event = max_event_us
            state.last_seen = now

    @property
    def partitions(self) -> int:
        """Partitions seen so far."""
        return len(self._partitions)

    def partition_watermark(self, partition: Hashable) -> Optional[int]:
        """One partition's own watermark (without idle advance), or None if unseen."""
        state = self._partitions.get(partition)
        return None if state is None else state.max_event - self.lateness_us

    def _idle(self, state: _Partition, now: float) -> bool:
        timeout = self.idle_timeout
        return timeout is not None and now - state.last_seen >= timeout

    def current(self) -> Optional[int]:
        """The operator's watermark now (µs), or None before the first event."""
        if not self._partitions:
            return self._current
        now = self.clock()
        active = [s.max_event for s in self._partitions.values() if not self._idle(s, now)]
        if active:
            value = min(active) - self.lateness_us
        else:
            value = min(s.max_event + int((now - s.last_seen) * 1_000_000)
                        for s in self._partitions.values()) - self.lateness_us
        if self._current is None or value > self._current:
            self._current = value
        return self._current

    def seconds_until(self, event_us: int) -> Optional[float]:
        """Wall-clock seconds until the watermark may reach ``event_us`` without events.

        ``None`` when it never will on its own (no ``idle_timeout``). Before
        every partition is idle, the answer is when the next one turns idle
        (the minimum may move then); after, when the clock carries the
        watermark to ``event_us``.
        """
        if self.idle_timeout is None or not self._partitions:
            return None
        now = self.clock()
        busy = [s.last_seen + self.idle_timeout - now for s in self._partitions.values()
                if not self._idle(s, now)]
        if busy:
            return max(0.0, min(busy))
        current = self.current()
        assert current is not None
        return max(0.0, (event_us - current) / 1_000_000)

