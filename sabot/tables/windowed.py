"""Windowed tables: Faust's ``WindowWrapper`` and ``WindowSet``, on event time.

``app.Table("counts", default=int).tumbling(60, expires=3600)`` returns a
``WindowWrapper``. ``wrapper[key]`` is a ``WindowSet``: ``+=`` (and the other
in-place operators) updates every window the current event falls in, and
``.current()``, ``.now()``, ``.value()``, ``.delta(d)`` read one window, as
in Faust (``faust/tables/wrappers.py``). The values live in the table under
Faust's keys, ``(key, (start, end))``, so they are changelogged and recovered
like any other key, and ``table[key, window_range]`` reads one directly.

What Sabot adds, where Faust's windows hurt:

* **Windows close on event time**, per partition: a window closes once the
  partition's watermark (largest event time seen minus ``allowed_lateness``)
  passes its end plus ``grace``. Faust closes a window only when it expires,
  judged by the wall clock, and only when the next cleanup runs.
* **Idle partitions move on**: after ``idle_timeout`` seconds without an
  event, a partition's event time advances with the wall clock (see
  ``sabot.tables.event_clock``), so its last windows close without waiting
  for another event.
* **``on_window_close(key, value)`` gets the aggregate**: ``key`` is the
  table key ``(key, window_range)`` and ``value`` the window's value when it
  closed (Faust passes the raw value, and through a lookup that never hits,
  see the comment in Faust's ``Collection._del_old_keys``). Each window is
  closed once.
* **Late events are reported, never dropped silently**: an event whose
  window has closed is counted (``late_events``, ``late_reasons``) and sent
  with the reason in the ``sabot-error`` header to its source's dead-letter
  channel (``<topic>.dlq``, as the Arrow windows do), or to ``late_channel=``;
  its input is acknowledged only once that is stored (``sabot.tables.late``).
  Its other, still open, windows (hopping) are updated.
* **``expires`` removes old windows on event time**: every
  ``table_cleanup_interval`` seconds (Faust's setting, Faust's rhythm), a
  closed window's keys are deleted from the table (and the changelog) once
  Faust's ``stale`` test holds against the partition's watermark instead of
  ``time.time()``.
"""
from __future__ import annotations

import asyncio
import datetime
import heapq
import inspect
import logging
import math
import operator
import time
import warnings
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping,
                    NoReturn, Optional, Protocol, Set, Tuple, Union, runtime_checkable)

from ..exceptions import ConfigurationError, SabotCompatibilityWarning
from ..types import CurrentEventT, WindowedTableT
from .codec import TableValueError, decode
from .context import CurrentEvent, current_event, current_row
from .event_clock import NO_WATERMARK, EventClock
from .late import REASON_HEADER, LateEvent, LateWriter
from .window_ranges import Seconds, Window, WindowRange, want_seconds

if TYPE_CHECKING:
    from ..types import ChannelT

__all__ = ["WindowWrapper", "WindowSet", "WindowCloseCallback", "DEFAULT_IDLE_TIMEOUT",
           "LATE_REASON_HEADER"]

logger = logging.getLogger("sabot.tables")

#: Seconds without an event after which a partition's event time follows the wall clock.
DEFAULT_IDLE_TIMEOUT = 5.0
#: Header of a late event: why it was not counted (the dead letters' ``sabot-error``).
LATE_REASON_HEADER = REASON_HEADER

#: ``on_window_close(key, value)``: ``key`` is ``(key, (start, end))``; may be async.
WindowCloseCallback = Callable[[Any, Any], Any]


#: Anything that gives an event's timestamp (Faust's ``RelativeHandler``).
RelativeHandler = Callable[[Optional[CurrentEventT]], Any]
RelativeArg = Union[None, float, datetime.datetime, str, RelativeHandler, Any]


