"""Small columnar helpers the window engines share (pyarrow only, no per-row Python)."""
from __future__ import annotations

from typing import List, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["floor_div", "concat", "group_merge", "flat", "seconds_text"]


def floor_div(values: pa.Array, divisor: int, low: Optional[int] = None) -> pa.Array:
    """``floor(values / divisor)`` for int64 ``values`` (Arrow's divide truncates).

    ``low``, the smallest value when the caller knows it, saves a pass.
    """
    quotient = pc.divide(values, divisor)
    if low is None:
        low = pc.min(values).as_py()
    if low is None or low >= 0:
        return quotient
    # Negative times (before 1970): truncation rounds toward zero; step back.
    remainder = pc.subtract(values, pc.multiply(quotient, divisor))
    return pc.if_else(pc.less(remainder, 0), pc.subtract(quotient, 1), quotient)


def flat(column: pa.ChunkedArray) -> pa.Array:
    """One array from a table's column."""
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Tables stacked (types promoted: an int sum meets a float sum as float)."""
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")


def group_merge(table: pa.Table, keys: List[str], aggregates: List[tuple],
                outputs: List[str], names: List[str]) -> pa.Table:
    """``group_by(keys).aggregate(aggregates)`` with ``outputs`` renamed to ``names``."""
    grouped = table.group_by(keys, use_threads=False).aggregate(aggregates)
    return grouped.select(keys + outputs).rename_columns(keys + names)


def seconds_text(micros: Optional[int]) -> str:
    """Microseconds as seconds, for messages (``1003.5``, ``none``)."""
    if micros is None:
        return "none"
    return f"{micros / 1_000_000:.6f}".rstrip("0").rstrip(".")
