# cython: language_level=3, boundscheck=False, wraparound=False
"""Which value the running task holds (Cython twin of ``rows_py.py``; same API).

See ``sabot/_cython/rows_py.py`` for the contract.
"""
import asyncio

from sabot.value_dispatch import DispatchedIterator

__all__ = ["TASK_STREAMS", "current_row"]

#: task -> the root stream it iterates.
TASK_STREAMS = {}

cdef dict _task_streams = TASK_STREAMS
cdef object _get_running_loop = asyncio.events._get_running_loop
cdef object _current_tasks = getattr(asyncio.tasks, "_current_tasks", None)
cdef object _current_task = asyncio.current_task
cdef object _Dispatched = DispatchedIterator


def current_row():
    """``(stream, batch, index, single)`` of the running task; ``None`` outside a stream."""
    cdef object loop = _get_running_loop()
    if loop is None:
        return None
    cdef object task
    if _current_tasks is not None:
        task = (<dict>_current_tasks).get(loop)
    else:
        task = _current_task(loop)
    if task is None:
        return None
    cdef object stream = _task_streams.get(task)
    if stream is None:
        return None
    cdef object active = stream._active
    if active is None:
        return stream, None, -1, True
    cdef object batch = active.current_batch
    if batch is None:
        return stream, None, -1, True
    cdef object batches_it = stream._batches_it
    if batches_it is not None and active is batches_it.inner:
        return stream, batch, len(batch) - 1, False
    cdef object index
    if type(active) is _Dispatched:
        index = active.row_index
    else:
        index = active.current_index
    return stream, batch, index, stream._chunk is None
