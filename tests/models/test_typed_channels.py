"""``key_type=``/``value_type=`` on topics, channels and agents, through the
real brokers: a Faust-serialized value produced with a plain aiokafka
producer reaches a Sabot agent as a record; a value that does not fit its
record (a missing field, a failed validation, an unknown namespace, a
tombstone, bad JSON) is a dead letter with the field and the reason, never
seen by the agent; ``stream.batches()`` of a record topic is a RecordBatch;
what Sabot produces, Faust reads."""
import asyncio
import decimal
import time
import warnings

import faust
import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.serializers import Registry

import sabot
from sabot.exceptions import ConfigurationError, SabotCompatibilityWarning
from tests.helpers import collector, running, unique, until

faust_registry = Registry(key_serializer="raw", value_serializer="json")
WAIT = 60.0


class FTrade(faust.Record, namespace="trades.Trade", decimals=True):
    sym: str
    qty: int
    px: decimal.Decimal


class Trade(sabot.Record, namespace="trades.Trade", validation=True):
    sym: str
    qty: int
    px: decimal.Decimal


class Shape(sabot.Record, abstract=True):
    pass


class Square(Shape, namespace="shapes.Square"):
    side: float


def kafka_app(kafka_broker):
    return sabot.App(unique("models"), broker=f"kafka://{kafka_broker}",
                     broker_commit_interval=0.2, broker_session_timeout=3.0,
                     broker_heartbeat_interval=0.5)


async def produce(kafka_broker, topic, messages):
    """``(key, value)`` pairs written in order by a plain aiokafka producer."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker, acks="all")
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key, partition=0)
    finally:
        await producer.stop()


async def read_topic(kafka_broker, topic, n):
    """The first ``n`` messages of ``topic`` (every partition)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + WAIT
        while topic not in await consumer.topics():
            assert time.monotonic() < deadline, f"{topic} never appeared"
            await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out = []
        while len(out) < n:
            assert time.monotonic() < deadline, f"read {len(out)} of {n} from {topic}"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


def faust_bytes(sym, qty, px):
    return faust_registry.dumps_value(FTrade, FTrade(sym, qty, decimal.Decimal(px)))


async def test_faust_values_reach_a_sabot_agent_and_misfits_are_dead_letters(kafka_broker):
    app = kafka_app(kafka_broker)
    got = []

    @app.agent(unique("other"), key_type=str, value_type=Trade)
    async def unused(stream):  # an agent that makes its own typed topic
        async for _ in stream:
            pass
    assert unused.channel.value_type is Trade and unused.channel.key_type is str

    topic = app.topic(unique("typed"), partitions=1, key_type=str, value_type=Trade)

    @app.agent(topic)
    async def trades(stream):
        async for event in stream.events():
            got.append((event.key, event.value))

    messages = [
        (b"k1", faust_bytes("ABC", 10, "1.25")),                         # valid
        (b"k2", b'{"sym":"ABC","px":"1.0","__faust":{"ns":"trades.Trade"}}'),  # no qty
        (b"k3", b'{"sym":"ABC","qty":"many","px":"1"}'),                  # not an int
        (b"k4", b'{"sym":"","qty":1,"px":"1"}'),                          # blank
        (b"k5", None),                                                    # tombstone
        (b"k6", b"{not json"),                                            # bad JSON
        (b"k7", faust_bytes("XYZ", 5, "99.5")),                           # valid
        (b"\xff", faust_bytes("BAD", 1, "1")),                            # key not UTF-8
    ]
    reasons = {1: "required field 'qty' is missing", 2: "field 'qty' is not valid",
               3: "field 'sym' is not valid", 4: "tombstone", 5: "invalid JSON", 7: "key"}
    async with running(app):
        await produce(kafka_broker, topic.name, messages)
        await until(lambda: len(got) >= 2, timeout=WAIT, what="the valid trades")
        dead = await read_topic(kafka_broker, topic.name + ".dlq", len(reasons))
        committed = app.transport._committed
        await until(lambda: committed.get(TopicPartition(topic.name, 0)) == len(messages),
                    timeout=WAIT, what="every message committed")
        await until(lambda: all(a.backlog == 0 for a in app.agents.values()),
                    what="nothing queued")
        assert not app.crash_reasons, app.crash_reasons
    assert got == [("k1", Trade("ABC", 10, decimal.Decimal("1.25"))),
                   ("k7", Trade("XYZ", 5, decimal.Decimal("99.5")))]
    assert all(type(v) is Trade for _, v in got)
    by_offset = {int(dict(d.headers)["sabot-offset"]): dict(d.headers)["sabot-error"].decode()
                 for d in dead}
    assert sorted(by_offset) == sorted(reasons)
    for offset, reason in reasons.items():
        assert reason in by_offset[offset], (offset, by_offset[offset])
    assert "Trade" in by_offset[1]


