"""ProcessAgentRunner: an agent's coroutine in N child processes.

The parent side of ``@app.agent(channel, executor="process", concurrency=N)``.
Each of the agent's N instances keeps a conversation with its own child
(``sabot.agents.child``): it takes whole batches from the agent's
subscription, sends each with its envelope (keys, headers, timestamps,
positions), forwards what the child says the agent yielded to the sinks, and
releases a batch only when the child says the agent finished it. While a
child holds batches and no new input comes, the instance polls it every
``poll_interval`` seconds, so a batch finished late (the end of a ``take``
window) is acknowledged without waiting for more input.

A child that dies is replaced and the batches it held are sent again to the
new one, so a crash loses nothing (what the dead child yielded had not been
forwarded). A batch that kills its child ``max_attempts`` times in a row is
a poison batch: it fails with ``WorkerProcessDied`` under the agent's
``on_error`` and the others go on.

The agent function travels as its import path, never pickled: it must be
defined at module level. ``check_importable`` says so at decoration time,
for lambdas and closures alike.
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from typing import Any, Callable, Dict, List, Optional

from .._fastpath import Batch
from ..bridge.arena import ShmArena
from ..bridge.envelope import envelope_batch
from ..bridge.ipc import DEFAULT_INLINE_THRESHOLD, FrameReader, FrameWriter
from ..bridge.metrics import BridgeMetrics
from ..bridge.pool import WorkerPool
from ..bridge.process import DEFAULT_SPIN_US, OutgoingFrame
from ..exceptions import AgentError, ConfigurationError, RegistryError, WorkerProcessDied
from ..nodes.registry import import_path
from ..retry import RetryPolicy
from ..types import BatchT, SubscriberT
from .agent import Agent, AgentFailure
from .child import child_main

__all__ = ["ProcessAgentRunner", "check_importable"]

#: Seconds an instance waits for new input before asking its child for news.
DEFAULT_POLL_INTERVAL = 0.1


def check_importable(fun: Callable[..., Any]) -> str:
    """Return the import path of agent ``fun``; ``ConfigurationError`` if it has none."""
    if not (inspect.isasyncgenfunction(fun) or inspect.iscoroutinefunction(fun)):
        raise ConfigurationError(
            f"agent {fun!r} must be an async function or async generator")
    try:
        return import_path(fun)
    except RegistryError:
        raise ConfigurationError(
            f"agent {getattr(fun, '__qualname__', fun)!r} cannot use "
            f"executor='process': worker processes import the agent by module "
            f"path, and a lambda, closure or nested function has none. Define "
            f"it at module level.") from None


class _Answer:
    """A child's answer, decoded."""

    __slots__ = ("values", "failures", "done", "ended")

    def __init__(self, values: List[Any], failures: List[Dict[str, Any]],
                 done: List[int], ended: bool) -> None:
        self.values, self.failures, self.done, self.ended = values, failures, done, ended


