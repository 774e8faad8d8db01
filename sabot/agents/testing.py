"""``agent.test_context()``: run an agent on a private in-memory channel.

The channel has the ``key_type`` and ``value_type`` of the agent's own
channel, so the agent sees what the real channel gives it: a record is the
record (as in Faust, where values put travel as they are), and a value that
is not yet of the type (a dict, JSON bytes) is decoded into it as the real
channel decodes a message (``sabot.models.codec``); one that does not fit
raises ``DecodeError`` naming the field, from ``put``. ``stream.batches()``
of a record type gives RecordBatches as on the real channel.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, List, Optional

import pyarrow as pa

from ..exceptions import DecodeError
from ..types import ChannelT, Headers

if TYPE_CHECKING:
    from .agent import Agent, AgentFailure

__all__ = ["AgentTestContext"]


class AgentTestContext:
    """Feed values to an agent and collect what it yields, in memory.

    ``put(value)`` returns once the agent has finished with the value, with
    the list of values it yielded for it; ``results`` holds every yielded
    value in order. An exception raised by the agent is raised by ``put``.
    """

    def __init__(self, agent: Agent, *, channel: Optional[ChannelT] = None) -> None:
        from ..channels.memory import MemoryChannel
        self.agent = agent
        own = agent.channel
        self.channel: ChannelT = channel or MemoryChannel(
            agent.app, f"{agent.name}.test", schema=own.schema,
            key_type=getattr(own, "key_type", None), value_type=getattr(own, "value_type", None))
        self.results: List[Any] = []
        self._current: List[Any] = []
        self._clone: Optional["Agent"] = None
        self._error: Optional[BaseException] = None
        self._wake: Optional["asyncio.Future[None]"] = None

    async def __aenter__(self) -> "AgentTestContext":
        agent = self.agent
        clone = agent.derive(channel=self.channel, sink=[self._collect],
                             executor="native", on_error="skip")
        clone.on_failure = self._on_failure
        self._clone = clone
        await clone.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._clone is not None:
            await self._clone.stop()

    def _collect(self, value: Any) -> None:
        self.results.append(value)
        self._current.append(value)

    def _on_failure(self, failure: AgentFailure) -> None:
        self._error = failure.error
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    @property
    def crash_count(self) -> int:
        """Times the agent raised since the context was entered."""
        return self._clone.crash_count if self._clone is not None else 0

    async def put(self, value: Any = None, *, key: Any = None,
                  headers: Optional[Headers] = None) -> List[Any]:
        """Send ``value`` and wait until the agent is done with it."""
        value = _typed(value, getattr(self.channel, "value_type", None))
        key = _typed(key, getattr(self.channel, "key_type", None), key=True)
        return await self._feed([value], keys=[key], headers=[headers])

    async def put_batch(self, values: Any) -> List[Any]:
        """Send a list or RecordBatch as one batch; wait until it is processed."""
        typ = getattr(self.channel, "value_type", None)
        if typ is not None and not isinstance(values, pa.RecordBatch):
            values = [_typed(value, typ) for value in values]
        return await self._feed(values)

    async def _feed(self, values: Any, keys: Any = None, headers: Any = None) -> List[Any]:
        assert self._clone is not None, "use `async with agent.test_context() as ctx`"
        loop = asyncio.get_running_loop()
        done = self._wake = loop.create_future()
        self._current = []
        self._error = None
        batch = self.channel.make_batch(values, keys=keys, headers=headers)

        def finished(_: Any) -> None:
            if not done.done():
                done.set_result(None)
        batch.on_done = finished
        await self.channel.publish(batch)
        ended = asyncio.ensure_future(self._clone.wait_done())
        try:
            await asyncio.wait({done, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return list(self._current)


def _typed(value: Any, typ: Any, *, key: bool = False) -> Any:
    """``value`` as the channel typed ``typ`` delivers it (see the module docstring)."""
    if typ is None or value is None or isinstance(value, typ):
        return value
    from ..models.codec import TypedCodec, describe_error, serializer_for
    codec = TypedCodec(serializer_for(typ, None, key=key), typ)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return codec.decode(bytes(value))
    try:
        return codec.prepare(value)
    except Exception as exc:  # noqa: BLE001 - whatever it was, the value does not fit
        raise DecodeError(describe_error(typ, exc), codec=codec.name) from exc
