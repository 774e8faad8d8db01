"""The web layer on a real Kafka broker: key routing between workers, lag per partition.

With two workers of one group, each holds some of the four partitions. A
request for a key runs the view on the worker that holds the key's partition
(the one Kafka puts a message with that key in) and answers 503 naming the
partition on the other, so exactly one of the two answers every key. The
status page's ``/status.json`` shows the lag of each partition while an
agent is held, and none once it caught up.
"""
import asyncio

import pytest

import sabot
from sabot import web
from tests.helpers import unique, until
from tests.web.test_views import serving

pytestmark = pytest.mark.kafka


def make_worker(kafka_broker, group, topic_name, datadir):
    app = sabot.App(group, broker=f"kafka://{kafka_broker}", topic_partitions=4,
                    datadir=str(datadir), broker_commit_interval=0.2,
                    broker_session_timeout=3.0, broker_heartbeat_interval=0.5)
    orders = app.topic(topic_name, partitions=4)
    counts = app.Table("counts", default=int)

    @app.agent(orders, name="orders")
    async def read(stream):
        async for _ in stream:
            pass

    @app.page("/orders/")
    class Orders(web.View):
        @app.topic_route(topic=orders, query_param="id")
        async def get(self, request):
            return self.json({"here": request.query["id"]})

    @app.page("/count/{word}")
    class Count(web.View):
        @app.table_route(table=counts, match_info="word")
        async def get(self, request, word):
            return self.json({word: counts[word]})

    return app, orders


async def test_each_key_is_answered_by_the_worker_holding_its_partition(kafka_broker, tmp_path):
    group, name = unique("routing"), unique("orders")
    a, orders = make_worker(kafka_broker, group, name, tmp_path / "a")
    b, _ = make_worker(kafka_broker, group, name, tmp_path / "b")
    async with serving(a) as (session, base_a), serving(b) as (_, base_b):
        def held(app):
            return {tp.partition for tp in app.transport.consumer.assignment()}
        await until(lambda: held(a) and held(b) and len(held(a) | held(b)) == 4, 30,
                    "both workers to hold partitions")
        await until(lambda: set(a.tables["counts"].held_partitions) == held(a)
                    and set(b.tables["counts"].held_partitions) == held(b), 30,
                    "the tables to recover the assigned partitions")
        answered = {base_a: 0, base_b: 0}
        for i in range(16):
            key = f"order-{i}"
            metadata = await (await orders.send(key=key, value=i))
            owner = base_a if metadata.partition in held(a) else base_b
            for path in (f"/orders/?id={key}", f"/count/{key}"):
                for base in (base_a, base_b):
                    async with session.get(base + path) as resp:
                        body = await resp.json()
                        if base == owner:
                            assert resp.status == 200, (path, body)
                        else:
                            assert resp.status == 503, (path, body)
                            assert body["partition"] == metadata.partition
                            assert f"in partition {metadata.partition}, held by another " \
                                   "worker" in body["error"]
            answered[owner] += 1
        assert all(answered.values()), answered  # both workers answered some keys


async def test_status_json_shows_kafka_lag_per_partition(kafka_broker):
    app = sabot.App(unique("lag"), broker=f"kafka://{kafka_broker}",
                    broker_commit_interval=0.2, broker_session_timeout=3.0,
                    broker_heartbeat_interval=0.5)
    topic = app.topic(unique("lagging"), partitions=2)
    release = asyncio.Event()
    got = []

    @app.agent(topic, name="held")
    async def held(stream):
        async for value in stream:
            await release.wait()
            got.append(value)

    async with serving(app) as (session, base):
        await until(lambda: app.transport.consumer.assignment(), 30, "an assignment")
        sent = 0

        async def lag_rows():
            async with session.get(f"{base}/status.json") as resp:
                return [row for row in (await resp.json())["lag"] if row["topic"] == topic.name]
        rows = []

        async def lagging():
            # The held agent fills its channel, then the fetches wait: what is sent
            # after that is on the broker and not read, which is the lag.
            nonlocal sent
            for _ in range(500):
                await topic.send(key=str(sent), value=sent)
                sent += 1
            await topic.flush()
            rows[:] = await lag_rows()
            return ({r["partition"] for r in rows} == {0, 1}
                    and all(r["lag"] > 0 for r in rows))
        await until(lagging, 60, lambda: f"lag rows {rows}", interval=0.2)
        release.set()
        await until(lambda: len(got) == sent, 30, "every value")

        async def caught_up():
            rows[:] = await lag_rows()
            return rows and all(r["lag"] == 0 for r in rows)
        await until(caught_up, 30, lambda: f"lag rows {rows}", interval=0.1)
