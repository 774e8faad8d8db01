"""Where an agent's results go: channels, topics, other agents, callables.

``Sink`` gives every kind one ``deliver``; ``hold_until_done`` keeps the
input batches behind a result unacknowledged until its delivery (a Kafka
write, a dead letter) is durable, and abandons them if it fails.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any, Awaitable, Callable, Dict, Optional, Sequence, Tuple, Union

import pyarrow as pa

from ..exceptions import ConfigurationError
from ..types import AgentT, BatchT, ChannelT, SinkT

__all__ = ["Sink", "SinkTarget", "hold_until_done", "FailureLog"]

logger = logging.getLogger("sabot.agents")

#: What ``sink=[...]`` takes: a channel, a topic, an agent (its input channel),
#: anything else with ``send``, or a plain callable (sync or async).
SinkTarget = Union[SinkT, Callable[[Any], Any]]


class Sink:
    """Uniform ``deliver`` over a channel, an agent, anything with ``send``, or a callable."""

    __slots__ = ("target", "_send", "_send_batch", "_send_from", "_callable")

    def __init__(self, target: SinkTarget) -> None:
        self.target = target
        self._send: Optional[Callable[..., Awaitable[Any]]] = None
        self._send_batch: Optional[Callable[[Any], Awaitable[Any]]] = None
        self._send_from: Optional[Callable[[Any, Sequence[BatchT]], Awaitable[Any]]] = None
        self._callable: Optional[Callable[[Any], Any]] = None
        if isinstance(target, SinkT):
            self._send = target.send
            channel = target.channel if isinstance(target, AgentT) else target
            if isinstance(channel, ChannelT):
                # A channel, or an agent's input channel: the value is sent on
                # behalf of the batches it came from (a RecordBatch whole).
                self._send_from = channel.send_from
            else:
                # Anything else with send(): a RecordBatch goes to its
                # send_batch() when it has one (an optional method, by design).
                self._send_batch = getattr(target, "send_batch", None)
        elif callable(target):
            self._callable = target
        else:
            raise ConfigurationError(
                f"sink {target!r} is neither a channel, an agent nor a callable")

    async def deliver(self, value: Any, sources: Sequence[BatchT] = ()) -> Any:
        """Hand ``value`` over; the result is what ``hold_until_done`` waits on."""
        if self._callable is not None:
            out = self._callable(value)
            if inspect.isawaitable(out):
                out = await out
            return None
        if self._send_from is not None:
            return await self._send_from(value, sources)
        if isinstance(value, pa.RecordBatch) and self._send_batch is not None:
            return await self._send_batch(value)
        assert self._send is not None  # set unless the target is a callable
        return await self._send(value=value)

    def __repr__(self) -> str:
        # Sinks are shown by name: channels and agents have one, a callable its repr.
        return getattr(self.target, "name", None) or repr(self.target)


class FailureLog:
    """One log line per kind of failed delivery and ``interval`` seconds.

    A failure rarely comes alone: an aborted transaction or a lost
    connection fails every output in flight, thousands at a time. The first
    of a kind (its exception type and text) is logged at once; the ones like
    it within ``interval`` are counted, and the next line of that kind says
    how many were left out.
    """

    #: Kinds remembered at most (the oldest are forgotten past it).
    max_kinds = 64

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        #: kind -> (when it was last logged, how many were left out since).
        self._kinds: Dict[str, Tuple[float, int]] = {}

    def failed(self, reason: str) -> None:
        now = time.monotonic()
        last = self._kinds.get(reason)
        if last is not None and now - last[0] < self.interval:
            self._kinds[reason] = (last[0], last[1] + 1)
            return
        if last is None and len(self._kinds) >= self.max_kinds:
            self._kinds.pop(next(iter(self._kinds)))
        self._kinds[reason] = (now, 0)
        more = f" ({last[1]} more failed the same way since the last line)" if last and last[1] else ""
        logger.error("delivery failed (%s): the input stays unacknowledged%s", reason, more)


_failures = FailureLog()


def hold_until_done(sources: Sequence[BatchT], result: Any) -> None:
    """Keep ``sources`` unacknowledged until ``result`` (a delivery future) is done.

    A sink returned a delivery future (a Kafka write), or a dead letter is on
    its way: the input batches are released once it is durable, abandoned if
    it fails. Anything but an unfinished future needs no holding.
    """
    if not sources or not isinstance(result, asyncio.Future):
        return
    if result.done() and not result.cancelled() and result.exception() is None:
        return
    sources = list(sources)  # the caller's list may change meanwhile
    for batch in sources:
        batch.acquire()

    def settle(fut: Any) -> None:
        # A failed delivery must not acknowledge its input: abandon it, so a
        # transport delivers it again after a restart.
        failed = fut.cancelled() or fut.exception() is not None
        if failed:
            _failures.failed("cancelled" if fut.cancelled() else repr(fut.exception()))
        for batch in sources:
            if failed:
                batch.abandon()
            else:
                batch.release()
    if result.done():
        settle(result)
    else:
        result.add_done_callback(settle)
