"""Per-value I/O with concurrency: 200 instances of one agent share the values.

Run it: ``python examples/concurrent_lookups.py worker -l info``.

Each order needs a lookup that takes 10 ms (a database or an HTTP call,
simulated here). One instance would manage 100 orders a second; with
``concurrency=200`` the instances share the values of each batch, as Faust's
agents do, so 200 lookups are in flight at once. Orders of one customer are
keyed by that customer: they are handed out in order and never looked up at
the same time, so each customer's orders are enriched in the order they came.
"""
import asyncio
import os
import time

import sabot

app = sabot.App("concurrent-lookups")
orders = app.channel()
enriched = []
N_ORDERS = int(os.environ.get("SABOT_DEMO_ORDERS", "5000"))
CUSTOMERS = 1000


async def lookup(customer):
    """Stands for 10 ms of I/O (a database, a web service)."""
    await asyncio.sleep(0.010)
    return {"customer": customer, "tier": "gold" if customer % 7 == 0 else "standard"}


@app.agent(orders, concurrency=200, sink=[enriched.append])
async def enrich(stream):
    """Adds the customer's record to every order."""
    async for event in stream.events():
        yield {**event.value, **await lookup(event.key)}


@app.task
async def feed():
    """Send the orders, wait until all are enriched, check the order per customer."""
    start = time.perf_counter()
    for i in range(N_ORDERS):
        customer = i % CUSTOMERS
        await orders.send(key=customer, value={"order": i})
    await orders.close()
    await enrich.wait_done()
    elapsed = time.perf_counter() - start
    per_customer = {}
    for row in enriched:
        per_customer.setdefault(row["customer"], []).append(row["order"])
    in_order = all(seq == sorted(seq) for seq in per_customer.values())
    print(f"{len(enriched):,} orders enriched in {elapsed:.2f}s "
          f"({len(enriched) / elapsed:,.0f}/s with 10 ms per lookup; one instance: 100/s); "
          f"each customer's orders in order: {in_order}")
    app.request_stop()


if __name__ == "__main__":
    app.main()
