"""What every bridge shares: the shape of a node's inputs and outputs.

``execute_node`` takes either a mapping of input names to values (the node's
inputs as they are) or a single value, which becomes the ``"input"`` input;
in that case the caller gets the node's ``"output"`` back instead of the
whole output mapping. Both bridges use these two helpers so that a node
gives the same answer wherever it runs.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

from ..exceptions import NodeExecutionError

__all__ = ["as_inputs", "from_outputs"]


def as_inputs(data: Any) -> Tuple[Dict[str, Any], bool]:
    """``(inputs mapping, single)``: ``single`` when ``data`` was one value."""
    if isinstance(data, Mapping):
        return dict(data), False
    return {"input": data}, True


def from_outputs(node_id: str, outputs: Any, single: bool) -> Any:
    """What ``execute_node`` returns for a node's ``outputs``."""
    if not isinstance(outputs, Mapping):
        raise NodeExecutionError(
            f"node {node_id!r} returned {type(outputs).__name__}, not a mapping "
            f"of output names to values", node_id=node_id)
    if not single:
        return dict(outputs)
    if "output" not in outputs:
        raise NodeExecutionError(
            f"node {node_id!r} produced no 'output' (it produced "
            f"{sorted(outputs)}); pass a mapping of inputs to get them all",
            node_id=node_id)
    return outputs["output"]
