"""Reading two streams into an interval join, and acknowledging what it used.

``IntervalJoinedBatches`` is what ``stream.join_within(other, ...)`` iterates:
it reads both streams' batches at once (a read task per side, so neither
waits for the other), feeds them to ``sabot.joins.interval.IntervalJoin``
and yields the joined RecordBatches.

Acknowledgement (the rule of ``sabot.streams``, stretched over two inputs):

* A batch whose rows stay in the join's buffer is held (one extra
  ``acquire``) until they have all left it, so a transport commits it only
  when it can produce nothing more.
* A joined batch is handed to the agent with the batches its rows came from
  (``Stream.hold_item``): ``stream.sources()`` returns them, so sinks keep
  them unacknowledged until the agent's results are delivered, and they are
  released when the agent asks for the next joined batch.
* Rejected and late rows are written to their side's dead-letter channel
  before the join reads past their batch. So are all the rows of a batch
  that cannot be read at all (its key or time column is missing): that is
  not raised to the agent, whose restart would drop the buffers.
* When the app is asked to stop (``app.request_stop()``: a signal, a
  finite job), the watermarks will not move again, and the transport waits
  (up to its stop timeout) for every batch it delivered before it commits:
  the join gives up the batches its buffer holds (abandoned: not committed,
  delivered again after the restart), so the stop is not held up. A
  rebalance that takes partitions away waits ``broker_revoke_timeout`` for
  them, then leaves them uncommitted, the same way.
* An agent that crashes and restarts cancels the join's reads
  (``Stream.cancel_pending_reads``) and builds a new join over the same
  stream: the old join is then dropped, what it held is abandoned (never
  acknowledged: a transport delivers it again after the worker restarts)
  and, when it subscribed to the other channel itself, that subscription is
  closed. The new join starts with empty buffers.
"""
from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any, List, Optional, Set, Tuple

import pyarrow as pa

from ..channels.channel import Channel
from ..exceptions import SchemaError
from ..types import AppT, BatchT
from .interval import LEFT, RIGHT, IntervalJoin, IntervalStep
from .rejects import dead_letter_rows

if TYPE_CHECKING:
    from ..streams import Stream

__all__ = ["IntervalJoinedBatches"]

#: The interval join reading each root stream: a new one on the same stream
#: (the agent restarted and called join_within again) replaces it.
_JOIN_OF: "weakref.WeakKeyDictionary[Stream, IntervalJoinedBatches]" = weakref.WeakKeyDictionary()


class _Ended:
    __slots__ = ()


_ENDED = _Ended()


async def _read(it: Any) -> Any:
    # One read of a side as a task; its end as a value.
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return _ENDED