async def test_batches_of_a_record_topic_are_record_batches(kafka_broker):
    app = kafka_app(kafka_broker)
    topic = app.topic(unique("trade-batches"), partitions=1, value_type=Trade)
    batches = collector(app, topic, kind="batches")
    async with running(app):
        await produce(kafka_broker, topic.name,
                      [(None, faust_bytes("S%d" % i, i, "%d.5" % i)) for i in range(20)])
        await until(lambda: sum(b.num_rows for b in batches) >= 20, timeout=WAIT,
                    what="20 rows")
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert batches[0].schema == Trade.arrow_schema()
    table = pa.Table.from_batches(batches)
    assert table.column("qty").to_pylist() == list(range(20))
    assert table.column("px").to_pylist()[3] == decimal.Decimal("3.5")


async def test_what_sabot_produces_faust_reads(kafka_broker):
    app = kafka_app(kafka_broker)
    topic = app.topic(unique("to-faust"), partitions=1, key_type=str, value_type=Trade)
    async with running(app):
        await topic.send(key="a", value=Trade("ABC", 3, decimal.Decimal("2.50")))
        await topic.flush()
        [record] = await read_topic(kafka_broker, topic.name, 1)
    assert record.key == b"a"
    got = faust_registry.loads_value(FTrade, record.value)
    assert (got.sym, got.qty, got.px) == ("ABC", 3, decimal.Decimal("2.50"))
    assert record.value == faust_bytes("ABC", 3, "2.50")


async def test_redis_stream_with_a_value_type(redis_server):
    app = sabot.App(unique("models"), redis_url=redis_server.url)
    stream = app.redis_channel(unique("shapes"), value_type=Shape)
    got = collector(app, stream)
    client = redis_server.client()
    async with running(app):
        client.xadd(stream.name, {"value": b'{"side":2.0,"__faust":{"ns":"shapes.Square"}}'})
        client.xadd(stream.name, {"value": b'{"side":1.0,"__faust":{"ns":"os.system"}}'})
        client.xadd(stream.name, {"value": b'{"side":3.0}'})  # an abstract type needs a name
        client.xadd(stream.name, {"value": b'{"side":4.0,"__faust":{"ns":"shapes.Square"}}'})
        await until(lambda: len(got) >= 2 and client.xlen(stream.name + ".dlq") >= 2,
                    timeout=WAIT, what="two squares and two dead letters")
        await until(lambda: client.xpending(stream.name, app.id)["pending"] == 0,
                    timeout=WAIT, what="every entry acknowledged")
    assert got == [Square(2.0), Square(4.0)]
    errors = [fields[b"sabot-error"].decode()
              for _, fields in client.xrange(stream.name + ".dlq")]
    assert "unknown __faust namespace 'os.system'" in errors[0]
    assert "abstract" in errors[1]


async def test_memory_channel_batches_and_misfit_rows():
    app = sabot.App(unique("models"))
    channel = app.channel(value_type=Trade)
    batches = collector(app, channel, kind="batches")
    async with running(app):
        await channel.send(value=Trade("A", 1, decimal.Decimal("1")))
        await channel.send(value=Trade("B", 2, decimal.Decimal("2")))
        await until(lambda: sum(b.num_rows for b in batches) >= 2, what="two rows")
    assert pa.Table.from_batches(batches).column("sym").to_pylist() == ["A", "B"]


async def test_memory_batches_send_a_row_that_fits_no_column_to_dead_letters():
    class Loose(sabot.Record):  # no validation: Faust lets a wrong type in
        n: int
    app = sabot.App(unique("models"))
    channel = app.channel(value_type=Loose)
    batches = collector(app, channel, kind="batches")
    dead = collector(app, app.dead_letter_channel_for(channel, channel.name + ".dlq"),
                     kind="events")
    async with running(app):
        await channel.send_batch([Loose(1), Loose("not a number"), Loose(3)])
        await until(lambda: batches and len(dead) == 1, what="the batch and one dead letter")
    assert batches[0].column("n").to_pylist() == [1, 3]
    assert b"'n'" in dead[0].headers["sabot-error"]


def test_an_agent_warns_when_its_channel_has_other_types():
    app = sabot.App(unique("models"))
    channel = app.channel(value_type=Trade)
    with pytest.warns(SabotCompatibilityWarning, match="value_type=Square is ignored"):
        @app.agent(channel, value_type=Square)
        async def a(stream):
            async for _ in stream:
                pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        @app.agent(channel, value_type=Trade)
        async def b(stream):
            async for _ in stream:
                pass


