"""``stream.window(spec, ...).agg(...)``: the Arrow-native window operator.

``WindowedStream`` holds what ``stream.window`` was given; ``.agg(**aggs)``
makes a ``WindowOperator``, which reads the stream's raw batches and yields
Arrow RecordBatches:

* ``.final()``: one RecordBatch per set of windows closed by a watermark
  advance (or by the n-th event of a count window), with the columns key,
  ``window_start``, ``window_end`` and the aggregates;
* ``.current()``: after each input batch, the current aggregates of the
  windows it updated.

Per batch: the rows are read as columns (``columns.ColumnReader``), rows that
cannot be windowed go to the stream channel's dead-letter channel, the
partition's watermark moves, late rows go to the late channel, the rest are
folded into the engine's state, and windows the watermark closed are
emitted. The batch is acknowledged (released) when the next one is read,
that is once its rows are in the window state and its late and invalid rows
are stored; the state itself is in memory (see ``engine``).

Late rows (decided row by row, see ``watermark.Watermarks.for_batch``): by
default the stream channel's dead-letter channel (``<name>.dlq``): it is
where an app's failed values already go, it is on the same broker, and its
writer keeps the source unacknowledged until the letter is stored.
``late=<channel>`` sends them there instead (a one-row RecordBatch to an
Arrow channel; a row it refuses falls back to the dead-letter channel). Each
late row is sent as it came (a dict), with the reason in the ``sabot-error``
header, and counted in ``late_count``.

Idle partitions: with ``idle_timeout`` (or while a partition assigned here
has not delivered yet) the operator waits for the next batch only until the
watermark could close the next window on the clock (see ``watermark``): the
read is a task with a timeout, so windows close without another event.
"""
from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import (Any, AsyncIterator, Collection, Deque, Dict, List, Optional, Tuple)

import pyarrow as pa
import pyarrow.compute as pc

from ..channels.transport import AssignmentListener, Transport
from ..channels.transport_channel import Countdown, TransportChannel
from ..exceptions import ConfigurationError
from ..types import BatchT, ChannelT, CursorT
from .aggregations import Aggregation, AggregationPlan
from .columns import ColumnReader, Frame
from .engine import WindowEngine
from .specs import Count, Seconds, Session, TimeWindowSpec, WindowSpec, to_micros
from .watermark import Watermarks, partition_of

__all__ = ["WindowedStream", "WindowOperator"]

_RESERVED = ("window_start", "window_end")


class WindowedStream:
    """A stream cut into windows; ``.agg(...)`` says what to compute per window."""

    def __init__(self, batches: Any, channel: ChannelT, spec: WindowSpec, *,
                 key: Optional[str] = None, time: Optional[str] = None,
                 grace: Seconds = 0.0, lateness: Seconds = 0.0,
                 idle_timeout: Optional[Seconds] = None,
                 late: Optional[ChannelT] = None) -> None:
        if not isinstance(spec, WindowSpec):
            raise ConfigurationError(
                f"window(spec): expected tumbling(...), hopping(...), sliding(...), "
                f"session(...) or count(n), got {spec!r}")
        for name, value in (("key", key), ("time", time)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"window({name}=...): a column name (str) or None, "
                                         f"got {value!r}")
        if late is not None and not isinstance(late, ChannelT):
            raise ConfigurationError(f"window(late=...): a channel, got {late!r}")
        self.spec = spec
        self.key = key
        self.time = time
        self.grace_us = to_micros(grace, "window(grace=)", allow_zero=True)
        self.lateness_us = to_micros(lateness, "window(lateness=)", allow_zero=True)
        self.idle_timeout: Optional[float] = None
        if idle_timeout is not None:
            self.idle_timeout = to_micros(idle_timeout, "window(idle_timeout=)") / 1_000_000
        if isinstance(spec, Count) and (self.grace_us or self.lateness_us
                                        or idle_timeout is not None):
            raise ConfigurationError(
                "count windows close on their n-th event, not on event time: "
                "grace, lateness and idle_timeout do not apply to them")
        self.late = late
        self._batches = batches
        self.channel = channel

    def __repr__(self) -> str:
        return f"<WindowedStream {self.spec!r} key={self.key!r} time={self.time!r}>"

    def agg(self, **aggs: Aggregation) -> "WindowOperator":
        """Compute ``aggs`` per key and window: ``agg(n=count(), total=sum("amount"))``."""
        key_name = self.key or "key"
        for name in aggs:
            if name in _RESERVED or name == key_name:
                raise ConfigurationError(
                    f"agg({name}=...): {name!r} is the name of an output column already "
                    f"(key, window_start, window_end); pick another name")
        return WindowOperator(self, AggregationPlan(aggs))


