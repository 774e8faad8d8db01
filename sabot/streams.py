"""``Stream``: what an agent iterates, and the stream operators.

A stream reads one subscription of a channel. Iterating it values-first
(``async for value in stream``) uses the fast-path ``ValueIterator``; the
iterator is created once per stream, so an agent that crashed and was
restarted over the same stream resumes after the failing value.

Operators (``filter``, ``map``, ``take``, ``enumerate``, ``echo``,
``through``) return derived streams that read through their parent; the
acknowledgement still follows the root subscription: a batch is released when
the root iterator moves past it (``take`` holds the batches of a chunk until
the chunk has been processed).
"""
from __future__ import annotations

import asyncio
import inspect
from typing import (TYPE_CHECKING, Any, AsyncIterator, Callable, Dict, List, Optional, Set,
                    Tuple, Union)

from .exceptions import ConfigurationError
from .types import (AgentT, BatchT, ChannelT, CursorT, PipelineT, SinkT, SubscriberT)
from ._fastpath import TASK_STREAMS, current_row
from .value_dispatch import DispatchedIterator

if TYPE_CHECKING:
    from .types import LookupT
    from .value_dispatch import ValueDispatcher
    from .windows.operator import WindowedStream
    from .windows.specs import Seconds, WindowSpec

__all__ = ["Stream", "current_stream", "current_row"]

#: The root stream each task iterates (an agent instance's task): how
#: ``sabot.tables.context.current_event`` finds the value in hand, lazily,
#: without a cost per value. Bound when iteration starts, dropped with the task.
#: ``current_row`` (Cython, with a pure-Python twin) reads it on a table's
#: per-value write path.
_task_streams: Dict["asyncio.Task[Any]", "Stream"] = TASK_STREAMS


def current_stream() -> Optional["Stream"]:
    """The root stream the running task iterates (``None`` outside one)."""
    row = current_row()
    return row[0] if row is not None else None


def _unbind_task(task: "asyncio.Future[Any]") -> None:
    _task_streams.pop(task, None)  # type: ignore[call-overload]


class _Empty:
    __slots__ = ()


_EMPTY = _Empty()