class ProcessAgentRunner:
    """Runs agent function ``fun`` in ``concurrency`` child processes.

    ``fun`` is a ``sabot.agents.Agent`` (its function, concurrency and name
    are used, its sinks get the results and its ``on_error`` handles the
    failures), the function itself, or its import path.
    """

    def __init__(self, fun: Any, *, concurrency: Optional[int] = None,
                 name: Optional[str] = None,
                 inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
                 retry_policy: Optional[RetryPolicy] = None,
                 start_timeout: float = 60.0, spin_us: int = DEFAULT_SPIN_US,
                 metrics: Optional[BridgeMetrics] = None,
                 poll_interval: float = DEFAULT_POLL_INTERVAL) -> None:
        self.agent: Optional[Agent] = fun if isinstance(fun, Agent) else None
        if self.agent is not None:
            concurrency = concurrency or self.agent.concurrency
            name = name or self.agent.name
            fun = self.agent.fun
        concurrency = concurrency or 1
        self.path = fun if isinstance(fun, str) else check_importable(fun)
        self.name = name or self.path
        self.metrics = metrics if metrics is not None else BridgeMetrics()
        self.inline_threshold = inline_threshold
        self.retry_policy = retry_policy or RetryPolicy(max_attempts=3)
        self.poll_interval = poll_interval
        header = {"op": "init", "agent": self.path, "name": self.name,
                  "inline_threshold": inline_threshold}
        self.pool = WorkerPool(child_main, self.name, header, concurrency,
                               retry_policy=self.retry_policy, start_timeout=start_timeout,
                               spin_us=spin_us, metrics=self.metrics)
        self._starting: Optional["asyncio.Future[None]"] = None
        self._ids = itertools.count(1)
        #: Per child: the batches sent to it and not finished yet (id -> Batch).
        self._held: Dict[int, Dict[int, BatchT]] = {}

    @property
    def concurrency(self) -> int:
        """Number of child processes."""
        return self.pool.size

    def pids(self) -> List[int]:
        """Process ids of the children."""
        return self.pool.pids()

    async def start(self) -> None:
        """Spawn the children and wait until each has imported the agent.

        Concurrent callers share one start.
        """
        if self._starting is None:
            self._starting = asyncio.ensure_future(self.pool.start())
        await asyncio.shield(self._starting)

    # -- frames ------------------------------------------------------------------
    def _batch_frame(self, req: int, batch: Any) -> Callable[[ShmArena], OutgoingFrame]:
        def make_frame(arena: ShmArena) -> OutgoingFrame:
            began = time.perf_counter()
            writer = FrameWriter(self.inline_threshold, arena)
            header: Dict[str, Any] = {"op": "batch", "id": req}
            try:
                if isinstance(batch, Batch):
                    header["payload"] = writer.describe(batch.payload)
                    envelope = envelope_batch(batch.keys, batch.headers, batch.timestamps,
                                              batch.positions)
                    if envelope is not None:
                        header["envelope"] = writer.describe(envelope)
                    header["timestamp"] = batch.timestamp
                else:
                    header["payload"] = writer.describe(batch)
            except BaseException:
                writer.discard()
                raise
            frame = OutgoingFrame(writer, header)
            self.metrics.record_transfer(writer.data_bytes, time.perf_counter() - began,
                                         shm=bool(writer.segments or writer.leased))
            return frame
        return make_frame

    @staticmethod
    def _plain_frame(op: str, req: int) -> Callable[[ShmArena], OutgoingFrame]:
        def make_frame(arena: ShmArena) -> OutgoingFrame:
            return OutgoingFrame(FrameWriter(arena=arena), {"op": op, "id": req})
        return make_frame

    def _read_answer(self, header: Dict[str, Any], body: Any, arena: ShmArena) -> _Answer:
        if header.get("op") == "error":  # the child could not even answer
            raise AgentError(self._describe_remote(header), agent=self.name)
        reader = FrameReader(header, body, arena)
        values = reader.values(header.get("values", ()))
        failures = header.get("failures", ())
        for failure in failures:
            failure["value"] = reader.value(failure["value"]) if failure.get("value") else None
        return _Answer(values, list(failures), list(header.get("done", ())),
                       bool(header.get("ended")))

    def _describe_remote(self, failure: Dict[str, Any]) -> str:
        return (f"process agent {self.name!r} raised {failure.get('type')}: "
                f"{failure.get('message')}\n--- remote traceback ---\n"
                f"{failure.get('traceback', '')}")

    def _error(self, failure: Dict[str, Any]) -> AgentError:
        error = AgentError(self._describe_remote(failure), agent=self.name,
                           value=failure.get("value"), position=failure.get("position"))
        self.metrics.record_failure(self.name)
        return error

    # -- one batch, start to finish (tests, embedding) ---------------------------
    async def process(self, batch: Any) -> List[Any]:
        """Run the agent on ``batch`` in an idle child; what it yielded for it.

        ``batch`` is a sabot ``Batch``, a ``pyarrow.RecordBatch`` or a list.
        The answer comes when the agent finished the batch, or asks for more
        input while holding part of it. An agent that raised on a value
        raises ``AgentError`` here (with the remote traceback).
        """
        await self.start()
        start = time.perf_counter()
        answer = await self.pool.request(self._batch_frame(next(self._ids), batch),
                                         self._read_answer)
        if answer.failures:
            raise self._error(answer.failures[0])
        self.metrics.record_execution(self.name, time.perf_counter() - start)
        return answer.values

    # -- an agent instance's conversation with its child --------------------------
    async def run(self, subscriber: SubscriberT, slot: int) -> None:
        """Feed ``subscriber``'s batches to child ``slot`` until the input ends.

        Returns early if the agent stops on an error (``on_error="stop"``)
        or its function returned. Batches still held then stay unreleased:
        the agent abandons them when it stops.
        """
        assert self.agent is not None, "run() needs the runner of an Agent"
        await self.start()
        # Kept across calls: after a failure, run() begins by sending the
        # batches the child still held to it again.
        held = self._held.setdefault(slot, {})
        if held and not await self._converse(slot, held, subscriber, list(held)):
            return
        while True:
            batch = subscriber.take()
            if batch is not None:
                req = next(self._ids)
                held[req] = batch
                if not await self._converse(slot, held, subscriber, [req]):
                    return
                continue
            if subscriber.exhausted:
                break
            waiter = subscriber.waiter()
            if held:
                done, _ = await asyncio.wait({waiter}, timeout=self.poll_interval)
                if not done:
                    subscriber.discard_waiter(waiter)
                    if not await self._converse(slot, held, subscriber, [], "poll"):
                        return
            else:
                await waiter
        # The input ended: the child drains what it holds, then the agent ends.
        await self._converse(slot, held, subscriber, [], "end")

    async def _converse(self, slot: int, held: Dict[int, BatchT], subscriber: SubscriberT,
                        send: List[int], op: str = "") -> bool:
        """Send the batches ``send`` (or an ``op`` without data) to child
        ``slot`` and handle each answer; False when the instance must stop.

        A child that dies is replaced and everything it held is sent again.
        """
        agent = self.agent
        assert agent is not None, "a conversation needs the runner of an Agent"
        poison_after = self.retry_policy.max_attempts  # None: never give up on a batch
        deaths = 0
        queue = list(send)
        while True:
            started = time.perf_counter()
            try:
                if queue:
                    req = queue[0]
                    answer = await self.pool.request_on(
                        slot, self._batch_frame(req, held[req]), self._read_answer)
                    queue.pop(0)
                elif op:
                    answer = await self.pool.request_on(
                        slot, self._plain_frame(op, next(self._ids)), self._read_answer)
                    op = ""
                else:
                    return True
            except WorkerProcessDied as exc:
                deaths += 1
                if poison_after is not None and deaths >= poison_after and held:
                    # The oldest held batch kills every child it meets.
                    oldest = next(iter(held))
                    batch = held.pop(oldest)
                    failure = AgentFailure(exc, batch.payload, None, [batch])
                    if not await agent.handle_failure(failure):
                        return False
                    subscriber.done(batch)
                    deaths = 0
                # Everything the dead child held goes to the new one, in order.
                queue = list(held)
                await asyncio.sleep(self.retry_policy.delay(max(deaths, 1)))
                continue
            self.metrics.record_execution(self.name, time.perf_counter() - started)
            if answer.done:
                deaths = 0
            if not await self._handle(answer, held, subscriber):
                return False

    async def _handle(self, answer: _Answer, held: Dict[int, BatchT],
                      subscriber: SubscriberT) -> bool:
        agent = self.agent
        assert agent is not None
        for failure in answer.failures:
            req = failure.get("batch")
            batch = held.get(req) if req is not None else None
            sources = [batch] if batch is not None else list(held.values())
            if not await agent.handle_failure(AgentFailure(
                    self._error(failure), failure.get("value"), failure.get("position"),
                    sources)):
                return False
        if answer.values:
            sources = list(held.values())
            for value in answer.values:
                await agent.forward(value, sources)
        for req in answer.done:
            batch = held.pop(req, None)
            if batch is not None:
                subscriber.done(batch)
        return not answer.ended

    async def close(self) -> None:
        """Stop the children."""
        await self.pool.close()

    stop = close

    async def __aenter__(self) -> "ProcessAgentRunner":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
