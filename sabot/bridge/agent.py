"""ProcessAgentRunner: an agent's coroutine in N worker processes.

The parent side of ``@app.agent(channel, executor="process", concurrency=N)``.
``process(batch)`` sends one batch to an idle worker and returns what the
agent yielded for it; the caller forwards those values to the sinks and
only then acknowledges the batch. A worker that dies is replaced and the
batch is sent again (``RetryPolicy``), so a crash loses nothing.

The agent function travels as its import path, never pickled: it must be
defined at module level. ``check_process_agent`` says so at decoration
time, for lambdas and closures alike.

``sabot.agents.Agent`` drives it: ``start()``, then ``run(stream)`` in each
of its instances, then ``stop()``.
"""
from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Callable, Dict, List, Optional

from ..exceptions import AgentError, ConfigurationError, RegistryError
from ..nodes.registry import import_path
from ..retry import RetryPolicy
from .agent_worker import agent_worker_main
from .arena import ShmArena
from .ipc import DEFAULT_INLINE_THRESHOLD, FrameReader, FrameWriter
from .metrics import BridgeMetrics
from .pool import WorkerPool
from .process import DEFAULT_SPIN_US, OutgoingFrame

__all__ = ["ProcessAgentRunner", "check_importable"]


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


class ProcessAgentRunner:
    """Runs agent function ``fun`` in ``concurrency`` worker processes.

    ``fun`` is the function, its import path, or a ``sabot.agents.Agent``
    (whose function, concurrency and name are used, and whose sinks get the
    results in ``run``).
    """

    def __init__(self, fun: Any, *, concurrency: Optional[int] = None,
                 name: Optional[str] = None,
                 inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
                 retry_policy: Optional[RetryPolicy] = None,
                 start_timeout: float = 60.0, spin_us: int = DEFAULT_SPIN_US,
                 metrics: Optional[BridgeMetrics] = None) -> None:
        self.agent = fun if hasattr(fun, "forward") and hasattr(fun, "fun") else None
        if self.agent is not None:
            concurrency = concurrency or self.agent.concurrency
            name = name or self.agent.name
            fun = self.agent.fun
        concurrency = concurrency or 1
        self.path = fun if isinstance(fun, str) else check_importable(fun)
        self.name = name or self.path
        self.metrics = metrics if metrics is not None else BridgeMetrics()
        self.inline_threshold = inline_threshold
        header = {"op": "init", "agent": self.path, "inline_threshold": inline_threshold}
        self.pool = WorkerPool(agent_worker_main, self.name, header, concurrency,
                               retry_policy=retry_policy, start_timeout=start_timeout,
                               spin_us=spin_us, metrics=self.metrics)
        self._starting: Optional["asyncio.Future[None]"] = None
        self._serial = 0

    @property
    def concurrency(self) -> int:
        """Number of worker processes."""
        return self.pool.size

    def pids(self) -> List[int]:
        """Process ids of the workers."""
        return self.pool.pids()

    async def start(self) -> None:
        """Spawn the workers and wait until each has imported the agent.

        Concurrent callers share one start.
        """
        if self._starting is None:
            self._starting = asyncio.ensure_future(self.pool.start())
        await asyncio.shield(self._starting)

    async def process(self, batch: Any) -> List[Any]:
        """Run the agent on ``batch``; the values it yielded for it.

        ``batch`` is a sabot ``Batch`` (its payload is sent), a
        ``pyarrow.RecordBatch`` or a list of JSON-able values.
        """
        await self.start()
        self._serial += 1
        req_id = self._serial

        def make_frame(arena: ShmArena) -> OutgoingFrame:
            began = time.perf_counter()
            writer = FrameWriter(self.inline_threshold, arena)
            desc = writer.describe(batch)
            frame = OutgoingFrame(writer, {"op": "batch", "id": req_id, "payload": desc})
            self.metrics.record_transfer(writer.data_bytes, time.perf_counter() - began,
                                         shm=bool(writer.segments or writer.leased))
            return frame

        def read_reply(header: Dict[str, Any], body: Any, arena: ShmArena) -> List[Any]:
            if header.get("op") == "error":
                raise AgentError(
                    f"process agent {self.name!r} raised {header.get('type')}: "
                    f"{header.get('message')}\n--- remote traceback ---\n"
                    f"{header.get('traceback', '')}", agent=self.name)
            return FrameReader(header, body, arena).values(header.get("values", ()))

        start = time.perf_counter()
        try:
            values = await self.pool.request(make_frame, read_reply)
        except AgentError:
            self.metrics.record_failure(self.name)
            raise
        self.metrics.record_execution(self.name, time.perf_counter() - start)
        return values

    async def run(self, stream: Any) -> None:
        """Feed ``stream``'s batches to the workers; forward results to the sinks.

        Asking the stream for the next batch releases the previous one, and
        that happens only after its results were forwarded: the input is
        acknowledged only once the result is back.
        """
        forward = self.agent.forward if self.agent is not None else None
        async for payload in stream.batches():
            values = await self.process(payload)
            if forward is not None:
                source = stream.current_batch
                for value in values:
                    await forward(value, source)

    async def close(self) -> None:
        """Stop the workers (the agents see the end of their stream)."""
        await self.pool.close()

    stop = close

    async def __aenter__(self) -> "ProcessAgentRunner":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