class Stream:
    """One subscription to a channel, iterated by value, event or batch."""

    def __init__(self, channel: ChannelT, *, subscriber: Optional[SubscriberT] = None,
                 dispatcher: Optional[ValueDispatcher] = None,
                 source: Optional[Callable[[], AsyncIterator[Any]]] = None,
                 parent: Optional[Stream] = None) -> None:
        self.channel = channel
        self._parent = parent
        self._sub: SubscriberT
        #: Set when several agent instances share the subscription's values
        #: (sabot.value_dispatch): values and events come from it.
        self._dispatcher: Optional[ValueDispatcher]
        if parent is not None:
            self._sub = parent._sub
            self._dispatcher = parent._dispatcher
        else:
            self._sub = subscriber if subscriber is not None else channel.subscribe()
            self._dispatcher = dispatcher
        self._source = source
        self._values_it: Optional[AsyncIterator[Any]] = None
        # The values iterator of a root stream: it knows the item in hand.
        self._values_cursor: Optional[CursorT] = None
        self._events_it: Optional[CursorT] = None
        self._batches_it: Optional[_PayloadIterator] = None
        #: The cursor last iterated (values, events or batches), for acks.
        self._active: Optional[CursorT] = None
        self._tasks: List["asyncio.Future[Any]"] = []
        # Set by take(): the chunk the agent holds and the batches behind it.
        self._chunk: Optional[List[Any]] = None
        self._chunk_sources: List[BatchT] = []
        self._pending_reads: Set["asyncio.Future[Any]"] = set()
        #: Faust's stream prefix: the agent's name, in repartition topic names.
        self.prefix: str = parent.prefix if parent is not None else ""
        #: group_by() streams made from this one, by name (sabot.group_by).
        self._grouped: Dict[str, "Stream"] = {}

    def __class_getitem__(cls, item: Any) -> type:
        """``Stream[Order]`` in annotations, as Faust's ``faust.Stream[Order]``."""
        return cls

    def __repr__(self) -> str:
        kind = "derived " if self._parent is not None else ""
        return f"<{kind}Stream of {self.channel!r}>"

    # -- iteration -------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[Any]:
        if self._values_it is None:
            if self._source is not None:
                self._values_it = self._source()
            else:
                self._values_cursor = (self._dispatcher.values() if self._dispatcher is not None
                                       else self._sub.values())
                self._values_it = self._values_cursor
        if self._parent is None:
            self._active = self._values_cursor
        self._bind_task()
        return self._values_it

    def events(self) -> CursorT:
        """Iterate ``Event(key, value, headers, timestamp, position)``."""
        self._require_root("events")
        if self._events_it is None:
            self._events_it = (self._dispatcher.events() if self._dispatcher is not None
                               else self._sub.events())
        self._active = self._events_it
        self._bind_task()
        return self._events_it

    def batches(self) -> AsyncIterator[Any]:
        """Iterate whole batches (``Batch``: ``.payload`` is a list or a RecordBatch)."""
        self._require_root("batches")
        if self._batches_it is None:
            self._batches_it = _PayloadIterator(self._sub.batches())
        self._active = self._batches_it.inner
        self._bind_task()
        return self._batches_it.of_records(self.channel)

    def raw_batches(self) -> CursorT:
        """Iterate ``Batch`` objects with their envelope (keys, positions, ...)."""
        self._require_root("raw_batches")
        if self._batches_it is None:
            self._batches_it = _PayloadIterator(self._sub.batches())
        self._active = self._batches_it.inner
        self._bind_task()
        return self._batches_it.inner

    def _bind_task(self) -> None:
        # The task that starts iterating this stream is the one whose table
        # writes belong to its values (see current_stream).
        try:
            task = asyncio.current_task()
        except RuntimeError:
            return
        if task is None:
            return
        root = self._root_stream()
        if task not in _task_streams:
            task.add_done_callback(_unbind_task)
        _task_streams[task] = root

    def _require_root(self, what: str) -> None:
        if self._parent is not None:
            raise TypeError(f"stream.{what}() reads the channel directly; "
                            f"call it before filter/map/take")

    # -- position of the last item, for acks and crash reports -------------
    def _root_stream(self) -> "Stream":
        stream = self
        while stream._parent is not None:
            stream = stream._parent
        return stream

    @property
    def current_batch(self) -> Optional[BatchT]:
        """The batch the last value came from (still held, not yet acknowledged)."""
        active = self._root_stream()._active
        return active.current_batch if active is not None else None

    def current_value(self) -> Any:
        """The last value read from the channel (for crash reports)."""
        active = self._root_stream()._active
        return active.current_value() if active is not None else None

    def current_position(self) -> Any:
        """Transport position (offset or entry id) of the last value read."""
        active = self._root_stream()._active
        return active.current_position() if active is not None else None

    def current_row(self) -> Tuple[Optional[BatchT], int, bool]:
        """``(batch, index, single)`` of the value in hand (tables read it).

        ``index`` is the last value read in ``batch`` (its last row when
        the agent iterates whole batches); ``single`` is False when the agent
        holds more than that value: a whole batch (``batches()``) or a
        ``take()`` chunk.
        """
        root = self if self._parent is None else self._root_stream()
        active = root._active
        if active is None:
            return None, -1, True
        batch = active.current_batch
        if batch is None:
            return None, -1, True
        if root._batches_it is not None and active is root._batches_it.inner:
            return batch, len(batch) - 1, False
        index = active.row_index if type(active) is DispatchedIterator else active.current_index
        return batch, index, root._chunk is None

    @property
    def subscriber(self) -> SubscriberT:
        """The subscription this stream (and every stream derived from it) reads."""
        return self._sub

    # -- operators -------------------------------------------------------------
    def _derive(self, make: Callable[[Any], Any]) -> "Stream":
        parent = self
        return Stream(self.channel, source=lambda: make(parent), parent=self)

    def filter(self, fun: Callable[[Any], Any]) -> "Stream":
        """Values for which ``fun(value)`` (sync or async) is true."""
        return self._derive(lambda parent: _Filter(parent, fun))

    def map(self, fun: Callable[[Any], Any]) -> "Stream":
        """``fun(value)`` (sync or async) for every value."""
        return self._derive(lambda parent: _Map(parent, fun))

    def enumerate(self, start: int = 0) -> "Stream":
        """``(index, value)`` pairs, counting from ``start``."""
        return self._derive(lambda parent: _Enumerate(parent, start))

    def echo(self, *channels: SinkT) -> "Stream":
        """Send every value to each of ``channels`` too, then pass it on."""
        return self._derive(lambda parent: _Echo(parent, channels))

    def take(self, n: int, within: Optional[float] = None) -> "Stream":
        """Lists of up to ``n`` values.

        A list is yielded as soon as it holds ``n`` values, or ``within``
        seconds after its first value arrived if fewer came; an empty list is
        never yielded, and a partial list is yielded when the stream ends (or
        before an error from below is raised). The batches behind a list stay
        unacknowledged until the next list is asked for.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigurationError(f"take(n): n must be a positive int, got {n!r}")
        if within is not None and not (isinstance(within, (int, float)) and within > 0):
            raise ConfigurationError(f"take(within=): must be a positive number of seconds, got {within!r}")
        return self._derive(lambda parent: _Take(parent, n, within))

    def window(self, spec: "WindowSpec", *, key: Optional[str] = None,
               time: Optional[str] = None, grace: "Seconds" = 0.0, lateness: "Seconds" = 0.0,
               idle_timeout: Optional["Seconds"] = None,
               late: Optional[ChannelT] = None) -> "WindowedStream":
        """Arrow-native windows over this stream's batches (``sabot.windows``).

        ``stream.window(tumbling(60), key="user", time="ts", grace=5)
        .agg(n=count(), total=sum("amount")).final()`` yields a RecordBatch of
        closed windows per watermark advance. ``key``/``time`` are column
        names (``None``: the message key / timestamp); late events go to
        ``late`` (default: this channel's dead-letter channel). See
        docs/windows.md.
        """
        self._require_root("window")
        if self._dispatcher is not None:
            raise ConfigurationError(
                "stream.window(): this agent's instances (concurrency > 1) share its "
                "stream, so each would window only some batches and a key's window "
                "would be split between them; run a windowed agent with concurrency=1")
        from .windows.operator import WindowedStream
        return WindowedStream(self.raw_batches, self.channel, spec, key=key, time=time,
                              grace=grace, lateness=lateness, idle_timeout=idle_timeout,
                              late=late)

    # -- what an agent needs to acknowledge or dead-letter the current item ----
    def sources(self) -> List[BatchT]:
        """Batches behind the item the agent holds (a ``take`` chunk spans several)."""
        root = self._root_stream()
        batch = self.current_batch
        chunk = list(root._chunk_sources)
        if batch is not None and (not chunk or chunk[-1] is not batch):
            chunk.append(batch)
        return chunk

    def current_item(self) -> Any:
        """The item the agent holds: a ``take`` chunk, else the last value read."""
        root = self._root_stream()
        return root._chunk if root._chunk is not None else self.current_value()

    def settle(self) -> None:
        """The agent gave up on its item (skip or dead letter): acknowledge it anyway."""
        root = self._root_stream()
        for batch in root._chunk_sources:
            batch.release()
        root._chunk_sources.clear()
        root._chunk = None

    def cancel_pending_reads(self) -> None:
        """Cancel reads that operators left running (before an agent restarts).

        The iterators below are cancellation-safe, so nothing is lost; the
        restarted agent's new operators read from where the stream is.
        """
        root = self._root_stream()
        for task in list(root._pending_reads):
            task.cancel()
        root._pending_reads.clear()

    def progress(self) -> Any:
        """A marker that changes whenever the stream moves (for restart back-off)."""
        active = self._root_stream()._active
        if active is None:
            return (None, -1)
        return (active.current_batch, active.current_index)

    def through(self, target: Union[ChannelT, AgentT, PipelineT]) -> "Stream":
        """Forward values to a channel (or agent) and read that channel's stream.

        Given a ``Pipeline`` (``sabot.types.PipelineT``: ``run_batch``), runs
        it on every batch instead and yields its results.
        """
        if isinstance(target, PipelineT):
            run_batch = target.run_batch
            return self._derive(lambda parent: _RunPerBatch(parent, run_batch))
        channel = target.channel if isinstance(target, AgentT) else target
        out = Stream(channel)
        source = self

        async def forward() -> None:
            async for value in source:
                await channel.send(value=value)
        task = asyncio.ensure_future(forward())
        out._tasks.append(task)
        return out

    def group_by(self, key: Any, *, name: Optional[str] = None, topic: Optional[ChannelT] = None,
                 partitions: Optional[int] = None) -> "Stream":
        """The values again, keyed by ``key`` through a repartition topic (Faust's ``group_by``).

        ``key`` is a field name, a Record field or a callable (then ``name=``
        is needed). See ``sabot.group_by``.
        """
        from .group_by import group_by
        return group_by(self, key, name=name, topic=topic, partitions=partitions)

    async def items(self) -> AsyncIterator[Tuple[Any, Any]]:
        """``(key, value)`` pairs (Faust's ``stream.items()``)."""
        async for value in self:
            batch, index, _ = self.current_row()
            keys = batch.keys if batch is not None else None
            yield (keys[index] if keys is not None and index >= 0 else None), value

    def close(self) -> None:
        """Unsubscribe and stop receiving; what is held is abandoned, not acked."""
        for task in self._tasks:
            task.cancel()
        if self._parent is None:
            self._sub.close()

    # -- joins (sabot.joins) ---------------------------------------------------
    def join(self, table: LookupT, on: Any = None, how: str = "left", *, prefix: str = "",
             value_schema: Any = None) -> "Stream":
        """Each batch with ``table``'s values added as columns (``pyarrow.RecordBatch``).

        ``on`` is the key: a column or field name, a callable on each dict
        value, or ``None`` for the message key. ``how="left"`` keeps rows the
        table has no value for (null columns), ``"inner"`` drops them. One
        ``table.get_many`` per batch over its unique keys; see
        ``sabot.joins.table_join`` and docs/joins.md.
        """
        from .joins.table_join import StreamTableJoin
        self._require_root("join")
        joiner = StreamTableJoin(table, on=on, how=how, prefix=prefix,
                                 value_schema=value_schema, schema=self.channel.schema)
        return self._derive(lambda parent: joiner.iterate(parent.raw_batches(), parent.channel))

    def join_within(self, other: Union["Stream", ChannelT], within: Any, on: Any = None, *,
                    time: Any = None, how: str = "inner", grace: Any = 0.0,
                    prefix: str = "") -> "Stream":
        """Interval join with ``other``: rows with equal keys and event times ``within`` seconds.

        Yields RecordBatches of the left (this stream's) columns and the
        right ones (``prefix`` + name). ``time`` is a column or field name,
        or ``None`` for the message timestamp; ``grace`` the lateness allowed.
        State is in memory; see ``sabot.joins.interval`` and docs/joins.md.
        """
        from .joins.interval import IntervalJoin
        from .joins.interval_stream import IntervalJoinedBatches
        self._require_root("join_within")
        owns_other = not isinstance(other, Stream)
        if owns_other and not isinstance(other, ChannelT):
            raise ConfigurationError(
                f"join_within joins a stream or a channel, got {type(other).__name__}")
        joiner: IntervalJoin[BatchT] = IntervalJoin(
            within=within, on=on, time=time, how=how, grace=grace, prefix=prefix,
            left_schema=self.channel.schema, right_schema=other.channel.schema
            if isinstance(other, Stream) else other.schema)
        # Subscribed now, not when iteration starts: the agent reads what is
        # sent to the other channel from the moment it asked for the join.
        right = other if isinstance(other, Stream) else Stream(other)
        right._require_root("join_within")
        return self._derive(lambda parent: IntervalJoinedBatches(joiner, parent, right,
                                                                 owns_right=owns_other))

    def hold_item(self, item: Any, sources: List[BatchT]) -> None:
        """An operator hands the agent ``item``, made of rows of ``sources``.

        Until ``settle()`` (the operator calls it before its next item, the
        agent after a failure) ``sources()`` returns them, so sinks keep them
        unacknowledged until the agent's results are delivered. The caller
        acquired each once; ``settle()`` releases them.
        """
        root = self._root_stream()
        root._chunk = item
        root._chunk_sources = list(sources)

    def track_read(self, task: "asyncio.Future[Any]") -> None:
        """An operator reads this stream in ``task``: ``cancel_pending_reads`` cancels it."""
        reads = self._root_stream()._pending_reads
        reads.add(task)
        task.add_done_callback(reads.discard)


class _PayloadIterator:
    """``stream.batches()``: yields each batch's payload (list or RecordBatch)."""

    __slots__ = ("inner", "records")

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.records: Optional[AsyncIterator[Any]] = None

    def of_records(self, channel: ChannelT) -> AsyncIterator[Any]:
        """This iterator; for a channel whose ``value_type`` is a Record, one
        that yields each batch as a RecordBatch (``sabot.models.batches``)."""
        from .models.conversion import is_record_type
        if not is_record_type(channel.value_type):
            return self
        if self.records is None:
            from .models.batches import RecordBatches
            self.records = RecordBatches(self.inner, channel.value_type, channel)
        return self.records

    def __aiter__(self) -> "_PayloadIterator":
        return self

    async def __anext__(self) -> Any:
        batch = await self.inner.__anext__()
        return batch.payload


class _Skip:
    __slots__ = ()


_SKIP = _Skip()


class _Operator:
    """A derived stream's iterator that survives a cancelled ``__anext__``.

    Async generators are finished by a cancellation thrown into them (an
    ``asyncio.wait_for`` timeout), losing the value in hand and the stream.
    Here the parent's iterator is cancellation-safe, and an async step (an
    async ``fun``, an ``echo`` send) runs as a task that the next call picks
    up again, so nothing is lost and the stream goes on.
    """

    __slots__ = ("_parent", "_inflight")

    def __init__(self, parent: Any) -> None:
        self._parent = parent.__aiter__()
        self._inflight: Any = None

    def __aiter__(self) -> "_Operator":
        return self

    async def __anext__(self) -> Any:
        while True:
            inflight = self._inflight
            if inflight is not None:
                task, value = inflight
                result = await asyncio.shield(task)
                self._inflight = None
            else:
                value = await self._parent.__anext__()
                result = self._apply(value)
                if inspect.isawaitable(result):
                    self._inflight = (asyncio.ensure_future(result), value)
                    continue
            out = self._finish(value, result)
            if out is not _SKIP:
                return out

    def _apply(self, value: Any) -> Any:
        return value

    def _finish(self, value: Any, result: Any) -> Any:
        return result


class _Map(_Operator):
    """``fun(value)`` for each value (``fun`` sync or async)."""

    __slots__ = ("_fun",)

    def __init__(self, parent: Any, fun: Callable[[Any], Any]) -> None:
        super().__init__(parent)
        self._fun = fun

    def _apply(self, value: Any) -> Any:
        return self._fun(value)


class _Filter(_Map):
    """The values for which ``fun(value)`` is true."""

    __slots__ = ()

    def _finish(self, value: Any, result: Any) -> Any:
        return value if result else _SKIP


class _Enumerate(_Operator):
    __slots__ = ("_i",)

    def __init__(self, parent: Any, start: int) -> None:
        super().__init__(parent)
        self._i = start

    def _finish(self, value: Any, result: Any) -> Any:
        i = self._i
        self._i = i + 1
        return (i, value)


class _Echo(_Operator):
    __slots__ = ("_channels",)

    def __init__(self, parent: Any, channels: Any) -> None:
        super().__init__(parent)
        self._channels = channels

    def _apply(self, value: Any) -> Any:
        return self._send_all(value)

    async def _send_all(self, value: Any) -> None:
        for channel in self._channels:
            await channel.send(value=value)

    def _finish(self, value: Any, result: Any) -> Any:
        return value


class _RunPerBatch:
    """``stream.through(pipeline)``: the pipeline's result for every batch."""

    __slots__ = ("_batches", "_run", "_inflight")

    def __init__(self, parent: "Stream", run_batch: Callable[[Any], Any]) -> None:
        self._batches = parent.batches()
        self._run = run_batch
        self._inflight: Optional["asyncio.Future[Any]"] = None

    def __aiter__(self) -> "_RunPerBatch":
        return self

    async def __anext__(self) -> Any:
        if self._inflight is None:
            batch = await self._batches.__anext__()
            self._inflight = asyncio.ensure_future(self._run(batch))
        # Shielded: a cancelled caller picks the same run up next time.
        result = await asyncio.shield(self._inflight)
        self._inflight = None
        return result


class _Take:
    """``stream.take(n, within)``: lists of up to n values (see Stream.take).

    Cancellation-safe: a timeout never cancels the read below; a read still
    running when a chunk is yielded is picked up by the next call. The
    batches behind the chunk in hand are published on the root stream
    (``_chunk_sources``) so the agent can hold them for sink deliveries and
    settle them when it skips a failing chunk.
    """

    def __init__(self, parent: "Stream", n: int, within: Optional[float]) -> None:
        self._it = parent.__aiter__()
        # Reading the subscription itself (not an operator): values already
        # queued are taken without a task each.
        self._poll = self._it.poll if isinstance(self._it, CursorT) else None
        self._root = parent._root_stream()
        self._n = n
        self._within = within
        self._buf: List[Any] = []
        self._held: List[Any] = []
        self._deadline = 0.0
        self._pending: Optional["asyncio.Future[Any]"] = None
        self._error: Optional[BaseException] = None
        self._ended = False

    def __aiter__(self) -> "_Take":
        return self

    def _add(self, value: Any, loop: asyncio.AbstractEventLoop) -> None:
        if not self._buf and self._within is not None:
            self._deadline = loop.time() + self._within
        batch = self._root.current_batch
        held = self._held
        if batch is not None and (not held or held[-1] is not batch):
            batch.acquire()
            held.append(batch)
        self._buf.append(value)

    def _emit(self) -> List[Any]:
        chunk, self._buf = self._buf, []
        root = self._root
        root._chunk = chunk
        root._chunk_sources = self._held
        self._held = []
        return chunk

    def _release_previous(self) -> None:
        # The agent asked for the next chunk: it is finished with the last one.
        root = self._root
        for batch in root._chunk_sources:
            batch.release()
        root._chunk_sources = []
        root._chunk = None

    async def __anext__(self) -> List[Any]:
        self._release_previous()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._ended:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        n, within, poll = self._n, self._within, self._poll
        while True:
            while poll is not None and self._pending is None and len(self._buf) < n:
                value = poll(_EMPTY)
                if value is _EMPTY:
                    break
                self._add(value, loop)
            if len(self._buf) >= n or (self._buf and within is not None
                                       and loop.time() >= self._deadline):
                return self._emit()
            if self._pending is None:
                self._pending = asyncio.ensure_future(_read(self._it))
                reads = self._root._pending_reads
                reads.add(self._pending)
                self._pending.add_done_callback(reads.discard)
            timeout = None if (within is None or not self._buf) else max(
                0.0, self._deadline - loop.time())
            done, _ = await asyncio.wait({self._pending}, timeout=timeout)
            if not done:
                return self._emit()  # the window closed: the partial chunk
            task, self._pending = self._pending, None
            if task.cancelled():
                continue  # cancelled by cancel_pending_reads(): read again
            try:
                value = task.result()
            except Exception as exc:
                if self._buf:
                    self._error = exc  # hand over what was read, then fail
                    return self._emit()
                raise
            if value is _END:
                self._ended = True
                if self._buf:
                    return self._emit()
                raise StopAsyncIteration
            self._add(value, loop)


class _End:
    __slots__ = ()


_END = _End()


async def _read(it: Any) -> Any:
    # One read of the parent as a task; the end of the stream as a value,
    # since a task cannot carry StopAsyncIteration out cleanly.
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return _END