def _engine(spec: WindowSpec, plan: AggregationPlan, grace_us: int) -> WindowEngine:
    if isinstance(spec, TimeWindowSpec):
        from .panes import PaneWindows
        return PaneWindows(spec, plan, grace_us)
    if isinstance(spec, Session):
        from .sessions import SessionWindows
        return SessionWindows(spec, plan, grace_us)
    if isinstance(spec, Count):
        from .counts import CountWindows
        return CountWindows(spec, plan)
    raise ConfigurationError(f"unknown window spec {spec!r}")


class WindowOperator:
    """Windows of one stream and their aggregates; iterate ``final()`` or ``current()``."""

    def __init__(self, windowed: WindowedStream, plan: AggregationPlan) -> None:
        self.windowed = windowed
        self.plan = plan
        self.engine = _engine(windowed.spec, plan, windowed.grace_us)
        self.watermarks = Watermarks(windowed.lateness_us, windowed.idle_timeout)
        self.reader = ColumnReader(windowed.key, windowed.time, plan)
        #: Late rows sent to the late channel.
        self.late_count = 0
        #: Rows that could not be windowed, sent to the dead-letter channel.
        self.invalid_count = 0
        #: Input rows folded into windows.
        self.rows_in = 0
        #: Windows emitted by ``final()``.
        self.windows_emitted = 0
        self._key_name = windowed.key or "key"
        self._time_type: Optional[pa.DataType] = None
        self._types: Dict[str, pa.DataType] = {}
        self._iterating: Optional[str] = None

    def __repr__(self) -> str:
        return (f"<WindowOperator {self.windowed.spec!r} aggs={list(self.plan.aggs)} "
                f"late={self.late_count}>")

    @property
    def watermark(self) -> Optional[float]:
        """The watermark in seconds of event time (None before the first event)."""
        current = self.watermarks.current()
        return None if current is None else current / 1_000_000

    @property
    def open_rows(self) -> int:
        """Rows of partial state held for open windows."""
        return self.engine.open_rows

    def final(self) -> AsyncIterator[pa.RecordBatch]:
        """Closed windows: a RecordBatch per watermark advance that closed some."""
        return self._iterate("final")

    def current(self) -> AsyncIterator[pa.RecordBatch]:
        """Updated windows: a RecordBatch of their current aggregates per input batch."""
        return self._iterate("current")

    def _iterate(self, mode: str) -> "_WindowIterator":
        if self._iterating is not None:
            raise RuntimeError(f"this window operator is already iterated with "
                               f"{self._iterating}(); call stream.window(...).agg(...) "
                               f"again for another")
        self._iterating = mode
        self._watch_assignments()
        return _WindowIterator(self, self.windowed._batches(), mode == "current")

    def _watch_assignments(self) -> None:
        # On a broker whose group assigns partitions (Kafka), the partitions
        # assigned here hold the watermark before their first batch: on a
        # backlog, one partition's fetch must not close the windows of the
        # others, read a moment later (see watermark.Watermarks.expect).
        channel = self.windowed.channel
        if not isinstance(channel, TransportChannel):
            return
        transport = channel.transport
        if isinstance(transport, Transport) and transport.assigns_partitions:
            transport.add_assignment_listener(
                _AssignedPartitions(self.watermarks, channel.name))

    # -- one batch -------------------------------------------------------------------
    async def process(self, batch: BatchT, current: bool, out: Deque[pa.RecordBatch]) -> None:
        """Fold one batch into the windows; queue what it produced on ``out``."""
        if len(batch) == 0:
            return
        frame = self._conform(self.reader.read(batch))
        held: List[Any] = []
        if frame.invalid:
            self.invalid_count += len(frame.invalid)
            held.extend(await self._dead_letter_invalid(batch, frame.invalid))
        if len(frame):
            if self._time_type is None and frame.time_type is not None:
                self._time_type = frame.time_type
            frame.bounds()
            high = frame.high
            partition = partition_of(batch)
            marks = self.watermarks.for_batch(partition, frame.times, high)
            late = self.engine.late_mask(frame, marks)
            if late is not None and pc.any(late).as_py():
                held.extend(await self._send_late(batch, frame, late, marks.rows()))
                frame = frame.filter(pc.invert(late))
                if len(frame):
                    frame.bounds()
            self.watermarks.observe(partition, high)
            if len(frame):
                self.rows_in += len(frame)
                touched = self.engine.add(frame, current)
                if current:
                    self._emit(self.engine.current(touched), out, count=False)
        self._hold(batch, held)

    def close_windows(self, out: Deque[pa.RecordBatch], current: bool) -> None:
        """Close what the watermark (moved by batches or by the clock) closes."""
        closed = self.engine.close(self.watermarks.current())
        if not current:
            self._emit(closed, out)

    def finish(self, out: Deque[pa.RecordBatch], current: bool) -> None:
        """The stream ended: emit every open window."""
        closed = self.engine.flush()
        if not current:
            self._emit(closed, out)

    def seconds_to_next_close(self) -> Optional[float]:
        """How long to wait for a batch before the clock may close a window."""
        if not self.watermarks.moves_alone:
            return None
        target = self.engine.next_close_us()
        if target is None:
            return None
        return self.watermarks.seconds_until(target)

    # -- helpers ---------------------------------------------------------------------
    def _conform(self, frame: Frame) -> Frame:
        # The first batch fixes each column's type; a later batch whose column
        # cannot be cast to it is rejected whole (it cannot share the state).
        columns: List[Tuple[str, pa.Array]] = [("__k", frame.keys)]
        columns += list(frame.values.items())
        for name, array in columns:
            if pa.types.is_nested(array.type):
                what = self._key_name if name == "__k" else self.plan.columns[int(name[1:])]
                return _reject(frame, f"window: column {what!r} is {array.type}: "
                                      f"nested values cannot be grouped or aggregated")
            known = self._types.get(name)
            if known is None:
                if not pa.types.is_null(array.type):
                    self._types[name] = array.type
                continue
            if array.type == known:
                continue
            if pa.types.is_integer(known) and pa.types.is_floating(array.type):
                # Whole numbers first, then fractions (JSON numbers): widen;
                # the partials already held are promoted when merged.
                self._types[name] = array.type
                continue
            try:
                if _kind(array.type) != _kind(known):
                    raise pa.ArrowTypeError("another kind")  # 7 is no "7"
                cast = pc.cast(array, known)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                what = self._key_name if name == "__k" else self.plan.columns[int(name[1:])]
                return _reject(frame, f"window: column {what!r} is {array.type}, "
                                      f"earlier batches had {known}")
            if name == "__k":
                frame.keys = cast
            else:
                frame.values[name] = cast
        return frame

    def _emit(self, table: Optional[pa.Table], out: Deque[pa.RecordBatch],
              count: bool = True) -> None:
        if table is None or table.num_rows == 0:
            return
        if count:
            self.windows_emitted += table.num_rows
        columns: Dict[str, Any] = {self._key_name: table.column("__k")}
        for bound in _RESERVED:
            columns[bound] = self._time_column(table.column(bound))
        for name in self.plan.aggs:
            columns[name] = table.column(name)
        # One chunk per column, so exactly one RecordBatch.
        out.append(pa.table(columns).combine_chunks().to_batches()[0])

    def _time_column(self, micros: Any) -> Any:
        if self._time_type is not None:
            unit_us = pa.timestamp("us", self._time_type.tz)
            return pc.cast(pc.cast(micros, unit_us), self._time_type)
        return pc.divide(pc.cast(micros, pa.float64()), 1_000_000.0)

    async def _dead_letter_invalid(self, batch: BatchT,
                                   invalid: List[Tuple[int, str]]) -> List[Any]:
        rows = [i for i, _ in invalid]
        values = _values_of(batch, rows)
        channel = self.windowed.channel
        written = []
        for (i, reason), value in zip(invalid, values):
            position = batch.positions[i] if batch.positions is not None else None
            written.append(await channel.dead_letter(value, reason, position=position))
        return written

    async def _send_late(self, batch: BatchT, frame: Frame, late: pa.Array,
                         marks: pa.Array) -> List[Any]:
        late_rows = pc.indices_nonzero(late)
        rows = frame.batch_rows(late_rows)
        times = frame.times.take(late_rows).to_pylist()
        watermarks = marks.take(late_rows).to_pylist()
        values = _values_of(batch, rows)
        windowed = self.windowed
        sent = []
        for i, time_us, watermark, value in zip(rows, times, watermarks, values):
            reason = self.engine.late_reason(time_us, watermark)
            position = batch.positions[i] if batch.positions is not None else None
            self.late_count += 1
            if windowed.late is not None:
                try:
                    sent.append(await self._to_late_channel(windowed.late, batch, i, value,
                                                            reason, position))
                    continue
                except Exception as exc:  # e.g. a codec that cannot hold the row
                    reason += (f" (the late channel {windowed.late.name!r} refused it: "
                               f"{type(exc).__name__}: {exc})")
            sent.append(await windowed.channel.dead_letter(value, reason, position=position))
        return sent

    async def _to_late_channel(self, late: ChannelT, batch: BatchT, i: int, value: Any,
                               reason: str, position: Any) -> Any:
        source = self.windowed.channel
        headers: Dict[str, bytes] = {"sabot-error": reason.encode(),
                                     "sabot-source": source.name.encode()}
        if position is not None:
            headers.update(source.position_headers(position))
        key = batch.keys[i] if batch.keys is not None else None
        codec = late.codec
        if codec is not None and codec.yields_batches:
            # An Arrow channel carries RecordBatches: the row as one.
            payload = batch.payload
            value = (payload.slice(i, 1) if isinstance(payload, pa.RecordBatch)
                     else pa.RecordBatch.from_pylist([value]))
        return await late.send(key=key, value=value, headers=headers)

    @staticmethod
    def _hold(batch: BatchT, writes: List[Any]) -> None:
        # The batch is acknowledged only once its late and invalid rows are
        # stored: hold it (one more holder) until every write is done.
        pending = [w for w in writes if isinstance(w, asyncio.Future) and not (
            w.done() and not w.cancelled() and w.exception() is None)]
        if not pending:
            return
        batch.acquire()
        countdown = Countdown(len(pending), batch.release)
        for future in pending:
            future.add_done_callback(lambda f: _settle(f, countdown))


