"""WasmBridge: nodes compiled to WebAssembly, run in a sandbox (seed 001's third executor).

A node type registered with ``registry.register("name", wasm=...)`` (a path,
bytes or WebAssembly text; see ``sabot.bridge.wasm_module``) runs here on
``wasmtime``: in this process, in its own linear memory, with nothing
outside it unless a capability was granted (``sabot.bridge.wasm_sandbox``),
under a memory limit and a fuel budget per call. Batches cross by the ABI
of ``sabot.bridge.wasm_abi``. The contract is the other bridges': a failing
call raises ``NodeExecutionError`` naming the node, and the bridge keeps
serving. To use every core, run the same node type on the process bridge:
its workers load the module from its bytes.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Mapping, Optional

from ..exceptions import BridgeError, SabotError
from ..nodes.node import node_error, run_node
from ..nodes.registry import NodeRegistry
from ..types import ExecutorBridgeT
from .base import as_inputs, from_outputs
from .metrics import BridgeMetrics
from .wasm_module import WasmModule
from .wasm_node import WasmNode

__all__ = ["WasmBridge", "WasmModule", "WasmNode", "BatchRunner"]


class WasmBridge(ExecutorBridgeT):
    """Runs WASM nodes in this process; see the module docstring.

    Each ``node_id`` gets one instance of its module (made by
    ``initialize_node`` or the first execution), kept until ``cleanup_node``
    and made again after a call that trapped.
    """

    def __init__(self, registry: NodeRegistry,
                 metrics: Optional[BridgeMetrics] = None) -> None:
        self.registry = registry
        self.metrics = metrics if metrics is not None else BridgeMetrics()
        self._nodes: Dict[str, WasmNode] = {}
        self._closed = False

    @property
    def executor_type(self) -> str:
        """``"wasm"``."""
        return "wasm"

    async def initialize_node(self, node_id: str, node_type: str,
                              params: Mapping[str, Any]) -> WasmNode:
        """The node of ``node_id`` (its input and output keys are readable).

        A node type registered without a WASM module is a ``RegistryError``.
        """
        if self._closed:
            raise BridgeError("the WASM bridge is closed")
        node = self._nodes.get(node_id)
        if node is None:
            try:
                node = self.registry.wasm_module(node_type).node(node_id, params)
            except SabotError:
                raise
            except Exception as exc:
                raise node_error(node_id, node_type, exc) from exc
            self._nodes[node_id] = node
        return node

    def node(self, node_id: str) -> WasmNode:
        """The node of ``node_id`` (KeyError when not initialized)."""
        return self._nodes[node_id]

    async def execute_node(self, node_id: str, node_type: str, data: Any,
                           params: Mapping[str, Any]) -> Any:
        """Run the node on ``data`` (shape: ``sabot.bridge.base``)."""
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

    async def cleanup_node(self, node_id: str) -> None:
        """Drop the node's instance."""
        node = self._nodes.pop(node_id, None)
        if node is not None:
            node.close()

    async def close(self) -> None:
        """Drop every instance; the bridge then refuses new calls."""
        self._closed = True
        for node_id in list(self._nodes):
            await self.cleanup_node(node_id)


class BatchRunner:
    """One node of a bridge run on every batch: what ``stream.through`` takes.

    ``stream.through(BatchRunner(bridge, "id", "type"))`` yields the node's
    ``"output"`` for each batch (a ``sabot.types.PipelineT``).
    """

    def __init__(self, bridge: ExecutorBridgeT, node_id: str, node_type: str,
                 params: Optional[Mapping[str, Any]] = None) -> None:
        self.bridge = bridge
        self.node_id = node_id
        self.node_type = node_type
        self.params = dict(params or {})

    async def run_batch(self, batch: Any) -> Any:
        """The node's ``"output"`` for ``batch``."""
        return await self.bridge.execute_node(self.node_id, self.node_type, batch,
                                              self.params)
