"""Windowed fraud check: card-testing bursts (tumbling) and spend spikes (hopping).

    python examples/windowed_fraud.py worker -l info              # memory://, finishes
    SABOT_BROKER=kafka://127.0.0.1:9092 python examples/windowed_fraud.py worker -l info

Two windowed tables, keyed by card (the message key), on event time (the
transaction's ``ts`` field):

* ``attempts``: transactions per card per minute (tumbling). Five or more in
  one minute is card testing: an alert, and ``on_window_close`` reports the
  minute's final count once the watermark has passed its end plus 5 s grace.
* ``spend``: amount per card over ten minutes, sliding every minute
  (hopping). More than 20,000 in one window is an alert.

A transaction whose minute has already closed (it arrived too late) is not
counted: it goes to the dead-letter topic ``wf-transactions.dlq`` with the
reason in the ``sabot-error`` header, and is counted in the summary. ``SABOT_DEMO_TRANSACTIONS=N`` sets how many transactions the demo
writes (3,000 by default); then it prints what it found and stops.
"""
import asyncio
import os
import random
import time

import sabot

app = sabot.App(
    "windowed-fraud",
    broker=os.environ.get("SABOT_BROKER", "memory://"),
    broker_commit_interval=1.0,
)

transactions = app.topic("wf-transactions", value_serializer="json", partitions=4)
alerts = app.topic("wf-alerts", value_serializer="json", partitions=1)

BURST = 5
SPEND_LIMIT = 20_000
bursts = []


def report_burst(key, count):
    """A minute closed: ``key`` is ``(card, (start, end))``, ``count`` its final count."""
    card, (start, _) = key
    if count >= BURST:
        bursts.append((card, start, count))


attempts = app.Table("attempts", default=int, partitions=4,
                     on_window_close=report_burst).tumbling(
    60, expires=600, grace=5, idle_timeout=2).relative_to_field("ts")
spend = app.Table("spend", default=float, partitions=4).hopping(
    600, 60, expires=3600, grace=5, idle_timeout=2).relative_to_field("ts")

processed = 0


@app.agent(transactions, sink=[alerts])
async def check(stream):
    """Count and sum per card in event-time windows; yield an alert on a burst or a spike."""
    global processed
    async for tx in stream:
        card = tx["card"]
        attempts[card] += 1
        spend[card] += tx["amount"]
        processed += 1
        if attempts[card].value() == BURST:
            yield {"card": card, "alert": "burst", "ts": tx["ts"]}
        total = spend[card].value()
        if total > SPEND_LIMIT and total - tx["amount"] <= SPEND_LIMIT:
            yield {"card": card, "alert": "spend", "total": round(total, 2), "ts": tx["ts"]}


@app.task
async def demo_transactions():
    """Write SABOT_DEMO_TRANSACTIONS transactions over an hour of event time, some late."""
    n = int(os.environ.get("SABOT_DEMO_TRANSACTIONS", "3000"))
    rng = random.Random(13)
    start_ts = time.time() - 3600
    for i in range(n):
        card = f"card-{rng.randrange(40)}"
        ts = start_ts + 3600 * i / n
        if rng.random() < 0.05:
            ts -= rng.uniform(0, 120)    # delivered late: up to two minutes behind
        await transactions.send(key=card, value={
            "id": i, "card": card, "amount": round(rng.expovariate(1 / 400), 2), "ts": ts})
    await transactions.flush()
    while processed < n:
        await asyncio.sleep(0.05)
    print(f"{processed:,} transactions: {attempts.late_events} late (not counted, "
          f"sent to wf-transactions.dlq), {attempts.windows_closed} minutes closed, "
          f"{len(bursts)} bursts of {BURST}+ in a minute")
    for card, start, count in bursts[:5]:
        print(f"  {card}: {count} attempts in the minute from "
              f"{time.strftime('%H:%M', time.gmtime(start))} UTC")
    app.request_stop()


if __name__ == "__main__":
    app.main()
