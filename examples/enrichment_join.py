"""Enrichment join: orders get their customer's tier and limit, then meet their payments.

    python examples/enrichment_join.py worker -l info        # memory://, finishes

Two joins, both over Arrow batches:

* ``enrich``: ``stream.join(customers, on="customer")`` adds the customer's
  ``tier`` and ``limit`` (a ``GlobalTable`` filled by the ``load`` agent from
  the customers channel) to every batch of orders, with one lookup per
  batch over its distinct customers. An order whose customer is unknown
  keeps null columns (a left join) and is flagged; one over the customer's
  limit is flagged too. Flagged orders go to the ``review`` channel.
* ``match``: ``stream.join_within(payments, within=60, on="order",
  time="ts")`` pairs each order with the payments made within a minute of
  it (an interval join on event time); an order paid twice shows up twice.

``SABOT_DEMO_ORDERS=N`` sets how many orders the demo writes (50,000 by
default); then it prints what it found and stops.
"""
import asyncio
import os
import random
import time

import pyarrow as pa
import pyarrow.compute as pc

import sabot

app = sabot.App("enrichment-join")

ORDER_SCHEMA = pa.schema([("order", pa.int64()), ("customer", pa.string()),
                          ("amount", pa.float64()), ("ts", pa.float64())])
PAYMENT_SCHEMA = pa.schema([("order", pa.int64()), ("paid", pa.float64()),
                            ("ts", pa.float64())])

customer_updates = app.channel(name="customers")
orders = app.channel(name="orders", schema=ORDER_SCHEMA)
payments = app.channel(name="payments", schema=PAYMENT_SCHEMA)
review = app.channel(name="review")
customers = app.GlobalTable("customers")

#: Made before the app starts, so the match agent sees every payment.
payment_stream = payments.stream()
counts = {"orders": 0, "review": 0, "unknown": 0, "paid": 0}
finished = {"enrich": asyncio.Event(), "match": asyncio.Event()}


@app.agent(customer_updates)
async def load(stream):
    """Keep the customers table up to date (keyed by customer id)."""
    async for event in stream.events():
        customers[event.key] = event.value


@app.agent(orders, sink=[review])
async def enrich(stream):
    """Add tier and limit to each batch of orders; yield those to review."""
    async for batch in stream.join(customers, on="customer", how="left"):
        counts["orders"] += batch.num_rows
        unknown = pc.is_null(batch.column("tier"))
        over = pc.fill_null(pc.greater(batch.column("amount"), batch.column("limit")), False)
        flagged = batch.filter(pc.or_(unknown, over))
        counts["unknown"] += pc.sum(unknown.cast(pa.int64())).as_py() or 0
        if flagged.num_rows:
            counts["review"] += flagged.num_rows
            yield flagged
    finished["enrich"].set()


@app.agent(orders)
async def match(stream):
    """Pair orders with payments made within a minute of them (event time)."""
    # grace: payments trail their orders by up to 90 s, so a payment batch
    # reaches back that far behind the last one.
    async for batch in stream.join_within(payment_stream, within=60, on="order", time="ts",
                                          grace=120, prefix="payment_"):
        counts["paid"] += batch.num_rows
    finished["match"].set()


@app.task
async def demo():
    """Write customers, then orders and their payments; report and stop."""
    n = int(os.environ.get("SABOT_DEMO_ORDERS", "50000"))
    rng = random.Random(3)
    for i in range(2000):
        await customer_updates.send(key=f"cust-{i}", value={
            "tier": ("gold", "silver", "standard")[i % 3], "limit": float(50 * (1 + i % 40))})
    while len(customers) < 2000:  # the load agent has filled the table
        await asyncio.sleep(0.01)
    start = time.perf_counter()
    base = time.time() - 3600
    size = 5000
    for first in range(0, n, size):
        rows = range(first, min(n, first + size))
        ts = [base + i * 0.05 for i in rows]
        await orders.send_batch(pa.RecordBatch.from_pydict({
            "order": list(rows),
            # One customer in twenty is not in the table.
            "customer": [f"cust-{rng.randrange(2100)}" for _ in rows],
            "amount": [round(rng.uniform(1, 1200), 2) for _ in rows],
            "ts": ts}, schema=ORDER_SCHEMA))
        # Most orders are paid within a minute; some later, some never.
        paid = sorted(((base + i * 0.05 + rng.choice((5.0, 20.0, 55.0, 90.0)), i)
                       for i in rows if rng.random() < 0.9))
        await payments.send_batch(pa.RecordBatch.from_pydict({
            "order": [i for _, i in paid], "paid": [1.0] * len(paid),
            "ts": [t for t, _ in paid]}, schema=PAYMENT_SCHEMA))
    await orders.close()
    await payments.close()
    await asyncio.wait_for(finished["enrich"].wait(), 120)
    await asyncio.wait_for(finished["match"].wait(), 120)
    elapsed = time.perf_counter() - start
    print(f"processed {counts['orders']:,} orders in {elapsed:.2f}s: {counts['review']:,} to "
          f"review ({counts['unknown']:,} of unknown customers), {counts['paid']:,} matched "
          f"with a payment within a minute")
    app.request_stop()


if __name__ == "__main__":
    app.main()