def _as_seconds(value: Any, what: str) -> float:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.datetime.fromisoformat(value).timestamp()
        except ValueError:
            raise ValueError(f"{what} is not an ISO-8601 time: {value!r}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"{what} must be a finite number of seconds, got {value!r}")
        return seconds
    raise TypeError(f"{what} must be a number, a datetime or an ISO-8601 string, got {value!r}")


@runtime_checkable
class FieldLike(Protocol):
    """A model field (``sabot.Record``'s and Faust's ``FieldDescriptor``)."""

    def getattr(self, obj: Any) -> Any: ...


def _field_reader(field: Union[str, FieldLike]) -> RelativeHandler:
    """``relative_to_field``: a field name (of a dict or an object) or a model field."""
    if isinstance(field, str):
        name = field

        def read(event: Optional[CurrentEventT]) -> Any:
            if event is None:
                raise RuntimeError("Operation outside of stream iteration")
            value = event.value
            if isinstance(value, Mapping):
                return value[name]
            return getattr(value, name)
        return read
    if isinstance(field, FieldLike):
        descriptor = field

        def read_descriptor(event: Optional[CurrentEventT]) -> Any:
            if event is None:
                raise RuntimeError("Operation outside of stream iteration")
            return descriptor.getattr(event.value)
        return read_descriptor
    raise ConfigurationError(f"relative_to_field takes a field name or a model field, "
                             f"got {field!r}")


class WindowedState:
    """What the clones of one windowed table share: window, clocks, open windows.

    Open windows are tracked per partition: a heap of ``(closes_at, range)``
    and, per range, the keys written in it. ``closes_at`` is the window's end
    plus ``grace``; the window closes when the partition's watermark reaches
    it. Closed windows stay in the table until they expire (``expires``).
    """

    def __init__(self, table: WindowedTableT, window: Window, *, grace: float,
                 allowed_lateness: float, idle_timeout: Optional[float],
                 on_window_close: Optional[WindowCloseCallback],
                 late_channel: Union[None, str, ChannelT], app: Any) -> None:
        self.table = table
        self.window = window
        self.grace = grace
        self.clock = EventClock(allowed_lateness, idle_timeout)
        self.on_window_close = on_window_close
        self.app = app
        self._late_channel = late_channel
        self._open: Dict[int, Dict[WindowRange, Set[Any]]] = {}
        self._closing: Dict[int, List[Tuple[float, WindowRange]]] = {}
        self._closed: Dict[int, Dict[WindowRange, Set[Any]]] = {}
        self._expiring: Dict[int, List[Tuple[float, WindowRange]]] = {}
        #: The watermark each partition's windows were last closed at.
        self._swept: Dict[int, float] = {}
        #: Start of the latest window closed (Faust's ``last_closed_window``).
        self.last_closed_window = 0.0
        self.windows_closed = 0
        self.windows_expired = 0
        self.late_events = 0
        self.late_reasons: Dict[str, int] = {}
        self._callbacks: Set[asyncio.Future[Any]] = set()
        self._late = LateWriter(table.name)
        self._start_timers()
        table.on_recover(self.track_recovered)

    # -- writes ------------------------------------------------------------------
    def closes_at(self, window_range: WindowRange) -> float:
        """The watermark at which ``window_range`` closes: its end plus ``grace``."""
        return self.window.closes_at(window_range) + self.grace

    def is_closed(self, partition: int, window_range: WindowRange) -> bool:
        """Whether ``window_range`` of ``partition`` has closed (its events now late)."""
        return self.closes_at(window_range) <= self.clock.watermark(partition)

    def open_ranges(self, key: Any, timestamp: float, partition: int,
                    event: Optional[CurrentEventT]) -> List[WindowRange]:
        """The ranges of ``timestamp`` still open; reports the event late if any closed."""
        ranges = self.window.ranges(timestamp)
        watermark = self.clock.watermark(partition)
        if watermark > self._swept.get(partition, NO_WATERMARK):
            # Idle since the last sweep: close those windows before this event.
            self.sweep(partition)
        open_ = [r for r in ranges if self.closes_at(r) > watermark]
        if len(open_) < len(ranges):
            closed = [r for r in ranges if self.closes_at(r) <= watermark]
            self._report_late(key, timestamp, partition, event, closed, watermark)
        return open_

    def track(self, partition: int, window_range: WindowRange, key: Any) -> None:
        """Remember that ``key`` has a value in ``window_range``, to close and expire it."""
        windows = self._open.get(partition)
        if windows is None:
            windows = self._open[partition] = {}
            self._closing[partition] = []
        keys = windows.get(window_range)
        if keys is None:
            keys = windows[window_range] = set()
            heapq.heappush(self._closing[partition], (self.closes_at(window_range), window_range))
        keys.add(key)

    def track_recovered(self) -> None:
        """Track the windows found in the stores after a recovery, to close and expire them.

        Runs after every recovery (each assignment). A window this worker has
        already closed stays closed (and expires as before); the windows of a
        partition new to it close by its watermark, which starts again with
        the first events: a window that had closed on the previous owner
        closes again then (``on_window_close`` is at least once).
        """
        for partition in self.table.held_partitions:
            store = self.table.store_for(partition)
            if store is None:
                continue
            swept = self._swept.get(partition, NO_WATERMARK)
            for raw_key, _ in store.items():
                try:
                    key, window_range = decode(raw_key)
                    start, end = window_range
                    window_range = (float(start), float(end))
                except (TableValueError, TypeError, ValueError):
                    continue  # not a windowed key
                if key in self._open.get(partition, {}).get(window_range, ()):
                    continue
                if self.closes_at(window_range) > swept:
                    self.track(partition, window_range, key)
                elif self.window.expires is not None:
                    self._track_closed(partition, window_range, {key})

    def untrack(self, partition: int, window_range: WindowRange, key: Any) -> None:
        """Forget ``key`` in ``window_range`` (deleted): nothing to close or expire."""
        for tracked in (self._open, self._closed):
            keys = tracked.get(partition, {}).get(window_range)
            if keys is not None:
                keys.discard(key)

    def observed(self, partition: int, timestamp: float) -> None:
        """An event of ``partition`` at ``timestamp`` was applied: move its watermark."""
        if self.clock.observe(partition, timestamp) > self._swept.get(partition, NO_WATERMARK):
            self.sweep(partition)

    # -- closing and expiring ----------------------------------------------------
    def sweep(self, partition: int) -> None:
        """Close the windows the partition's watermark has passed."""
        watermark = self._swept[partition] = self.clock.watermark(partition)
        closing = self._closing.get(partition)
        if closing:
            windows = self._open[partition]
            while closing and closing[0][0] <= watermark:
                _, window_range = heapq.heappop(closing)
                keys = windows.pop(window_range, set())
                self._close(partition, window_range, keys)

    def expire_stale(self) -> int:
        """Remove the closed windows that are stale by their partition's watermark.

        Faust's cleanup: run every ``table_cleanup_interval`` seconds by an
        app timer (Faust judges staleness by ``time.time()``, Sabot by the
        watermark). Returns how many windows expired.
        """
        expired = 0
        stale = self.window.stale
        for partition, expiring in list(self._expiring.items()):
            if self.clock.watermark(partition) > self._swept.get(partition, NO_WATERMARK):
                self.sweep(partition)  # close what the watermark passed first
            watermark = self._swept.get(partition, NO_WATERMARK)
            closed = self._closed[partition]
            while expiring and stale(expiring[0][0], watermark):
                _, window_range = heapq.heappop(expiring)
                for key in closed.pop(window_range, ()):
                    self.table.expire((key, window_range), partition)
                expired += 1
        self.windows_expired += expired
        return expired

    def _close(self, partition: int, window_range: WindowRange, keys: Set[Any]) -> None:
        self.windows_closed += 1
        self.last_closed_window = max(self.last_closed_window, window_range[0])
        for key in keys:
            table_key = (key, window_range)
            if table_key not in self.table:  # deleted while open
                continue
            self._call_close(table_key, self.table[table_key])
        if self.window.expires is not None:
            self._track_closed(partition, window_range, keys)

    def _track_closed(self, partition: int, window_range: WindowRange, keys: Set[Any]) -> None:
        """Remember the keys of a closed window, to remove them when it expires."""
        closed = self._closed.get(partition)
        if closed is None:
            closed = self._closed[partition] = {}
            self._expiring[partition] = []
        known = closed.get(window_range)
        if known is None:
            closed[window_range] = set(keys)
            heapq.heappush(self._expiring[partition], (window_range[1], window_range))
        else:
            known.update(keys)

    def _call_close(self, table_key: Any, value: Any) -> None:
        callback = self.on_window_close
        if callback is None:
            return
        try:
            result = callback(table_key, value)
        except Exception as exc:
            logger.exception("on_window_close of table %r raised for %r: %r",
                             self.table.name, table_key, exc)
            return
        if inspect.isawaitable(result):
            future = asyncio.ensure_future(result)
            self._callbacks.add(future)
            future.add_done_callback(self._callback_done)

    def _callback_done(self, future: asyncio.Future[Any]) -> None:
        self._callbacks.discard(future)
        if not future.cancelled() and future.exception() is not None:
            logger.error("on_window_close of table %r raised: %r",
                         self.table.name, future.exception())

    def advance_idle(self) -> List[Any]:
        """Move idle partitions' watermarks and close what they passed."""
        held = set(self.table.held_partitions)
        for partition in self.clock.partitions:
            if partition not in held:  # revoked: its new owner closes its windows
                self.forget_partition(partition)
        moved = []
        for partition in self.clock.partitions:
            if self.clock.watermark(partition) > self._swept.get(partition, NO_WATERMARK):
                self.sweep(partition)
                moved.append(partition)
        return moved

    def _start_timers(self) -> None:
        # App timers: they run while the worker runs and stop with it.
        app = self.app
        if app is None:
            return
        timeout = self.clock.idle_timeout
        if timeout is not None:
            interval = min(max(timeout / 4, 0.01), 1.0)
            app.timer(interval, name=f"{self.table.name}: idle windows")(self._idle_tick)
        if self.window.expires is not None:
            app.timer(app.conf.table_cleanup_interval,
                      name=f"{self.table.name}: expired windows")(self._cleanup_tick)

    async def _idle_tick(self) -> None:
        self.advance_idle()

    async def _cleanup_tick(self) -> None:
        self.expire_stale()

    async def flush(self) -> None:
        """Wait for the close callbacks and late-event sends started so far."""
        while self._callbacks:
            await asyncio.gather(*list(self._callbacks), return_exceptions=True)
        await self._late.flush()

    # -- late events ---------------------------------------------------------------
    def late_channel(self) -> Optional[ChannelT]:
        """Where late events go: ``late_channel=``, else ``None`` (the source's dead letters)."""
        channel = self._late_channel
        if isinstance(channel, str):
            channel = self._late_channel = self.app.topic(channel)
        return channel

    def _report_late(self, key: Any, timestamp: float, partition: int,
                     event: Optional[CurrentEventT], closed: List[WindowRange],
                     watermark: float) -> None:
        first = closed[0]
        reason = (f"late for table {self.table.name!r}: event time {timestamp} is in window "
                  f"{list(first)}, closed at {self.closes_at(first)} (its end plus grace "
                  f"{self.grace}) by the watermark {watermark} of partition {partition}")
        kind = "window closed"
        self.late_events += 1
        self.late_reasons[kind] = self.late_reasons.get(kind, 0) + 1
        headers = {
            "sabot-table": self.table.name.encode(),
            "sabot-event-time": repr(timestamp).encode(),
            "sabot-watermark": repr(watermark).encode(),
            "sabot-window": repr(list(first)).encode(),
        }
        batch, _, _ = current_row()
        if event is not None:
            late = LateEvent(event.key, event.value, reason, headers, event.channel,
                             event.position, batch)
        else:
            late = LateEvent(key, key, reason, headers, None, None, batch)
        self._late.put(late, self.late_channel())

    def forget_partition(self, partition: int) -> None:
        """Stop tracking a partition (revoked: its new owner tracks it)."""
        for tracked in (self._open, self._closing, self._closed, self._expiring, self._swept):
            tracked.pop(partition, None)
        self.clock.forget(partition)


class WindowSet:
    """The windows of one key: ``table[k].current()``, ``.now()``, ``.delta(d)``, ``+=``.

    As in Faust, ``table[k]`` is a ``WindowSet`` because ``k`` exists in many
    windows; a time picks one. ``table[k][event]`` pins the event,
    ``table[k][window_range]`` reads one window.
    """

    def __init__(self, key: Any, table: WindowedTableT, wrapper: WindowWrapper,
                 event: Optional[CurrentEventT] = None) -> None:
        self.key = key
        self.table = table
        self.wrapper = wrapper
        self.event = event

    def apply(self, op: Callable[[Any, Any], Any], value: Any,
              event: Optional[CurrentEventT] = None) -> WindowSet:
        """Apply ``op(old, value)`` in every open window of the event's time."""
        self.wrapper.apply_op(self.key, op, value, event or self.event)
        return self

    def value(self, event: Optional[CurrentEventT] = None) -> Any:
        """The value in the window of the wrapper's time (``relative_to_*``)."""
        wrapper = self.wrapper
        return self.table[(self.key, wrapper.state.window.current(
            wrapper.get_timestamp(event or self.event)))]

    def now(self) -> Any:
        """The value in the earliest window of "now" (Faust's ``_windowed_now``)."""
        wrapper = self.wrapper
        return self.table[(self.key, wrapper.state.window.earliest(wrapper.relative_now()))]

    def current(self, event: Optional[CurrentEventT] = None) -> Any:
        """The value in the latest window of the current event's timestamp."""
        wrapper = self.wrapper
        return self.table[(self.key, wrapper.state.window.current(
            wrapper.relative_event(event or self.event)))]

    def delta(self, d: Seconds, event: Optional[CurrentEventT] = None) -> Any:
        """The value as it was ``d`` seconds before the current event."""
        wrapper = self.wrapper
        return self.table[(self.key, wrapper.state.window.delta(
            wrapper.relative_event(event or self.event), d))]

    def _unsupported(self, operation: str) -> NoReturn:
        raise NotImplementedError(
            f"Accessing {operation} on a WindowSet is not implemented. "
            "Try using the underlying table directly")

    def keys(self) -> NoReturn:
        """Refused, as in Faust: a key's windows are not listed."""
        self._unsupported("keys")

    def items(self) -> NoReturn:
        """Refused, as in Faust."""
        self._unsupported("items")

    def values(self) -> NoReturn:
        """Refused, as in Faust."""
        self._unsupported("values")

    def __getitem__(self, w: Any) -> Any:
        if isinstance(w, tuple) and len(w) == 2 and not isinstance(w, CurrentEvent):
            return self.table[(self.key, w)]
        # table[k][event]: a WindowSet with the event pinned.
        return type(self)(self.key, self.table, self.wrapper, w)

    def __setitem__(self, w: WindowRange, value: Any) -> None:
        if not (isinstance(w, tuple) and len(w) == 2):
            raise NotImplementedError("Cannot set WindowSet key, when key is an event")
        self.table[(self.key, w)] = value

    def __delitem__(self, w: WindowRange) -> None:
        if not (isinstance(w, tuple) and len(w) == 2):
            raise NotImplementedError("Cannot delete WindowSet key, when key is an event")
        del self.table[(self.key, w)]

    def __iadd__(self, other: Any) -> WindowSet:
        return self.apply(operator.add, other)

    def __isub__(self, other: Any) -> WindowSet:
        return self.apply(operator.sub, other)

    def __imul__(self, other: Any) -> WindowSet:
        return self.apply(operator.mul, other)

    def __itruediv__(self, other: Any) -> WindowSet:
        return self.apply(operator.truediv, other)

    def __ifloordiv__(self, other: Any) -> WindowSet:
        return self.apply(operator.floordiv, other)

    def __imod__(self, other: Any) -> WindowSet:
        return self.apply(operator.mod, other)

    def __ipow__(self, other: Any) -> WindowSet:
        return self.apply(operator.pow, other)

    def __ilshift__(self, other: Any) -> WindowSet:
        return self.apply(operator.lshift, other)

    def __irshift__(self, other: Any) -> WindowSet:
        return self.apply(operator.rshift, other)

    def __iand__(self, other: Any) -> WindowSet:
        return self.apply(operator.and_, other)

    def __ixor__(self, other: Any) -> WindowSet:
        return self.apply(operator.xor, other)

    def __ior__(self, other: Any) -> WindowSet:
        return self.apply(operator.or_, other)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: key={self.key!r} table={self.table.name!r}>"


class WindowWrapper:
    """A windowed table: ``table[key]`` is a ``WindowSet``, not a value.

    Made by ``table.tumbling(...)``, ``table.hopping(...)`` or
    ``table.sliding(...)``. ``relative_to_now()``, ``relative_to_stream()`` and
    ``relative_to_field(field)`` return clones that pick windows by another
    time; clones share the table, the watermarks and the open windows.
    """

    def __init__(self, table: WindowedTableT, window: Optional[Window] = None, *,
                 relative_to: RelativeArg = None,
                 grace: Seconds = 0.0, allowed_lateness: Seconds = 0.0,
                 idle_timeout: Optional[Seconds] = DEFAULT_IDLE_TIMEOUT,
                 on_window_close: Optional[WindowCloseCallback] = None,
                 late_channel: Union[None, str, ChannelT] = None,
                 key_index: bool = False,
                 state: Optional[WindowedState] = None) -> None:
        self.table = table
        if state is None:
            window = window if window is not None else table.window
            if not isinstance(window, Window):
                raise ConfigurationError(f"table {table.name!r}: a windowed table needs a "
                                         f"window (tumbling, hopping, sliding), got {window!r}")
            if key_index:
                warnings.warn(f"table {table.name!r}: Faust's key_index is not supported by "
                              f"Sabot's windowed tables (ignored; keys()/items()/values() "
                              f"raise)", SabotCompatibilityWarning, stacklevel=3)
            state = WindowedState(
                table, window,
                grace=want_seconds(grace, "grace", allow_zero=True),
                allowed_lateness=want_seconds(allowed_lateness, "allowed_lateness",
                                              allow_zero=True),
                idle_timeout=(None if idle_timeout is None
                              else want_seconds(idle_timeout, "idle_timeout")),
                on_window_close=(on_window_close if on_window_close is not None
                                 else table.on_window_close),
                late_channel=late_channel, app=table.app)
        self.state = state
        self._get_relative_timestamp = self._relative_handler(relative_to)

    def __repr__(self) -> str:
        return f"<WindowWrapper {self.table.name!r} {self.state.window!r}>"

    @property
    def name(self) -> str:
        """The table's name."""
        return self.table.name

    @property
    def window(self) -> Window:
        """The window type (``TumblingWindow``, ``HoppingWindow``, ``SlidingWindow``)."""
        return self.state.window

    # -- time relativity ------------------------------------------------------------
    def clone(self, relative_to: RelativeArg) -> WindowWrapper:
        """The same windowed table, picking windows by another time."""
        return type(self)(self.table, relative_to=relative_to or self._get_relative_timestamp,
                          state=self.state)

    def relative_to(self, ts: RelativeArg) -> WindowWrapper:
        """Pick windows by ``ts``: a timestamp, a datetime, a field, or a function of the event."""
        return self.clone(relative_to=ts)

    def relative_to_now(self) -> WindowWrapper:
        """Pick windows by the system clock (the partition's latest event time in a stream)."""
        return self.clone(relative_to=self._relative_now_handler)

    def relative_to_stream(self) -> WindowWrapper:
        """Pick windows by the timestamp of the event being processed."""
        return self.clone(relative_to=self._relative_event_handler)

    def relative_to_field(self, field: Any) -> WindowWrapper:
        """Pick windows by a field of the value (a name, or a Faust field descriptor)."""
        return self.clone(relative_to=_field_reader(field))

    def _relative_handler(self, relative_to: RelativeArg) -> Optional[RelativeHandler]:
        if relative_to is None:
            return None
        if isinstance(relative_to, datetime.datetime):
            stamp = relative_to.timestamp()
            return lambda event: stamp
        if isinstance(relative_to, (int, float)) and not isinstance(relative_to, bool):
            fixed = float(relative_to)
            return lambda event: fixed
        if isinstance(relative_to, (str, FieldLike)):
            return _field_reader(relative_to)
        if callable(relative_to):
            handler: RelativeHandler = relative_to
            return handler
        raise ConfigurationError(f"Relative cannot be type {type(relative_to)}")

    @property
    def get_relative_timestamp(self) -> Optional[RelativeHandler]:
        """The function that gives an event's time for this wrapper (``None``: the event's)."""
        return self._get_relative_timestamp

    @get_relative_timestamp.setter
    def get_relative_timestamp(self, relative_to: RelativeArg) -> None:
        self._get_relative_timestamp = self._relative_handler(relative_to)

    def _relative_now_handler(self, event: Optional[CurrentEventT] = None) -> float:
        return self.relative_now(event)

    def _relative_event_handler(self, event: Optional[CurrentEventT] = None) -> float:
        return self.relative_event(event)

    def relative_now(self, event: Optional[CurrentEventT] = None) -> float:
        """Faust's ``_relative_now``: in a stream, the partition's latest time; else the clock."""
        event = event if event is not None else current_event()
        if event is None:
            return time.time()
        latest = self.state.clock.max_event_time(event.partition)
        return latest if latest != -float("inf") else event.timestamp

    def relative_event(self, event: Optional[CurrentEventT] = None) -> float:
        """Faust's ``_relative_event``: the timestamp of the event being processed."""
        event = event if event is not None else current_event()
        if event is None:
            raise RuntimeError("Operation outside of stream iteration")
        return event.timestamp

    def get_timestamp(self, event: Optional[CurrentEventT] = None) -> float:
        """The time of ``event`` (or the current one) for this wrapper."""
        event = event if event is not None else current_event()
        handler = self._get_relative_timestamp
        if handler is not None:
            return _as_seconds(handler(event), f"time of table {self.table.name!r}")
        if event is None:
            raise RuntimeError("Operation outside of stream iteration")
        return event.timestamp

    # -- writes ------------------------------------------------------------------------
    def apply_op(self, key: Any, op: Callable[[Any, Any], Any], value: Any,
                 event: Optional[CurrentEventT] = None) -> None:
        """``op`` in every open window of the event's time; closed ones report it late."""
        event = event if event is not None else current_event()
        timestamp = self.get_timestamp(event)
        partition = event.partition if event is not None else 0
        state = self.state
        table = self.table
        for window_range in state.open_ranges(key, timestamp, partition, event):
            table_key = (key, window_range)
            table[table_key] = op(table[table_key], value)
            state.track(partition, window_range, key)
        state.observed(partition, timestamp)

    def __getitem__(self, key: Any) -> WindowSet:
        return WindowSet(key, self.table, self, current_event())

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, WindowSet):
            return  # ``table[k] += 1`` already applied itself
        self.apply_op(key, _replace, value)

    def __delitem__(self, key: Any) -> None:
        event = current_event()
        timestamp = self.get_timestamp(event)
        partition = event.partition if event is not None else 0
        for window_range in self.state.window.ranges(timestamp):
            try:
                del self.table[(key, window_range)]
            except KeyError:
                pass
            self.state.untrack(partition, window_range, key)

    def __contains__(self, key: Any) -> bool:
        return (key, self.state.window.current(self.get_timestamp())) in self.table

    def __len__(self) -> int:
        raise NotImplementedError("Windowed table must use_index=True to support len()")

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError(
            "Windowed table must set use_index=True to support .keys/.items/.values")

    def keys(self) -> NoReturn:
        """Faust's message: a windowed table without a key index has no key list."""
        raise NotImplementedError(
            "Windowed table must set use_index=True to support .keys/.items/.values")

    def items(self) -> NoReturn:
        """As ``keys()``; read windows with ``table[key, window_range]``."""
        raise NotImplementedError(
            "Windowed table must set use_index=True to support .keys/.items/.values")

    def values(self) -> NoReturn:
        """As ``keys()``."""
        raise NotImplementedError(
            "Windowed table must set use_index=True to support .keys/.items/.values")

    def on_recover(self, fun: Callable[..., Any]) -> Callable[..., Any]:
        """Call ``fun()`` after the table is recovered (Faust's ``on_recover``)."""
        return self.table.on_recover(fun)

    # -- lifecycle, event time, late events ----------------------------------------
    def on_window_close(self, callback: WindowCloseCallback) -> WindowCloseCallback:
        """Set ``callback(key, value)`` for closing windows (usable as a decorator)."""
        self.state.on_window_close = callback
        return callback

    def watermark(self, partition: int = 0) -> float:
        """The watermark of ``partition`` (``-inf`` before its first event)."""
        return self.state.clock.watermark(partition)

    def advance_idle(self) -> List[Any]:
        """Move idle partitions on and close their windows now (the timer does it too)."""
        return self.state.advance_idle()

    @property
    def late_events(self) -> int:
        """How many events came for a window already closed."""
        return self.state.late_events

    @property
    def late_reasons(self) -> Dict[str, int]:
        """Late events counted by kind of reason."""
        return dict(self.state.late_reasons)

    @property
    def windows_closed(self) -> int:
        """How many (partition, window) pairs have closed."""
        return self.state.windows_closed

    async def flush(self) -> None:
        """Wait for async close callbacks and late-event sends started so far."""
        await self.state.flush()



def _replace(old: Any, new: Any) -> Any:
    return new
