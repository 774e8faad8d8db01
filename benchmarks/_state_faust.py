"""The same windowed count as a Faust windowed table, a Sabot windowed table and Arrow windows.

The workload: N events (200,000), keys drawn from 10,000, event times rising
by 1 ms per event (so 20 tumbling windows of 10 s), counted per key and
window. All in memory, one process, defaults everywhere.

* **Faust** (the baseline): faust-streaming 0.15.3's own windowed table,
  ``app.Table("counts", default=int).tumbling(10)`` with ``store="memory://"``,
  and ``table[key] += 1`` for each event with Faust's current event set to a
  stand-in event (topic, partition, offset, timestamp). Faust has no memory
  transport, so no agent runs: this is Faust's windowed-table work alone
  (window ranges, ``WindowSet``, the store, the changelog message built and
  buffered by ``send_soon``; the producer never sends). A real Faust agent
  would add its per-event stream overhead: the baseline is generous to Faust.
* **Sabot windowed table**: a real agent on a memory channel,
  ``async for key in stream: counts[key] += 1`` on
  ``app.Table("counts", default=int).tumbling(10)`` (defaults: grace 0,
  idle timeout 5 s; the changelog on, flushed by the app), fed batches of
  1,000 events with their event times as the batch's timestamps. Timed from
  the first batch sent to the last event counted.
* **Sabot Arrow windows** (if ``sabot.windows`` is there): the same events as
  RecordBatches of 10,000 rows through ``stream.window(tumbling(10),
  key="key", time="ts").agg(n=count()).final()``; timed until the last
  window is closed by a final event past the end. The ratio is still against
  Faust's windowed table: the same count, written the Arrow way.

    python benchmarks/_state_faust.py [--n 200000]
"""
import argparse
import asyncio
import os
import random
import sys
import time
import weakref

N_DEFAULT = 200_000
KEYS = 10_000
STEP = 0.001  # seconds of event time between events
WINDOW = 10.0
BATCH = 1_000
ARROW_BATCH = 10_000


def workload(n):
    rng = random.Random(42)
    keys = [f"k{rng.randrange(KEYS)}" for _ in range(n)]
    times = [1_000_000.0 + i * STEP for i in range(n)]
    return keys, times


class _Message:
    __slots__ = ("topic", "partition", "offset", "timestamp", "key", "value")


class _Event:
    __slots__ = ("message", "key", "value", "__weakref__")


def faust_windowed_count(keys, times):
    """Events/s of Faust's windowed table (``table[key] += 1`` under a current event)."""
    import faust
    from faust.streams import _current_event

    async def run():
        app = faust.App("bench-faust-windows", broker="kafka://127.0.0.1:1",
                        store="memory://")
        app.topic("events", partitions=1)
        counts = app.Table("counts", default=int, partitions=1).tumbling(WINDOW)
        message = _Message()
        message.topic, message.partition = "events", 0
        event = _Event()
        event.message = message
        token = _current_event.set(weakref.ref(event))
        try:
            start = time.perf_counter()
            for i, (key, ts) in enumerate(zip(keys, times)):
                message.offset, message.timestamp = i, ts
                message.key = event.key = message.value = event.value = key
                counts[key] += 1
            elapsed = time.perf_counter() - start
        finally:
            _current_event.reset(token)
        total = sum(v for v in counts.table.data.values())
        assert total == len(keys), (total, len(keys))
        return len(keys) / elapsed

    return asyncio.run(run())


def sabot_windowed_count(keys, times):
    """Events/s of a Sabot windowed table updated by an agent on a memory channel."""
    import sabot
    from sabot._fastpath import Batch

    async def run():
        app = sabot.App("bench-sabot-windows")
        source = app.channel()
        table = app.Table("counts", default=int)
        counts = table.tumbling(WINDOW)
        n = len(keys)
        done = asyncio.Event()
        seen = [0]

        @app.agent(source)
        async def count(stream):
            c = 0
            async for key in stream:
                counts[key] += 1
                c += 1
                if c == n:
                    seen[0] = c
                    done.set()

        await app.start()
        try:
            start = time.perf_counter()
            for i in range(0, n, BATCH):
                chunk = keys[i:i + BATCH]
                await source.publish(Batch(chunk, keys=chunk, timestamps=times[i:i + BATCH]))
            await done.wait()
            elapsed = time.perf_counter() - start
            total = sum(v for (_, _), v in table.items())
            assert total == n, (total, n)
        finally:
            await app.stop()
        return n / elapsed

    return asyncio.run(run())


def arrow_windowed_count(keys, times):
    """Events/s of ``stream.window(tumbling(10)).agg(n=count())`` over RecordBatches."""
    import pyarrow as pa

    import sabot
    from sabot.windows import count, tumbling

    async def run():
        app = sabot.App("bench-arrow-windows")
        source = app.channel()
        n = len(keys)
        counted = [0]
        done = asyncio.Event()

        @app.agent(source)
        async def window(stream):
            async for closed in stream.window(tumbling(WINDOW), key="key", time="ts").agg(
                    n=count()).final():
                counted[0] += sum(closed.column("n").to_pylist())
                if counted[0] >= n:
                    done.set()

        batches = [pa.RecordBatch.from_pydict({"key": keys[i:i + ARROW_BATCH],
                                               "ts": times[i:i + ARROW_BATCH]})
                   for i in range(0, n, ARROW_BATCH)]
        # One event past the last window's end closes it (its own window stays open).
        closer = pa.RecordBatch.from_pydict({"key": ["end"], "ts": [times[-1] + 2 * WINDOW]})
        await app.start()
        try:
            start = time.perf_counter()
            for batch in batches:
                await source.send_batch(batch)
            await source.send_batch(closer)
            await asyncio.wait_for(done.wait(), 120)
            elapsed = time.perf_counter() - start
        finally:
            await app.stop()
        assert counted[0] == n, (counted[0], n)
        return n / elapsed

    return asyncio.run(run())


def _arrow_windows_available():
    try:
        import sabot.windows  # noqa: F401
    except ImportError:
        return False
    return True


def run(n=N_DEFAULT):
    """Rows of ``{"what", "sabot", "baseline", "ratio", "unit"}`` (bench_state.py)."""
    keys, times = workload(n)
    faust_rate = faust_windowed_count(keys, times)
    rows = []
    sabot_rate = sabot_windowed_count(keys, times)
    rows.append({"what": f"windowed table count, tumbling {WINDOW:g}s, {KEYS:,} keys, "
                         f"table[k] += 1 (Sabot agent on memory vs Faust table ops alone)",
                 "sabot": sabot_rate, "baseline": faust_rate,
                 "ratio": sabot_rate / faust_rate, "unit": "events/s"})
    if _arrow_windows_available():
        arrow_rate = arrow_windowed_count(keys, times)
        rows.append({"what": f"same count as Arrow windows, {ARROW_BATCH:,}-row batches "
                             f"(vs Faust windowed table)",
                     "sabot": arrow_rate, "baseline": faust_rate,
                     "ratio": arrow_rate / faust_rate, "unit": "events/s"})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N_DEFAULT)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for row in run(args.n):
        print(f"{row['what']}\n    sabot {row['sabot']:,.0f} {row['unit']}, "
              f"faust {row['baseline']:,.0f} {row['unit']}, ratio {row['ratio']:.1f}x")


if __name__ == "__main__":
    main()
