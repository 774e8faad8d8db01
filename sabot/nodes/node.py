"""Running one node: the steps every runtime takes the same way."""
from __future__ import annotations

import traceback
from typing import Any, Mapping

from ..exceptions import NodeExecutionError
from ..types import NodeExecutorT

__all__ = ["run_node", "node_error"]


async def run_node(node: NodeExecutorT, inputs: Mapping[str, Any],
                   params: Mapping[str, Any]) -> Any:
    """``node.validate_inputs(inputs)``, then await ``node.execute``."""
    node.validate_inputs(inputs)
    return await node.execute(inputs, params)


def node_error(node_id: str, node_type: str, exc: BaseException,
               remote_traceback: str = "") -> NodeExecutionError:
    """The ``NodeExecutionError`` reporting ``exc`` raised by a node.

    The error keeps the node id, the traceback text and whether the original
    error said it was worth retrying.
    """
    if isinstance(exc, NodeExecutionError) and not remote_traceback:
        exc.node_id = exc.node_id or node_id
        return exc
    tb = remote_traceback or "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__))
    return NodeExecutionError(
        f"node {node_id!r} ({node_type}) raised {type(exc).__name__}: {exc}",
        node_id=node_id, remote_traceback=tb,
        retryable=bool(getattr(exc, "retryable", False)))
