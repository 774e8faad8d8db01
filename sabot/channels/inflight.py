"""What a transport handed to its agents and is not finished with yet.

Kafka and Redis both hand each fetch to the agents as a ``Delivery`` and,
before they commit or acknowledge at a revoke or a stop, wait for the
deliveries still in flight. A delivery ends in one of two ways:

* finished: every batch built from the fetch is done and its dead letters
  are stored (the transport's ``on_done``); the transport commits or XACKs;
* abandoned: a holder gave up on one of its batches (an agent stopped with
  it, a sink write failed). The batch says so itself (``Batch.on_abandon``):
  nobody polls for it. It will never be finished, so nobody waits for it,
  and its offsets or ids stay unacknowledged (delivered again later).

``InFlight.wait`` returns when nothing (of the given tags: Kafka waits per
partition at a revoke) is still in flight, or when the timeout passes.
"""
from __future__ import annotations

import asyncio
from typing import Any, Collection, Iterable, Optional, Set

__all__ = ["Delivery", "InFlight"]

_IN_FLIGHT, _FINISHED, _ABANDONED = 0, 1, 2


class Delivery:
    """One fetch handed to the agents; ``tag`` says what it belongs to."""

    __slots__ = ("tag", "state", "payload")

    def __init__(self, tag: Any = None, payload: Any = None) -> None:
        self.tag = tag
        self.state = _IN_FLIGHT
        #: Whatever the transport needs when it ends (Redis: the entry ids).
        self.payload = payload

    @property
    def in_flight(self) -> bool:
        """Neither finished nor abandoned."""
        return self.state == _IN_FLIGHT

    @property
    def abandoned(self) -> bool:
        """A holder gave up on one of its batches: it will never finish."""
        return self.state == _ABANDONED

    def __repr__(self) -> str:
        state = ("in flight", "finished", "abandoned")[self.state]
        return f"<Delivery {self.tag!r} {state}>"


class InFlight:
    """The deliveries of one transport (or reader) that are not finished."""

    def __init__(self) -> None:
        self._open: Set[Delivery] = set()
        self._changed: Optional[asyncio.Event] = None

    def open(self, tag: Any = None, payload: Any = None) -> Delivery:
        """A new delivery, in flight until ``finish`` or ``abandon``."""
        delivery = Delivery(tag, payload)
        self._open.add(delivery)
        return delivery

    def watch(self, delivery: Delivery, batches: Iterable[Any]) -> None:
        """Abandon ``delivery`` as soon as one of ``batches`` is abandoned."""
        for batch in batches:
            if batch.abandoned:
                self.abandon(delivery)
                return
            batch.on_abandon = lambda _batch, d=delivery: self.abandon(d)

    def finish(self, delivery: Delivery) -> bool:
        """``delivery`` is finished; False if it was not in flight any more."""
        if delivery.state != _IN_FLIGHT:
            return False
        delivery.state = _FINISHED
        self._open.discard(delivery)
        self.notify()
        return True

    def abandon(self, delivery: Delivery) -> None:
        """``delivery`` will never be finished: stop waiting for it."""
        if delivery.state == _IN_FLIGHT:
            delivery.state = _ABANDONED
            self._open.discard(delivery)
            self.notify()

    def forget(self, tags: Collection[Any]) -> None:
        """Drop the deliveries of ``tags`` (partitions revoked: their new owner reads them)."""
        for delivery in [d for d in self._open if d.tag in tags]:
            self.abandon(delivery)

    def count(self, tags: Optional[Collection[Any]] = None) -> int:
        """Deliveries in flight (of ``tags``, if given)."""
        if tags is None:
            return len(self._open)
        return sum(1 for d in self._open if d.tag in tags)

    def notify(self) -> None:
        """Wake ``wait`` (also for news of the transport's own, such as an XACK)."""
        if self._changed is not None:
            self._changed.set()

    async def changed(self, timeout: float) -> None:
        """Return at the next change (or after ``timeout`` seconds)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def wait(self, timeout: float, tags: Optional[Collection[Any]] = None) -> bool:
        """Wait until no delivery (of ``tags``) is in flight; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.count(tags):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await self.changed(remaining)
        return True
