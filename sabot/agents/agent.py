"""Agents: user coroutines run over a channel, their results sent to sinks.

An agent function takes a ``Stream``. It is either a plain coroutine or an
async generator; whatever it yields goes to every sink (a channel, a topic,
another agent, or a callable). ``concurrency=N`` runs N instances that share
one subscription: they share the values of each batch, per-key in order
(``sabot.value_dispatch``); with ``stream.batches()`` each takes whole batches.
``executor="process"`` runs the same function, over the same ``Stream``, in N
child processes (``sabot.agents.process``). ``executor="wasm"`` runs a
WebAssembly ``node`` in a sandbox on every batch (``sabot.bridge.wasm``) and
hands the function a stream of the node's outputs.

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
import uuid
from collections import deque
from typing import (TYPE_CHECKING, Any, Callable, Deque, Dict, List, NamedTuple, Optional,
                    Sequence, Tuple)

from mode import Service

from ..exceptions import AgentError, ConfigurationError
from ..retry import RetryPolicy
from ..streams import Stream
from ..types import AppT, BatchT, ChannelT, Headers, SubscriberT
from ..value_dispatch import ValueDispatcher
from .rpc import AgentRPC, reply_target, response
from .sinks import Sink, SinkTarget, hold_until_done
from .testing import AgentTestContext

if TYPE_CHECKING:
    from ..bridge.metrics import BridgeMetrics
    from ..bridge.wasm import BatchRunner, WasmBridge
    from .process import ProcessAgentRunner

__all__ = ["Agent", "AgentFailure", "ON_ERROR", "EXECUTORS"]

logger = logging.getLogger("sabot.agents")

ON_ERROR = ("dead_letter", "skip", "stop")
EXECUTORS = ("native", "process", "wasm")


class AgentFailure(NamedTuple):
    """What an agent raised on: the error, the value, where it came from.

    ``sources`` are the batches behind the value (acknowledged only once the
    failure is handled: dead-lettered, skipped, or never if the agent stops).
    """

    error: BaseException
    value: Any
    position: Any
    sources: List[BatchT]


class Agent(AgentRPC, Service):
    """A user function bound to an input channel, sinks and an executor."""

    #: mode logs every start/stop at this level; a worker has many services.
    #: Our own logger, set before mode would give the module a NullHandler
    #: (which silences a script's errors when it configured no logging).
    logger = logger
    mundane_level = "debug"

    def __init__(self, fun: Callable[[Stream], Any], *, app: Optional[AppT], channel: ChannelT,
                 name: Optional[str] = None, concurrency: int = 1,
                 sink: Optional[Sequence[SinkTarget]] = None, executor: str = "native",
                 on_error: str = "dead_letter", node: Any = None) -> None:
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
        if (executor == "wasm") != (node is not None):
            raise ConfigurationError(
                f"agent {getattr(fun, '__qualname__', fun)!r}: executor='wasm' needs node= "
                f"(a WebAssembly module), and node= needs executor='wasm'")
        self.fun = fun
        self.app = app
        self.channel = channel
        self.name = name or f"{fun.__module__}.{fun.__qualname__}"
        self.concurrency = concurrency
        self.executor = executor
        self.on_error = on_error
        self.sinks: List[SinkTarget] = list(sink or [])
        self._sinks = [Sink(s) for s in self.sinks]
        self.crash_count = 0
        self._events_in = 0  # values finished by earlier runs (see events_in)
        self._in_start = 0
        self.events_out = 0
        self.last_error: Optional[BaseException] = None
        #: Called with each ``AgentFailure`` before ``on_error`` is applied.
        self.on_failure: Optional[Callable[[AgentFailure], None]] = None
        #: Faust's ``help=``: what the agent is for (``sabot agents`` lists it).
        self.help = ""
        #: Level of the log line for a failure (a process agent's child logs
        #: quietly: its parent reports the failure).
        self.failure_log_level = logging.ERROR
        self._subscriber: Optional[SubscriberT] = None
        self._dispatcher: Optional[ValueDispatcher] = None
        self._instances: List["asyncio.Task[Any]"] = []
        self._done = asyncio.Event()
        self._process_runner: Optional[ProcessAgentRunner] = None
        #: The agent's WASM node (a ``WasmModule``), checked now; run by a
        #: bridge of its own while the agent runs.
        self.node: Any = None
        self._wasm: Optional[Tuple[WasmBridge, BatchRunner]] = None
        if node is not None:
            from ..bridge.wasm import WasmModule
            from ..exceptions import RegistryError
            try:
                self.node = node if isinstance(node, WasmModule) else WasmModule.load(
                    self.name, node)
            except RegistryError as exc:
                raise ConfigurationError(f"agent {self.name}: {exc}") from exc
        self._latencies: Deque[float] = deque(maxlen=10_000)
        if executor == "process":
            from .process import check_importable
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

    def derive(self, **overrides: Any) -> "Agent":
        """A new agent of the same function and name, with some arguments changed."""
        kwargs: Dict[str, Any] = dict(app=self.app, channel=self.channel, name=self.name,
                                      concurrency=self.concurrency, sink=self.sinks,
                                      executor=self.executor, on_error=self.on_error,
                                      node=self.node)
        kwargs.update(overrides)
        return type(self)(self.fun, **kwargs)

    # -- feeding -------------------------------------------------------------
    async def send(self, key: Any = None, value: Any = None,
                   headers: Optional[Headers] = None, *, reply_to: Any = None,
                   correlation_id: Optional[str] = None, **options: Any) -> Any:
        """Send a value to the agent's input channel (``options``: Faust's, as ``Channel.send``).

        ``reply_to`` (a topic name or channel) and ``correlation_id``, as in
        Faust: what the agent yields for the value is sent there as a reply.
        """
        if reply_to is not None:  # a request, in Faust's form (sabot.agents.rpc)
            return await self._request(key, value, headers, getattr(reply_to, "name", reply_to),
                                       correlation_id or str(uuid.uuid4()), **options)
        return await self.channel.send(key=key, value=value, headers=headers, **options)

    async def send_batch(self, batch: Any) -> Any:
        """Send a list or a RecordBatch to the agent's input channel."""
        return await self.channel.send_batch(batch)

    def add_sink(self, sink: SinkTarget) -> None:
        """Forward what the agent yields to ``sink`` as well."""
        self.sinks.append(sink)
        self._sinks.append(Sink(sink))

    # -- counters --------------------------------------------------------------
    @property
    def subscriber(self) -> Optional[SubscriberT]:
        """The agent's subscription to its channel while it runs (else None)."""
        return self._subscriber

    def _values_released(self, subscriber: SubscriberT) -> int:
        # The subscriber's position (values sent to it minus those it still
        # holds) advances once per released batch inside the fast path, so
        # counting costs nothing per value.
        return self.channel.sent_count - subscriber.lag

    @property
    def events_in(self) -> int:
        """Values the agent has finished with (every instance, every run)."""
        subscriber = self._subscriber
        if subscriber is None:
            return self._events_in
        return self._events_in + self._values_released(subscriber) - self._in_start

    @property
    def backlog(self) -> int:
        """Values sent to the agent's input and not yet finished (in-process lag)."""
        return self._subscriber.lag if self._subscriber is not None else 0

    @property
    def bridge_metrics(self) -> Optional[BridgeMetrics]:
        """The ``BridgeMetrics`` of a running process or WASM agent, else ``None``."""
        runner = self._process_runner
        if runner is None and self._wasm is not None:
            return self._wasm[0].metrics
        return runner.metrics if runner is not None else None

    # -- running ---------------------------------------------------------------
    async def on_start(self) -> None:
        self._done.clear()
        subscriber = self._subscriber = self.channel.subscribe()
        subscriber.observer = self._observe_batch
        self._in_start = self._values_released(subscriber)
        if self.concurrency > 1 and self.executor == "native":
            # The instances share the values of each batch (Faust's meaning).
            self._dispatcher = ValueDispatcher(subscriber)
        if self.executor == "process":
            from .process import ProcessAgentRunner
            runner = self._process_runner = ProcessAgentRunner(self)
            await runner.start()
        if self.node is not None:
            from ..bridge.wasm import BatchRunner, WasmBridge
            from ..nodes.registry import NodeRegistry
            registry = NodeRegistry()
            registry.register(self.name, wasm=self.node)
            bridge = WasmBridge(registry)
            await bridge.initialize_node(self.name, self.name, {})
            self._wasm = (bridge, BatchRunner(bridge, self.name, self.name))
        for i in range(self.concurrency):
            task = asyncio.ensure_future(self._run_instance(i))
            self._instances.append(task)
        asyncio.ensure_future(self._watch_instances(list(self._instances)))

    def _observe_batch(self, batch: BatchT) -> None:
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

    async def wait_done(self, timeout: Optional[float] = None) -> None:
        """Wait until every instance finished (its input closed and drained).

        (Faust's ``join`` is agent RPC: ``sabot.agents.rpc``.)
        """
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
        if self._wasm is not None:
            await self._wasm[0].close()
            self._wasm = None
        if self._subscriber is not None:
            self._events_in = self.events_in
            self._subscriber.close()
            self._subscriber = None
            self._dispatcher = None

    def _restart_policy(self) -> RetryPolicy:
        backoff = self.app.conf.agent_restart_backoff if self.app is not None else 0.1
        return RetryPolicy(max_attempts=None, initial_delay=backoff, max_delay=5.0, jitter=0)

    async def _run_instance(self, index: int) -> None:
        runner, subscriber = self._process_runner, self._subscriber
        if runner is not None and subscriber is not None:
            await self._run_in_child(runner, subscriber, index)
            return
        stream = Stream(self.channel, subscriber=self._subscriber, dispatcher=self._dispatcher)
        stream.prefix = self.name  # as Faust: names the topics of stream.group_by
        policy = self._restart_policy()
        idle = 0  # restarts in a row without reading anything new
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
                batch, position = stream.progress()
                if batch is seen_batch and position == seen_index:
                    idle += 1
                    await asyncio.sleep(policy.delay(idle))
                else:
                    idle = 0

    async def _run_in_child(self, runner: ProcessAgentRunner, subscriber: SubscriberT,
                            index: int) -> None:
        # The runner handles the agent's own failures; what reaches here is
        # the bridge failing (a child that cannot be replaced): report it and
        # try again (the runner resends the batches it held).
        policy = self._restart_policy()
        failures = 0
        while True:
            try:
                await runner.run(subscriber, index)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not await self.handle_failure(AgentFailure(exc, None, None, [])):
                    return
                failures += 1
                await asyncio.sleep(policy.delay(failures))

    async def _run_once(self, stream: Stream) -> None:
        # A WASM agent's function reads the node's output for each batch.
        result = self.fun(stream.through(self._wasm[1]) if self._wasm is not None else stream)
        if inspect.isasyncgen(result):
            sinks = self._sinks
            async for value in result:
                self.events_out += 1
                batch = stream.current_batch
                if batch is not None and batch.headers is not None:
                    await self._maybe_reply(stream, value)
                if sinks:
                    sources = stream.sources()
                    for sink in sinks:
                        hold_until_done(sources, await sink.deliver(value, sources))
        elif inspect.isawaitable(result):
            await result
        else:
            raise AgentError(f"agent {self.name} returned {type(result).__name__}, "
                             f"expected a coroutine or an async generator", agent=self.name)

    async def _maybe_reply(self, stream: Stream, value: Any) -> None:
        # The value in hand was asked for (agent.ask): send what it yielded back.
        batch, index, _ = stream.current_row()
        if batch is None or batch.headers is None or index < 0:
            return
        target = reply_target(batch.headers[index])
        if target is None:
            return
        reply_to, cid = target
        key = batch.keys[index] if batch.keys is not None else None
        topic = self.reply_topic(reply_to)
        hold_until_done(stream.sources(), await topic.send(key=cid, value=response(key, value, cid)))

    async def forward(self, value: Any, sources: Sequence[BatchT] = ()) -> None:
        """Send one result to every sink, holding ``sources`` until it is durable."""
        self.events_out += 1
        held = list(sources)
        for sink in self._sinks:
            hold_until_done(held, await sink.deliver(value, held))

    async def _on_agent_error(self, exc: BaseException, stream: Stream) -> bool:
        """Report a crash of a native instance and apply ``on_error``; True means restart."""
        failure = AgentFailure(exc, stream.current_item(), stream.current_position(),
                               stream.sources())
        if not await self.handle_failure(failure):
            return False
        # Skipped or dead-lettered: the failing item counts as finished.
        stream.settle()
        return True

    async def handle_failure(self, failure: AgentFailure) -> bool:
        """Log and count ``failure``, then apply ``on_error``; True means go on.

        With ``"dead_letter"`` the value's sources stay held until the dead
        letter is stored; with ``"stop"`` every instance stops and the app is
        told (the sources are never acknowledged).
        """
        exc, value, position, sources = failure
        self.crash_count += 1
        self.last_error = exc
        logger.log(self.failure_log_level,
                   "agent %s crashed on value %r at position %r (crash #%d): %r\n%s",
                   self.name, value, position, self.crash_count, exc,
                   "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        if self.on_failure is not None:
            self.on_failure(failure)
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
                hold_until_done(sources, written)
        return True

    # -- testing ---------------------------------------------------------------
    def test_context(self, **kwargs: Any) -> AgentTestContext:
        """Run the agent on a private in-memory channel: no broker needed.

        ``async with agent.test_context() as ctx: results = await ctx.put(v)``
        """
        return AgentTestContext(self, **kwargs)
