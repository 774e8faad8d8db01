"""Where an agent's results go: channels, topics, other agents, callables.

``Sink`` gives every kind one ``deliver``; ``hold_until_done`` keeps the
input batches behind a result unacknowledged until its delivery (a Kafka
write, a dead letter) is durable, and abandons them if it fails.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Awaitable, Callable, Optional, Sequence, Union

import pyarrow as pa

from ..exceptions import ConfigurationError
from ..types import AgentT, BatchT, ChannelT, SinkT

__all__ = ["Sink", "SinkTarget", "hold_until_done"]

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
            logger.error("delivery failed (%r): the input stays unacknowledged",
                         "cancelled" if fut.cancelled() else fut.exception())
        for batch in sources:
            if failed:
                batch.abandon()
            else:
                batch.release()
    if result.done():
        settle(result)
    else:
        result.add_done_callback(settle)
