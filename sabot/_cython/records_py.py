"""Records made from a fetch's columns: the last step of whole-fetch decoding.

Pure-Python twin of ``sabot/_cython/records.pyx`` (same API, selected by
``sabot._fastpath``). ``sabot.models.fast_json`` converts a fetch column by
column into each field's final values, then makes one record per row here.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

__all__ = ["build_records"]


def build_records(build: Callable[..., Any], model: type, names: Optional[Tuple[str, ...]],
                  columns: Sequence[List[Any]]) -> List[Any]:
    """``[build(*row) for row in zip(*columns)]``.

    ``names``, when given, says what ``build`` does: make an instance of
    ``model`` without ``__init__`` and store ``row[j]`` as its attribute
    ``names[j]``, nothing else (no ``__setattr__`` of the class's own, no
    check). The compiled twin then does exactly that itself, without a
    Python call per record; this one always calls ``build``.
    """
    return list(map(build, *columns))
