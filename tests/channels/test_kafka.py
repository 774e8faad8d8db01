"""Kafka transport against a real broker (tansu, see tests/servers/kafka.py).

No mocks: every test talks to the session's broker. Each test uses its own app
id and topic names, so tests do not see each other's messages or groups.
"""
import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time

import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

import sabot
from sabot.channels.kafka import KafkaTopic, KafkaTransport, kafka_client_options
from sabot.codecs import get_codec
from sabot.exceptions import BrokerUnavailable
from tests.helpers import collector, running, unique, until

pytestmark = pytest.mark.kafka

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = pa.schema([("id", pa.int64()), ("amount", pa.float64()), ("sym", pa.string())])


def make_app(kafka_broker, app_id=None, **settings):
    settings.setdefault("broker_commit_interval", 0.2)
    # tansu answers a JoinGroup after half the session timeout: keep it short.
    settings.setdefault("broker_session_timeout", 3.0)
    settings.setdefault("broker_heartbeat_interval", 0.5)
    return sabot.App(app_id or unique("app"), broker=f"kafka://{kafka_broker}", **settings)


async def read_all(kafka_broker, topic, n, timeout=15.0):
    """Read ``n`` messages of ``topic`` with a plain aiokafka consumer (no group)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_broker, auto_offset_reset="earliest")
    await consumer.start()
    out = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


def arrow_batch(n, start=0):
    return pa.RecordBatch.from_pydict({
        "id": list(range(start, start + n)),
        "amount": [i * 1.5 for i in range(start, start + n)],
        "sym": [f"s{i % 7}" for i in range(start, start + n)],
    }, schema=SCHEMA)


# -- round trips --------------------------------------------------------------

@pytest.mark.parametrize("codec,values", [
    ("raw", [b"a", b"\x00\x01", b"x" * 1000]),
    ("json", [{"id": 1, "tags": ["a"]}, [1, 2], "text", None]),
    ("arrow", [arrow_batch(3), arrow_batch(5, 10)]),
])
async def test_round_trip_per_codec(kafka_broker, codec, values):
    app = make_app(kafka_broker)
    topic = app.topic(unique("rt"), value_serializer=codec, partitions=1)
    got = collector(app, topic, kind="events")

    async with running(app):
        for i, value in enumerate(values):
            await topic.send(key=f"k{i}", value=value, headers={"h": b"%d" % i})
        await topic.flush()
        expected = sum(len(v) for v in values) if codec == "arrow" else len(values)
        await until(lambda: len(got) >= expected, what="round trip")
    if codec == "arrow":
        assert [e.value for e in got] == [r for v in values for r in v.to_pylist()]
    else:
        assert [e.value for e in got] == values
    assert got[0].key == b"k0" and got[0].headers == {"h": b"0"}
    name, partition, offset = got[0].position
    assert (name, partition, offset) == (topic.name, 0, 0)


async def test_send_returns_delivery_future_with_metadata(kafka_broker):
    app = make_app(kafka_broker)
    topic = app.topic(unique("meta"), partitions=2)
    async with running(app):
        future = await topic.send(value={"x": 1}, partition=1)
        assert isinstance(future, asyncio.Future)
        metadata = await future
        assert metadata.topic == topic.name and metadata.partition == 1


async def test_record_batch_in_equal_record_batch_out(kafka_broker):
    app = make_app(kafka_broker)
    topic = app.topic(unique("arrow"), value_serializer="arrow", schema=SCHEMA, partitions=1)
    got = collector(app, topic, kind="batches")

    sent = arrow_batch(10_000)
    async with running(app):
        await topic.send_batch(sent)
        await topic.flush()
        await until(lambda: got, what="the batch")
    assert isinstance(got[0], pa.RecordBatch)
    assert got[0].equals(sent)


async def test_send_batch_writes_one_message_per_row_for_json(kafka_broker):
    app = make_app(kafka_broker)
    topic = app.topic(unique("rows"), value_serializer="json", schema=SCHEMA, partitions=1)
    got = collector(app, topic, kind="batches")

    async with running(app):
        await topic.send_batch(arrow_batch(50))
        await topic.flush()
        # json values fetched together with a schema come back as one RecordBatch
        await until(lambda: sum(len(b) for b in got) >= 50, what="50 rows")
    assert all(isinstance(b, pa.RecordBatch) for b in got)
    assert pa.Table.from_batches(got).to_pylist() == arrow_batch(50).to_pylist()
    assert len(await read_all(kafka_broker, topic.name, 50)) == 50


# -- agents: fan-out, sinks, groups -------------------------------------------

async def test_fan_out_to_two_agents(kafka_broker):
    app = make_app(kafka_broker)
    topic = app.topic(unique("fan"), partitions=2)
    seen = {"a": collector(app, topic), "b": collector(app, topic)}

    async with running(app):
        for i in range(200):
            await topic.send(key=str(i), value=i)
        await topic.flush()
        await until(lambda: len(seen["a"]) == 200 and len(seen["b"]) == 200, what="fan-out")
    assert sorted(seen["a"]) == sorted(seen["b"]) == list(range(200))


async def test_agent_sinks_to_another_topic(kafka_broker):
    app = make_app(kafka_broker)
    source = app.topic(unique("src"), partitions=2)
    alerts = app.topic(unique("alerts"), partitions=1)
    got = collector(app, alerts)

    @app.agent(source, sink=[alerts])
    async def score(stream):
        async for order in stream:
            if order["amount"] > 100:
                yield {"alert": order["id"]}

    async with running(app):
        for i in range(100):
            await source.send(value={"id": i, "amount": i * 3})
        await until(lambda: len(got) == 66, what="66 alerts")
    assert sorted(v["alert"] for v in got) == list(range(34, 100))
    # The output is in Kafka itself, not only in this process.
    assert len(await read_all(kafka_broker, alerts.name, 66)) == 66


async def test_two_workers_in_one_group_split_partitions(kafka_broker):
    group = unique("group")
    name = unique("split")
    seen = []
    apps = []
    for w in range(2):
        app = make_app(kafka_broker)
        app.id = group  # both workers in one consumer group
        seen.append(collector(app, app.topic(name, partitions=4)))
        apps.append(app)

    async with running(*apps):
        await until(lambda: all(a.transport.consumer.assignment() for a in apps)
                    and sum(len(a.transport.consumer.assignment()) for a in apps) == 4,
                    what="both workers to hold partitions")
        topic = apps[0].topic(name)
        for i in range(1000):
            await topic.send(key=str(i), value=i)
        await topic.flush()
        await until(lambda: len(seen[0]) + len(seen[1]) >= 1000, what="1000 values")
        # anything more would be a duplicate: none can come once this holds
        await until(lambda: settled(kafka_broker, apps, name, 4, 1000), interval=0.1,
                    what="every offset committed")
    assert seen[0] and seen[1], "one worker got nothing"
    assert sorted(seen[0] + seen[1]) == list(range(1000))
    parts = [{tp.partition for tp in a.transport._committed} for a in apps]
    assert not parts[0] & parts[1]


async def test_rebalance_mid_stream_commits_in_flight_and_loses_nothing(kafka_broker):
    """A second worker joins while the first is half way: every partition's
    in-flight batches are finished and committed before it moves, so the two
    together process every message, and none twice."""
    group, name, total = unique("group"), unique("rebalance"), 4000
    seen = []

    def worker():
        # A small buffer keeps most of the backlog unfetched, so there is
        # something left to move when the second worker arrives.
        app = make_app(kafka_broker, stream_buffer_maxsize=100)
        app.id = group
        got = []
        seen.append(got)

        @app.agent(app.topic(name, partitions=4), name=unique("slow"))
        async def slow(stream):
            async for value in stream:
                got.append(value)
                if len(got) % 10 == 0:
                    await asyncio.sleep(0.01)  # about 1 ms a value: slow enough to move
        return app

    first, second = worker(), worker()
    async with running(first):
        topic = first.topic(name)
        for i in range(total):
            await topic.send(key=str(i), value=i)
        await topic.flush()
        await until(lambda: len(seen[0]) >= total // 4, what="a quarter processed")
        async with running(second):
            await until(lambda: second.transport.consumer.assignment(),
                        what="partitions for the second worker")
            await until(lambda: len(set(seen[0]) | set(seen[1])) >= total,
                        timeout=30, what="every message")
            # anything more would be a duplicate: none can come once this holds
            await until(lambda: settled(kafka_broker, [first, second], name, 4, total),
                        interval=0.1, what="every offset committed")
    everything = seen[0] + seen[1]
    assert set(everything) == set(range(total))
    assert len(everything) == total, f"{len(everything) - total} processed twice"


async def test_keyed_messages_land_in_the_java_client_partition(kafka_broker):
    app = make_app(kafka_broker)
    topic = app.topic(unique("keys"), partitions=12)
    async with running(app):
        await topic.maybe_declare()
        for key in [b"21", b"foobar", b"order-1", b"customer-42", b"\xff\x00", b"abcdefg"]:
            metadata = await (await topic.send(key=key, value=1))
            assert metadata.partition == java_partition(key, 12), key


# -- at-least-once across a crash --------------------------------------------

@pytest.mark.slow
async def test_sigkill_half_way_then_restart_processes_everything(kafka_broker, tmp_path):
    total = 20_000
    name = unique("crash")
    outfile = tmp_path / "processed.txt"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker, linger_ms=5)
    app = make_app(kafka_broker)
    await app.topic(name, partitions=4).maybe_declare()
    await app.transport.stop()
    await producer.start()
    try:
        json = get_codec("json")
        for i in range(total):
            await producer.send(name, json.encode({"id": i}), key=str(i).encode())
        await producer.flush()
    finally:
        await producer.stop()

    def start_worker():
        return subprocess.Popen([sys.executable, os.path.join(HERE, "kafka_worker_app.py"),
                                 kafka_broker, name, str(outfile)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def processed():
        if not outfile.exists():
            return []
        return [int(x) for x in outfile.read_text().split()]

    worker = start_worker()
    try:
        await until(lambda: len(processed()) >= total // 2 or worker.poll() is not None,
                    timeout=60, what="half of the messages")
        assert worker.poll() is None, worker.stderr.read().decode()
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        first_run = set(processed())
        assert len(first_run) < total, "the worker finished before it was killed"

        worker = start_worker()
        await until(lambda: len(set(processed())) >= total or worker.poll() is not None,
                    timeout=60, what="every message after the restart")
        assert worker.poll() is None, worker.stderr.read().decode()
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
    assert set(processed()) == set(range(total))


# -- dead letters ---------------------------------------------------------------

async def test_malformed_values_go_to_dead_letter_topic_and_agent_goes_on(kafka_broker):
    app = make_app(kafka_broker)
    orders = app.topic(unique("orders"), value_serializer="json", partitions=1)
    frames = app.topic(unique("frames"), value_serializer="arrow", partitions=1)
    got_orders = collector(app, orders)
    got_frames = collector(app, frames, kind="batches")

    truncated = get_codec("arrow").encode(arrow_batch(100))[:-64]
    async with running(app):
        await orders.send(value={"id": 1})
        await orders.produce(b"bad-key", b'{"id": 2,', None)  # malformed JSON
        await orders.send(value={"id": 3})
        await frames.send_batch(arrow_batch(5))
        await frames.produce(None, truncated, None)  # truncated Arrow IPC
        await frames.send_batch(arrow_batch(5, 5))
        await until(lambda: len(got_orders) == 2 and len(got_frames) == 2, what="good values")
        dead_orders = await read_all(kafka_broker, orders.name + ".dlq", 1)
        dead_frames = await read_all(kafka_broker, frames.name + ".dlq", 1)
        # The dead-lettered offsets are committed too (once the DLQ write was acked).
        await until(lambda: app.transport._committed.get(TopicPartition(orders.name, 0)) == 3
                    and app.transport._committed.get(TopicPartition(frames.name, 0)) == 3,
                    what="commits past the bad values")
    assert [v["id"] for v in got_orders] == [1, 3]
    assert [len(b) for b in got_frames] == [5, 5]

    (dead,) = dead_orders
    assert dead.value == b'{"id": 2,'
    headers = dict(dead.headers)
    assert headers["sabot-topic"] == orders.name.encode()
    assert headers["sabot-partition"] == b"0" and headers["sabot-offset"] == b"1"
    assert b"JSON" in headers["sabot-error"] and headers["sabot-key"] == b"bad-key"

    (dead,) = dead_frames
    assert dead.value == truncated
    headers = dict(dead.headers)
    assert headers["sabot-offset"] == b"1" and b"Arrow" in headers["sabot-error"]


async def _produce_raw(kafka_broker, topic, values):
    """Write ``values`` as they are, with a producer that takes large messages."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker, max_request_size=16 << 20)
    await producer.start()
    try:
        for value in values:
            await (await producer.send(topic, value, partition=0))
    finally:
        await producer.stop()


