"""Arrow windows fed by the real Kafka-protocol broker (tansu, tests/servers/kafka.py).

The topic has two partitions, each with its own watermark, so which rows are
late depends on how the two interleave; the input is sent in phases the test
waits out, so that it does not: a first row on each partition (a partition
holds the watermark back once seen), out-of-order rows whose disorder is
smaller than the grace (never late, however they interleave), rows a minute
old (late, however they interleave), then one row per partition far ahead,
which moves every partition's watermark past every window. The windows must equal the pyarrow reference over the first phase,
and the old rows must be counted and reach the topic's dead-letter topic
with their reason.
"""
import asyncio
import json
import random

import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer

import sabot
from sabot.windows import count, sum, tumbling
from tests.helpers import running, unique, until
from tests.windows import reference as ref

pytestmark = pytest.mark.kafka


def make_app(kafka_broker):
    return sabot.App(unique("windows"), broker=f"kafka://{kafka_broker}",
                     broker_commit_interval=0.2, broker_session_timeout=3.0,
                     broker_heartbeat_interval=0.5)


async def read_dead_letters(kafka_broker, topic, n, timeout=20.0):
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_broker,
                                auto_offset_reset="earliest")
    await consumer.start()
    out = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < n and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


async def test_windows_from_kafka_equal_the_reference(kafka_broker):
    app = make_app(kafka_broker)
    topic = app.topic(unique("clicks"), value_serializer="json", partitions=2)
    results, operators = [], []

    @app.agent(topic)
    async def windows(stream):
        op = stream.window(tumbling(10), key="user", time="ts", grace=5).agg(
            n=count(), total=sum("amount"))
        operators.append(op)
        async for closed in op.final():
            results.append(closed)

    rng = random.Random(3)
    on_time = [{"id": i, "user": f"u{rng.randrange(12)}",
                "ts": (1_000_000 + i * 100 - rng.randrange(4000)) / 1000.0,
                "amount": rng.randrange(1, 50)} for i in range(1200)]
    old = [{"id": 10_000 + i, "user": f"u{i % 12}", "ts": 1000.0 + i * 0.5, "amount": 1}
           for i in range(15)]
    hello = [{"id": -2 - p, "user": "start", "ts": on_time[0]["ts"], "amount": 1} for p in (0, 1)]
    async with running(app):
        # A partition holds the watermark back only once it was seen: say
        # hello on both before the rows that could close windows.
        for partition, row in enumerate(hello):
            await topic.send(value=row, partition=partition)
        await topic.flush()
        await until(lambda: operators and operators[0].watermarks.partitions == 2,
                    what="both partitions seen")
        for row in on_time:
            await topic.send(key=row["user"], value=row)
        await topic.flush()
        await until(lambda: operators[0].rows_in == len(on_time) + 2,
                    what=lambda: f"the on-time rows folded in ({operators[0].rows_in if operators else 0})")
        op = operators[0]
        assert op.late_count == 0
        for row in old:
            await topic.send(key=row["user"], value=row)
        await topic.flush()
        await until(lambda: op.late_count == len(old), what="the old rows counted late")
        for partition in (0, 1):
            await topic.send(value={"id": -1, "user": "end", "ts": 5000.0, "amount": 0},
                             partition=partition)
        await topic.flush()
        expected = ref.tumbling_ref([pa.RecordBatch.from_pylist(hello + on_time)], 10, set())
        await until(lambda: len(ref.as_rows(results)) >= len(expected),
                    what="every window of the on-time rows emitted")
    assert ref.as_rows(results) == expected
    assert op.watermark == 5000.0
    letters = await read_dead_letters(kafka_broker, topic.name + ".dlq", len(old))
    assert sorted(json.loads(r.value)["id"] for r in letters) == [r["id"] for r in old]
    for record in letters:
        headers = dict(record.headers)
        assert headers["sabot-error"].startswith(b"late: event time ")
        assert headers["sabot-topic"] == topic.name.encode()


