"""Pure-Python twin of ``sabot/_cython/channels.pyx``: batches, fan-out, iterators.

The two modules expose the same classes with the same behaviour; the Cython one
is selected by ``sabot._fastpath`` unless ``SABOT_PURE_PYTHON=1``. Keep them the
same shape, class for class and method for method.

How a channel moves data
------------------------
A ``FanOut`` is a log of ``Batch`` objects. Every subscriber has its own queue
of batch *references* (fan-out costs one append per subscriber per batch, not
per value) and a position used for backpressure. ``append`` adds one value to
the channel's *open* batch (the newest one, still growing), so one-at-a-time
sends cost a list append; a reader that takes the open batch seals it, and the
next send opens a new one. A batch is held once per subscriber; a reader
releases it when it asks for something beyond it, and the last release calls
``on_done`` (flow control in memory, commit or XACK on transports).

Backpressure: a subscriber lags by the values, batches and bytes sent to it
and not yet released. Past ``maxsize`` values, ``max_batches`` batches or
``max_bytes`` bytes, ``append``/``publish`` tell the sender to
``wait_capacity``, which sleeps while such a subscriber still has a batch
queued (not yet taken): whatever a reader holds, one more batch may wait for
it, so one large batch never stalls its sender until it is consumed. Handles
are held weakly: when a ``Subscriber`` is garbage collected its queued and
in-flight batches are released and it stops counting for backpressure.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from time import monotonic as _monotonic
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, List, Optional, Sequence, cast

from ..exceptions import ChannelClosed
from ..types import Event, Headers

_logger = logging.getLogger("sabot.channels")

__all__ = ["Batch", "FanOut", "Subscriber", "ValueIterator", "BatchIterator",
           "EventIterator"]

_list = list
#: An iterator's rows while it holds no batch (the compiled twin's ``None``).
_NO_ROWS: Sequence[Any] = ()

if TYPE_CHECKING:
    from typing_extensions import Self


class Batch:
    """Values (a list or a ``pyarrow.RecordBatch``) with envelope and ack count."""

    __slots__ = ("payload", "keys", "headers", "timestamps", "positions",
                 "timestamp", "on_done", "on_abandon", "published_at", "nbytes", "_refs", "_rows",
                 "_done", "_abandoned", "_upstream", "__weakref__")

    def __init__(self, payload: Any, keys: Optional[Sequence[Any]] = None,
                 headers: Optional[Sequence[Any]] = None,
                 timestamps: Optional[Sequence[float]] = None,
                 positions: Optional[Sequence[Any]] = None,
                 on_done: Optional[Callable[[Batch], Any]] = None,
                 timestamp: Optional[float] = None, nbytes: Optional[int] = None) -> None:
        self.payload = payload
        #: Bytes the payload holds, for the channel's byte bound: a RecordBatch
        #: knows its size; a list counts 0 unless the producer says (a fetch).
        self.nbytes: int
        if nbytes is not None:
            self.nbytes = nbytes
        elif type(payload) is _list:
            self.nbytes = 0
        else:
            self.nbytes = getattr(payload, "nbytes", 0)
        self.keys = keys
        self.headers: Optional[Sequence[Optional[Headers]]] = headers
        self.timestamps = timestamps
        self.positions = positions
        self.on_done = on_done
        #: Called once, with the batch, when a holder abandons it (it will
        #: never be done): transports stop waiting for it.
        self.on_abandon: Optional[Callable[[Batch], Any]] = None
        self.timestamp: float = time.time() if timestamp is None else timestamp
        self._refs = 0
        self._done = False
        self._abandoned = False
        self._upstream: Optional[List[Batch]] = None
        self.published_at = 0.0
        self._rows: Optional[List[Any]] = payload if type(payload) is _list else None

    def __len__(self) -> int:
        return len(self.payload)

    def __repr__(self) -> str:
        kind = "list" if type(self.payload) is _list else type(self.payload).__name__
        return f"<Batch {kind} len={len(self)} refs={self._refs} done={self._done}>"

    def rows(self) -> List[Any]:
        """The values as Python objects (RecordBatch rows become dicts, once)."""
        rows = self._rows
        if rows is None:
            rows = self._rows = self.payload.to_pylist()
        return rows

    def event(self, i: int) -> Event:
        """The ``i``-th value with its key, headers, timestamp and position."""
        return Event(
            None if self.keys is None else self.keys[i],
            self.rows()[i],
            None if self.headers is None else self.headers[i],
            self.timestamp if self.timestamps is None else self.timestamps[i],
            None if self.positions is None else self.positions[i],
        )

    def acquire(self, n: int = 1) -> None:
        """Count ``n`` more holders; ``on_done`` waits for all of them."""
        if self._done:
            raise RuntimeError("acquire() on a batch that is already done")
        self._refs += n

    def release(self) -> None:
        """One holder is finished; the last one fires ``on_done``."""
        self._refs -= 1
        if self._refs <= 0 and not self._done and not self._abandoned:
            self._finish()

    def abandon(self) -> None:
        """One holder gives up without finishing: ``on_done`` will never fire.

        Used when an agent stops or crashes with the batch in hand, so a
        transport never commits values that were not processed.
        """
        self._refs -= 1
        first = not self._abandoned
        self._abandoned = True
        if first and self.on_abandon is not None:
            try:
                self.on_abandon(self)
            except Exception:
                _logger.exception("on_abandon callback of %r failed", self)
        if self._upstream is not None:
            # What this batch was sent on behalf of is not finished either.
            upstream, self._upstream = self._upstream, None
            for batch in upstream:
                batch.abandon()

    def _finish(self) -> None:
        self._done = True
        callback = self.on_done
        if callback is not None:
            try:
                callback(self)
            except Exception:
                # A failing ack callback must not look like the agent failing
                # on a value (it runs inside the reader's __anext__).
                _logger.exception("on_done callback of %r failed", self)
        if self._upstream is not None:
            upstream, self._upstream = self._upstream, None
            for batch in upstream:
                batch.release()

    def link(self, upstream: Batch) -> None:
        """Hold ``upstream`` until this batch is done (abandon it if this is).

        An agent forwarding a value from a transport batch to a memory channel
        links them, so the offset is committed only once the value has been
        processed downstream, not merely queued.
        """
        upstream.acquire()
        if self._upstream is None:
            self._upstream = [upstream]
        else:
            self._upstream.append(upstream)

    @property
    def tracked(self) -> bool:
        """True when finishing this batch acknowledges something (a callback or a link)."""
        return self.on_done is not None or self._upstream is not None

    @property
    def done(self) -> bool:
        """True once every holder released the batch."""
        return self._done

    @property
    def abandoned(self) -> bool:
        """True when a holder gave up on the batch (it will never be done)."""
        return self._abandoned

    @property
    def refs(self) -> int:
        """How many holders still hold the batch."""
        return self._refs

    def _append(self, value: Any, key: Any, headers: Optional[Headers]) -> None:
        # One value into an open (memory) batch, keeping envelopes aligned.
        # An open batch's payload and envelopes are lists (made here).
        payload = self.payload
        if self.keys is not None or key is not None or headers is not None:
            n = len(payload)
            if self.keys is None:
                self.keys = [None] * n
                self.headers = [None] * n
            cast(List[Any], self.keys).append(key)
            cast(List[Any], self.headers).append(headers)
        payload.append(value)


class _SubscriberState:
    """One subscriber's queue, positions and waiters; owned by the FanOut.

    ``pos``, ``bpos`` and ``nbpos`` count the values, batches and bytes this
    subscriber has released; the FanOut's totals minus them are its lag.
    """

    __slots__ = ("queue", "pos", "bpos", "nbpos", "inflight", "waiters", "ref", "active")

    def __init__(self, pos: int, bpos: int = 0, nbpos: int = 0) -> None:
        self.queue: Deque[Batch] = deque()
        self.pos = pos
        self.bpos = bpos
        self.nbpos = nbpos
        self.inflight: List[Batch] = []
        self.waiters: List["asyncio.Future[None]"] = []
        self.ref: Optional["weakref.ref[Subscriber]"] = None
        self.active = True

    def wake(self) -> None:
        waiters = self.waiters
        if waiters:
            self.waiters = []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)


class FanOut:
    """The core of one channel: subscribers, open batch, backpressure.

    Bounds: a subscriber may lag by ``maxsize`` values, ``max_batches``
    batches and ``max_bytes`` bytes (sent and not yet released). Past any of
    them, senders wait, but only while a batch is still queued for that
    subscriber (not yet taken): every reader may hold the batches it took,
    however large, and one more waits for it. So a 20,000-row batch never
    blocks its sender until it is consumed, ``concurrency=N`` readers get N
    batches in flight, and memory stays flat whatever the batch size.
    """

    __slots__ = ("maxsize", "max_batches", "max_bytes", "batch_size", "total", "total_batches",
                 "total_bytes", "closed", "_states", "_open", "_last", "_min_pos", "_min_bpos",
                 "_min_nbpos", "_cap_waiters", "_loop")

    def __init__(self, maxsize: int = 4096, batch_size: int = 1000, loop: Any = None,
                 max_batches: Optional[int] = None, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_batches is None:
            max_batches = maxsize
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        if max_batches < 1 or max_bytes < 1:
            raise ValueError("max_batches and max_bytes must be at least 1")
        self.maxsize = maxsize
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.batch_size = max(1, min(batch_size, maxsize))
        self.total = 0
        self.total_batches = 0
        self.total_bytes = 0
        self.closed = False
        self._states: List[_SubscriberState] = []
        self._open: Optional[Batch] = None
        self._last: Optional[Batch] = None
        self._min_pos = 0
        self._min_bpos = 0
        self._min_nbpos = 0
        self._cap_waiters: List["asyncio.Future[None]"] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = loop

    # -- subscribers -------------------------------------------------------
    def subscribe(self) -> Subscriber:
        """A new subscriber that receives everything sent from now on."""
        if self.closed:
            raise ChannelClosed("channel is closed")
        # Seal the open batch: the newcomer must not see values sent before it.
        self._open = None
        state = _SubscriberState(self.total, self.total_batches, self.total_bytes)
        handle = Subscriber(self, state)
        state.ref = weakref.ref(handle, _DropCallback(self, state))
        self._states.append(state)
        return handle

    @property
    def subscriber_count(self) -> int:
        """How many live subscribers the channel has."""
        return len(self._states)

    def _drop(self, state: _SubscriberState, abandon: bool = False) -> None:
        # A subscriber went away: release what it held, stop counting it.
        if not state.active:
            return
        state.active = False
        try:
            self._states.remove(state)
        except ValueError:
            pass
        queue, inflight = state.queue, state.inflight
        state.queue, state.inflight = deque(), []
        for batch in queue:
            if batch is self._open:
                self._open = None
            if abandon:
                batch.abandon()
            else:
                batch.release()
        for batch in inflight:
            if abandon:
                batch.abandon()
            else:
                batch.release()
        state.wake()
        self._check_capacity()

    # -- producing ---------------------------------------------------------
    def append(self, value: Any, key: Any = None, headers: Optional[Headers] = None) -> bool:
        """Add one value; returns True when the caller must ``wait_capacity``."""
        if self.closed:
            raise ChannelClosed("channel is closed")
        batch = self._open
        if batch is None:
            batch = Batch([])
            self._push(batch)
            if self._states:
                self._open = batch
        batch._append(value, key, headers)
        self._last = batch
        self.total += 1
        if len(batch.payload) >= self.batch_size:
            self._open = None
        return self._maybe_over()

    def append_linked(self, value: Any, sources: List[Batch]) -> bool:
        """``append`` on behalf of ``sources``: they stay held until the value's batch is done."""
        wait = self.append(value)
        batch = self._last
        if batch is not None and not batch._done:
            for source in sources:
                batch.link(source)
        return wait

    def publish(self, batch: Batch) -> bool:
        """Hand a whole batch to every subscriber; True means wait for capacity."""
        if self.closed:
            raise ChannelClosed("channel is closed")
        self._open = None
        self._push(batch)
        self.total += len(batch)
        self.total_bytes += batch.nbytes
        return self._maybe_over()

    def _push(self, batch: Batch) -> None:
        self.total_batches += 1
        states = self._states
        n = len(states)
        if n == 0:
            batch._finish()
            return
        batch.published_at = _monotonic()
        batch.acquire(n)
        # A copy: waking a reader allocates, a collection may run a weakref
        # callback, and _drop would change the list under this loop.
        for state in list(states):
            if not state.active:
                batch.release()  # dropped after the acquire: not its batch
                continue
            state.queue.append(batch)
            if state.waiters:
                state.wake()

    def _maybe_over(self) -> bool:
        # Cheap and possibly stale (the minimums are refreshed by
        # _check_capacity): False means surely under every bound.
        return (self.total - self._min_pos >= self.maxsize
                or self.total_batches - self._min_bpos >= self.max_batches
                or self.total_bytes - self._min_nbpos >= self.max_bytes)

    def _state_over(self, state: _SubscriberState) -> bool:
        return bool(state.queue) and (
            self.total - state.pos >= self.maxsize
            or self.total_batches - state.bpos >= self.max_batches
            or self.total_bytes - state.nbpos >= self.max_bytes)

    def over_capacity(self) -> bool:
        """True when a subscriber is past a bound with a batch still queued for it."""
        return self._maybe_over() and any(self._state_over(s) for s in self._states)

    def lag(self) -> int:
        """Values sent and not yet released by the slowest subscriber."""
        if not self._states:
            return 0
        return self.total - min(s.pos for s in self._states)

    def _check_capacity(self) -> None:
        states = self._states
        if states:
            self._min_pos = min(s.pos for s in states)
            self._min_bpos = min(s.bpos for s in states)
            self._min_nbpos = min(s.nbpos for s in states)
        else:
            self._min_pos, self._min_bpos, self._min_nbpos = (
                self.total, self.total_batches, self.total_bytes)
        if self._cap_waiters and not self.over_capacity():
            waiters, self._cap_waiters = self._cap_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def wait_capacity(self) -> None:
        """Sleep while a subscriber is past a bound with a batch queued (backpressure)."""
        self._check_capacity()
        while self.over_capacity() and not self.closed:
            fut = self._get_loop().create_future()
            self._cap_waiters.append(fut)
            await fut
            self._check_capacity()
        if self.closed:
            raise ChannelClosed("channel closed while waiting for capacity")

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def close(self) -> None:
        """No more values: readers drain what is queued, then stop."""
        self.closed = True
        self._open = None
        for state in list(self._states):
            state.wake()
        waiters, self._cap_waiters = self._cap_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