class _AssignedPartitions(AssignmentListener):
    """Tells an operator's watermarks which partitions of its topic are assigned here.

    The transport tells partition numbers; they are this topic's (a number
    another subscribed topic has and this one lacks holds the watermark for
    ``unseen_hold`` at most). Holds the watermarks weakly: an operator that
    is gone (an agent restarted) leaves a listener that does nothing.
    """

    def __init__(self, watermarks: Watermarks, topic: str) -> None:
        self._watermarks = weakref.ref(watermarks)
        self._topic = topic

    async def on_assigned(self, partitions: Collection[int]) -> None:
        watermarks = self._watermarks()
        if watermarks is not None:
            watermarks.expect((self._topic, p) for p in partitions)

    async def on_revoked(self, partitions: Collection[int]) -> None:
        watermarks = self._watermarks()
        if watermarks is not None:
            watermarks.forget((self._topic, p) for p in partitions)


def _reject(frame: Frame, reason: str) -> Frame:
    """``frame`` with no rows left, every one of them invalid for ``reason``."""
    rows = frame.batch_rows(pa.array(range(len(frame)), pa.int64()))
    empty = frame.filter(pa.repeat(pa.scalar(False), len(frame)))
    empty.invalid = sorted(frame.invalid + [(i, reason) for i in rows])
    return empty


