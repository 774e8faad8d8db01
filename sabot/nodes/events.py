"""ExecutionEvent and the bus that broadcasts them (seed 004).

Every state change of a pipeline run is published, so monitoring, tests and
status pages follow a run without polling it. Subscribers are either
callbacks (called at once, in order) or bounded async iterators that drop
their oldest event when a slow reader lets them fill up.
"""
from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, List, Optional

__all__ = ["EventKind", "ExecutionEvent", "EventBus", "EventSubscription"]

logger = logging.getLogger(__name__)


class EventKind(str, enum.Enum):
    """What happened."""

    PIPELINE_STARTED = "pipeline_started"
    PIPELINE_COMPLETED = "pipeline_completed"
    PIPELINE_FAILED = "pipeline_failed"
    NODE_STARTED = "node_started"
    NODE_COMPLETED = "node_completed"
    NODE_FAILED = "node_failed"
    NODE_RETRYING = "node_retrying"


@dataclass(frozen=True)
class ExecutionEvent:
    """One event of one pipeline run; node fields are empty for pipeline events."""

    kind: EventKind
    pipeline: str
    run_id: int
    node_id: Optional[str] = None
    attempt: int = 0
    error: Optional[BaseException] = None
    delay: Optional[float] = None
    duration: Optional[float] = None
    timestamp: float = field(default_factory=time.time)


class EventSubscription:
    """An async iterator over events, bounded: the oldest is dropped when full."""

    def __init__(self, bus: "EventBus", maxsize: int) -> None:
        self._bus = bus
        self._events: Deque[ExecutionEvent] = collections.deque(maxlen=maxsize)
        self._wakeup: Optional[asyncio.Event] = None
        self._closed = False
        #: Events lost because this subscriber fell behind.
        self.dropped = 0

    def _deliver(self, event: ExecutionEvent) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
        self._events.append(event)
        if self._wakeup is not None:
            self._wakeup.set()

    def pending(self) -> List[ExecutionEvent]:
        """Take every event received so far without waiting."""
        events = list(self._events)
        self._events.clear()
        return events

    def __aiter__(self) -> "EventSubscription":
        return self

    async def __anext__(self) -> ExecutionEvent:
        while not self._events:
            if self._closed:
                raise StopAsyncIteration
            if self._wakeup is None:
                self._wakeup = asyncio.Event()
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._events.popleft()

    def close(self) -> None:
        """Stop receiving events; iteration ends once those received are read."""
        self._closed = True
        self._bus.unsubscribe(self)
        if self._wakeup is not None:
            self._wakeup.set()


class EventBus:
    """Broadcasts ``ExecutionEvent``s to every subscriber."""

    def __init__(self) -> None:
        self._callbacks: List[Callable[[ExecutionEvent], Any]] = []
        self._subscriptions: List[EventSubscription] = []

    def subscribe(self, callback: Optional[Callable[[ExecutionEvent], Any]] = None,
                  *, maxsize: int = 1024) -> Any:
        """Call ``callback(event)`` for each event, or return an async iterator."""
        if callback is not None:
            self._callbacks.append(callback)
            return callback
        sub = EventSubscription(self, maxsize)
        self._subscriptions.append(sub)
        return sub

    def unsubscribe(self, subscriber: Any) -> None:
        """Remove a callback or subscription; unknown ones are ignored."""
        for registry in (self._callbacks, self._subscriptions):
            if subscriber in registry:
                registry.remove(subscriber)

    def publish(self, event: ExecutionEvent) -> None:
        """Hand ``event`` to every subscriber; a raising callback is logged."""
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:  # one bad listener must not stop the pipeline
                logger.exception("execution event callback %r raised", callback)
        for sub in list(self._subscriptions):
            sub._deliver(event)
