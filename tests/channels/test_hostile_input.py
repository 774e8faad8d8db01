"""Hostile input against the real brokers (issue 10): the worker keeps running.

For every codec (``raw``, ``json``, ``arrow``, ``arrow`` with a schema, and
``json`` with an Arrow schema), on Kafka (tansu) and on Redis, a plain client
(aiokafka producer / redis-py ``XADD``, never Sabot's producer) writes hostile
messages interleaved with valid ones: garbage bytes, an empty value, 5 MB
values (undecodable, and valid), a tombstone (Kafka: a null value; Redis: an
entry without a ``value`` field), non-UTF-8 keys, a value of the wrong schema,
a truncated Arrow message, and a crafted Arrow message whose string offsets
are out of range in the middle (the message that crashed the worker: it
passes the cheap ``validate()``). Each test asserts that exactly the valid
values reached the agent, in order, that exactly the undecodable ones are in
``<topic>.dlq`` with their reason and position, that every source message was
acknowledged, and that the worker still runs.

Dead letters bigger than Kafka's ``producer_max_request_size`` are written as
a truncated copy with a ``sabot-truncated`` header (the original size): the
5 MB undecodable value is checked against that rule.
"""
import hashlib
import struct
import time

import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

import sabot
from sabot.codecs import get_codec
from tests.helpers import collector, running, unique, until

SCHEMA = pa.schema([("id", pa.int64()), ("px", pa.float64()), ("sym", pa.string())])
HUGE = 5 * 1024 * 1024
WAIT = 60.0

#: name -> channel options.
CODECS = {
    "raw": {"value_serializer": "raw"},
    "json": {"value_serializer": "json"},
    "arrow": {"value_serializer": "arrow"},
    "arrow-schema": {"value_serializer": "arrow", "schema": SCHEMA},
    "json-schema": {"value_serializer": "json", "schema": SCHEMA},
}


# -- the messages ----------------------------------------------------------------

def arrow_rows(rows, schema=SCHEMA):
    return get_codec("arrow").encode(pa.RecordBatch.from_pylist(rows, schema=schema))


def crafted_arrow():
    """A valid SCHEMA message whose second string offset is set to 2**30."""
    data = bytearray(arrow_rows([{"id": i, "px": 1.0, "sym": s}
                                 for i, s in enumerate(["aa", "bb", "cc", "dd"])]))
    at = data.find(struct.pack("<5i", 0, 2, 4, 6, 8))
    assert at > 0
    data[at + 4:at + 8] = struct.pack("<i", 1 << 30)
    return bytes(data)


def valid(codec, i):
    """``(payload, the values the agent gets for it)``."""
    row = {"id": i, "px": i + 0.5, "sym": f"s{i}"}
    if codec == "raw":
        return b"valid-%d" % i, [b"valid-%d" % i]
    if codec == "json":
        return get_codec("json").encode({"n": i}), [{"n": i}]
    if codec == "json-schema":
        return get_codec("json").encode(row), [row]
    return arrow_rows([row]), [row]


class Case:
    """One message: its payload (``None``: a tombstone) and key, and either
    the values the agent gets for it or the reason it is a dead letter."""

    def __init__(self, label, payload, *, key=None, values=None, dead=None, valueless=False):
        self.label, self.payload, self.key = label, payload, key
        self.values, self.dead, self.valueless = values, dead, valueless


