"""Faust's agent options: on_error as a handler, schema, help, and the ones Sabot warns about."""
import datetime

import pytest

import sabot
from sabot.exceptions import SabotCompatibilityWarning
from tests.helpers import running, unique, until


def test_faust_only_agent_options_warn_naming_them():
    app = sabot.App(unique("opt"))
    with pytest.warns(SabotCompatibilityWarning, match="isolated_partitions.*not supported"):
        @app.agent(isolated_partitions=True)
        async def a(stream):
            async for _ in stream:
                pass
    with pytest.warns(SabotCompatibilityWarning, match="supervisor_strategy"):
        @app.agent(supervisor_strategy=object)
        async def b(stream):
            async for _ in stream:
                pass


async def test_on_error_handler_is_awaited_with_agent_and_error_then_dead_lettered():
    app = sabot.App(unique("opt"))
    handled = []

    async def on_error(agent, exc):
        handled.append((agent, exc))

    @app.agent(on_error=on_error, help="Fails on odd values.")
    async def picky(stream):
        async for value in stream:
            if value % 2:
                raise ValueError(f"odd {value}")

    dead = []
    @app.agent(picky.channel.dead_letter_channel())
    async def dead_letters(stream):
        async for value in stream:
            dead.append(value)

    assert picky.help == "Fails on odd values."
    async with running(app):
        for i in range(4):
            await picky.send(value=i)
        await until(lambda: len(handled) == 2 and len(dead) == 2, what="two handled failures")
    assert handled[0][0] is picky and str(handled[0][1]) == "odd 1"


def test_schema_gives_the_agents_topic_its_types():
    class Order(sabot.Record):
        id: str

    class Schema:  # Faust's faust.Schema shape
        key_type = str
        value_type = Order
        key_serializer = None
        value_serializer = "json"

    app = sabot.App(unique("opt"))

    @app.agent(schema=Schema())
    async def orders(stream):
        async for _ in stream:
            pass

    assert orders.channel.value_type is Order and orders.channel.key_type is str


def test_crontab_takes_fausts_older_tz_name():
    app = sabot.App(unique("opt"))
    pacific = datetime.timezone(datetime.timedelta(hours=-8))

    @app.crontab("0 20 * * *", tz=pacific)
    async def evening():
        pass

    assert app.schedules[0].timezone is pacific


def test_stream_and_streamt_are_subscriptable_in_annotations():
    class Order(sabot.Record):
        id: str

    async def agent_fun(orders: sabot.Stream[Order], other: sabot.StreamT[Order],
                        channel: sabot.ChannelT[Order]) -> None:
        pass

    assert sabot.Stream[Order] is sabot.Stream


async def test_tables_hold_records_as_faust_tables_do():
    class Point(sabot.Record, namespace="tests.Point"):
        x: int
        label: str = ""

    app = sabot.App(unique("opt"))
    points = app.Table("points", default=list)
    channel = app.channel()
    done = []

    @app.agent(channel)
    async def keep(stream):
        async for value in stream:
            points[value.label] = points[value.label] + [value]
            done.append(value)

    async with running(app):
        await channel.send(key="a", value=Point(1, "a"))
        await channel.send(key="a", value=Point(2, "a"))
        await until(lambda: len(done) == 2, what="both points kept")
        assert points["a"] == [Point(1, "a"), Point(2, "a")]


def test_fausts_topic_options_warn_and_unknown_ones_too():
    app = sabot.App(unique("opt"))
    with pytest.warns(SabotCompatibilityWarning, match="replicas, retention not supported"):
        app.topic("t1", retention=3600, replicas=3)
    with pytest.warns(UserWarning, match="unknown option.*bogus"):
        app.topic("t2", bogus=1)


async def test_task_on_leader_runs_where_the_worker_leads():
    app = sabot.App(unique("opt"))
    ran = []

    @app.task(on_leader=True)
    async def once():
        ran.append("leader")

    async with running(app):
        await until(lambda: ran, what="the leader-only task")  # memory: this worker leads
    assert ran == ["leader"]


async def test_agent_send_reply_to_as_in_faust():
    app = sabot.App(unique("opt"))
    replies = app.channel(name="my-replies")
    got = []

    @app.agent()
    async def double(stream):
        async for value in stream:
            yield value * 2

    @app.agent(app.topic("my-replies"))
    async def collect(stream):
        async for value in stream:
            got.append(value)

    async with running(app):
        await double.send(value=21, reply_to="my-replies", correlation_id="c1")
        await until(lambda: got, what="the reply")
    assert got[0]["value"] == 42 and got[0]["correlation_id"] == "c1"
    assert replies.name == "my-replies"
