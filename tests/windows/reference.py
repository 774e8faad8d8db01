"""What the window tests compare with: the same windows computed another way.

The input is replayed row by row to find which rows are late (the watermark
a row finds is the largest event time of the rows before it, one partition,
and a row is late when a window it belongs to ended, plus grace, at or
before that watermark: the documented rule, written here in plain integer
milliseconds; batch boundaries do not matter). The windows of the rows that are not late are then computed
with pyarrow over the whole input at once: ``group_by`` over
``floor(ts / size)`` for tumbling windows, over each window a row falls in
for hopping and sliding windows, and plainly in Python for sessions and
count windows, which have no such formula.
"""
import random

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["make_input", "late_rows", "tumbling_ref", "hopping_ref", "sliding_ref",
           "session_ref", "count_ref", "as_rows"]


def make_input(n=3000, keys=17, batch=100, seed=7, late_every=37, jitter_ms=4000):
    """Batches of rows ``id, user, ts (s), amount`` in roughly increasing time.

    Times move 50 ms per row with up to ``jitter_ms`` of disorder, and every
    ``late_every``-th row is from a minute ago (late for sure).
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ms = 1_000_000 + i * 50 - rng.randrange(jitter_ms)
        if late_every and i % late_every == late_every - 1 and i > 400:
            ms -= 60_000
        rows.append({"id": i, "user": f"u{rng.randrange(keys)}", "ts": ms / 1000.0,
                     "amount": rng.randrange(1, 100)})
    return [pa.RecordBatch.from_pylist(rows[i:i + batch]) for i in range(0, n, batch)]


def _ms(ts):
    return round(ts * 1000)


def late_rows(batches, first_window_end, grace=0.0):
    """Ids of the late rows, one partition, row by row: a row finds the watermark
    left by the rows before it (their largest time), whatever the batches.

    ``first_window_end(ts_ms)``: end (ms) of the earliest window the row
    belongs to; ``None`` for sessions, whose rows are late below the
    watermark minus grace.
    """
    grace_ms = _ms(grace)
    watermark = None
    late = set()
    for batch in batches:
        for row in batch.to_pylist():
            t = _ms(row["ts"])
            if watermark is not None:
                if first_window_end is None:
                    if t < watermark - grace_ms:
                        late.add(row["id"])
                elif first_window_end(t) + grace_ms <= watermark:
                    late.add(row["id"])
            watermark = t if watermark is None else max(watermark, t)
    return late


def _kept(batches, late):
    table = pa.Table.from_batches(batches)
    keep = pc.invert(pc.is_in(table.column("id"), value_set=pa.array(sorted(late), pa.int64())))
    return table.filter(keep)


def _finish(grouped, start_ms, end_ms):
    return sorted(
        (user, s / 1000.0, e / 1000.0, n, total)
        for user, s, e, n, total in zip(grouped.column("user").to_pylist(), start_ms, end_ms,
                                        grouped.column("n").to_pylist(),
                                        grouped.column("total").to_pylist()))


def tumbling_ref(batches, size, late):
    """Tumbling windows by ``group_by([user, floor(ts / size)])``."""
    table = _kept(batches, late)
    window = pc.floor(pc.divide(table.column("ts"), float(size)))
    table = table.append_column("w", pc.cast(window, pa.int64()))
    grouped = table.group_by(["user", "w"]).aggregate([([], "count_all"), ("amount", "sum")])
    grouped = grouped.rename_columns(["user", "w", "n", "total"])
    starts = [w * round(size * 1000) for w in grouped.column("w").to_pylist()]
    return _finish(grouped, starts, [s + round(size * 1000) for s in starts])


def hopping_ref(batches, size, step, late):
    """Hopping windows: every row copied into each window it falls in, then ``group_by``."""
    table = _kept(batches, late)
    size_ms, step_ms = round(size * 1000), round(step * 1000)
    ts_ms = pc.cast(pc.round(pc.multiply(table.column("ts"), 1000.0)), pa.int64())
    parts = []
    for j in range(-(-size_ms // step_ms)):
        w = pc.subtract(pc.cast(pc.floor(pc.divide(pc.cast(ts_ms, pa.float64()), step_ms)),
                                pa.int64()), j)
        inside = pc.greater(pc.add(pc.multiply(w, step_ms), size_ms), ts_ms)
        parts.append(table.filter(inside).append_column("w", w.filter(inside)))
    expanded = pa.concat_tables(parts)
    grouped = expanded.group_by(["user", "w"]).aggregate([([], "count_all"), ("amount", "sum")])
    grouped = grouped.rename_columns(["user", "w", "n", "total"])
    starts = [w * step_ms for w in grouped.column("w").to_pylist()]
    return _finish(grouped, starts, [s + size_ms for s in starts])


def sliding_ref(batches, size, resolution, late):
    """One window per (user, resolution step with an event), summing what lies in it."""
    table = _kept(batches, late)
    size_ms, res_ms = round(size * 1000), round(resolution * 1000)
    by_user = {}
    for row in table.to_pylist():
        by_user.setdefault(row["user"], []).append((_ms(row["ts"]), row["amount"]))
    out = []
    for user, events in by_user.items():
        ends = {(t // res_ms + 1) * res_ms for t, _ in events}
        for end in ends:
            inside = [a for t, a in events if end - size_ms <= t < end]
            out.append((user, (end - size_ms) / 1000.0, end / 1000.0, len(inside), sum(inside)))
    return sorted(out)


def session_ref(batches, gap, late):
    """Sessions per user: sorted by time, a new one where the gap is reached."""
    table = _kept(batches, late)
    gap_ms = round(gap * 1000)
    by_user = {}
    for row in table.to_pylist():
        by_user.setdefault(row["user"], []).append((_ms(row["ts"]), row["amount"]))
    out = []
    for user, events in by_user.items():
        events.sort()
        current = None
        for t, a in events:
            if current is not None and t - current[1] < gap_ms:
                current = [current[0], t, current[2] + 1, current[3] + a]
            else:
                if current is not None:
                    out.append(current_row(user, current, gap_ms))
                current = [t, t, 1, a]
        out.append(current_row(user, current, gap_ms))
    return sorted(out)


def current_row(user, session, gap_ms):
    first, last, n, total = session
    return (user, first / 1000.0, (last + gap_ms) / 1000.0, n, total)


def count_ref(batches, n):
    """Count windows: each user's rows in arrival order, ``n`` at a time (the rest too)."""
    table = pa.Table.from_batches(batches)
    by_user = {}
    for row in table.to_pylist():
        by_user.setdefault(row["user"], []).append((_ms(row["ts"]), row["amount"]))
    out = []
    for user, events in by_user.items():
        for i in range(0, len(events), n):
            chunk = events[i:i + n]
            times = [t for t, _ in chunk]
            out.append((user, min(times) / 1000.0, max(times) / 1000.0, len(chunk),
                        sum(a for _, a in chunk)))
    return sorted(out)


def as_rows(batches, key="user"):
    """The operator's output as sorted tuples (key, start, end, n, total)."""
    out = []
    for batch in batches:
        for row in batch.to_pylist():
            out.append((row[key], row["window_start"], row["window_end"], row["n"], row["total"]))
    return sorted(out)
