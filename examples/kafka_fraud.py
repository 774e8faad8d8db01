"""Fraud scoring on Kafka: transactions in, alerts out.

    # any Kafka-protocol broker; e.g. the one the tests use:
    tansu broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 &
    SABOT_DEMO_TRANSACTIONS=10000 python examples/kafka_fraud.py worker -l info

Point it elsewhere with ``SABOT_BROKER=kafka://host:9092``. Start it several
times (same app id, same group) and the ``transactions`` partitions are split
between the workers. Watch the alerts with any Kafka client, e.g.
``kcat -b 127.0.0.1:9092 -C -t fraud-alerts``.

A transaction's offset is committed only after the scorer moved past it and
its alert (if any) was acknowledged by the broker, so a worker killed with
``kill -9`` loses nothing: the next one re-reads from the last commit.
Values that are not JSON land in ``transactions.dlq`` with the error in the
headers, and scoring goes on.
"""
import os
import random

import sabot

app = sabot.App(
    "fraud-scorer",
    broker=os.environ.get("SABOT_BROKER", "kafka://127.0.0.1:9092"),
    broker_commit_interval=1.0,
)

transactions = app.topic("transactions", value_serializer="json", partitions=4)
alerts = app.topic("fraud-alerts", value_serializer="json", partitions=1)

#: Country pairs seen together in card-testing rings (made up for the demo).
RISKY_ROUTES = {("US", "RU"), ("GB", "NG"), ("DE", "BR")}


def score(tx: dict) -> float:
    """A toy risk score in [0, 1]: large amounts, risky routes, night hours."""
    s = min(tx.get("amount", 0) / 20_000, 1.0) * 0.6
    if (tx.get("card_country"), tx.get("merchant_country")) in RISKY_ROUTES:
        s += 0.3
    if tx.get("hour", 12) < 5:
        s += 0.1
    return round(s, 3)


@app.agent(transactions, sink=[alerts])
async def scorer(stream):
    """Yield an alert for every transaction scoring 0.7 or more."""
    async for tx in stream:
        risk = score(tx)
        if risk >= 0.7:
            yield {"tx": tx["id"], "card": tx["card"], "risk": risk}


@app.task
async def demo_transactions():
    """With SABOT_DEMO_TRANSACTIONS=N, write N random transactions."""
    n = int(os.environ.get("SABOT_DEMO_TRANSACTIONS", "0"))
    countries = ["US", "GB", "DE", "RU", "NG", "BR", "FR"]
    rng = random.Random(7)
    for i in range(n):
        card = f"card-{rng.randrange(500)}"
        # Keyed by card: one card's transactions stay in one partition, in order.
        await transactions.send(key=card, value={
            "id": i, "card": card, "amount": rng.randrange(1, 25_000),
            "card_country": rng.choice(countries), "merchant_country": rng.choice(countries),
            "hour": rng.randrange(24)})
    await transactions.flush()


if __name__ == "__main__":
    app.main()
