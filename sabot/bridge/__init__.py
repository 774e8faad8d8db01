"""Executor bridges: run nodes here or in worker processes (seed 001)."""
from .databridge import DataBridge
from .metrics import BridgeMetrics
from .native import NativeBridge
from .process import ProcessBridge

__all__ = ["DataBridge", "BridgeMetrics", "NativeBridge", "ProcessBridge"]