class _DropCallback:
    """Weakref callback that drops a collected subscriber from its FanOut."""

    __slots__ = ("fanout", "state")

    def __init__(self, fanout: FanOut, state: _SubscriberState) -> None:
        self.fanout: Optional[FanOut] = fanout
        self.state = state

    def __call__(self, ref: Any) -> None:
        fanout = self.fanout
        if fanout is not None:
            self.fanout = None
            fanout._drop(self.state)


class Subscriber:
    """One reader of a channel (held weakly by the channel)."""

    __slots__ = ("_fanout", "_state", "observer", "on_wait", "__weakref__")

    def __init__(self, fanout: FanOut, state: _SubscriberState) -> None:
        self._fanout = fanout
        self._state = state
        #: Called with each batch this subscriber finished (agents time them).
        self.observer: Optional[Callable[[Batch], Any]] = None
        #: Called when a reader starts waiting for a batch (nothing is queued):
        #: a process agent's child answers its parent then.
        self.on_wait: Optional[Callable[[], Any]] = None

    def take(self) -> Optional[Batch]:
        """The next whole batch, or None; taking the open batch seals it."""
        state = self._state
        if state.queue:
            batch = state.queue.popleft()
            fanout = self._fanout
            if batch is fanout._open:
                fanout._open = None
            state.inflight.append(batch)
            if not state.queue and fanout._cap_waiters:
                # Nothing queued any more: a waiting sender may go on.
                fanout._check_capacity()
            return batch
        return None

    def done(self, batch: Batch) -> None:
        """The reader moved past ``batch``: count it released."""
        state = self._state
        try:
            state.inflight.remove(batch)
        except ValueError:
            return  # already released (dropped subscriber)
        state.pos += len(batch)
        state.bpos += 1
        state.nbpos += batch.nbytes
        batch.release()
        fanout = self._fanout
        if fanout._cap_waiters:
            fanout._check_capacity()
        if self.observer is not None:
            self.observer(batch)

    def waiter(self) -> "asyncio.Future[None]":
        """A future that completes when a batch arrives or the channel closes."""
        fut = self._fanout._get_loop().create_future()
        self._state.waiters.append(fut)
        if self.on_wait is not None:
            self.on_wait()
        return fut

    def discard_waiter(self, fut: "asyncio.Future[None]") -> None:
        """Forget a waiter that was cancelled or timed out."""
        try:
            self._state.waiters.remove(fut)
        except ValueError:
            pass

    @property
    def exhausted(self) -> bool:
        """True when the channel is closed and nothing is left to take."""
        return (self._fanout.closed or not self._state.active) and not self._state.queue

    @property
    def pending(self) -> int:
        """Batches queued and not yet taken."""
        return len(self._state.queue)

    @property
    def lag(self) -> int:
        """Values sent to this subscriber and not yet released."""
        return self._fanout.total - self._state.pos

    def close(self) -> None:
        """Unsubscribe now and stop receiving.

        What it still held is abandoned, not acknowledged: a transport will
        deliver it again after a restart. (A subscriber that is garbage
        collected instead releases what it held: its owner dropped it.)
        """
        self._fanout._drop(self._state, True)

    def values(self) -> ValueIterator:
        """A per-value async iterator (the agent's ``async for``)."""
        return ValueIterator(self)

    def batches(self) -> BatchIterator:
        """An async iterator of whole batches."""
        return BatchIterator(self)

    def events(self) -> EventIterator:
        """An async iterator of ``Event`` (key, value, headers, ...)."""
        return EventIterator(self)


