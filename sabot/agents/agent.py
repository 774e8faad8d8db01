"""Agents: user coroutines run over a channel, their results sent to sinks.

An agent function takes a ``Stream``. It is either a plain coroutine or an
async generator; whatever it yields goes to every sink (a channel, a topic,
another agent, or a callable). ``concurrency=N`` runs N instances that share
one subscription: they share the values of each batch, per-key in order
(``sabot.value_dispatch``); with ``stream.batches()`` each takes whole batches.

Acknowledgement: the stream releases a batch when the agent asks for a value
beyond it, which is after everything the agent yielded for it was handed to
the sinks. A sink whose ``send`` returns an unfinished future (a Kafka
delivery) keeps the batch held until that future completes.

Errors: an agent that raises is logged with its name, the failing value and
its position, counted in ``crash_count``, and restarted over the same stream
(so it resumes after the failing value). ``on_error`` decides what happens
to that value: ``"dead_letter"`` (default) sends it with the error to the
input's dead-letter channel, ``"skip"`` drops it, ``"stop"`` stops the agent
and crashes the app, leaving the value unacknowledged.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence

import pyarrow as pa
from mode import Service

from .exceptions import AgentError, ConfigurationError
from .schema import check_batch, rows_to_batch
from .streams import Stream
from .value_dispatch import ValueDispatcher

__all__ = ["Agent", "AgentTestContext", "ON_ERROR", "EXECUTORS"]

logger = logging.getLogger("sabot.agents")

ON_ERROR = ("dead_letter", "skip", "stop")
EXECUTORS = ("native", "process")


class _Sink:
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


def _hold_until_done(sources: Any, result: Any) -> None:
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


class Agent(Service):
    """A user function bound to an input channel, sinks and an executor."""

    #: mode logs every start/stop at this level; a worker has many services.
    mundane_level = "debug"


    def __init__(self, fun: Callable[[Stream], Any], *, app: Any, channel: Any,
                 name: Optional[str] = None, concurrency: int = 1,
                 sink: Optional[Sequence[Any]] = None, executor: str = "native",
                 on_error: str = "dead_letter") -> None:
        if not callable(fun):
            raise ConfigurationError(f"agent {fun!r} is not callable")
        if not (inspect.iscoroutinefunction(fun) or inspect.isasyncgenfunction(fun)):
            raise ConfigurationError(
                f"agent {getattr(fun, '__qualname__', fun)!r} must be an async function "
                f"(async def with await or yield)")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ConfigurationError(f"agent concurrency must be a positive int, got {concurrency!r}")
        if executor not in EXECUTORS:
            raise ConfigurationError(
                f"agent executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
        if on_error not in ON_ERROR:
            raise ConfigurationError(
                f"agent on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        self.fun = fun
        self.app = app
        self.channel = channel
        self.name = name or f"{fun.__module__}.{fun.__qualname__}"
        self.concurrency = concurrency
        self.executor = executor
        self.on_error = on_error
        self.sinks: List[Any] = list(sink or [])
        self._sinks = [_Sink(s) for s in self.sinks]
        self.crash_count = 0
        self._events_in = 0  # values finished by earlier runs (see events_in)
        self._in_start = 0
        self.events_out = 0
        self.last_error: Optional[BaseException] = None
        self._subscriber: Any = None
        self._dispatcher: Any = None
        self._instances: List["asyncio.Task[Any]"] = []
        self._done = asyncio.Event()
        self._error_hook: Optional[Callable[[BaseException], None]] = None
        self._process_runner: Any = None
        self._latencies: Deque[float] = deque(maxlen=10_000)
        if executor == "process":
            from .bridge.agent import check_importable
            check_importable(fun)
        super().__init__()
        self.__doc__ = fun.__doc__
        self.__wrapped__ = fun

    def __repr__(self) -> str:
        return f"<Agent {self.name} channel={self.channel.name!r} concurrency={self.concurrency}>"

    @property
    def label(self) -> str:
        return f"Agent: {self.name}"

    def __call__(self, stream: Stream) -> Any:
        """Call the user function directly (as Faust allows)."""
        return self.fun(stream)

    # -- feeding -------------------------------------------------------------
    async def send(self, key: Any = None, value: Any = None,
                   headers: Optional[Dict[str, bytes]] = None) -> Any:
        """Send a value to the agent's input channel."""
        return await self.channel.send(key=key, value=value, headers=headers)

    async def send_batch(self, batch: Any) -> Any:
        """Send a list or a RecordBatch to the agent's input channel."""
        return await self.channel.send_batch(batch)

    def add_sink(self, sink: Any) -> None:
        """Forward what the agent yields to ``sink`` as well."""
        self.sinks.append(sink)
        self._sinks.append(_Sink(sink))

    # -- counters --------------------------------------------------------------
    def _values_released(self) -> int:
        # The subscriber's position (values sent to it minus those it still
        # holds) advances once per released batch inside the fast path, so
        # counting costs nothing per value.
        return self.channel._fanout.total - self._subscriber.lag

    @property
    def events_in(self) -> int:
        """Values the agent has finished with (every instance, every run)."""
        if self._subscriber is None:
            return self._events_in
        return self._events_in + self._values_released() - self._in_start

    @property
    def backlog(self) -> int:
        """Values sent to the agent's input and not yet finished (in-process lag)."""
        return self._subscriber.lag if self._subscriber is not None else 0

    @property
    def bridge_metrics(self) -> Any:
        """The ``BridgeMetrics`` of a running process agent, else ``None``."""
        runner = self._process_runner
        return runner.metrics if runner is not None else None

    # -- running ---------------------------------------------------------------
    async def on_start(self) -> None:
        self._done.clear()
        self._subscriber = self.channel.subscribe()
        self._subscriber.observer = self._observe_batch
        self._in_start = self._values_released()
        if self.concurrency > 1 and self.executor == "native":
            # The instances share the values of each batch (Faust's meaning).
            self._dispatcher = ValueDispatcher(self._subscriber)
        if self.executor == "process":
            from .bridge.agent import ProcessAgentRunner
            self._process_runner = ProcessAgentRunner(self)
            await self._process_runner.start()
        for i in range(self.concurrency):
            task = asyncio.ensure_future(self._run_instance(i))
            self._instances.append(task)
        asyncio.ensure_future(self._watch_instances(list(self._instances)))

    def _observe_batch(self, batch: Any) -> None:
        # Seconds from the batch reaching this agent's subscription to the
        # agent moving past it: queueing plus processing, once per batch.
        self._latencies.append(time.monotonic() - batch.published_at)

    def drain_batch_latencies(self) -> List[float]:
        """Batch latencies (seconds) recorded since the last call, oldest first."""
        out = list(self._latencies)
        self._latencies.clear()
        return out

    async def _watch_instances(self, tasks: List["asyncio.Task[Any]"]) -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        self._done.set()

    async def join(self, timeout: Optional[float] = None) -> None:
        """Wait until every instance finished (its input closed and drained)."""
        await asyncio.wait_for(self._done.wait(), timeout)

    @property
    def running(self) -> bool:
        """True while at least one instance runs."""
        return any(not t.done() for t in self._instances)

    async def on_stop(self) -> None:
        for task in self._instances:
            task.cancel()
        if self._instances:
            await asyncio.gather(*self._instances, return_exceptions=True)
        self._instances.clear()
        if self._process_runner is not None:
            await self._process_runner.stop()
            self._process_runner = None
        if self._subscriber is not None:
            self._events_in = self.events_in
            self._subscriber.close()
            self._subscriber = None
            self._dispatcher = None

    async def _run_instance(self, index: int) -> None:
        stream = Stream(self.channel, subscriber=self._subscriber, dispatcher=self._dispatcher)
        backoff = self.app.conf.agent_restart_backoff if self.app is not None else 0.1
        delay = backoff
        while True:
            seen_batch, seen_index = stream.progress()
            try:
                await self._run_once(stream)
                return  # input closed and drained
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not await self._on_agent_error(exc, stream):
                    return
                stream.cancel_pending_reads()
                # Restarting without having read anything new would spin.
                # (Identity, not ==: values may be arrays without a truth value.)
                batch, index = stream.progress()
                if batch is seen_batch and index == seen_index:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                else:
                    delay = backoff

    async def _run_once(self, stream: Stream) -> None:
        if self._process_runner is not None:
            await self._process_runner.run(stream)
            return
        result = self.fun(stream)
        if inspect.isasyncgen(result):
            sinks = self._sinks
            async for value in result:
                self.events_out += 1
                if sinks:
                    sources = stream.sources()
                    for sink in sinks:
                        _hold_until_done(sources, await sink.deliver(value, sources))
        elif inspect.isawaitable(result):
            await result
        else:
            raise AgentError(f"agent {self.name} returned {type(result).__name__}, "
                             f"expected a coroutine or an async generator", agent=self.name)

    async def forward(self, value: Any, source: Any) -> None:
        """Send one result to every sink, holding ``source`` until it is durable."""
        self.events_out += 1
        sources = [source] if source is not None else []
        for sink in self._sinks:
            _hold_until_done(sources, await sink.deliver(value, sources))

    async def _on_agent_error(self, exc: BaseException, stream: Stream) -> bool:
        """Report a crash and apply ``on_error``; True means restart."""
        self.crash_count += 1
        self.last_error = exc
        value = stream.current_item()
        position = stream.current_position()
        logger.error("agent %s crashed on value %r at position %r (crash #%d): %r\n%s",
                     self.name, value, position, self.crash_count, exc,
                     "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        if self._error_hook is not None:
            self._error_hook(exc)
        if self.on_error == "stop":
            error = AgentError(f"agent {self.name} stopped on value {value!r} at "
                               f"{position!r}: {exc!r}", agent=self.name,
                               value=value, position=position)
            error.__cause__ = exc
            # Every instance stops: the values after the failing one must
            # not be processed (and acknowledged) past it.
            current = asyncio.current_task()
            for task in self._instances:
                if task is not current:
                    task.cancel()
            if self.app is not None:
                self.app.report_crash(error)
            return False
        sources = stream.sources()
        if self.on_error == "dead_letter":
            try:
                written = await self.channel.dead_letter(
                    value, f"{type(exc).__name__}: {exc}", {"sabot-agent": self.name},
                    position=position)
            except Exception as dlq_exc:
                # Not even started: the value must not be acknowledged.
                logger.error("agent %s: dead letter could not be written (%r); the value "
                             "stays unacknowledged", self.name, dlq_exc)
                for batch in sources:
                    batch.acquire()
                    batch.abandon()
            else:
                # The value is acknowledged only once its dead letter is stored.
                _hold_until_done(sources, written)
        # Skipped or dead-lettered: the failing item counts as finished.
        stream.settle()
        return True

    # -- testing ---------------------------------------------------------------
    def test_context(self, **kwargs: Any) -> "AgentTestContext":
        """Run the agent on a private in-memory channel: no broker needed.

        ``async with agent.test_context() as ctx: results = await ctx.put(v)``
        """
        return AgentTestContext(self, **kwargs)


class AgentTestContext:
    """Feed values to an agent and collect what it yields, in memory.

    ``put(value)`` returns once the agent has finished with the value, with
    the list of values it yielded for it; ``results`` holds every yielded
    value in order. An exception raised by the agent is raised by ``put``.
    """

    def __init__(self, agent: Agent, *, channel: Any = None) -> None:
        from .channels.memory import MemoryChannel
        self.agent = agent
        self.channel = channel or MemoryChannel(agent.app, f"{agent.name}.test",
                                                schema=agent.channel.schema)
        self.results: List[Any] = []
        self._current: List[Any] = []
        self._clone: Optional[Agent] = None
        self._error: Optional[BaseException] = None
        self._wake: Optional["asyncio.Future[None]"] = None

    async def __aenter__(self) -> "AgentTestContext":
        agent = self.agent
        clone = Agent(agent.fun, app=agent.app, channel=self.channel, name=agent.name,
                      concurrency=agent.concurrency, sink=[self._collect],
                      executor="native", on_error="skip")
        clone._error_hook = self._on_error
        self._clone = clone
        await clone.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._clone is not None:
            await self._clone.stop()

    def _collect(self, value: Any) -> None:
        self.results.append(value)
        self._current.append(value)

    def _on_error(self, exc: BaseException) -> None:
        self._error = exc
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    @property
    def crash_count(self) -> int:
        return self._clone.crash_count if self._clone is not None else 0

    async def put(self, value: Any = None, *, key: Any = None,
                  headers: Optional[Dict[str, bytes]] = None) -> List[Any]:
        """Send ``value`` and wait until the agent is done with it."""
        return await self._feed([value], keys=[key], headers=[headers])

    async def put_batch(self, values: Any) -> List[Any]:
        """Send a list or RecordBatch as one batch; wait until it is processed."""
        return await self._feed(values)

    async def _feed(self, values: Any, keys: Any = None, headers: Any = None) -> List[Any]:
        from ._fastpath import Batch
        loop = asyncio.get_running_loop()
        done = self._wake = loop.create_future()
        self._current = []
        self._error = None
        schema = self.channel.schema
        if isinstance(values, pa.RecordBatch):
            payload = values if schema is None else check_batch(schema, values)
        else:
            payload = values if isinstance(values, list) else list(values)
            if schema is not None:
                for v in payload:
                    self.channel._checker.check(v)
                payload = rows_to_batch(schema, payload)
        batch = Batch(payload, keys=keys, headers=headers,
                      on_done=lambda b: done.done() or done.set_result(None))
        await self.channel.publish(batch)
        waiter = asyncio.ensure_future(self._clone._done.wait())
        try:
            await asyncio.wait({done, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return list(self._current)
