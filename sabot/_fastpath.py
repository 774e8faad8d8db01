"""The one place that decides between the Cython fast paths and their twins.

``SABOT_PURE_PYTHON=1`` (or a missing extension) selects the pure-Python
twins. Only the classes below are swapped; every module above them imports
them from here and is written once.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

_FORCE_PURE = os.environ.get("SABOT_PURE_PYTHON", "").lower() not in ("", "0", "false", "no")

FASTPATH: bool
IMPORT_ERROR: Optional[ImportError]

if TYPE_CHECKING:
    # mypy reads the stubs (``_cython/*.pyi``): one API for both twins,
    # each of which tests/typing/conformance.py holds to sabot.types.
    from ._cython.channels import (Batch, BatchIterator, EventIterator, FanOut, Subscriber,
                                   ValueIterator)
    from ._cython.rows import TASK_STREAMS, current_row
    from ._cython.records import build_records
elif _FORCE_PURE:
    from ._cython.channels_py import (Batch, FanOut, Subscriber, ValueIterator,
                                      BatchIterator, EventIterator)
    from ._cython.rows_py import TASK_STREAMS, current_row
    from ._cython.records_py import build_records
    FASTPATH = False
    IMPORT_ERROR = None
else:
    try:
        from ._cython.channels import (Batch, FanOut, Subscriber,
                                       ValueIterator, BatchIterator, EventIterator)
        from ._cython.rows import TASK_STREAMS, current_row
        from ._cython.records import build_records
        FASTPATH = True
        IMPORT_ERROR = None
    except ImportError as exc:  # extension not built: run, but say so
        from ._cython.channels_py import (Batch, FanOut, Subscriber, ValueIterator,
                                          BatchIterator, EventIterator)
        from ._cython.rows_py import TASK_STREAMS, current_row
        from ._cython.records_py import build_records
        FASTPATH = False
        IMPORT_ERROR = exc

__all__ = ["Batch", "FanOut", "Subscriber", "ValueIterator", "BatchIterator",
           "EventIterator", "TASK_STREAMS", "current_row", "build_records", "FASTPATH",
           "IMPORT_ERROR",
           "fastpath_enabled"]


def fastpath_enabled() -> bool:
    """True when the compiled Cython classes are in use."""
    return FASTPATH