def hostile_cases(codec, transport):
    """The hostile messages for ``codec``, each with what must become of it."""
    raw = codec == "raw"
    arrow = codec.startswith("arrow")
    schema = codec.endswith("schema")
    decode_error = "invalid Arrow IPC stream" if arrow else "invalid JSON"
    cases = []

    def add(label, payload, dead_reason, *, values=None, key=None):
        if raw:  # raw delivers any bytes as they are
            cases.append(Case(label, payload, key=key, values=[payload]))
        elif dead_reason is None:
            cases.append(Case(label, payload, key=key, values=values))
        else:
            cases.append(Case(label, payload, key=key, dead=dead_reason))

    add("garbage", b"\x00\xffneither json nor arrow\x13\x37", decode_error)
    add("empty", b"", decode_error)
    add("huge undecodable", b"\xff" * HUGE if arrow else b'"' + b"h" * HUGE, decode_error)
    huge_row = {"id": 7, "px": 7.5, "sym": "h" * HUGE}
    if arrow:
        add("huge valid", arrow_rows([huge_row]), None, values=[huge_row])
    elif codec == "json-schema":
        add("huge valid", get_codec("json").encode(huge_row), None, values=[huge_row])
    elif codec == "json":
        add("huge valid", get_codec("json").encode("h" * HUGE), None, values=["h" * HUGE])
    # A tombstone: Kafka's null value is None for value codecs (as in Faust)
    # and a dead letter where every value must be a row or a RecordBatch.
    # Redis has no null value: an entry without a 'value' field is always a
    # dead letter.
    if transport == "redis":
        cases.append(Case("tombstone", None, dead="no 'value' field", valueless=True))
    elif arrow or schema:  # (a tombstone has a key: the one it deletes)
        cases.append(Case("tombstone", None, key=b"gone", dead="null value (tombstone)"))
    else:
        cases.append(Case("tombstone", None, key=b"gone", values=[None]))
    # Without a key serializer a key is bytes as they came, UTF-8 or not.
    ok_payload, ok_values = valid(codec, 99)
    cases.append(Case("non-UTF-8 key", ok_payload, key=b"\xff\xfe\x00key", values=ok_values))
    # A value of another schema: only a channel with a schema refuses it.
    if arrow:
        other = arrow_rows([{"other": 1}], pa.schema([("other", pa.int32())]))
        add("wrong schema", other, "does not fit the schema" if schema else None,
            values=[{"other": 1}])
    else:
        other = get_codec("json").encode({"id": "not a number", "px": [1], "sym": 3})
        add("wrong schema", other, "does not fit the schema" if schema else None,
            values=[{"id": "not a number", "px": [1], "sym": 3}])
    add("truncated arrow", arrow_rows([{"id": i, "px": 1.0, "sym": "t"} for i in range(100)])[:-64],
        decode_error)
    add("crafted arrow", crafted_arrow(), decode_error)
    return cases


def schedule(codec, transport):
    """Valid values interleaved with the hostile cases, ending with a valid one."""
    out = []
    for i, case in enumerate(hostile_cases(codec, transport)):
        payload, values = valid(codec, i)
        out.append(Case(f"valid {i}", payload, values=values))
        out.append(case)
    payload, values = valid(codec, 1000)
    out.append(Case("last valid", payload, values=values))
    return out


def keyed_schedule(codec):
    """For a channel with ``key_serializer="json"``: a non-UTF-8 key is a dead letter."""
    ok, ok_values = valid(codec, 1)
    return [Case("json key", ok, key=b'"k1"', values=ok_values),
            Case("non-UTF-8 json key", ok, key=b"\xff\xfe", dead="key"),
            Case("json key again", ok, key=b'"k3"', values=ok_values)]


def expected_events(cases):
    """``[(key, value)]`` the agent must get, in order."""
    return [(case.key, value) for case in cases if case.dead is None for value in case.values]


def shorten(value):
    """Values as compared and shown: a 5 MB string stands as its length and digest."""
    if isinstance(value, (bytes, str)) and len(value) > 1000:
        data = value.encode() if isinstance(value, str) else value
        return f"<{type(value).__name__} of {len(value)}, sha1 {hashlib.sha1(data).hexdigest()}>"
    if isinstance(value, dict):
        return {k: shorten(v) for k, v in value.items()}
    return value


def got_events(events):
    return [(event.key, shorten(event.value)) for event in events]


def want_events(cases, json_key=False):
    out = []
    for key, value in expected_events(cases):
        if json_key and key is not None:
            key = get_codec("json").decode(key)
        out.append((key, shorten(value)))
    return out


def progress(events, wanted, keyed_events, keyed_wanted):
    return lambda: (f"agent got {len(events)} of {len(wanted)} values "
                    f"({got_events(events)!r:.600}), keyed {len(keyed_events)} of "
                    f"{len(keyed_wanted)}")


# -- Kafka -------------------------------------------------------------------------

def kafka_app(kafka_broker):
    return sabot.App(unique("hostile"), broker=f"kafka://{kafka_broker}",
                     broker_commit_interval=0.2, broker_session_timeout=3.0,
                     broker_heartbeat_interval=0.5)


