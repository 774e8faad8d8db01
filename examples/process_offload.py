"""CPU-heavy agent offloaded to two worker processes: VWAP over Arrow batches.

Run it: ``python examples/process_offload.py worker -l info``.

Trades arrive as Arrow record batches on a schema'd memory channel. The
``vwap`` agent runs with ``executor="process", concurrency=2``: its
coroutine runs in two spawned worker processes, each batch crosses to one of
them as Arrow IPC (shared memory for large batches, nothing pickled), and
what it yields comes back here and goes to the ``report`` sink. A batch is
acknowledged only when its results are back.

The agent must be importable by module path (worker processes import it),
so it is defined at module level, as any agent is.
"""
import random
import time

import pyarrow as pa
import pyarrow.compute as pc

import sabot

app = sabot.App("process-offload")

TRADES = pa.schema([("sym", pa.string()), ("px", pa.float64()), ("qty", pa.int64())])
trades = app.channel(schema=TRADES)
results = []


def report(row):
    """Sink: keep each symbol's figures (runs in this process)."""
    results.append(row)


def volatility(prices):
    """A deliberately pure-Python loop: the CPU-heavy part worth a process."""
    mean = sum(prices) / len(prices)
    acc = 0.0
    for p in prices:
        d = p - mean
        acc += d * d
    return (acc / len(prices)) ** 0.5


@app.agent(trades, sink=[report], executor="process", concurrency=2)
async def vwap(stream):
    """Per batch and symbol: volume-weighted average price and volatility."""
    async for batch in stream.batches():          # a pyarrow.RecordBatch
        table = pa.Table.from_batches([batch])
        notional = pc.multiply(table["px"], table["qty"])
        table = table.append_column("notional", notional)
        grouped = table.group_by("sym").aggregate(
            [("notional", "sum"), ("qty", "sum"), ("px", "list")])
        for row in grouped.to_pylist():
            yield {"sym": row["sym"],
                   "vwap": row["notional_sum"] / row["qty_sum"],
                   "volatility": volatility(row["px_list"]),
                   "trades": len(row["px_list"])}


@app.task
async def feed():
    """Send 200 batches of 10,000 trades, wait for every result, print a summary."""
    rng = random.Random(7)
    symbols = ["AAPL", "MSFT", "NVDA", "AMZN"]
    n_batches, size = 200, 10_000
    start = time.perf_counter()
    for _ in range(n_batches):
        await trades.send_batch(pa.RecordBatch.from_pydict({
            "sym": [rng.choice(symbols) for _ in range(size)],
            "px": [100 + rng.random() for _ in range(size)],
            "qty": [rng.randint(1, 500) for _ in range(size)],
        }, schema=TRADES))
    await trades.close()
    await vwap.wait_done()
    elapsed = time.perf_counter() - start
    total = sum(r["trades"] for r in results)
    print(f"{total:,} trades in {n_batches} batches through 2 worker processes "
          f"in {elapsed:.2f}s ({total / elapsed:,.0f} trades/s)")
    for sym in symbols:
        rows = [r for r in results if r["sym"] == sym]
        avg = sum(r["vwap"] * r["trades"] for r in rows) / sum(r["trades"] for r in rows)
        print(f"  {sym:<5} vwap {avg:8.4f}  batches {len(rows)}")
    app.request_stop()


if __name__ == "__main__":
    app.main()
