"""DataBridge: a bounded, closable queue between two executors.

A full queue makes ``put`` wait (backpressure reaches the producer instead of
memory growing); ``close`` wakes every waiter, producers and consumers, with
``ChannelClosed``. When source and target executors differ the values are
converted through Arrow IPC on the way in, as they would be at a real
process boundary, and the conversion is counted in the metrics.
"""
from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Deque, Optional

from ..exceptions import BridgeError, ChannelClosed
from .ipc import DEFAULT_INLINE_THRESHOLD, convert
from .metrics import BridgeMetrics

__all__ = ["DataBridge"]


class DataBridge:
    """Bounded async queue from a ``source`` executor type to a ``target`` one."""

    def __init__(self, maxsize: int = 64, *, source: str = "native",
                 target: str = "native", metrics: Optional[BridgeMetrics] = None,
                 inline_threshold: int = DEFAULT_INLINE_THRESHOLD) -> None:
        if maxsize < 1:
            raise ValueError("DataBridge maxsize must be at least 1")
        self.maxsize = maxsize
        self.source = source
        self.target = target
        self.metrics = metrics if metrics is not None else BridgeMetrics()
        self.inline_threshold = inline_threshold
        self._items: Deque[Any] = collections.deque()
        self._closed = False
        # One condition for both directions: every change wakes the waiters,
        # each re-checks its own predicate.
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed

    def transfer(self, value: Any) -> Any:
        """Convert ``value`` for the target executor (identity within one)."""
        if self.source == self.target:
            return value
        start = time.perf_counter()
        out, nbytes, via_shm = convert(value, self.inline_threshold)
        self.metrics.record_transfer(nbytes, time.perf_counter() - start, shm=via_shm)
        return out

    async def put(self, value: Any, timeout: Optional[float] = None) -> None:
        """Add ``value``; wait while full. ``timeout`` -> ``BridgeError``."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(
                    lambda: self._closed or len(self._items) < self.maxsize), timeout)
            except asyncio.TimeoutError:
                raise BridgeError(
                    f"backpressure timeout after {timeout}s: the target has not "
                    f"drained the bridge ({self.maxsize} items queued)") from None
            self._raise_if_closed()
            self._items.append(self.transfer(value))
            self._changed.notify_all()

    async def get(self) -> Any:
        """Take the oldest value; wait while empty. Closed -> ``ChannelClosed``."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._closed or self._items)
            self._raise_if_closed()
            value = self._items.popleft()
            self._changed.notify_all()
            return value

    async def close(self) -> None:
        """Close the bridge, drop what is queued, wake every waiter."""
        async with self._changed:
            self._closed = True
            self._items.clear()
            self._changed.notify_all()

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise ChannelClosed("the data bridge was closed")
