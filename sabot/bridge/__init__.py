"""Executor bridges: run nodes and agents here or in worker processes (seed 001)."""
from .agent import ProcessAgentRunner, check_importable
from .databridge import DataBridge
from .metrics import BridgeMetrics
from .native import NativeBridge
from .process import ProcessBridge

__all__ = ["ProcessAgentRunner", "check_importable", "DataBridge", "BridgeMetrics",
           "NativeBridge", "ProcessBridge"]