def test_bad_types_are_refused_with_the_option_named():
    app = sabot.App(unique("models"))
    with pytest.raises(ConfigurationError, match="value_type"):
        app.channel(value_type=dict)
    with pytest.raises(ConfigurationError, match="not both"):
        app.channel(schema=Trade.arrow_schema(), value_type=Trade)


class Account(sabot.Record, namespace="trades.Account"):
    bank: str
    number: int


async def test_record_keys_and_allow_empty(kafka_broker):
    app = kafka_app(kafka_broker)
    topic = app.topic(unique("keyed"), partitions=1, key_type=Account, value_type=Trade,
                      allow_empty=True)
    events = collector(app, topic, kind="events")
    key = Account("b", 7).dumps(serializer="json")
    async with running(app):
        await produce(kafka_broker, topic.name, [
            (key, faust_bytes("K", 1, "1")),
            (key, None),                     # a tombstone, let through as None
            (b'{"bank":"b"}', faust_bytes("K", 2, "2")),  # the key lacks a field
        ])
        await topic.send(key=Account("c", 8), value=Trade("L", 3, decimal.Decimal("3")))
        await until(lambda: len(events) >= 3, timeout=WAIT, what="three events")
        dead = await read_topic(kafka_broker, topic.name + ".dlq", 1)
    assert [(e.key, e.value) for e in events] == [
        (Account("b", 7), Trade("K", 1, decimal.Decimal("1"))),
        (Account("b", 7), None),
        (Account("c", 8), Trade("L", 3, decimal.Decimal("3")))]
    assert "key: Account: required field 'number' is missing" in \
        dict(dead[0].headers)["sabot-error"].decode()


def test_which_codec_a_typed_channel_uses():
    from sabot.codecs import JsonCodec, RawCodec
    from sabot.models.codec import TypedCodec, typed_codec

    class Keyed(sabot.Record, serializer="json"):
        k: str
    assert typed_codec(None, None, key=True) is None
    assert isinstance(typed_codec(None, None, key=False), JsonCodec)
    assert isinstance(typed_codec(str, None, key=True).inner, RawCodec)
    assert isinstance(typed_codec(str, None, key=False).inner, JsonCodec)
    assert isinstance(typed_codec(Account, None, key=True).inner, JsonCodec)
    assert isinstance(typed_codec(Keyed, "raw", key=True).inner, RawCodec)  # given wins
    codec = typed_codec(int, None, key=True)
    assert isinstance(codec, TypedCodec) and codec.encode(42) == b"42"
    assert codec.decode(b"42") == 42
    with pytest.raises(ConfigurationError, match="RecordBatches"):
        TypedCodec("arrow", Trade)


async def test_a_topic_without_value_type_builds_the_record_a_value_names(kafka_broker):
    # Faust's Model._maybe_reconstruct: with no value_type, a value naming a
    # known record class in __faust becomes that record; one that names a
    # known class and does not fit it is a dead letter; an unknown
    # namespace or no namespace stays a dict.
    app = kafka_app(kafka_broker)
    got = []
    topic = app.topic(unique("untyped"), partitions=1)

    @app.agent(topic)
    async def values(stream):
        async for value in stream:
            got.append(value)

    messages = [
        (b"k1", faust_bytes("ABC", 10, "1.25")),
        (b"k2", b'{"sym":"ABC","px":"1.0","__faust":{"ns":"trades.Trade"}}'),  # no qty
        (b"k3", b'{"a":1,"__faust":{"ns":"nobody.Knows"}}'),
        (b"k4", b'{"a":2}'),
        (b"k5", b'{"side":2.5,"__faust":{"ns":"shapes.Square"}}'),
    ]
    async with running(app):
        await produce(kafka_broker, topic.name, messages)
        await until(lambda: len(got) >= 4, timeout=WAIT, what="the values")
        dead = await read_topic(kafka_broker, topic.name + ".dlq", 1)
        assert not app.crash_reasons, app.crash_reasons
    assert got == [Trade("ABC", 10, decimal.Decimal("1.25")),
                   {"a": 1, "__faust": {"ns": "nobody.Knows"}}, {"a": 2}, Square(2.5)]
    assert type(got[0]) is Trade and type(got[3]) is Square
    headers = dict(dead[0].headers)
    assert headers["sabot-offset"] == b"1"
    assert "required field 'qty' is missing" in headers["sabot-error"].decode()
