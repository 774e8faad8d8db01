"""Where an agent's results go: channels, topics, other agents, callables.

``Sink`` gives every kind one ``deliver``; ``hold_until_done`` keeps the
input batches behind a result unacknowledged until its delivery (a Kafka
write, a dead letter) is durable, and abandons them if it fails.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pyarrow as pa

from ..exceptions import ConfigurationError

__all__ = ["Sink", "hold_until_done"]

logger = logging.getLogger("sabot.agents")


class Sink:
    """Uniform ``send`` over a channel, an agent or a plain callable."""

    __slots__ = ("target", "_send", "_send_batch", "_send_from", "_callable")

    def __init__(self, target: Any) -> None:
        self.target = target
        send = getattr(target, "send", None)
        channel = getattr(target, "channel", target)  # an agent: its input channel
        if send is not None and callable(send):
            self._send = send
            self._send_batch = getattr(target, "send_batch", None)
            self._send_from = getattr(channel, "send_from", None)
            self._callable = None
        elif callable(target):
            self._send = None
            self._send_batch = None
            self._send_from = None
            self._callable = target
        else:
            raise ConfigurationError(
                f"sink {target!r} is neither a channel, an agent nor a callable")

    async def deliver(self, value: Any, sources: Any = ()) -> Any:
        if self._callable is not None:
            out = self._callable(value)
            if inspect.isawaitable(out):
                out = await out
            return None
        if self._send_from is not None:
            return await self._send_from(value, sources)
        if isinstance(value, pa.RecordBatch) and self._send_batch is not None:
            return await self._send_batch(value)
        return await self._send(value=value)

    def __repr__(self) -> str:
        return getattr(self.target, "name", None) or repr(self.target)


def hold_until_done(sources: Any, result: Any) -> None:
    # A sink returned a delivery future (a Kafka write), or a dead letter is
    # on its way: keep the input batches unacknowledged until it is durable.
    if not sources or not isinstance(result, asyncio.Future):
        return
    if result.done() and not result.cancelled() and result.exception() is None:
        return
    if not isinstance(sources, list):
        sources = [sources]
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
