"""Orders through Redis Streams: JSON in, alerts and Arrow batches out.

    redis-server --port 6379 &        # any Redis >= 6.2; or set SABOT_REDIS_URL
    SABOT_DEMO_ORDERS=5000 python examples/redis_pipeline.py worker -l info

Add orders from anywhere, Sabot or not:

    redis-cli XADD orders '*' value '{"id": 1, "sym": "ACME", "amount": 12500}'

and watch the results with ``redis-cli XRANGE alerts - +`` (JSON) or read
``ledger`` with Sabot (one entry per Arrow RecordBatch). Stop with Ctrl-C: an
order is acknowledged (XACK) only after both agents finished with it, so a
worker killed at any point loses nothing; the next one picks up what was
pending (its own at once, other workers' after ``redis_claim_idle_ms``).
"""
import os

import pyarrow as pa

import sabot

app = sabot.App(
    "redis-pipeline",
    redis_url=os.environ.get("SABOT_REDIS_URL", "redis://127.0.0.1:6379/0"),
    redis_claim_idle_ms=10_000,
)

LEDGER = pa.schema([("id", pa.int64()), ("sym", pa.string()), ("amount", pa.float64())])

#: Every channel here is a Redis Stream; the consumer group is the app id.
orders = app.redis_channel("orders", value_serializer="json")
alerts = app.redis_channel("alerts", value_serializer="json", maxlen=100_000)
ledger = app.redis_channel("ledger", value_serializer="arrow", schema=LEDGER)


@app.agent(orders, sink=[alerts])
async def large_orders(stream):
    """Yield an alert for every order above 10,000 (the sink XADDs it)."""
    async for order in stream:
        if order.get("amount", 0) > 10_000:
            yield {"order": order["id"], "sym": order["sym"], "amount": order["amount"]}


@app.agent(orders)
async def to_ledger(stream):
    """Store each read of orders as one Arrow batch: one entry, no per-row cost."""
    async for values in stream.batches():
        rows = [{"id": v["id"], "sym": v["sym"], "amount": float(v["amount"])}
                for v in values if isinstance(v, dict) and {"id", "sym", "amount"} <= v.keys()]
        if rows:
            # Awaiting the delivery future before the next read keeps these
            # orders unacknowledged until the ledger entry is stored.
            await (await ledger.send_batch(pa.RecordBatch.from_pylist(rows, schema=LEDGER)))


@app.task
async def demo_orders():
    """With SABOT_DEMO_ORDERS=N, write N orders so there is something to see."""
    n = int(os.environ.get("SABOT_DEMO_ORDERS", "0"))
    if n:
        syms = ["ACME", "INIT", "GLOBEX", "HOOLI"]
        await orders.send_batch([{"id": i, "sym": syms[i % 4], "amount": (i * 7919) % 20_000}
                                 for i in range(n)])


if __name__ == "__main__":
    app.main()