async def produce_raw(kafka_broker, topic, cases):
    """Write ``cases`` in order with a plain aiokafka producer; their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker, max_request_size=4 * HUGE,
                                acks="all")
    await producer.start()
    try:
        offsets = []
        for case in cases:
            meta = await producer.send_and_wait(topic, case.payload, key=case.key, partition=0)
            offsets.append(meta.offset)
        return offsets
    finally:
        await producer.stop()


async def read_topic(kafka_broker, topic):
    """Every message of ``topic`` (all partitions, up to their end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_bytes=4 * HUGE,
                                max_partition_fetch_bytes=4 * HUGE)
    await consumer.start()
    try:
        # Called once every source message is committed, so every dead
        # letter is stored: a topic that is not there has none.
        if topic not in await consumer.topics():  # a fresh metadata request
            return []
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + WAIT
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"timed out reading {topic}"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


def check_kafka_dead_letters(dead, source, cases, offsets):
    """The dead letters are exactly the cases meant to die, with reason and position."""
    expected = {off: case for case, off in zip(cases, offsets, strict=True) if case.dead is not None}
    headers = [dict(d.headers) for d in dead]
    got_offsets = sorted(int(h["sabot-offset"]) for h in headers)
    assert got_offsets == sorted(expected), (
        f"dead letters of {source} at offsets {got_offsets}, expected "
        f"{sorted(expected)} ({[expected[o].label for o in sorted(expected)]})")
    limit = sabot.App("x").conf.producer_max_request_size
    for record, hdrs in zip(dead, headers, strict=True):
        case = expected[int(hdrs["sabot-offset"])]
        error = hdrs["sabot-error"].decode()
        assert case.dead in error, f"{case.label}: {error!r} does not say {case.dead!r}"
        assert hdrs["sabot-topic"] == source.encode() and hdrs["sabot-partition"] == b"0"
        size = len(record.value or b"") + sum(len(k) + len(v) for k, v in record.headers)
        assert size <= limit, f"{case.label}: a dead letter of {size} bytes (limit {limit})"
        if case.payload is None:
            assert not record.value, f"tombstone dead letter holds {record.value[:50]!r}"
        elif len(case.payload) + 4096 > limit:  # could not be written whole
            assert hdrs.get("sabot-truncated") == str(len(case.payload)).encode(), \
                f"{case.label}: headers {sorted(hdrs)}"
            assert case.payload.startswith(record.value)
        else:
            assert record.value == case.payload, case.label
            assert "sabot-truncated" not in hdrs


@pytest.mark.kafka
@pytest.mark.parametrize("codec", list(CODECS))
async def test_kafka_hostile_input(kafka_broker, codec):
    app = kafka_app(kafka_broker)
    topic = app.topic(unique(f"hostile-{codec}"), partitions=1, **CODECS[codec])
    keyed = app.topic(unique(f"hostile-key-{codec}"), partitions=1, key_serializer="json",
                      **CODECS[codec])
    events = collector(app, topic, kind="events")
    keyed_events = collector(app, keyed, kind="events")
    cases, keyed_cases = schedule(codec, "kafka"), keyed_schedule(codec)
    wanted, keyed_wanted = want_events(cases), want_events(keyed_cases, json_key=True)

    async with running(app):
        offsets = await produce_raw(kafka_broker, topic.name, cases)
        keyed_offsets = await produce_raw(kafka_broker, keyed.name, keyed_cases)
        status = progress(events, wanted, keyed_events, keyed_wanted)
        await until(lambda: len(events) >= len(wanted) and len(keyed_events) >= len(keyed_wanted),
                    timeout=WAIT, what=lambda: f"the valid values of {codec}; {status()}")
        # Every source message acknowledged: the dead letters were written.
        committed = app.transport._committed
        await until(lambda: committed.get(TopicPartition(topic.name, 0)) == len(cases)
                    and committed.get(TopicPartition(keyed.name, 0)) == len(keyed_cases),
                    timeout=WAIT, what=lambda: f"commits past every message; "
                                               f"committed {dict(committed)}, {status()}")
        assert not app.crash_reasons, app.crash_reasons
        dead = await read_topic(kafka_broker, topic.name + ".dlq")
        keyed_dead = await read_topic(kafka_broker, keyed.name + ".dlq")
        # Anything more would be a duplicate. Every message is committed (no
        # fetch starts below it again), and once nothing is queued for the
        # agents, none is on its way.
        await until(lambda: all(a.backlog == 0 for a in app.agents.values()),
                    what="nothing queued for the agents")
        assert len(events) == len(wanted) and len(keyed_events) == len(keyed_wanted)

    assert got_events(events) == wanted
    assert got_events(keyed_events) == keyed_wanted
    check_kafka_dead_letters(dead, topic.name, cases, offsets)
    check_kafka_dead_letters(keyed_dead, keyed.name, keyed_cases, keyed_offsets)
    assert len(dead) == sum(c.dead is not None for c in cases)