class _IteratorBase:
    """Shared cursor logic: hold one batch, release it when moving past it."""

    __slots__ = ("_sub", "_batch", "_rows", "_i", "_n", "_waiting")

    def __init__(self, sub: Subscriber) -> None:
        self._sub = sub
        self._batch: Optional[Batch] = None
        # No batch held: no rows (``_i < _n`` is false), never read.
        self._rows: Sequence[Any] = _NO_ROWS
        self._i = 0
        self._n = 0
        self._waiting = False

    def __aiter__(self) -> Self:
        return self

    @property
    def subscriber(self) -> Subscriber:
        return self._sub

    @property
    def current_batch(self) -> Optional[Batch]:
        """The batch the last item came from (held until the next request)."""
        return self._batch

    @property
    def current_index(self) -> int:
        """Index in ``current_batch`` of the last item returned."""
        return self._i - 1

    def current_value(self) -> Any:
        """The last value returned (None before the first)."""
        if self._batch is None or self._i == 0:
            return None
        return self._rows[self._i - 1]

    def current_position(self) -> Any:
        """Transport position of the last value returned, if known."""
        batch = self._batch
        if batch is None or self._i == 0 or batch.positions is None:
            return None
        return batch.positions[self._i - 1]

    def release_current(self) -> None:
        """Release the held batch now (the reader is finished with it)."""
        batch = self._batch
        if batch is not None:
            self._batch = None
            self._rows = _NO_ROWS
            self._i = self._n = 0
            self._sub.done(batch)

    def _advance(self) -> bool:
        # Release the held batch and take the next; False when none is queued.
        self.release_current()
        batch = self._sub.take()
        if batch is None:
            return False
        self._batch = batch
        self._rows = batch.rows()
        self._i = 0
        self._n = len(self._rows)
        return True

    def poll(self, empty: Any = None) -> Any:
        """The next value without waiting, or ``empty`` when it would wait."""
        while True:
            i = self._i
            if i < self._n:
                self._i = i + 1
                return self._rows[i]
            if not self._advance():
                return empty

    async def _wait(self) -> None:
        if self._waiting:
            # Like an async generator: one awaiter at a time.
            raise RuntimeError("__anext__(): the iterator is already awaited by another task")
        if self._sub.exhausted:
            self.release_current()
            raise StopAsyncIteration
        fut = self._sub.waiter()
        self._waiting = True
        try:
            await fut
        except BaseException:
            self._sub.discard_waiter(fut)
            raise
        finally:
            self._waiting = False


