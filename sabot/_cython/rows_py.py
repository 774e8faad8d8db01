"""Which value the running task holds: the lookup on a table's per-value write path.

Pure-Python twin of ``sabot/_cython/rows.pyx`` (same API, selected by
``sabot._fastpath``). ``TASK_STREAMS`` maps each task iterating a stream (an
agent instance's task) to that root stream; ``sabot.streams`` fills it when
iteration starts and drops a task's entry when the task ends.
"""
from __future__ import annotations

import asyncio
from typing import Any, Dict, Optional, Tuple

from ..value_dispatch import DispatchedIterator

__all__ = ["TASK_STREAMS", "current_row"]

#: task -> the root stream it iterates.
TASK_STREAMS: Dict[Any, Any] = {}

# The running task without asyncio.current_task()'s Python frame: the running
# loop (C) indexes asyncio's own registry of current tasks.
_get_running_loop = asyncio.events._get_running_loop
_current_tasks: Optional[Dict[Any, Any]] = getattr(asyncio.tasks, "_current_tasks", None)


def current_row() -> Optional[Tuple[Any, Any, int, bool]]:
    """``(stream, batch, index, single)`` of the running task; ``None`` outside a stream.

    ``batch`` is the batch of the value in hand (``None`` before the first),
    ``index`` its row (the last row when the agent holds whole batches),
    ``single`` False when the agent holds more than one value (a whole batch
    or a ``take`` chunk).
    """
    loop = _get_running_loop()
    if loop is None:
        return None
    task = _current_tasks.get(loop) if _current_tasks is not None else asyncio.current_task(loop)
    stream = TASK_STREAMS.get(task) if task is not None else None
    if stream is None:
        return None
    active = stream._active
    if active is None:
        return stream, None, -1, True
    batch = active.current_batch
    if batch is None:
        return stream, None, -1, True
    batches_it = stream._batches_it
    if batches_it is not None and active is batches_it.inner:
        return stream, batch, len(batch) - 1, False
    index = active.row_index if type(active) is DispatchedIterator else active.current_index
    return stream, batch, index, stream._chunk is None
