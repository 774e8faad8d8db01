"""What every child process of the bridge does the same way.

A node process (``node_process.py``) and a process agent's child
(``sabot.agents.child``) both start with ``prepare_worker_process`` and
report an exception to the parent as an ``error_header``.
"""
from __future__ import annotations

import os
import signal
import traceback
from typing import Any, Dict, Optional

from .shm import set_segment_owner

__all__ = ["prepare_worker_process", "error_header"]


def prepare_worker_process() -> None:
    """Common set-up of every worker process.

    Ctrl-C in a terminal reaches the whole process group; the parent decides
    when workers stop, so they ignore SIGINT. Shared-memory segments are
    named after the parent, which owns the bridge, and this worker.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_segment_owner(os.getppid(), worker=os.getpid())


def error_header(exc: BaseException, req_id: Optional[int] = None) -> Dict[str, Any]:
    """The ``error`` frame header reporting ``exc`` to the parent."""
    return {
        "op": "error", "id": req_id,
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "retryable": bool(getattr(exc, "retryable", False)),
    }
