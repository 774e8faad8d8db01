"""NativeBridge: nodes run in this process, on the event loop (seed 001)."""
from __future__ import annotations

import inspect
import time
from typing import Any, Dict, Mapping, Optional

from ..exceptions import BridgeError, SabotError
from ..nodes.node import node_error, run_node
from ..nodes.registry import NodeRegistry
from ..types import ExecutorBridgeT, NodeExecutorT
from .base import as_inputs, from_outputs
from .metrics import BridgeMetrics

__all__ = ["InProcessBridge", "NativeBridge"]


class InProcessBridge(ExecutorBridgeT):
    """What the bridges that run nodes in this process share (native, WASM).

    A node is built once per ``node_id`` (by ``initialize_node``, or on its
    first execution, through ``_build``) and kept until ``cleanup_node``;
    after ``close`` the bridge refuses new nodes.
    """

    def __init__(self, registry: NodeRegistry,
                 metrics: Optional[BridgeMetrics] = None) -> None:
        self.registry = registry
        self.metrics = metrics if metrics is not None else BridgeMetrics()
        self._nodes: Dict[str, Any] = {}
        self._closed = False

    def _build(self, node_id: str, node_type: str, params: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    async def initialize_node(self, node_id: str, node_type: str,
                              params: Mapping[str, Any]) -> Any:
        """Build the node; returns it (its input and output keys are readable)."""
        if self._closed:
            raise BridgeError(f"the {self.executor_type} bridge is closed")
        node = self._nodes.get(node_id)
        if node is None:
            try:
                node = self._build(node_id, node_type, params)
            except SabotError:
                raise
            except Exception as exc:
                raise node_error(node_id, node_type, exc) from exc
            self._nodes[node_id] = node
        return node

    def node(self, node_id: str) -> Any:
        """The node built for ``node_id`` (KeyError when not initialized)."""
        return self._nodes[node_id]

    async def execute_node(self, node_id: str, node_type: str, data: Any,
                           params: Mapping[str, Any]) -> Any:
        """Run the node on ``data`` (see ``sabot.bridge.base`` for its shape)."""
        node = await self.initialize_node(node_id, node_type, params)
        inputs, single = as_inputs(data)
        start = time.perf_counter()
        try:
            outputs = await run_node(node, inputs, params)
        except Exception as exc:
            self.metrics.record_failure(node_id)
            raise node_error(node_id, node_type, exc) from exc
        self.metrics.record_execution(node_id, time.perf_counter() - start)
        return from_outputs(node_id, outputs, single)

    async def close(self) -> None:
        """Clean up every node; the bridge then refuses new ones."""
        self._closed = True
        for node_id in list(self._nodes):
            await self.cleanup_node(node_id)


class NativeBridge(InProcessBridge):
    """Runs each node in the caller's process: no conversion, no copy."""

    @property
    def executor_type(self) -> str:
        """``"native"``."""
        return "native"

    def _build(self, node_id: str, node_type: str, params: Mapping[str, Any]) -> NodeExecutorT:
        return self.registry.create(node_type, params, "native")

    async def cleanup_node(self, node_id: str) -> None:
        """Forget the node; a ``close()`` or ``cleanup()`` method of it is awaited."""
        node = self._nodes.pop(node_id, None)
        # Optional hooks of a user's node (NodeExecutorT has neither), sync or async.
        closer = getattr(node, "cleanup", None) or getattr(node, "close", None)
        if closer is not None:
            result = closer()
            if inspect.isawaitable(result):
                await result
