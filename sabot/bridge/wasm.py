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

from typing import Any, Mapping, Optional

from ..types import ExecutorBridgeT
from .native import InProcessBridge
from .wasm_module import WasmModule
from .wasm_node import WasmNode

__all__ = ["WasmBridge", "WasmModule", "WasmNode", "BatchRunner"]


class WasmBridge(InProcessBridge):
    """Runs WASM nodes in this process; see the module docstring.

    Each ``node_id`` gets one instance of its module (made by
    ``initialize_node`` or the first execution), kept until ``cleanup_node``
    and made again after a call that trapped. A node type registered
    without a WASM module is a ``RegistryError``.
    """

    @property
    def executor_type(self) -> str:
        """``"wasm"``."""
        return "wasm"

    def _build(self, node_id: str, node_type: str, params: Mapping[str, Any]) -> WasmNode:
        return self.registry.wasm_module(node_type).node(node_id, params)

    async def cleanup_node(self, node_id: str) -> None:
        """Drop the node's instance."""
        node = self._nodes.pop(node_id, None)
        if node is not None:
            node.close()


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
