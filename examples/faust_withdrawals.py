"""A Faust app, written as for Faust, run by Sabot: only the import differs.

    # any Kafka-protocol broker; e.g. the one the tests use:
    tansu broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 &
    python examples/faust_withdrawals.py produce --count 1000   # an app command
    python examples/faust_withdrawals.py worker -l info

Point it elsewhere with ``SABOT_BROKER=kafka://host:9092`` (or ``redis://...``).
With ``SABOT_DEMO_WITHDRAWALS=N`` the worker also produces N withdrawals itself,
from a timer that runs on the leader only.

What it uses, each as Faust means it: a ``Record`` with a datetime field
(``isodates``), ``key_type``/``value_type`` on topics, ``stream.group_by`` so
each country's withdrawals meet on one partition, a ``Table`` counted per
country and a tumbling windowed ``Table`` per user, an ``on_leader`` timer, a
``crontab``, ``@app.command`` with click options, agent RPC (``ask``), an
``@app.page`` web view, ``app.on_rebalance_complete`` and ``@app.service``.
"""
import asyncio
import os
import random
from datetime import datetime, timezone

import mode

import sabot as faust
from sabot import web
from sabot.cli import option

COUNTRIES = ["FR", "DE", "GB", "US", "BR", "JP", "IN"]


class Withdrawal(faust.Record, isodates=True, serializer="json"):
    user: str
    country: str
    amount: float
    date: datetime = None


app = faust.App(
    "faust-withdrawals",
    broker=os.environ.get("SABOT_BROKER", "kafka://127.0.0.1:9092"),
    store="memory://",
    topic_partitions=4,
    version=1,
)

withdrawals_topic = app.topic("withdrawals", key_type=str, value_type=Withdrawal)
country_counts = app.Table("country-counts", default=int, help="Withdrawals per country.")
user_amounts = app.Table("user-amounts", default=float).tumbling(60.0, expires=3600.0)
started = {"rebalances": 0}


@app.agent(withdrawals_topic)
async def track_country(withdrawals):
    """Count withdrawals per country: re-keyed by country so each has one partition."""
    async for withdrawal in withdrawals.group_by(Withdrawal.country):
        country_counts[withdrawal.country] += 1


@app.agent(withdrawals_topic)
async def track_user(withdrawals):
    """The amount each user withdrew in the current minute (keyed by user already)."""
    async for withdrawal in withdrawals:
        user_amounts[withdrawal.user] += withdrawal.amount


@app.agent()
async def fee(amounts):
    """An RPC agent: what a withdrawal of this amount costs."""
    async for amount in amounts:
        yield round(max(1.0, amount * 0.01), 2)


async def produce_withdrawals(count: int) -> None:
    for i in range(count):
        user = f"user-{random.randrange(50)}"
        await withdrawals_topic.send(key=user, value=Withdrawal(
            user=user, country=random.choice(COUNTRIES), amount=round(random.uniform(5, 500), 2),
            date=datetime.now(timezone.utc)))


@app.command(option("--count", type=int, default=100, help="How many withdrawals."))
async def produce(self, count: int) -> None:
    """Produce COUNT random withdrawals."""
    await produce_withdrawals(count)
    self.say(f"sent {count} withdrawals")


@app.timer(interval=1.0, on_leader=True)
async def demo_producer():
    left = int(os.environ.get("SABOT_DEMO_WITHDRAWALS", "0")) - started.setdefault("sent", 0)
    if left > 0:
        batch = min(left, 200)
        await produce_withdrawals(batch)
        started["sent"] += batch
        print(f"fee for 250.0: {await fee.ask(250.0)}")


@app.crontab("0 * * * *")
async def hourly():
    print("countries seen:", sorted(country_counts.keys()))


@app.page("/countries/")
class Countries(web.View):
    async def get(self, request):
        return self.json({"countries": dict(country_counts.items())})


@app.on_rebalance_complete.connect
async def on_rebalance_complete(sender, **kwargs):
    started["rebalances"] += 1


@app.service
class Heartbeat(mode.Service):
    async def on_start(self):
        self.log.info("heartbeat service started")

    @mode.Service.task
    async def _beat(self):
        while not self.should_stop:
            await asyncio.sleep(5.0)


if __name__ == "__main__":
    app.main()
