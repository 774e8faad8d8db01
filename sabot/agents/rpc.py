"""Agent RPC with Faust's meaning: ``ask``, ``cast``, ``map``, ``kvmap``, ``join``, ``kvjoin``.

``await agent.ask(value)`` sends a request to the agent's channel and waits
for the reply: what the agent yields while it holds that value is sent to
the asking app's reply topic as Faust's ``ReqRepResponse`` (``{"key",
"value", "correlation_id"}``), where the app's reply consumer hands it to
the waiting ``ask``. Requests and replies are Faust's wire format
(``sabot.agents.faust_wire``), so a Faust app and a Sabot app ask each
other's agents:

* on a broker channel whose values are JSON (Faust's default, with or
  without ``value_type=``) and that has no Arrow ``schema``, the request is
  Faust's ``ReqRepRequest`` envelope, which every Faust agent answers;
* anywhere else (in memory; Arrow, raw or msgpack values; a schema-checked
  channel), and for an agent made with ``use_reply_headers=True`` (Faust's
  option), the value travels as it is, with Faust's request headers
  ``Faust-Ag-ReplyTo``/``Faust-Ag-CorrelationId`` (which faust-streaming's
  agents answer too).

An agent answers both forms, and Faust's envelope is unwrapped before the
agent sees the value (decoded into the channel's ``value_type``).

* The reply topic is ``conf.reply_to`` (default ``<reply_to_prefix><uuid>``,
  one per app instance, as in Faust), made on the app's broker: a memory
  channel on ``memory://``, a one-partition Kafka topic, a Redis stream. It is
  subscribed on the first ask; on Kafka that first ask waits for the
  consumer group to take the new topic in (seconds on a local broker).
* ``cast`` sends without waiting for a reply; ``map``/``kvmap`` yield replies
  as they arrive; ``join``/``kvjoin`` return them in the order asked.
* A reply value that names the ``__faust`` namespace of a Record class of
  this process is built into that class (Faust's ``maybe_model``); one that
  does not fit it makes the ``ask`` raise ``faust_wire.ReplyError``.
* An agent that yields nothing for a request leaves its ``ask`` waiting:
  ``timeout=`` (Sabot's) bounds the wait and raises ``asyncio.TimeoutError``.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
import warnings
from typing import (TYPE_CHECKING, Any, AsyncIterator, Dict, Iterable, List, Optional, Tuple)

from ..exceptions import ConfigurationError, SabotCompatibilityWarning
from .faust_wire import (CORRELATION_ID, REPLY_TO, ReplyError, carries_json, check_request,
                         read_response, reply_target, request, response, with_reply_headers)

if TYPE_CHECKING:
    from ..app import App
    from ..channels import Channel

__all__ = ["REPLY_TO", "CORRELATION_ID", "ReplyConsumer", "reply_target", "response",
           "with_reply_headers"]

logger = logging.getLogger(__name__)


class ReplyConsumer:
    """The app's reply topic and the requests waiting on it."""

    def __init__(self, app: "App") -> None:
        self.app = app
        self.name = app.conf.reply_to or f"{app.conf.reply_to_prefix}{uuid.uuid4()}"
        self._waiting: Dict[str, "asyncio.Future[Any]"] = {}
        self._task: Optional["asyncio.Task[None]"] = None
        self._topic: Optional["Channel"] = None

    @property
    def topic(self) -> "Channel":
        if self._topic is None:
            self._topic = self.app.topic(self.name, value_serializer="json",
                                         **({"partitions": 1} if self.app.transport.scheme == "kafka"
                                            else {}))
        return self._topic

    async def start(self) -> None:
        """Subscribe to the reply topic (once)."""
        if self._task is None:
            stream = self.topic.stream()
            self._task = asyncio.ensure_future(self._consume(stream))
            await self.app.transport.maybe_start()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for fut in self._waiting.values():
            if not fut.done():
                fut.cancel()
        self._waiting.clear()

    def expect(self, correlation_id: str) -> "asyncio.Future[Any]":
        fut: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = fut
        fut.add_done_callback(lambda _: self._waiting.pop(correlation_id, None))
        return fut

    async def _consume(self, stream: Any) -> None:
        async for value in stream:
            try:
                reply = read_response(value)
            except ReplyError as exc:  # the ask raises it
                fut = self._waiting.get(exc.correlation_id)
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
                continue
            if reply is None:
                logger.warning("reply topic %s: ignoring a value that is not a reply", self.name)
                continue
            fut = self._waiting.get(reply[0])
            if fut is not None and not fut.done():
                fut.set_result(reply[1])