class IntervalJoinedBatches:
    """Async iterator of the joined RecordBatches of two streams (see the module docstring)."""

    def __init__(self, join: IntervalJoin[BatchT], left: "Stream", right: "Stream", *,
                 owns_right: bool) -> None:
        self.join = join
        self._streams = (left, right)
        # The right side first: the last stream a task starts reading is the
        # one tables attribute its writes to (sabot.streams.current_stream).
        right_cursor = right.raw_batches()
        self._cursors = (left.raw_batches(), right_cursor)
        self._owns_right = owns_right
        self._reads: List[Optional["asyncio.Future[Any]"]] = [None, None]
        self._ended = [False, False]
        #: Joined batches not yet handed out, with their (acquired) sources.
        self._ready: List[Tuple[pa.RecordBatch, List[BatchT]]] = []
        #: Batches held for the buffer.
        self._held: List[BatchT] = []
        self._writes: List["asyncio.Future[None]"] = []
        self._dropped = False
        #: Set once the app was asked to stop: buffered batches are let go.
        self._letting_go = False
        #: Buffered batches abandoned (never to be released on expiry).
        self._given_up: Set[int] = set()
        channel = left.channel
        self._app: Optional[AppT] = channel.app if isinstance(channel, Channel) else None
        self._stop_waiter: Optional["asyncio.Future[None]"] = None
        previous = _JOIN_OF.get(left)
        if previous is not None:
            previous._drop()
        _JOIN_OF[left] = self

    def __aiter__(self) -> "IntervalJoinedBatches":
        return self

    async def __anext__(self) -> pa.RecordBatch:
        left = self._streams[LEFT]
        # The agent asks for more: it is finished with the last joined batch.
        left.settle()
        if self._dropped:
            raise RuntimeError("this join was dropped when its agent restarted")
        while True:
            if self._writes:
                writes = asyncio.gather(*self._writes)
                await asyncio.shield(writes)
                self._writes = []
            if self._ready:
                batch, sources = self._ready.pop(0)
                left.hold_item(batch, sources)
                return batch
            if all(self._ended):
                raise StopAsyncIteration
            waiting: List["asyncio.Future[Any]"] = []
            if self._app is not None and not self._letting_go:
                if self._stop_waiter is None:
                    self._stop_waiter = asyncio.ensure_future(self._app.wait_for_stop_request())
                if self._stop_waiter.done():
                    self._let_go()
                else:
                    waiting.append(self._stop_waiter)
            for side in (LEFT, RIGHT):
                if self._ended[side]:
                    continue
                task = self._reads[side]
                if task is None:
                    task = self._reads[side] = asyncio.ensure_future(_read(self._cursors[side]))
                    left.track_read(task)
                    task.add_done_callback(self._on_read_done)
                waiting.append(task)
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if self._stop_waiter is not None and self._stop_waiter.done() \
                    and not self._letting_go:
                self._let_go()
            for side in (LEFT, RIGHT):
                task = self._reads[side]
                if task is None or not task.done():
                    continue
                self._reads[side] = None
                if task.cancelled():
                    raise asyncio.CancelledError()  # cancel_pending_reads: the agent restarts
                self._take(side, task.result())

    def _on_read_done(self, task: "asyncio.Future[Any]") -> None:
        if task.cancelled():
            self._drop()

    def _take(self, side: int, got: Any) -> None:
        join = self.join
        if got is _ENDED:
            self._ended[side] = True
            self._apply(join.end(side))
            return
        batch: BatchT = got
        try:
            frame = join.read(side, batch.payload, keys=batch.keys,
                              timestamps=batch.timestamps, timestamp=batch.timestamp)
        except SchemaError as exc:
            # Not raised to the agent: a restart would drop the buffers (and
            # the other stream has no agent of its own). The batch's rows go
            # to their dead letters with the error, and the join goes on.
            reason = f"{type(exc).__name__}: {exc}"
            self._reject(side, batch, [(i, reason) for i in range(len(batch))])
            return
        step = join.add(side, batch, frame)
        self._reject(side, batch, step.rejects)
        self._apply(step, batch)

    def _reject(self, side: int, batch: BatchT, rejects: List[Any]) -> None:
        if rejects:
            channel = self._streams[side].channel
            self._writes.append(asyncio.ensure_future(
                dead_letter_rows(channel, batch, rejects, self.join.name)))

    def _apply(self, step: IntervalStep[BatchT], batch: Optional[BatchT] = None) -> None:
        # Acquire before releasing: a batch both expiring and in the output
        # must not finish in between.
        if step.output is not None:
            for source in step.sources:
                source.acquire()
            self._ready.append((step.output, step.sources))
        if step.buffered and batch is not None:
            batch.acquire()
            if self._letting_go:
                self._give_up(batch)
            else:
                self._held.append(batch)
        for token in step.expired:
            if id(token) in self._given_up:
                self._given_up.discard(id(token))
                continue
            for i, held in enumerate(self._held):
                if held is token:
                    del self._held[i]
                    break
            token.release()

    def _give_up(self, batch: BatchT) -> None:
        self._given_up.add(id(batch))
        batch.abandon()

    def _let_go(self) -> None:
        # A stop was requested: no watermark will move any more, and the
        # transport waits for what the buffer holds before it commits. Give
        # it up (never acknowledged: delivered again after the restart).
        self._letting_go = True
        held, self._held = self._held, []
        for batch in held:
            self._give_up(batch)

    def _drop(self) -> None:
        # The agent restarts: this join's state is gone; what it held is not done.
        if self._dropped:
            return
        self._dropped = True
        for batch in self._held:
            batch.abandon()
        self._held = []
        if self._stop_waiter is not None:
            self._stop_waiter.cancel()
        for _, sources in self._ready:
            for batch in sources:
                batch.abandon()
        self._ready = []
        for task in self._reads:
            if task is None:
                continue
            if not task.done():
                task.cancel()
            elif not task.cancelled() and task.exception() is None and task.result() is not _ENDED:
                # Read and never joined: its cursor would release it on the next read.
                unread: BatchT = task.result()
                unread.acquire()
                unread.abandon()
        if self._owns_right:
            self._streams[RIGHT].close()