def _kind(kind: pa.DataType) -> str:
    """What a column holds, whatever its width: a cast stays within a kind."""
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "number"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "binary"
    if pa.types.is_dictionary(kind):
        return _kind(kind.value_type)
    return str(kind)


def _settle(future: "asyncio.Future[Any]", countdown: Countdown) -> None:
    # A write that failed (a stop) leaves the batch held: delivered again later.
    if not future.cancelled() and future.exception() is None:
        countdown()


def _values_of(batch: BatchT, rows: List[int]) -> List[Any]:
    """The values of ``rows`` as they came: dicts for RecordBatch rows."""
    payload = batch.payload
    if isinstance(payload, pa.RecordBatch):
        return payload.take(pa.array(rows, pa.int64())).to_pylist()
    return [payload[i] for i in rows]


class _End:
    __slots__ = ()


_END = _End()


class _WindowIterator:
    """``final()``/``current()``: reads batches, yields RecordBatches.

    Not an async generator: a cancelled ``__anext__`` (a timeout around it)
    loses nothing, as the batch reader below is cancellation-safe and a batch
    is folded into the state in one step once read.
    """

    def __init__(self, operator: WindowOperator, batches: CursorT, current: bool) -> None:
        self.operator = operator
        self._batches = batches
        self._current = current
        self._out: Deque[pa.RecordBatch] = deque()
        self._ended = False

    def __aiter__(self) -> "_WindowIterator":
        return self

    async def __anext__(self) -> pa.RecordBatch:
        operator, out = self.operator, self._out
        while True:
            if out:
                return out.popleft()
            if self._ended:
                raise StopAsyncIteration
            timeout = operator.seconds_to_next_close()
            batch = await self._read(timeout)
            if batch is None:
                operator.close_windows(out, self._current)
            elif batch is _END:
                self._ended = True
                operator.finish(out, self._current)
            else:
                await operator.process(batch, self._current, out)
                operator.close_windows(out, self._current)

    async def _read(self, timeout: Optional[float]) -> Any:
        try:
            if timeout is None:
                return await self._batches.__anext__()
            # A timed-out read is cancelled; the reader is cancellation-safe.
            return await asyncio.wait_for(self._batches.__anext__(), max(timeout, 0.001))
        except StopAsyncIteration:
            return _END
        except asyncio.TimeoutError:
            return None
