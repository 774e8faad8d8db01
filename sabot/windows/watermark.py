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
from typing import Any, Callable, Dict, Hashable, Iterable, Optional

import pyarrow as pa
import pyarrow.compute as pc

from ..types import BatchT

__all__ = ["Watermarks", "BatchWatermarks", "partition_of", "NO_WATERMARK", "UNSEEN_HOLD"]

#: Seconds an assigned partition not heard from yet holds the watermark when
#: there is no ``idle_timeout`` (with one, it holds that long).
UNSEEN_HOLD = 10.0

#: Stands for "no watermark yet" in per-row arrays (far below any event time,
#: and far enough from int64's end that subtracting a lateness cannot wrap).
NO_WATERMARK = -(1 << 62)


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

    def __init__(self, max_event: Optional[int], last_seen: float) -> None:
        #: Largest event time seen (None: assigned, nothing seen yet).
        self.max_event = max_event
        #: Clock time of its last batch (or of its assignment).
        self.last_seen = last_seen


class Watermarks:
    """Per-partition watermarks and their minimum, which never goes back.

    ``expect`` names partitions assigned here before they deliver anything
    (Kafka's group assignment): such a partition holds the watermark from
    its assignment until its first batch, for at most ``idle_timeout`` (or
    ``unseen_hold`` seconds without one), so that a partition whose first
    fetch comes a moment after another's does not find its windows closed.
    """

    def __init__(self, lateness_us: int = 0, idle_timeout: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic,
                 unseen_hold: float = UNSEEN_HOLD) -> None:
        self.lateness_us = lateness_us
        self.idle_timeout = idle_timeout
        self.unseen_hold = unseen_hold
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
            if state.max_event is None or max_event_us > state.max_event:
                state.max_event = max_event_us
            state.last_seen = now

    def expect(self, partitions: Iterable[Hashable]) -> None:
        """``partitions`` were assigned here: each holds the watermark until it delivers."""
        now = self.clock()
        for partition in partitions:
            if partition not in self._partitions:
                self._partitions[partition] = _Partition(None, now)

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """``partitions`` went to another worker: they no longer hold the watermark."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    @property
    def partitions(self) -> int:
        """Partitions seen (or expected) so far."""
        return len(self._partitions)

    def partition_watermark(self, partition: Hashable) -> Optional[int]:
        """One partition's own watermark (without idle advance), or None if unseen."""
        state = self._partitions.get(partition)
        if state is None or state.max_event is None:
            return None
        return state.max_event - self.lateness_us

    def _idle_after(self, state: _Partition) -> Optional[float]:
        if state.max_event is None:
            return self.idle_timeout if self.idle_timeout is not None else self.unseen_hold
        return self.idle_timeout

    def _idle(self, state: _Partition, now: float) -> bool:
        timeout = self._idle_after(state)
        return timeout is not None and now - state.last_seen >= timeout

    def current(self) -> Optional[int]:
        """The operator's watermark now (µs), or None before the first event."""
        now = self.clock()
        active = [s for s in self._partitions.values() if not self._idle(s, now)]
        if active:
            marks = [s.max_event for s in active if s.max_event is not None]
            if len(marks) < len(active):  # an assigned partition not heard from yet holds it
                return self._current
            value = min(marks) - self.lateness_us
        else:
            seen = [s.max_event + int((now - s.last_seen) * 1_000_000)
                    for s in self._partitions.values() if s.max_event is not None]
            if not seen:
                return self._current
            value = min(seen) - self.lateness_us
        if self._current is None or value > self._current:
            self._current = value
        return self._current

    def for_batch(self, partition: Hashable, times: pa.Array, high: int) -> "BatchWatermarks":
        """The watermark each row of a batch from ``partition`` finds as it arrives.

        Row ``i`` finds the watermark moved by the rows before it (its own
        partition's largest time so far, with the other partitions'), so a
        row is late or not whatever the batch boundaries: the same input
        gives the same windows however it was fetched. Call before
        ``observe``.
        """
        now = self.clock()
        current = self.current()
        state = self._partitions.get(partition)
        own = None if state is None else state.max_event
        others = [s for p, s in self._partitions.items()
                  if p != partition and not self._idle(s, now)]
        marks = [s.max_event for s in others if s.max_event is not None]
        others_min: Optional[int] = min(marks) if marks else None
        if len(marks) < len(others):
            others_min = NO_WATERMARK  # a partition not heard from yet holds it
        top = high if own is None or high > own else own
        upper = top if others_min is None or others_min > top else others_min
        upper -= self.lateness_us
        if current is not None and current > upper:
            upper = current
        return BatchWatermarks(upper, times, own, others_min, current, self.lateness_us)

    @property
    def moves_alone(self) -> bool:
        """True when the clock alone may move the watermark (idleness, or a
        partition assigned and not heard from, whose hold runs out)."""
        return self.idle_timeout is not None or any(
            s.max_event is None for s in self._partitions.values())

    def seconds_until(self, event_us: int) -> Optional[float]:
        """Wall-clock seconds until the watermark may reach ``event_us`` without events.

        ``None`` when it never will on its own (no ``idle_timeout``). Before
        every partition is idle, the answer is when the next one turns idle
        (the minimum may move then); after, when the clock carries the
        watermark to ``event_us``.
        """
        now = self.clock()
        busy = []
        for state in self._partitions.values():
            timeout = self._idle_after(state)
            if timeout is not None and not self._idle(state, now):
                busy.append(state.last_seen + timeout - now)
        if busy:
            return max(0.0, min(busy))
        if self.idle_timeout is None:
            return None
        current = self.current()
        if current is None:
            return None
        return max(0.0, (event_us - current) / 1_000_000)


class BatchWatermarks:
    """The watermarks the rows of one batch find (see ``Watermarks.for_batch``).

    ``upper`` bounds them all (None: no watermark yet), so an engine can tell
    that no row is late without a pass over the batch; ``rows()`` computes
    the per-row array (``NO_WATERMARK`` where there is none) when needed.
    """

    def __init__(self, upper: Optional[int], times: pa.Array, own: Optional[int],
                 others_min: Optional[int], current: Optional[int], lateness_us: int) -> None:
        self.upper = upper
        self._times = times
        self._own = own
        self._others_min = others_min
        self._current = current
        self._lateness_us = lateness_us
        self._rows: Optional[pa.Array] = None

    def rows(self) -> pa.Array:
        """Row ``i``: the watermark after the rows before it (int64 µs)."""
        if self._rows is not None:
            return self._rows
        times = self._times
        n = len(times)
        first = NO_WATERMARK if self._own is None else self._own
        before = pa.concat_arrays([pa.array([first], pa.int64()),
                                   pc.cumulative_max(times).slice(0, n - 1)])
        if self._own is not None:
            before = pc.max_element_wise(before, self._own)
        if self._others_min is not None:
            before = pc.min_element_wise(before, self._others_min)
        marks = pc.subtract(before, self._lateness_us)
        if self._current is not None:
            marks = pc.max_element_wise(marks, self._current)
        # A row with no watermark before it stays at NO_WATERMARK.
        marks = pc.max_element_wise(marks, NO_WATERMARK)
        self._rows = marks
        return marks