class AgentRPC:
    """Faust's RPC methods, mixed into ``Agent`` (needs ``app`` and ``channel``)."""

    app: Any
    channel: Any
    #: Faust's ``use_reply_headers``: send every request in headers, never as
    #: an envelope (``app.agent(use_reply_headers=True)``).
    use_reply_headers = False

    def _replies(self) -> ReplyConsumer:
        replies = getattr(self.app, "replies", None)
        if not isinstance(replies, ReplyConsumer):
            raise ConfigurationError(f"{self!r} belongs to no app: it cannot ask or reply")
        return replies

    def reply_topic(self, name: str) -> Any:
        """The channel to send a reply to ``name`` on (the app's broker)."""
        if self.app is None:
            raise ConfigurationError(f"{self!r} belongs to no app: it cannot reply")
        return self.app.topic(name, value_serializer="json")

    async def ask(self, value: Any = None, *, key: Any = None, partition: Optional[int] = None,
                  timestamp: Optional[float] = None, headers: Any = None,
                  reply_to: Optional[str] = None, correlation_id: Optional[str] = None,
                  timeout: Optional[float] = None) -> Any:
        """Send ``value`` to the agent and return what it yields for it (Faust's ``ask``)."""
        _unsupported(partition=partition, timestamp=timestamp)
        replies = self._replies()
        if reply_to is not None and reply_to != replies.name:
            raise ValueError(f"ask(reply_to={reply_to!r}): this app reads its replies on "
                             f"{replies.name!r} (set the reply_to setting to change it)")
        await replies.start()
        cid = correlation_id or str(uuid.uuid4())
        fut = replies.expect(cid)
        await self._request(key, value, headers, replies.name, cid)
        return await asyncio.wait_for(fut, timeout)

    async def cast(self, value: Any = None, *, key: Any = None, partition: Optional[int] = None,
                   timestamp: Optional[float] = None, headers: Any = None) -> None:
        """Send ``value`` to the agent without waiting for a reply (Faust's ``cast``)."""
        _unsupported(partition=partition, timestamp=timestamp)
        await self.channel.send(key=key, value=value, headers=headers)

    async def kvmap(self, items: Iterable[Tuple[Any, Any]], reply_to: Optional[str] = None,
                    *, timeout: Optional[float] = None) -> AsyncIterator[Any]:
        """Ask for every ``(key, value)``; yield the replies as they arrive."""
        pending = await self._ask_many(items, reply_to)
        for fut in asyncio.as_completed(pending, timeout=timeout):
            yield await fut

    async def map(self, values: Iterable[Any], key: Any = None, reply_to: Optional[str] = None,
                  *, timeout: Optional[float] = None) -> AsyncIterator[Any]:
        """Ask for every value (all with ``key``); yield the replies as they arrive."""
        async for reply in self.kvmap(((key, v) for v in values), reply_to, timeout=timeout):
            yield reply

    async def kvjoin(self, items: Iterable[Tuple[Any, Any]], reply_to: Optional[str] = None,
                     *, timeout: Optional[float] = None) -> List[Any]:
        """Ask for every ``(key, value)``; the replies in the order asked."""
        pending = await self._ask_many(items, reply_to)
        return list(await asyncio.wait_for(asyncio.gather(*pending), timeout))

    async def join(self, values: Iterable[Any], key: Any = None, reply_to: Optional[str] = None,
                   *, timeout: Optional[float] = None) -> List[Any]:
        """Ask for every value (all with ``key``); the replies in order (Faust's ``join``).

        To wait for the agent itself to finish, use ``wait_done()``.
        """
        return await self.kvjoin(((key, v) for v in values), reply_to, timeout=timeout)

    async def _ask_many(self, items: Iterable[Tuple[Any, Any]],
                        reply_to: Optional[str]) -> List["asyncio.Future[Any]"]:
        replies = self._replies()
        if reply_to is not None and reply_to != replies.name:
            raise ValueError(f"reply_to={reply_to!r}: this app reads its replies on {replies.name!r}")
        await replies.start()
        pending = []
        for key, value in items:
            cid = str(uuid.uuid4())
            pending.append(replies.expect(cid))
            await self._request(key, value, None, replies.name, cid)
        return pending

    async def _request(self, key: Any, value: Any, headers: Any, reply_to: str, cid: str,
                       **options: Any) -> Any:
        """Send a request in Faust's form for the channel (see the module docstring)."""
        check_request(reply_to, cid)
        if not self.use_reply_headers and carries_json(self.channel):
            return await self.channel.send(key=key, value=request(value, reply_to, cid),
                                           headers=headers, **options)
        return await self.channel.send(key=key, value=value,
                                       headers=with_reply_headers(headers, reply_to, cid),
                                       **options)


def _unsupported(**given: Any) -> None:
    named = [name for name, value in given.items() if value is not None]
    if named:
        warnings.warn(f"{', '.join(named)}= of ask/cast is not supported by Sabot and has no "
                      f"effect: the channel chooses the partition and the time",
                      SabotCompatibilityWarning, stacklevel=3)