# -- Redis -------------------------------------------------------------------------

def xadd_raw(client, stream, cases):
    """Write ``cases`` in order with redis-py; their entry ids."""
    ids = []
    for case in cases:
        fields = {"other": b"field"} if case.valueless else {"value": case.payload}
        if case.key is not None:
            fields["key"] = case.key
        ids.append(client.xadd(stream, fields).decode())
    return ids


def check_redis_dead_letters(client, source, cases, ids):
    expected = {eid: case for case, eid in zip(cases, ids, strict=True) if case.dead is not None}
    dead = [fields for _, fields in client.xrange(source + ".dlq")]
    got = sorted(f[b"sabot-source-id"].decode() for f in dead)
    assert got == sorted(expected), (
        f"dead letters of {source}: {got}, expected {sorted(expected)} "
        f"({[expected[i].label for i in sorted(expected)]})")
    for fields in dead:
        case = expected[fields[b"sabot-source-id"].decode()]
        error = fields[b"sabot-error"].decode()
        assert case.dead in error, f"{case.label}: {error!r} does not say {case.dead!r}"
        assert fields[b"sabot-source"] == source.encode()
        if case.valueless:
            assert fields[b"other"] == b"field"  # the entry's own fields kept
        else:  # Redis takes a 5 MB dead letter whole
            assert fields[b"value"] == case.payload, case.label
            assert b"sabot-truncated" not in fields
    return dead


@pytest.mark.redis
@pytest.mark.parametrize("codec", list(CODECS))
async def test_redis_hostile_input(redis_server, codec):
    app = sabot.App(unique("hostile"), redis_url=redis_server.url)
    stream = app.redis_channel(unique(f"hostile-{codec}"), **CODECS[codec])
    keyed = app.redis_channel(unique(f"hostile-key-{codec}"), key_serializer="json",
                              **CODECS[codec])
    events = collector(app, stream, kind="events")
    keyed_events = collector(app, keyed, kind="events")
    cases, keyed_cases = schedule(codec, "redis"), keyed_schedule(codec)
    wanted, keyed_wanted = want_events(cases), want_events(keyed_cases, json_key=True)
    client = redis_server.client()

    async with running(app):
        ids = xadd_raw(client, stream.name, cases)
        keyed_ids = xadd_raw(client, keyed.name, keyed_cases)
        status = progress(events, wanted, keyed_events, keyed_wanted)
        await until(lambda: len(events) >= len(wanted) and len(keyed_events) >= len(keyed_wanted),
                    timeout=WAIT, what=lambda: f"the valid values of {codec}; {status()}")
        n_dead = sum(c.dead is not None for c in cases)
        await until(lambda: client.xlen(stream.name + ".dlq") >= n_dead
                    and client.xlen(keyed.name + ".dlq") >= 1, timeout=WAIT,
                    what=lambda: f"the dead letters; "
                                 f"{client.xlen(stream.name + '.dlq')} of {n_dead} dead letters")
        # Every entry acknowledged, the dead-lettered ones included.
        await until(lambda: client.xpending(stream.name, app.id)["pending"] == 0
                    and client.xpending(keyed.name, app.id)["pending"] == 0,
                    timeout=WAIT, what=lambda: f"XACK of every entry; "
                                               f"pending {client.xpending(stream.name, app.id)['pending']}")
        assert not app.crash_reasons, app.crash_reasons
        # Anything more would be a duplicate. Nothing is pending (no claim or
        # recovery read can return an entry again), and once nothing is queued
        # for the agents, none is on its way.
        await until(lambda: all(a.backlog == 0 for a in app.agents.values()),
                    what="nothing queued for the agents")
        assert len(events) == len(wanted) and len(keyed_events) == len(keyed_wanted)

    assert got_events(events) == wanted
    assert got_events(keyed_events) == keyed_wanted
    dead = check_redis_dead_letters(client, stream.name, cases, ids)
    check_redis_dead_letters(client, keyed.name, keyed_cases, keyed_ids)
    assert len(dead) == n_dead
