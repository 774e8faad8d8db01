"""Agent RPC with Faust's meaning: ask, cast, map, kvmap, join, kvjoin; replies through a topic."""
import asyncio

import pytest

import sabot
from sabot.agents.rpc import CORRELATION_ID, REPLY_TO
from sabot.exceptions import SabotCompatibilityWarning
from tests.helpers import running, unique, until


def doubling_app(app, source=None):
    @app.agent(source)
    async def double(stream):
        async for value in stream:
            yield value * 2
    return double


async def test_ask_returns_what_the_agent_yields_for_the_value():
    app = sabot.App(unique("rpc"))
    double = doubling_app(app)
    async with running(app):
        assert await double.ask(21) == 42
        assert await double.ask(value=5, key="k") == 10


async def test_join_keeps_order_and_map_yields_every_reply():
    app = sabot.App(unique("rpc"))
    double = doubling_app(app)
    async with running(app):
        assert await double.join([1, 2, 3, 4]) == [2, 4, 6, 8]
        assert await double.kvjoin([("a", 1), ("b", 2)]) == [2, 4]
        got = [r async for r in double.map(range(10))]
        assert sorted(got) == [i * 2 for i in range(10)]
        got = [r async for r in double.kvmap([("x", 7)])]
        assert got == [14]


async def test_cast_sends_without_a_reply_and_replies_go_to_sinks_too():
    app = sabot.App(unique("rpc"))
    out = []
    double = doubling_app(app)
    double.add_sink(out.append)
    async with running(app):
        assert await double.cast(3) is None
        await until(lambda: out == [6], what="the cast value processed")
        assert await double.ask(4) == 8
        assert out == [6, 8]  # asked values still reach the agent's sinks


async def test_ask_times_out_when_the_agent_yields_nothing():
    app = sabot.App(unique("rpc"))

    @app.agent()
    async def silent(stream):
        async for value in stream:
            pass

    async with running(app):
        with pytest.raises(asyncio.TimeoutError):
            await silent.ask(1, timeout=0.2)
        assert app.replies._waiting == {}  # nothing left waiting


async def test_ask_unsupported_arguments_warn_and_still_work():
    app = sabot.App(unique("rpc"))
    double = doubling_app(app)
    async with running(app):
        with pytest.warns(SabotCompatibilityWarning, match="partition="):
            assert await double.ask(2, partition=3) == 4


async def test_requests_carry_reply_headers_not_a_wrapped_value():
    app = sabot.App(unique("rpc"))
    seen = []

    @app.agent()
    async def echo(stream):
        async for event in stream.events():
            seen.append(event)
            yield event.value

    async with running(app):
        assert await echo.ask({"a": 1}) == {"a": 1}
    assert seen[0].value == {"a": 1}
    assert seen[0].headers[REPLY_TO].decode() == app.replies.name
    assert seen[0].headers[CORRELATION_ID]


@pytest.mark.kafka
async def test_ask_across_two_apps_on_kafka(kafka_broker):
    settings = dict(broker=f"kafka://{kafka_broker}", broker_commit_interval=0.2,
                    broker_session_timeout=3.0, broker_heartbeat_interval=0.5)
    server = sabot.App(unique("rpc-server"), **settings)
    topic = server.topic(unique("double"), partitions=2)
    doubling_app(server, topic)
    client = sabot.App(unique("rpc-client"), **settings)
    asker = doubling_app(client, client.topic(topic.name))  # same topic, client side only sends
    async with running(server):
        await client.transport.maybe_start()
        try:
            assert await asker.join([1, 2, 3], timeout=60.0) == [2, 4, 6]
            assert await asker.ask(50, timeout=30.0) == 100
        finally:
            await client.replies.stop()
            await client.transport.stop()


@pytest.mark.redis
async def test_ask_on_redis(redis_server):
    app = sabot.App(unique("rpc"), broker=redis_server.url)
    double = doubling_app(app, app.topic(unique("double")))
    async with running(app):
        assert await double.join([1, 2, 3], timeout=30.0) == [2, 4, 6]
