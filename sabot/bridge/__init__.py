"""Executor bridges: run nodes here or in worker processes (seed 001)."""
from typing import Dict

from ..nodes.registry import NodeRegistry
from ..types import ExecutorBridgeT
from .databridge import DataBridge
from .metrics import BridgeMetrics
from .native import NativeBridge
from .process import ProcessBridge

__all__ = ["DataBridge", "BridgeMetrics", "NativeBridge", "ProcessBridge", "default_bridges"]


def default_bridges(registry: NodeRegistry) -> Dict[str, ExecutorBridgeT]:
    """A bridge per runtime for ``Pipeline(registry, bridges=...)``.

    No process starts until a process node is initialized. The ``"wasm"``
    bridge is there when ``wasmtime`` (the ``sabot[wasm]`` extra) is installed.
    """
    bridges: Dict[str, ExecutorBridgeT] = {"native": NativeBridge(registry),
                                           "process": ProcessBridge(registry)}
    try:
        from .wasm import WasmBridge
    except ImportError:  # no wasmtime: WASM nodes cannot be registered either
        return bridges
    bridges["wasm"] = WasmBridge(registry)
    return bridges