async def _committed(kafka_broker, app, topic, partitions=1):
    """The offset the app's group committed for ``topic``, summed over its
    partitions (None: nothing committed yet)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker, group_id=app.id,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        offsets = [await consumer.committed(TopicPartition(topic, p))
                   for p in range(partitions)]
    finally:
        await consumer.stop()
    return None if all(o is None for o in offsets) else sum(o or 0 for o in offsets)


async def settled(kafka_broker, apps, topic, partitions, total):
    """Every message of ``topic`` committed by the apps' group, nothing queued for an agent.

    A message is delivered again only from below the committed offset (after a
    rebalance or a restart) or from a fetch already queued: once this holds,
    nothing processed so far can come twice.
    """
    if any(agent.backlog for app in apps for agent in app.agents.values()):
        return False
    return await _committed(kafka_broker, apps[0], topic, partitions) == total


async def test_poison_message_too_big_to_dead_letter_is_written_truncated(kafka_broker):
    """A 5 MB value that does not decode is bigger than any message the
    producer may write (1 MiB): its dead letter is a truncated copy marked as
    such, counted, and then the offset is committed. The partition goes on."""
    app = make_app(kafka_broker)
    topic = app.topic(unique("poison"), value_serializer="json", partitions=1)
    got = collector(app, topic)
    poison = b'{"x": "' + b"y" * (5 << 20)
    await topic.maybe_declare()
    await _produce_raw(kafka_broker, topic.name, [b'{"i": 0}', poison, b'{"i": 2}'])
    async with running(app):
        await until(lambda: len(got) == 2, what="the values around the poison")
        (dead,) = await read_all(kafka_broker, topic.name + ".dlq", 1)
        await until(lambda: topic.dead_letters.truncated == 1, what="the count")
        from sabot.monitor import WorkerMonitor
        from sabot.web import WorkerMetrics
        metrics = WorkerMetrics(WorkerMonitor(app))
        text = (await metrics.render()).decode()
    assert f'sabot_dead_letters_truncated_total{{channel="{topic.name}"}} 1.0' in text
    assert got == [{"i": 0}, {"i": 2}]
    headers = dict(dead.headers)
    assert headers["sabot-truncated"] == str(len(poison)).encode()
    assert headers["sabot-topic"] == topic.name.encode()
    assert headers["sabot-partition"] == b"0" and headers["sabot-offset"] == b"1"
    assert b"JSON" in headers["sabot-error"]
    assert 0 < len(dead.value) < app.conf.producer_max_request_size
    assert poison.startswith(dead.value)
    assert topic.dead_letters_sent == 1
    assert await _committed(kafka_broker, app, topic.name) == 3

    # A restart starts after the poison: it is not met (nor dead-lettered) twice.
    again = make_app(kafka_broker, app.id)
    again_topic = again.topic(topic.name, value_serializer="json")
    seen = collector(again, again_topic)
    async with running(again):
        await _produce_raw(kafka_broker, topic.name, [b'{"i": 3}'])
        await until(lambda: seen, what="the value after the restart")
    assert seen == [{"i": 3}] and again_topic.dead_letters_sent == 0


async def test_agent_failing_on_a_value_over_a_mebibyte_dead_letters_a_truncated_copy(
        kafka_broker):
    """on_error="dead_letter" on a value the producer cannot write back whole:
    the truncated dead letter is written before the offset is committed, and
    the counters count what was written."""
    app = make_app(kafka_broker)
    topic = app.topic(unique("big"), value_serializer="raw", partitions=1)
    seen = []

    @app.agent(topic, on_error="dead_letter")
    async def picky(stream):
        async for value in stream:
            if len(value) > 1 << 20:
                raise ValueError("too big for me")
            seen.append(value)

    big = b"z" * (2 << 20)
    await topic.maybe_declare()
    await _produce_raw(kafka_broker, topic.name, [b"a", big, b"c"])
    async with running(app):
        await until(lambda: seen == [b"a", b"c"], what="the small values")
        (dead,) = await read_all(kafka_broker, topic.name + ".dlq", 1)
        await until(lambda: topic.dead_letters_sent == 1, what="the count")
    headers = dict(dead.headers)
    assert headers["sabot-truncated"] == str(len(big)).encode()
    assert headers["sabot-offset"] == b"1" and headers["sabot-agent"] == picky.name.encode()
    assert b"too big for me" in headers["sabot-error"]
    assert big.startswith(dead.value) and len(dead.value) < 1 << 20
    assert topic.dead_letters.truncated == 1
    assert await _committed(kafka_broker, app, topic.name) == 3


# -- sends left behind by a script ---------------------------------------------

def _send_and_return(url, topic, n, *extra):
    return subprocess.run(
        [sys.executable, os.path.join(HERE, "send_and_return.py"), url, unique("script"),
         topic, str(n), *map(str, extra)],
        capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(HERE)))


async def test_sends_still_queued_when_a_script_returns_are_delivered(kafka_broker):
    topic = unique("script")
    proc = _send_and_return(f"kafka://{kafka_broker}", topic, 10_000)
    assert proc.returncode == 0, proc.stderr
    records = await read_all(kafka_broker, topic, 10_000, timeout=60)
    assert {json.loads(r.value)["i"] for r in records} == set(range(10_000))


async def test_sends_that_cannot_be_delivered_at_exit_are_reported_with_a_count():
    from tests.servers.kafka import start_broker
    broker = start_broker()
    try:
        proc = _send_and_return(broker.url, unique("lost"), 500, broker.proc.pid)
    finally:
        broker.cleanup()
    assert proc.returncode == 0, proc.stderr
    assert "499 of 499 sends still pending when the event loop closed could not be " \
           "delivered" in proc.stderr, proc.stderr


# -- failures and security ------------------------------------------------------

async def test_broker_down_at_start_gives_clear_error(unused_tcp_port):
    app = sabot.App(unique("down"), broker=f"kafka://127.0.0.1:{unused_tcp_port}",
                    broker_connect_timeout=1.0)

    @app.agent(app.topic("anything"))
    async def idle(stream):
        async for _ in stream:
            pass

    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        await app.start()
    elapsed = time.monotonic() - started
    with contextlib.suppress(Exception):
        await app.stop()
    message = str(info.value)
    assert 0.9 <= elapsed < 5, elapsed
    assert "\n" not in message
    assert f"127.0.0.1:{unused_tcp_port}" in message and "broker_connect_timeout" in message


def test_credentials_pass_through_and_never_show():
    app = sabot.App("sec", broker="kafka://h1:9093,h2", sasl_mechanism="SCRAM-SHA-256",
                    sasl_username="alice", sasl_password="s3cret-pw",
                    ssl_context=ssl.create_default_context())
    options = kafka_client_options(app.conf)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_plain_password"] == "s3cret-pw"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    transport = app.transport
    assert isinstance(transport, KafkaTransport)
    assert transport.servers == ["h1:9093", "h2:9092"]
    for text in (repr(transport), repr(app.conf), repr(app), repr(app.topic("t"))):
        assert "s3cret-pw" not in text

    pair = sabot.App("sec2", broker="kafka://h", broker_credentials=("bob", "pw-2"))
    options = kafka_client_options(pair.conf)
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_plain_username"] == "bob" and "pw-2" not in repr(pair.transport)


def test_topic_is_a_kafka_topic():
    app = sabot.App("kind", broker="kafka://127.0.0.1:9")
    topic = app.topic("orders", value_serializer="raw", partitions=3)
    assert isinstance(topic, KafkaTopic)
    assert topic.partitions == 3 and topic.codec.name == "raw"
    assert app.topic("orders") is topic


# -- the Java client's partitioner, written from its source ----------------------

def java_murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` (signed 32-bit), ported line by line."""
    def i32(x):
        x &= 0xFFFFFFFF
        return x - (1 << 32) if x & 0x80000000 else x

    m, r = 0x5BD1E995, 24
    length = len(data)
    h = i32(0x9747B28C ^ length)
    for i in range(length // 4):
        k = data[4 * i] | data[4 * i + 1] << 8 | data[4 * i + 2] << 16 | data[4 * i + 3] << 24
        k = i32(k * m)
        k = i32(k ^ ((k & 0xFFFFFFFF) >> r))
        k = i32(k * m)
        h = i32(h * m)
        h = i32(h ^ k)
    tail = length & ~3
    rest = length % 4
    if rest == 3:
        h = i32(h ^ data[tail + 2] << 16)
    if rest >= 2:
        h = i32(h ^ data[tail + 1] << 8)
    if rest >= 1:
        h = i32(h ^ data[tail])
        h = i32(h * m)
    h = i32(h ^ ((h & 0xFFFFFFFF) >> 13))
    h = i32(h * m)
    h = i32(h ^ ((h & 0xFFFFFFFF) >> 15))
    return h


def java_partition(key: bytes, partitions: int) -> int:
    """``Utils.toPositive(Utils.murmur2(key)) % numPartitions``."""
    return (java_murmur2(key) & 0x7FFFFFFF) % partitions


def test_java_murmur2_port_matches_kafka_utils_test_vectors():
    # org.apache.kafka.common.utils.UtilsTest.testMurmur2
    cases = {b"21": -973932308, b"foobar": -790332482,
             b"a-little-bit-long-string": -985981536,
             b"a-little-bit-longer-string": -1486304829,
             b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
             b"abc": 479470107}
    for key, expected in cases.items():
        assert java_murmur2(key) == expected


# -- the example ------------------------------------------------------------------

async def test_fraud_example_scores_and_alerts(kafka_broker, monkeypatch):
    import importlib.util
    monkeypatch.setenv("SABOT_BROKER", f"kafka://{kafka_broker}")
    monkeypatch.setenv("SABOT_DEMO_TRANSACTIONS", "300")
    path = os.path.join(HERE, "..", "..", "examples", "kafka_fraud.py")
    spec = importlib.util.spec_from_file_location("kafka_fraud_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    app = example.app
    app.id = unique("fraud")  # a fresh group; topic names are the example's own
    app.conf.broker_session_timeout = 3.0
    app.conf.broker_heartbeat_interval = 0.5
    committed = app.transport._committed
    async with running(app):
        await until(lambda: sum(v for tp, v in committed.items()
                                if tp.topic == "transactions") >= 300,
                    timeout=30, what="300 transactions scored and committed")
        txs = await read_all(kafka_broker, "transactions", 300)
        expected = [json.loads(r.value) for r in txs]
        expected = sorted(tx["id"] for tx in expected if example.score(tx) >= 0.7)
        alerts = await read_all(kafka_broker, "fraud-alerts", len(expected))
    assert expected, "the demo data should contain some fraud"
    assert sorted(json.loads(r.value)["tx"] for r in alerts) == expected


# -- commit bookkeeping (no broker needed) ----------------------------------------

def test_commit_position_is_the_end_of_the_finished_prefix():
    from sabot.channels.kafka import _PartitionOffsets
    offsets = _PartitionOffsets()
    a, b, c = offsets.add(0, 9), offsets.add(10, 19), offsets.add(25, 30)  # 20-24: compacted away
    offsets.finish(c)
    offsets.finish(b)
    assert offsets.committable is None  # a still holds them back
    offsets.finish(a)
    assert offsets.committable == 31
    assert offsets.add(5, 40) is None  # a stale fetch is never tracked


async def test_a_stream_opened_while_running_starts_fetching_its_topic(kafka_broker):
    app = make_app(kafka_broker)
    early = app.topic(unique("early"), partitions=1)
    collector(app, early)
    async with running(app):
        late = app.topic(unique("late"), partitions=1)
        stream = late.stream()  # subscribes now: the consumer adds the topic
        got = []

        async def read():
            # Keep asking for more, as an agent does: a value's batch is
            # released (and may be committed) when the reader moves past it.
            async for value in stream:
                got.append(value)
        reader = asyncio.ensure_future(read())
        try:
            await late.send(value={"n": 1})
            await until(lambda: got, what="the value")
            assert got == [{"n": 1}]
            assert late.name in app.transport.consumer.subscription()
        finally:
            reader.cancel()


async def test_key_codec_decodes_keys_and_dead_letters_bad_ones(kafka_broker):
    app = make_app(kafka_broker)
    topic = app.topic(unique("keyed"), key_serializer="json", partitions=1)
    got = collector(app, topic, kind="events")
    async with running(app):
        await topic.send(key={"user": 1}, value="a")
        await topic.produce(b"{not json", b'"b"', None)
        await topic.send(key={"user": 3}, value="c")
        await until(lambda: len(got) == 2, what="two good events")
        (dead,) = await read_all(kafka_broker, topic.name + ".dlq", 1)
    assert [(e.key, e.value) for e in got] == [({"user": 1}, "a"), ({"user": 3}, "c")]
    assert dead.value == b'"b"' and dict(dead.headers)["sabot-key"] == b"{not json"
    assert b"key" in dict(dead.headers)["sabot-error"]