async def test_message_key_and_kafka_timestamp_as_event_time(kafka_broker):
    app = make_app(kafka_broker)
    topic = app.topic(unique("events"), value_serializer="json", partitions=1)
    results = []

    @app.agent(topic)
    async def windows(stream):
        async for closed in stream.window(tumbling(60)).agg(n=count()).final():
            results.append(closed)

    async with running(app):
        base_ms = 1_700_000_040_000  # a whole minute
        for i, key in enumerate(["a", "b", "a", "a"]):
            await topic.send(key=key, value={"i": i}, timestamp_ms=base_ms + i * 1000)
        await topic.send(key="z", value={"i": 9}, timestamp_ms=base_ms + 120_000)
        await topic.flush()
        await until(lambda: results, what="the first minute closed")
    rows = pa.Table.from_batches(results).to_pylist()
    start = base_ms / 1000.0
    assert rows == [{"key": b"a", "window_start": start, "window_end": start + 60, "n": 3},
                    {"key": b"b", "window_start": start, "window_end": start + 60, "n": 1}]


async def test_a_backlog_on_many_partitions_has_no_late_rows(kafka_broker):
    # Four partitions filled before the worker starts, each in time order:
    # the first partition fetched must not close the windows of the others
    # (the partitions assigned here hold the watermark until they deliver).
    producer = make_app(kafka_broker)
    name = unique("backlog")
    topic = producer.topic(name, value_serializer="json", partitions=4)
    rows = [{"id": i, "user": f"u{i % 13}", "ts": 1000 + i * 0.05, "amount": i % 7}
            for i in range(8000)]
    async with running(producer):
        for row in rows:
            await topic.send(value=row, partition=row["id"] % 4)
        await topic.flush()

    app = make_app(kafka_broker)
    source = app.topic(name, value_serializer="json", partitions=4)
    results, operators = [], []

    @app.agent(source)
    async def windows(stream):
        op = stream.window(tumbling(10), key="user", time="ts").agg(
            n=count(), total=sum("amount"))
        operators.append(op)
        async for closed in op.final():
            results.append(closed)

    async with running(app):
        await until(lambda: operators and operators[0].rows_in + operators[0].late_count
                    == len(rows), what="every row read")
        op = operators[0]
        assert op.late_count == 0
        expected = ref.tumbling_ref([pa.RecordBatch.from_pylist(rows)], 10, set())
        # Every window closes but the last (no row after it moves the watermark).
        await until(lambda: len(ref.as_rows(results)) == len(expected) - 13,
                    what="every window but the last closed")
    assert ref.as_rows(results) == [w for w in expected if w[1] < 1390.0]


async def test_late_rows_to_an_arrow_topic_are_one_row_batches(kafka_broker):
    from sabot.codecs import get_codec

    app = make_app(kafka_broker)
    source = app.topic(unique("rows"), value_serializer="arrow", partitions=1)
    late = app.topic(unique("late-rows"), value_serializer="arrow", partitions=1)
    operators = []

    @app.agent(source)
    async def windows(stream):
        op = stream.window(tumbling(10), key="user", time="ts", late=late).agg(n=count())
        operators.append(op)
        async for _ in op.final():
            pass

    async with running(app):
        await source.send(value=pa.RecordBatch.from_pylist([{"user": "a", "ts": 25.0}]))
        await source.send(value=pa.RecordBatch.from_pylist(
            [{"user": "a", "ts": 26.0}, {"user": "b", "ts": 4.0}]))
        await source.flush()
        await until(lambda: operators and operators[0].late_count == 1, what="the late row")
    records = await read_dead_letters(kafka_broker, late.name, 1)
    assert get_codec("arrow").decode(records[0].value).to_pylist() == [{"user": "b", "ts": 4.0}]
    headers = dict(records[0].headers)
    assert headers["sabot-error"].startswith(b"late: event time 4 < watermark 26 ")
