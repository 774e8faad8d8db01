"""Sharing the values of one subscription among the instances of an agent.

``@app.agent(channel, concurrency=N)`` runs N instances of the agent over one
subscription. As in Faust, they share the *values*: each instance asks for
the next value and gets one nobody else has, so N instances that each await
some I/O per value overlap N awaits (200 instances awaiting 10 ms each get
close to 20,000 values a second).

Order: values are handed out in the order they were sent. Two values with the
same key are never processed at the same time: a value whose key is busy
waits until the instance holding that key asks for its next value, and
values of one key are handed out in their order. So per-key order (what
Kafka keeps per partition) holds with any concurrency; values without a key
are spread freely.

Acknowledgement still follows the batch: a batch is released (and, on a
transport, committed or acknowledged) once every one of its values has been
finished, that is, once the instance that took it asked for its next value
(after forwarding what it yielded for it to the sinks).
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Deque, Dict, Hashable, Optional, Tuple

from .types import BatchT, SubscriberT

__all__ = ["ValueDispatcher", "DispatchedIterator"]

#: A value waiting to be handed out: its batch and its index in the batch.
Entry = Tuple[BatchT, int]


def _order_key(key: Any) -> Optional[Hashable]:
    """What per-key order is kept on: the key, or its repr if it is not hashable."""
    if key is None:
        return None
    try:
        hash(key)
    except TypeError:
        return ("<unhashable>", repr(key))
    return key


class ValueDispatcher:
    """Hands out the values of ``subscriber``'s batches, one at a time, per-key in order."""

    def __init__(self, subscriber: SubscriberT) -> None:
        self._sub = subscriber
        self._batch: Optional[BatchT] = None
        self._i = 0
        self._n = 0
        #: Values of a batch not yet finished (handed out or not): batch -> count.
        self._left: Dict[BatchT, int] = {}
        #: Keys whose value an instance holds.
        self._busy: Dict[Hashable, bool] = {}
        #: Values waiting for their key to be free, per key, in order.
        self._blocked: Dict[Hashable, Deque[Entry]] = {}
        #: Values whose key was freed, first come first served.
        self._ready: Deque[Entry] = deque()
        self._waiters: Deque["asyncio.Future[None]"] = deque()
        self._data_waiter: Optional["asyncio.Future[None]"] = None

    @property
    def subscriber(self) -> SubscriberT:
        """The subscription whose values are shared."""
        return self._sub

    def values(self) -> "DispatchedIterator":
        """An iterator of values for one instance."""
        return DispatchedIterator(self, events=False)

    def events(self) -> "DispatchedIterator":
        """An iterator of ``Event`` for one instance."""
        return DispatchedIterator(self, events=True)

    # -- handing out ------------------------------------------------------------
    def next_entry(self) -> Optional[Entry]:
        """The next value to hand out, or None when one must wait.

        Raises ``StopAsyncIteration`` once the channel is closed and every
        value was handed out.
        """
        if self._ready:
            return self._ready.popleft()
        while True:
            batch = self._batch  # set whenever _i < _n
            while batch is not None and self._i < self._n:
                i = self._i
                self._i = i + 1
                keys = batch.keys
                if keys is None:
                    return batch, i
                key = _order_key(keys[i])
                if key is None:
                    return batch, i
                if key in self._busy:
                    # Behind a value of the same key: wait for it, in order.
                    blocked = self._blocked.get(key)
                    if blocked is None:
                        blocked = self._blocked[key] = deque()
                    blocked.append((batch, i))
                    continue
                self._busy[key] = True
                return batch, i
            taken = self._sub.take()
            if taken is None:
                if self._sub.exhausted and not self._blocked:
                    raise StopAsyncIteration
                return None
            n = len(taken)
            if n == 0:
                self._sub.done(taken)
                continue
            taken.rows()  # once, here: every instance reads the same rows
            self._batch, self._i, self._n = taken, 0, n
            self._left[taken] = n

    def finish(self, entry: Entry) -> None:
        """The instance holding ``entry`` is done with it: free its key, count it."""
        batch, i = entry
        keys = batch.keys
        if keys is not None:
            key = _order_key(keys[i])
            if key is not None:
                blocked = self._blocked.get(key)
                if blocked:
                    # The key passes to its next value, which is now ready.
                    self._ready.append(blocked.popleft())
                    if not blocked:
                        del self._blocked[key]
                    self._wake(1)
                else:
                    self._busy.pop(key, None)
        left = self._left[batch] - 1
        if left:
            self._left[batch] = left
        else:
            del self._left[batch]
            self._sub.done(batch)
        if self._waiters and self._sub.exhausted and not self._blocked and not self._ready \
                and self._i >= self._n:
            # Nothing will ever be handed out again: let every waiter see the end.
            self._wake(len(self._waiters))

    # -- waiting ------------------------------------------------------------------
    async def wait(self) -> None:
        """Wait until a value may be ready (new data, a freed key, or the end)."""
        loop = asyncio.get_running_loop()
        fut: "asyncio.Future[None]" = loop.create_future()
        self._waiters.append(fut)
        # A closed channel sends nothing more: then only a freed key (or the
        # end, see finish) wakes a waiter.
        if not self._sub.exhausted and (self._data_waiter is None or self._data_waiter.done()):
            self._data_waiter = data = self._sub.waiter()
            data.add_done_callback(self._on_data)
        try:
            await fut
        finally:
            if not fut.done() or fut.cancelled():
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass

    def _on_data(self, _: Any) -> None:
        self._data_waiter = None
        self._wake(len(self._waiters))

    def _wake(self, n: int) -> None:
        waiters = self._waiters
        while n > 0 and waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1


