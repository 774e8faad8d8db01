"""Nodes and pipelines: node registry, DAG execution, retry, events (seeds 003, 004)."""
from .events import EventBus, EventKind, ExecutionEvent
from .pipeline import ErrorHandling, Pipeline, PipelineResult
from .registry import RUNTIMES, NodeRegistry
from ..retry import NO_RETRY, RetryPolicy
from .state import NodeState, NodeStatus

__all__ = ["EventBus", "EventKind", "ExecutionEvent", "ErrorHandling", "Pipeline",
           "PipelineResult", "RUNTIMES", "NodeRegistry", "NO_RETRY", "RetryPolicy",
           "NodeState", "NodeStatus"]
