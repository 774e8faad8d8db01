"""The reference a windowed table is checked against, computed with pyarrow.

Given the events in the order each partition delivers them, it computes what
a hopping (or tumbling) windowed count must hold: each event belongs to
``size // step`` windows; a window is closed for an event when the
partition's watermark *before* that event (the largest earlier event time
minus the allowed lateness) has reached the window's end plus grace. Events
counted in no window are late. Everything is whole-array pyarrow compute
(cumulative max per partition, window starts, group-by count), independent
of the per-event code it checks.
"""
from typing import Dict, List, Tuple

import pyarrow as pa
import pyarrow.compute as pc


def windowed_counts(events: List[Tuple[str, int, float]], size: float, step: float,
                    grace: float = 0.0, lateness: float = 0.0,
                    ) -> Tuple[Dict[Tuple[str, float], int], int]:
    """``({(key, window_start): count}, late_events)`` for ``(key, partition, time)`` events.

    ``events`` are in arrival order (order matters only within a partition).
    ``size`` must be a whole multiple of ``step``.
    """
    assert size % step == 0, "the reference handles size = k * step"
    table = pa.table({
        "key": pa.array([e[0] for e in events], pa.string()),
        "partition": pa.array([e[1] for e in events], pa.int64()),
        "ts": pa.array([e[2] for e in events], pa.float64()),
    })
    parts = []
    for partition in pc.unique(table["partition"]).to_pylist():
        part = table.filter(pc.equal(table["partition"], partition))
        ts = part["ts"]
        running_max = pc.cumulative_max(ts)
        # Watermark before each event: the max of the events before it.
        before = pa.concat_arrays([pa.array([-float("inf")], pa.float64()),
                                   running_max.combine_chunks()[:-1]])
        part = part.append_column("watermark", pc.subtract(before, lateness))
        parts.append(part)
    table = pa.concat_tables(parts)
    last_start = pc.multiply(pc.floor(pc.divide(table["ts"], step)), step)
    windows = []
    for j in range(int(size // step)):
        start = pc.subtract(last_start, j * step)
        closed = pc.less_equal(pc.add(start, size + grace), table["watermark"])
        windows.append(pa.table({"key": table["key"], "start": start, "closed": closed,
                                 "row": pa.array(range(len(table)))}))
    exploded = pa.concat_tables(windows)
    counted = exploded.filter(pc.invert(exploded["closed"]))
    grouped = counted.group_by(["key", "start"]).aggregate([("row", "count")])
    counts = {(k, s): n for k, s, n in zip(grouped["key"].to_pylist(),
                                           grouped["start"].to_pylist(),
                                           grouped["row_count"].to_pylist())}
    # An event is late when it was left out of at least one of its windows.
    late_rows = pc.unique(exploded.filter(exploded["closed"])["row"])
    return counts, len(late_rows)
