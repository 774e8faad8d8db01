"""A WASM node as an agent: the C node of sum.c totals every batch of trades.

Build the node, then run the worker (it stops by itself)::

    make wasm-example
    python examples/wasm_node/totals.py worker -l info

``executor="wasm"`` runs the node on each batch in a sandbox (no file,
network, clock or environment; a memory limit and fuel per call); the agent
reads the node's output, one row of sums per batch.
"""
import asyncio
import os
import random

import pyarrow as pa

import sabot

HERE = os.path.dirname(os.path.abspath(__file__))
N_BATCHES = 50

app = sabot.App("wasm-totals")
TRADES = pa.schema([("qty", pa.int64()), ("px", pa.float64())])
trades = app.channel(schema=TRADES)
totals = []
finished = asyncio.Event()


@app.agent(trades, executor="wasm", node=os.path.join(HERE, "sum.wasm"))
async def total(stream):
    """Each value is the node's output for one batch: a row of column sums."""
    async for sums in stream:
        totals.append(sums.to_pylist()[0])
        if len(totals) == N_BATCHES:
            finished.set()


@app.task
async def feed():
    """Send N_BATCHES batches of 10,000 trades (some quantities unknown)."""
    rng = random.Random(7)
    expected = 0
    for _ in range(N_BATCHES):
        qty = [rng.randint(1, 500) if rng.random() > 0.1 else None for _ in range(10_000)]
        expected += sum(q for q in qty if q is not None)
        await trades.send_batch(pa.RecordBatch.from_pydict(
            {"qty": qty, "px": [100 + rng.random() for _ in qty]}, schema=TRADES))
    await finished.wait()
    quantity = sum(t["qty"] for t in totals)
    print(f"{N_BATCHES} batches summed by the WASM node: quantity {quantity:,} "
          f"({'matches' if quantity == expected else 'DIFFERS FROM'} Python's {expected:,})")
    app.request_stop()


if __name__ == "__main__":
    app.main()