class ValueIterator(_IteratorBase):
    """``async for value in stream``: walks each batch without suspending."""

    __slots__ = ()

    async def __anext__(self) -> Any:
        if self._waiting:
            raise RuntimeError("__anext__(): the iterator is already awaited by another task")
        while True:
            i = self._i
            if i < self._n:
                self._i = i + 1
                return self._rows[i]
            if not self._advance():
                await self._wait()


class EventIterator(_IteratorBase):
    """``stream.events()``: like ``ValueIterator`` but yields ``Event``."""

    __slots__ = ()

    async def __anext__(self) -> Event:
        if self._waiting:
            raise RuntimeError("__anext__(): the iterator is already awaited by another task")
        while True:
            i = self._i
            batch = self._batch
            if i < self._n and batch is not None:
                self._i = i + 1
                return batch.event(i)
            if not self._advance():
                await self._wait()


class BatchIterator(_IteratorBase):
    """``stream.batches()``: yields each batch as it is (no copy)."""

    __slots__ = ()

    async def __anext__(self) -> Batch:
        if self._waiting:
            raise RuntimeError("__anext__(): the iterator is already awaited by another task")
        while True:
            self.release_current()
            batch = self._sub.take()
            if batch is not None:
                self._batch = batch
                # The batch counts as consumed whole; current_value() is its
                # payload so crash reports name the failing batch.
                self._rows = [batch.payload]
                self._i = self._n = 1
                return batch
            await self._wait()
