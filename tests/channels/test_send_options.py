"""Faust's send options: partition, timestamp, callback, serializers, force; send_soon."""
import asyncio

import pytest

import sabot
from sabot.exceptions import ConfigurationError
from tests.channels.test_kafka import make_app, read_all
from tests.helpers import collector, running, unique, until


async def test_memory_send_callback_and_send_soon():
    app = sabot.App(unique("send"))
    channel = app.topic("t")
    seen = collector(app, channel)
    called = []
    async with running(app):
        await channel.send(value=1, callback=called.append, force=True)
        fut = channel.send_soon(value=2, callback=called.append)
        assert isinstance(fut, asyncio.Future)
        await fut
        await until(lambda: seen == [1, 2], what="both values")
    assert len(called) == 2 and all(f.done() for f in called)


async def test_memory_refuses_partition_and_timestamp_naming_them():
    app = sabot.App(unique("send"))
    channel = app.channel()
    with pytest.raises(ConfigurationError, match=r"send\(partition=\) needs a Kafka topic"):
        await channel.send(value=1, partition=2)
    with pytest.raises(TypeError, match="unexpected keyword arguments: bogus"):
        await channel.send(value=1, bogus=True)


@pytest.mark.kafka
async def test_kafka_partition_timestamp_serializer_and_callback(kafka_broker):
    app = make_app(kafka_broker)
    topic = app.topic(unique("send"), partitions=3)
    await topic.maybe_declare()
    delivered = []
    try:
        fut = await topic.send(key="k", value={"a": 1}, partition=2, timestamp=1_700_000_000.5,
                               callback=delivered.append)
        await fut
        fut = await topic.send(value=b"raw bytes", value_serializer="raw", partition=1)
        await fut
        fut = topic.send_soon(value={"b": 2}, partition=0)
        await (await fut)
    finally:
        await app.transport.stop()
    assert len(delivered) == 1 and delivered[0].result().partition == 2
    records = await read_all(kafka_broker, topic.name, 3)
    by_partition = {r.partition: r for r in records}
    assert by_partition[2].timestamp == 1_700_000_000_500 and by_partition[2].key == b"k"
    assert by_partition[1].value == b"raw bytes"
    assert by_partition[0].value == b'{"b":2}' or by_partition[0].value == b'{"b": 2}'


@pytest.mark.redis
async def test_redis_send_callback(redis_server):
    app = sabot.App(unique("send"), broker=redis_server.url)
    stream = app.topic(unique("s"))
    delivered = []
    try:
        fut = await stream.send(value={"a": 1}, callback=delivered.append)
        await fut
        await until(lambda: delivered, what="the callback")
        with pytest.raises(ConfigurationError, match="needs a Kafka topic"):
            await stream.send(value=1, timestamp=5.0)
    finally:
        await app.transport.stop()
