"""The one place that decides between the Cython fast paths and their twins.

``SABOT_PURE_PYTHON=1`` (or a missing extension) selects the pure-Python
twins. Only the classes below are swapped; every module above them imports
them from here and is written once.
"""
from __future__ import annotations

import os

_FORCE_PURE = os.environ.get("SABOT_PURE_PYTHON", "").lower() not in ("", "0", "false", "no")

if _FORCE_PURE:
    from ._cython.channels_py import (Batch, FanOut, Subscriber, ValueIterator,
                                      BatchIterator, EventIterator)
    FASTPATH = False
    IMPORT_ERROR = None
else:
    try:
        from ._cython.channels import (Batch, FanOut, Subscriber,  # type: ignore
                                       ValueIterator, BatchIterator, EventIterator)
        FASTPATH = True
        IMPORT_ERROR = None
    except ImportError as exc:  # extension not built: run, but say so
        from ._cython.channels_py import (Batch, FanOut, Subscriber, ValueIterator,
                                          BatchIterator, EventIterator)
        FASTPATH = False
        IMPORT_ERROR = exc

__all__ = ["Batch", "FanOut", "Subscriber", "ValueIterator", "BatchIterator",
           "EventIterator", "FASTPATH", "IMPORT_ERROR", "fastpath_enabled"]


def fastpath_enabled() -> bool:
    """True when the compiled Cython classes are in use."""
    return FASTPATH
