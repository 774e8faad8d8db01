"""The web layer on a real Kafka broker: key routing between workers, lag per partition.

With two workers of one group, each holds some of the four partitions and
announces its web URL to the group. A request for a key on either worker is
answered by the worker holding the key's partition: here, or forwarded there
(Faust's ``route_req``). A forwarded request is never forwarded again, and an
owner that does not answer gives 503 with one line naming the partition. The
status page's ``/status.json`` shows the lag of each partition while an agent
is held, and none once it caught up.
"""
import asyncio
import contextlib

import aiohttp
import pytest

import sabot
from sabot import web
from sabot.web import WebServer, WorkerMetrics
from sabot.web.forward import ROUTED_HEADER
from sabot.monitor import WorkerMonitor
from tests.helpers import unique, until
from tests.web.test_views import serving

pytestmark = pytest.mark.kafka


def make_worker(kafka_broker, group, topic_name, datadir, me):
    app = sabot.App(group, broker=f"kafka://{kafka_broker}", topic_partitions=4,
                    datadir=str(datadir), broker_commit_interval=0.2,
                    broker_session_timeout=3.0, broker_heartbeat_interval=0.5)
    orders = app.topic(topic_name, partitions=4, key_type=str, value_type=int)
    counts = app.Table("counts", default=int, partitions=4)

    @app.agent(orders, name="orders")
    async def read(stream):
        async for key, value in stream.items():
            counts[key] += value

    @app.page("/orders/")
    class Orders(web.View):
        @app.topic_route(topic=orders, query_param="id")
        async def get(self, request):
            return self.json({"id": request.query["id"], "worker": me})

        @app.topic_route(topic=orders, query_param="id")
        async def post(self, request):
            body = await request.json()
            return self.json({"got": body, "worker": me}, status=201,
                             headers={"X-Answered-By": me})

    @app.page("/count/{word}")
    class Count(web.View):
        @app.table_route(table=counts, match_info="word")
        async def get(self, request, word):
            return self.json({word: counts[word], "worker": me})

    return app, orders


@contextlib.asynccontextmanager
async def served_first(app):
    """``app`` with its web server listening before it joins its group, as ``sabot worker``."""
    server = WebServer(WorkerMetrics(WorkerMonitor(app)), 0, host="127.0.0.1")
    await server.start()
    try:
        await app.start()
        try:
            yield server, f"http://127.0.0.1:{server.port}"
        finally:
            await app.stop()
    finally:
        await server.stop()


async def test_each_key_is_answered_by_the_worker_holding_its_partition_on_both(
        kafka_broker, tmp_path):
    group, name = unique("routing"), unique("orders")
    a, orders = make_worker(kafka_broker, group, name, tmp_path / "a", "a")
    b, _ = make_worker(kafka_broker, group, name, tmp_path / "b", "b")
    async with served_first(a) as (_, base_a), served_first(b) as (server_b, base_b), \
            aiohttp.ClientSession() as session:
        def held(app):
            return {tp.partition for tp in app.transport.consumer.assignment()}

        def settled():
            urls = {base_a, base_b}
            return (held(a) and held(b) and len(held(a) | held(b)) == 4
                    and set(a.transport.assignor.urls) == urls
                    and set(b.transport.assignor.urls) == urls
                    and set(a.tables["counts"].held_partitions) == held(a)
                    and set(b.tables["counts"].held_partitions) == held(b))
        await until(settled, 60, lambda: f"a {held(a)} {a.transport.assignor.urls}, "
                    f"b {held(b)} {b.transport.assignor.urls}")
        keys = [f"order-{i}" for i in range(16)]
        owners = {}
        for i, key in enumerate(keys):
            metadata = await (await orders.send(key=key, value=i + 1))
            owners[key] = "a" if metadata.partition in held(a) else "b"

        async def counted():
            return all(a.tables["counts"].get(k) == i + 1 or b.tables["counts"].get(k) == i + 1
                       for i, k in enumerate(keys))
        await until(counted, 60, "every order counted")
        last = []

        async def every_key_answered_by_its_owner():
            # Polled: a rebalance under load may answer 503 for a moment.
            for i, key in enumerate(keys):
                want = owners[key]
                for base in (base_a, base_b):
                    async with session.get(f"{base}/count/{key}") as resp:
                        got = (resp.status, await resp.json())
                    if got != (200, {key: i + 1, "worker": want}):
                        last[:] = [base, key, got]
                        return False
                    async with session.get(f"{base}/orders/?id={key}") as resp:
                        got = (resp.status, await resp.json())
                    if got != (200, {"id": key, "worker": want}):
                        last[:] = [base, key, got]
                        return False
                    # Method, body, status and headers go through.
                    async with session.post(f"{base}/orders/?id={key}", json={"n": i}) as resp:
                        got = (resp.status, resp.headers.get("X-Answered-By"), await resp.json())
                    if got != (201, want, {"got": {"n": i}, "worker": want}):
                        last[:] = [base, key, got]
                        return False
            return True
        await until(every_key_answered_by_its_owner, 60, lambda: f"last answer {last}",
                    interval=0.2)
        assert set(owners.values()) == {"a", "b"}

        # A request that was already forwarded once is answered here, never sent on.
        key_b = next(k for k in keys if owners[k] == "b")
        async with session.get(f"{base_a}/count/{key_b}",
                               headers={ROUTED_HEADER: "http://elsewhere:1"}) as resp:
            body = await resp.json()
            assert resp.status == 503 and "held by another worker" in body["error"]

        # An owner whose web server is gone: 503 naming the partition, in one line.
        await server_b.stop()
        async with session.get(f"{base_a}/count/{key_b}") as resp:
            body = await resp.json()
            assert resp.status == 503, body
            assert f"held by the worker at {base_b}, which did not answer" in body["error"]
            assert "\n" not in body["error"] and "Traceback" not in body["error"]
            assert isinstance(body["partition"], int)


async def test_without_announced_urls_a_key_held_elsewhere_answers_503(kafka_broker, tmp_path):
    # The app starts before its web server: it joins the group announcing no URL.
    group, name = unique("routing"), unique("orders")
    a, orders = make_worker(kafka_broker, group, name, tmp_path / "a", "a")
    b, _ = make_worker(kafka_broker, group, name, tmp_path / "b", "b")
    async with serving(a) as (session, base_a), serving(b) as (_, base_b):
        def held(app):
            return {tp.partition for tp in app.transport.consumer.assignment()}
        await until(lambda: held(a) and held(b) and len(held(a) | held(b)) == 4, 30,
                    "both workers to hold partitions")
        # Whatever URLs got announced by now, a request already forwarded is not forwarded.
        for i in range(8):
            key = f"order-{i}"
            metadata = await (await orders.send(key=key, value=i))
            owner = base_a if metadata.partition in held(a) else base_b
            other = base_b if owner == base_a else base_a
            async with session.get(f"{other}/orders/?id={key}",
                                   headers={ROUTED_HEADER: "x"}) as resp:
                body = await resp.json()
                assert resp.status == 503, body
                assert body["partition"] == metadata.partition
                assert f"in partition {metadata.partition}, held by another worker" \
                    in body["error"]


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