class DispatchedIterator:
    """One instance's view of a ``ValueDispatcher``: its values (or events).

    Asking for the next value finishes the one held. Offers what the fast
    path's iterators offer a ``Stream`` (``current_batch``, ``poll``, ...).
    """

    __slots__ = ("_d", "_entry", "_events", "_taken")

    def __init__(self, dispatcher: ValueDispatcher, *, events: bool) -> None:
        self._d = dispatcher
        self._entry: Optional[Entry] = None
        self._events = events
        self._taken = 0

    def __aiter__(self) -> "DispatchedIterator":
        return self

    async def __anext__(self) -> Any:
        self.release_current()
        d = self._d
        while True:
            entry = d.next_entry()
            if entry is not None:
                return self._hold(entry)
            await d.wait()

    def poll(self, empty: Any = None) -> Any:
        """The next value without waiting, or ``empty`` when it would wait."""
        self.release_current()
        try:
            entry = self._d.next_entry()
        except StopAsyncIteration:
            return empty
        return empty if entry is None else self._hold(entry)

    def _hold(self, entry: Entry) -> Any:
        self._entry = entry
        self._taken += 1
        batch, i = entry
        return batch.event(i) if self._events else batch.rows()[i]

    def release_current(self) -> None:
        """Finish the value held (its key is freed, its batch may be released)."""
        entry = self._entry
        if entry is not None:
            self._entry = None
            self._d.finish(entry)

    @property
    def subscriber(self) -> SubscriberT:
        """The subscription the dispatcher shares."""
        return self._d.subscriber

    @property
    def current_batch(self) -> Optional[BatchT]:
        """The batch of the value held (released once all its values are finished)."""
        return self._entry[0] if self._entry is not None else None

    @property
    def current_index(self) -> int:
        """Marks progress: changes with every value taken."""
        return self._taken

    @property
    def row_index(self) -> int:
        """Index in ``current_batch`` of the value held (-1 before the first)."""
        return self._entry[1] if self._entry is not None else -1

    def current_value(self) -> Any:
        """The value held (None before the first)."""
        if self._entry is None:
            return None
        batch, i = self._entry
        return batch.rows()[i]

    def current_position(self) -> Any:
        """Transport position of the value held, if known."""
        if self._entry is None:
            return None
        batch, i = self._entry
        return None if batch.positions is None else batch.positions[i]
