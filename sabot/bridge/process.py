"""ProcessBridge: nodes run in worker processes, batches cross as Arrow IPC.

Each initialized node gets its own ``WorkerPool`` (``workers_per_node``
processes). A call to ``execute_node`` writes the inputs into one frame
(small Arrow data inline, large data in shared memory, params as JSON),
hands it to an idle worker and reads the outputs back the same way; no
pickle carries data. A worker that dies is replaced and the call retried.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, Mapping, Optional

from ..exceptions import BridgeError, ConversionError, NodeExecutionError
from ..nodes.registry import NodeRegistry
from ..retry import RetryPolicy
from ..types import ExecutorBridgeT
from .base import as_inputs, from_outputs
from .arena import ShmArena
from .ipc import DEFAULT_INLINE_THRESHOLD, FrameReader, FrameWriter
from .metrics import BridgeMetrics
from .pool import WorkerPool
from .node_process import node_worker_main

__all__ = ["ProcessBridge", "OutgoingFrame", "remote_error", "DEFAULT_SPIN_US"]

#: Microseconds both sides poll for an answer before sleeping: a reply this
#: quick is common, and skipping the sleep halves a short round trip. Costs
#: at most this much CPU per request; 0 turns it off.
DEFAULT_SPIN_US = 200


class OutgoingFrame:
    """A frame about to be sent: its buffers and the writer that owns its shm."""

    __slots__ = ("buffers", "writer")

    def __init__(self, writer: FrameWriter, header: Dict[str, Any]) -> None:
        self.writer = writer
        try:
            self.buffers = writer.finish(header)
        except (TypeError, ValueError) as exc:
            writer.discard()
            raise ConversionError(f"parameters must be JSON-able: {exc}") from exc

    def discard(self) -> None:
        """Remove shared memory the worker never took (it died, or we gave up)."""
        self.writer.discard()


def remote_error(header: Dict[str, Any], node_id: str) -> NodeExecutionError:
    """The ``NodeExecutionError`` an ``error`` frame from a worker describes."""
    return NodeExecutionError(
        f"node {node_id!r} raised {header.get('type')}: {header.get('message')}",
        node_id=node_id, remote_traceback=header.get("traceback", ""),
        retryable=bool(header.get("retryable")))


class ProcessBridge(ExecutorBridgeT):
    """Runs nodes in spawned worker processes; see the module docstring."""

    def __init__(self, registry: NodeRegistry, *, workers_per_node: int = 1,
                 inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
                 retry_policy: Optional[RetryPolicy] = None,
                 start_timeout: float = 60.0, spin_us: int = DEFAULT_SPIN_US,
                 metrics: Optional[BridgeMetrics] = None) -> None:
        self.registry = registry
        self.spin_us = spin_us
        self.workers_per_node = workers_per_node
        self.inline_threshold = inline_threshold
        self.retry_policy = retry_policy or RetryPolicy(max_attempts=3)
        self.start_timeout = start_timeout
        self.metrics = metrics if metrics is not None else BridgeMetrics()
        self._pools: Dict[str, WorkerPool] = {}
        self._starting: Dict[str, asyncio.Future] = {}
        self._closed = False

    @property
    def executor_type(self) -> str:
        """``"process"``."""
        return "process"

    async def initialize_node(self, node_id: str, node_type: str,
                              params: Mapping[str, Any]) -> Dict[str, Any]:
        """Start the node's workers; returns the node's keys as the worker saw them.

        Concurrent calls for one node share one start. A closed bridge
        starts nothing: ``BridgeError``.
        """
        self._check_open()
        if node_id in self._pools:
            return self._pools[node_id].info
        if node_id in self._starting:
            return await asyncio.shield(self._starting[node_id])
        fut = asyncio.get_running_loop().create_future()
        self._starting[node_id] = fut
        try:
            header = {"op": "init", "node_id": node_id, "node_type": node_type,
                      **self.registry.process_spec(node_type),
                      "params": dict(params), "inline_threshold": self.inline_threshold,
                      "spin_us": self.spin_us}
            pool = WorkerPool(node_worker_main, node_id, header, self.workers_per_node,
                              retry_policy=self.retry_policy, spin_us=self.spin_us,
                              start_timeout=self.start_timeout, metrics=self.metrics)
            await pool.start()
            if self._closed:  # closed while the workers started
                await pool.close()
                self._check_open()
            self._pools[node_id] = pool
            fut.set_result(pool.info)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            del self._starting[node_id]
        return pool.info

    def _check_open(self) -> None:
        if self._closed:
            raise BridgeError("the process bridge is closed")

    def worker_pids(self, node_id: Optional[str] = None) -> list:
        """Process ids of the workers of ``node_id`` (of every node if None)."""
        pools = [self._pools[node_id]] if node_id else list(self._pools.values())
        return [pid for pool in pools if pool for pid in pool.pids()]

    async def execute_node(self, node_id: str, node_type: str, data: Any,
                           params: Mapping[str, Any]) -> Any:
        """Run the node in a worker on ``data`` (shape: ``sabot.bridge.base``)."""
        self._check_open()
        if node_id not in self._pools:
            await self.initialize_node(node_id, node_type, params)
        pool = self._pools[node_id]
        inputs, single = as_inputs(data)

        def make_frame(arena: ShmArena) -> OutgoingFrame:
            began = time.perf_counter()
            writer = FrameWriter(self.inline_threshold, arena)
            descs = {k: writer.describe(v) for k, v in inputs.items()}
            frame = OutgoingFrame(writer, {"op": "exec", "params": dict(params),
                                           "inputs": descs})
            self.metrics.record_transfer(writer.data_bytes, time.perf_counter() - began,
                                         shm=bool(writer.segments or writer.leased))
            return frame

        def read_reply(header: Dict[str, Any], body: Any, arena: ShmArena) -> Any:
            if header.get("op") == "error":
                raise remote_error(header, node_id)
            began = time.perf_counter()
            reader = FrameReader(header, body, arena)
            outputs = {k: reader.value(d) for k, d in header["outputs"].items()}
            self.metrics.record_transfer(reader.data_bytes, time.perf_counter() - began,
                                         shm=bool(reader.mapped))
            return outputs

        start = time.perf_counter()
        try:
            outputs = await pool.request(make_frame, read_reply)
        except BridgeError:
            self.metrics.record_failure(node_id)
            raise
        self.metrics.record_execution(node_id, time.perf_counter() - start)
        return from_outputs(node_id, outputs, single)

    async def cleanup_node(self, node_id: str) -> None:
        """Stop the node's workers; none of its processes remains."""
        pool = self._pools.pop(node_id, None)
        if pool is not None:
            await pool.close()

    async def close(self) -> None:
        """Stop every node's workers; the bridge then refuses new calls."""
        self._closed = True
        await asyncio.gather(*(self.cleanup_node(n) for n in list(self._pools)))

    async def __aenter__(self) -> "ProcessBridge":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
