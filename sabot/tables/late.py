"""Late events of windowed tables: where they go, and when their input may be acknowledged.

A late event (its window closed before it came) is not counted; it is sent,
with the reason, where the Arrow windows send theirs (``sabot.windows.operator``):

* by default to its source channel's dead-letter channel
  (``<topic>.dlq``, ``Channel.dead_letter``), with the reason in the
  ``sabot-error`` header and the source position, like any failed value;
* with ``late_channel=`` to that channel, with the same headers.

A windowed table is updated from synchronous code (``table[k] += 1``), so
the send happens in a task, in order. The input batch of a late event is
held (one more holder) from the moment it is found late until the send is
stored: a worker that stops or dies first has not acknowledged it, and the
event comes again. A send that fails is logged and leaves the batch held.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from typing import Any, Deque, Dict, NamedTuple, Optional, Tuple

from ..types import BatchT, ChannelT

__all__ = ["LateEvent", "LateWriter", "REASON_HEADER"]

logger = logging.getLogger("sabot.tables")

#: The header that says why a value was not counted (the dead letters' header).
REASON_HEADER = "sabot-error"


class LateEvent(NamedTuple):
    """One late event: what it was, why it is late, and the batch to hold."""

    key: Any
    value: Any
    reason: str
    headers: Dict[str, bytes]
    source: Optional[ChannelT]
    position: Any
    batch: Optional[BatchT]


class LateWriter:
    """Sends late events in order from a task; holds their batches until stored."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._queue: Deque[Tuple[LateEvent, Optional[ChannelT]]] = deque()
        self._task: Optional[asyncio.Task[None]] = None
        #: Late events stored where they were sent.
        self.sent = 0
        #: Late events that could not be sent (logged; their input stays unacknowledged).
        self.failed = 0

    def put(self, event: LateEvent, target: Optional[ChannelT]) -> None:
        """Queue ``event`` for ``target`` (``None``: the source's dead-letter channel)."""
        if target is None and event.source is None:
            self.failed += 1
            logger.error("table %r: late event %r has no source channel and no late_channel "
                         "is set; it is only counted (%s)", self.table_name, event.key,
                         event.reason)
            return
        if event.batch is not None:
            event.batch.acquire()
        self._queue.append((event, target))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._queue:
            event, target = self._queue.popleft()
            try:
                stored = await self._send(event, target)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(event, exc)
                continue
            if isinstance(stored, asyncio.Future) and not stored.done():
                stored.add_done_callback(functools.partial(self._settle_future, event))
            else:
                self._settle(stored, event)

    async def _send(self, event: LateEvent, target: Optional[ChannelT]) -> Any:
        if target is None:
            assert event.source is not None
            return await event.source.dead_letter(event.value, event.reason,
                                                  headers=event.headers,
                                                  position=event.position)
        headers = {REASON_HEADER: event.reason.encode(), **event.headers}
        if event.source is not None:
            headers["sabot-source"] = event.source.name.encode()
            if event.position is not None:
                headers.update(event.source.position_headers(event.position))
        return await target.send(key=event.key, value=event.value, headers=headers)

    def _settle_future(self, event: LateEvent, stored: "asyncio.Future[Any]") -> None:
        self._settle(stored, event)

    def _settle(self, stored: Any, event: LateEvent) -> None:
        if isinstance(stored, asyncio.Future):
            if stored.cancelled():
                self._failed(event, asyncio.CancelledError())
                return
            if stored.exception() is not None:
                self._failed(event, stored.exception())
                return
        self.sent += 1
        if event.batch is not None:
            event.batch.release()

    def _failed(self, event: LateEvent, exc: Optional[BaseException]) -> None:
        # The batch stays held: its offsets are not committed, the event comes again.
        self.failed += 1
        logger.error("table %r: late event %r could not be sent: %r (%s)",
                     self.table_name, event.key, exc, event.reason)

    async def flush(self) -> None:
        """Wait until every queued late event was handed to its channel."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
