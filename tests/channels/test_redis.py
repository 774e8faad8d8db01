"""Redis Streams transport against a real redis-server (tests/servers/redis.py).

No mocks: every test writes and reads real streams, checks the consumer
group's pending list with XPENDING, and the crash test SIGKILLs a real worker
process.
"""
import asyncio
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest

import sabot
from sabot.exceptions import AuthenticationError, BrokerUnavailable
from tests.channels.helpers import collector, running, unique, wait_until

pytestmark = pytest.mark.redis

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def stream():
    """A fresh stream name per test (the session server is shared)."""
    return unique("s")


def pending(client, stream, group):
    return client.xpending(stream, group)["pending"]


def redis_transport(app):
    return next(t for t in app.transports if t.scheme == "redis")


def make_app(server, app_id=None, **settings):
    return sabot.App(app_id or unique("app"), redis_url=server.url, **settings)


# -- round trips ---------------------------------------------------------------

@pytest.mark.parametrize("codec,values", [
    ("raw", [b"a", b"\x00\xffbinary", b""]),
    ("json", [{"id": 1, "name": "x"}, [1, 2, 3], "text", 4.5, None]),
])
async def test_round_trip_per_codec(redis_server, stream, codec, values):
    app = make_app(redis_server)
    ch = app.redis_channel(stream, value_serializer=codec)
    got = collector(app, ch)
    async with running(app):
        futures = [await ch.send(value=v) for v in values]
        ids = await asyncio.gather(*futures)
        assert all(isinstance(i, str) and "-" in i for i in ids)
        await ch.send_batch(values)
        await wait_until(lambda: len(got) == 2 * len(values), what="all values")
    assert got == values + values
    client = redis_server.client()
    assert pending(client, stream, app.id) == 0


async def test_record_batch_round_trip_is_equal_and_carries_positions(redis_server, stream):
    schema = pa.schema([("sym", pa.string()), ("px", pa.float64()), ("n", pa.int64())])
    rb = pa.record_batch([pa.array(["a", "b", "c"]), pa.array([1.5, 2.5, 3.5]),
                          pa.array([1, 2, 3])], schema=schema)
    app = make_app(redis_server)
    ch = app.redis_channel(stream, value_serializer="arrow", schema=schema)
    got = collector(app, ch, kind="raw_batches")
    async with running(app):
        await (await ch.send_batch(rb))
        await (await ch.send_batch([{"sym": "d", "px": 4.5, "n": 4}]))
        await wait_until(lambda: len(got) == 2, what="two batches")
    assert got[0].payload.equals(rb)
    assert got[0].payload.schema.equals(schema)
    assert got[1].payload.to_pylist() == [{"sym": "d", "px": 4.5, "n": 4}]
    stream_name, entry_id = got[0].positions[0]
    assert stream_name == stream and len(got[0].positions) == 3
    # One entry holds the whole batch (one Arrow IPC stream in its value).
    entries = redis_server.client().xrange(stream)
    assert [e[0].decode() for e in entries][0] == entry_id and len(entries) == 2


async def test_arrow_entries_are_read_without_a_copy(redis_server, stream):
    rb = pa.record_batch({"x": pa.array(range(1_000_000), pa.int64())})  # 8 MB
    writer = make_app(redis_server)
    await (await writer.redis_channel(stream, value_serializer="arrow").send_batch(rb))
    await writer.stop()
    del writer
    reader = make_app(redis_server)
    got = collector(reader, reader.redis_channel(stream, value_serializer="arrow"),
                    kind="raw_batches")
    before = pa.total_allocated_bytes()
    async with running(reader):
        await wait_until(lambda: got, what="the batch")
        # The columns point into the bytes redis-py received: Arrow's pool
        # did not allocate the 8 MB again.
        assert pa.total_allocated_bytes() - before < 1_000_000
        assert got[0].payload.equals(rb)


async def test_redis_broker_makes_topics_redis_streams(redis_server, stream):
    from sabot.channels.redis import RedisStreamChannel
    app = sabot.App(unique("broker"), broker=redis_server.url)
    topic = app.topic(stream, value_serializer="json", partitions=4)
    assert isinstance(topic, RedisStreamChannel) and topic is app.redis_channel(stream)
    got = collector(app, topic)
    async with running(app):
        await (await topic.send(value={"via": "topic"}))
        await wait_until(lambda: got, what="the value")
    assert got == [{"via": "topic"}]
    assert redis_server.client().xlen(stream) == 1


async def test_keys_and_headers_travel_as_fields(redis_server, stream):
    app = make_app(redis_server)
    ch = app.redis_channel(stream, value_serializer="json")
    events = collector(app, ch, kind="events")
    async with running(app):
        await (await ch.send(key=b"k1", value={"a": 1}, headers={"trace": b"t-1"}))
        await (await ch.send(value={"a": 2}))
        await wait_until(lambda: len(events) == 2, what="two events")
    assert events[0].key == b"k1" and events[0].headers == {"trace": b"t-1"}
    assert events[1].key is None and events[1].value == {"a": 2}
    assert events[0].position[0] == stream
    fields = redis_server.client().xrange(stream)[0][1]
    assert fields == {b"value": b'{"a":1}', b"key": b"k1", b"trace": b"t-1"}


async def test_maxlen_trims_the_stream(redis_server, stream):
    app = make_app(redis_server)
    ch = app.redis_channel(stream, value_serializer="raw", maxlen=100)
    await (await ch.send_batch([b"x"] * 2000))
    assert redis_server.client().xlen(stream) < 500
    await app.stop()


async def test_large_values_round_trip_in_order(redis_server, stream):
    # ~19 MB: more than one pipeline's worth of bytes.
    values = [bytes([i % 251]) * 65536 for i in range(300)]
    app = make_app(redis_server)
    ch = app.redis_channel(stream, value_serializer="raw")
    got = collector(app, ch)
    async with running(app):
        await (await ch.send_batch(values))
        await wait_until(lambda: len(got) == len(values), what="every value")
    assert got == values


# -- delivery ------------------------------------------------------------------

async def test_fan_out_to_two_agents_acks_after_both(redis_server, stream):
    app = make_app(redis_server)
    ch = app.redis_channel(stream, value_serializer="json")
    fast, slow = [], []
    gate = asyncio.Event()

    @app.agent(ch, name="fast")
    async def fast_agent(entries):
        async for value in entries:
            fast.append(value)

    @app.agent(ch, name="slow")
    async def slow_agent(entries):
        async for value in entries:
            await gate.wait()
            slow.append(value)

    client = redis_server.client()
    async with running(app):
        await (await ch.send_batch([{"i": i} for i in range(20)]))
        await wait_until(lambda: len(fast) == 20, what="fast agent")
        await asyncio.sleep(0.2)
        # One agent is still holding the batch: nothing may be acknowledged.
        assert pending(client, stream, app.id) == 20
        gate.set()
        await wait_until(lambda: len(slow) == 20, what="slow agent")
        await wait_until(lambda: pending(client, stream, app.id) == 0, what="XACK")
    assert fast == slow == [{"i": i} for i in range(20)]


async def test_two_workers_in_one_group_share_the_entries(redis_server, stream):
    app_id = unique("shared")
    seen = {}
    apps = []
    for worker in ("w1", "w2"):
        app = make_app(redis_server, app_id, stream_batch_size=50)
        seen[worker] = []

        @app.agent(app.redis_channel(stream, value_serializer="json"), name="share")
        async def share(entries, out=seen[worker]):
            async for value in entries:
                out.append(value["i"])
                await asyncio.sleep(0)  # let the other worker read too
        apps.append(app)

    total = 3000
    client = redis_server.client()
    async with running(*apps):
        consumers = {redis_transport(a).consumer_name for a in apps}
        assert len(consumers) == 2
        producer = apps[0].redis_channel(stream, value_serializer="json")
        for start in range(0, total, 500):
            await (await producer.send_batch([{"i": i} for i in range(start, start + 500)]))
            await asyncio.sleep(0.02)
        await wait_until(lambda: len(seen["w1"]) + len(seen["w2"]) >= total, what="all entries")
        await wait_until(lambda: pending(client, stream, app_id) == 0, what="XACK")
    both = seen["w1"] + seen["w2"]
    assert sorted(both) == list(range(total))  # together, each exactly once
    assert seen["w1"] and seen["w2"]  # and both took a share


async def test_entry_added_by_redis_cli_is_consumed(redis_server, stream):
    app = make_app(redis_server)
    got = collector(app, app.redis_channel(stream, value_serializer="json"), kind="events")
    async with running(app):
        entry_id = redis_server.cli("XADD", stream, "*", "value", '{"from":"cli"}',
                                    "origin", "redis-cli").strip('"')
        await wait_until(lambda: got, what="the redis-cli entry")
    assert got[0].value == {"from": "cli"}
    assert got[0].headers == {"origin": b"redis-cli"}
    assert got[0].position == (stream, entry_id)


async def test_malformed_entries_go_to_the_dead_letter_stream(redis_server, stream):
    app = make_app(redis_server)
    good = collector(app, app.redis_channel(stream, value_serializer="json"))
    client = redis_server.client()
    async with running(app):
        bad_id = client.xadd(stream, {"value": b"{not json"}).decode()
        client.xadd(stream, {"value": b'{"ok":1}'})
        valueless_id = client.xadd(stream, {"other": b"field"}).decode()
        client.xadd(stream, {"value": b'{"ok":2}'})
        await wait_until(lambda: len(good) == 2, what="good values")
        await wait_until(lambda: client.xlen(stream + ".dlq") == 2, what="dead letters")
        await wait_until(lambda: pending(client, stream, app.id) == 0, what="XACK")
    assert good == [{"ok": 1}, {"ok": 2}]
    dead = {f[b"sabot-source-id"].decode(): f for _, f in client.xrange(stream + ".dlq")}
    assert set(dead) == {bad_id, valueless_id}
    assert dead[bad_id][b"value"] == b"{not json"
    assert b"invalid JSON" in dead[bad_id][b"sabot-error"]
    assert dead[bad_id][b"sabot-source"].decode() == stream
    assert b"no 'value' field" in dead[valueless_id][b"sabot-error"]
    assert dead[valueless_id][b"other"] == b"field"  # the entry's own fields kept


async def test_agent_stopped_on_error_leaves_its_entries_for_the_next_worker(redis_server,
                                                                              stream):
    app_id = unique("crashy")
    first = make_app(redis_server, app_id)
    ch = first.redis_channel(stream, value_serializer="json")

    @first.agent(ch, on_error="stop")
    async def fragile(entries):
        async for value in entries:
            if value.get("boom"):
                raise ValueError("boom")

    client = redis_server.client()
    values = [{"i": 1}, {"boom": True}, {"i": 2}]
    await first.start()
    await (await ch.send_batch(values))
    await wait_until(lambda: first.crash_reasons, what="the agent to stop")
    started = time.monotonic()
    await first.stop()
    assert time.monotonic() - started < 3  # no wait for a batch that never finishes
    # The crashing batch is abandoned, not acknowledged (an earlier read of
    # the first value alone may have been finished and acknowledged).
    left = pending(client, stream, app_id)
    assert left >= 2

    second = make_app(redis_server, app_id, redis_claim_idle_ms=100)
    got = collector(second, second.redis_channel(stream, value_serializer="json"))
    async with running(second):
        await wait_until(lambda: len(got) == left, what="the entries again")
        await wait_until(lambda: pending(client, stream, app_id) == 0, what="XACK")
    assert got == values[-left:]


async def test_running_worker_claims_what_a_dead_consumer_left(redis_server, stream):
    app = make_app(redis_server, redis_claim_idle_ms=200)
    client = redis_server.client()
    client.xgroup_create(stream, app.id, id="0", mkstream=True)
    for i in range(5):
        client.xadd(stream, {"value": b'{"n":%d}' % i})
    # Another consumer of the group reads everything, then dies without XACK.
    assert len(client.xreadgroup(app.id, "ghost", {stream: ">"})[0][1]) == 5
    got = collector(app, app.redis_channel(stream, value_serializer="json"))
    async with running(app):
        # Idle for less than 200 ms at start: the periodic claim takes them.
        await wait_until(lambda: len(got) == 5, timeout=5, what="the claimed entries")
        await wait_until(lambda: pending(client, stream, app.id) == 0, what="XACK")
    assert got == [{"n": i} for i in range(5)]


@pytest.mark.slow
def test_worker_killed_mid_stream_leaves_nothing_behind(redis_server, stream, tmp_path):
    total = 2000
    client = redis_server.client()
    pipe = client.pipeline(transaction=False)
    for i in range(total):
        pipe.xadd(stream, {"value": b'{"id":%d}' % i})
    pipe.execute()
    outfile = tmp_path / "processed.txt"
    outfile.touch()
    script = os.path.join(HERE, "redis_worker_app.py")
    first = subprocess.Popen([sys.executable, script, redis_server.url, stream, str(outfile)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while len(outfile.read_bytes().splitlines()) < total // 5:
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "first worker processed too little"
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        first.stderr.close()
    before = len(set(outfile.read_bytes().splitlines()))
    assert before < total, "the first worker finished before it was killed"
    assert pending(client, stream, "redis-crash-test") > 0  # it died holding entries

    second = subprocess.Popen([sys.executable, script, redis_server.url, stream, str(outfile)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            done = {int(x) for x in outfile.read_bytes().splitlines()}
            if len(done) == total and pending(client, stream, "redis-crash-test") == 0:
                break
            assert second.poll() is None, second.stderr.read().decode()
            assert time.monotonic() < deadline, (
                f"processed {len(done)}/{total}, "
                f"pending {pending(client, stream, 'redis-crash-test')}")
            time.sleep(0.05)
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0
    finally:
        if second.poll() is None:
            second.kill()
        second.stderr.close()
    assert done == set(range(total))  # every entry at least once
    assert pending(client, stream, "redis-crash-test") == 0


@pytest.mark.slow
async def test_server_restart_during_a_run_reconnects_and_finishes(redis_server_factory, stream,
                                                                  caplog):
    server = redis_server_factory()
    app = make_app(server, stream_batch_size=100)
    ch = app.redis_channel(stream, value_serializer="json")
    seen = []

    @app.agent(ch)
    async def collect(entries):
        async for value in entries:
            seen.append(value["i"])
            if value["i"] % 100 == 0:
                await asyncio.sleep(0.01)

    client = server.client()
    async with running(app):
        await (await ch.send_batch([{"i": i} for i in range(1000)]))
        await wait_until(lambda: len(seen) >= 200, what="first values")
        caplog.set_level(logging.INFO, logger="sabot.channels.redis")
        await asyncio.to_thread(server.restart, keep_data=True, down_for=0.3)
        # Sent after the restart, through the same (reconnecting) producer.
        await (await ch.send_batch([{"i": i} for i in range(1000, 1500)]))
        await wait_until(lambda: set(seen) >= set(range(1500)), timeout=20, what="every value")
        client = server.client()
        await wait_until(lambda: pending(client, stream, app.id) == 0, what="XACK")
    assert set(seen) == set(range(1500))
    assert len(seen) == 1500  # nothing delivered (so nothing acknowledged) twice
    assert "lost the connection" in caplog.text and "reconnected" in caplog.text


@pytest.mark.slow
async def test_server_restart_that_lost_its_data_recreates_the_group(redis_server_factory,
                                                                     stream):
    server = redis_server_factory()
    app = make_app(server)
    ch = app.redis_channel(stream, value_serializer="json")
    seen = collector(app, ch)
    async with running(app):
        await (await ch.send_batch([{"i": i} for i in range(100)]))
        await wait_until(lambda: len(seen) == 100, what="values before the restart")
        await asyncio.to_thread(server.restart, keep_data=False)
        # The stream and its group are gone; the reader creates them again.
        await (await ch.send_batch([{"i": i} for i in range(100, 200)]))
        await wait_until(lambda: len(seen) == 200, timeout=15, what="values after the restart")
        client = server.client()
        await wait_until(lambda: pending(client, stream, app.id) == 0, what="XACK")
    assert [v["i"] for v in seen] == list(range(200))


# -- connections and credentials ---------------------------------------------

async def test_password_right_round_trips(redis_auth_server, stream):
    app = make_app(redis_auth_server)
    got = collector(app, app.redis_channel(stream, value_serializer="raw"))
    async with running(app):
        await (await app.redis_channel(stream).send(value=b"secret-ok"))
        await wait_until(lambda: got, what="the value")
    assert got == [b"secret-ok"]


@pytest.mark.parametrize("which", ["wrong", "missing"])
async def test_password_wrong_is_a_clear_error_that_hides_it(redis_auth_server, stream,
                                                            caplog, which):
    url = (redis_auth_server.url_with_password("not-the-password") if which == "wrong"
           else redis_auth_server.url_without_password)
    app = sabot.App(f"auth-{which}", redis_url=url, broker_connect_timeout=2.0)
    app.redis_channel(stream)
    transport = redis_transport(app)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthenticationError) as info:
        await transport.check_connection()
    message = str(info.value)
    assert "\n" not in message and "credentials" in message
    assert str(redis_auth_server.port) in message
    for text in (message, repr(transport), repr(app), caplog.text):
        assert "not-the-password" not in text
        assert redis_auth_server.password not in text
    assert info.value.retryable is False
    await transport.stop()


def test_url_forms_and_repr(redis_server):
    from sabot.channels.redis import RedisTransport
    app = sabot.App("urls")
    for url in ("redis://127.0.0.1:6390/3", "rediss://user:pw-xyz@example.com:6380/1",
                "redis://:pw-abc@localhost"):
        transport = RedisTransport(app, url)
        assert "pw-" not in repr(transport)
    kwargs = RedisTransport(app, "redis://u:p@h:7000/5").client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"], kwargs["port"]) == ("u", "p", 5, 7000)
    tls = RedisTransport(app, "rediss://h:7000/0").client.connection_pool
    assert "SSL" in tls.connection_class.__name__
    with pytest.raises(sabot.ConfigurationError):
        RedisTransport(app, "http://h:1/0")


async def test_unreachable_server_is_broker_unavailable(stream):
    from tests.servers.redis import free_port
    app = sabot.App("down", redis_url=f"redis://127.0.0.1:{free_port()}/0",
                    broker_connect_timeout=0.5)
    app.redis_channel(stream)
    with pytest.raises(BrokerUnavailable, match="cannot reach redis"):
        await redis_transport(app).check_connection()


async def test_example_pipeline(redis_server, monkeypatch):
    import importlib.util
    monkeypatch.setenv("SABOT_REDIS_URL", redis_server.url)
    monkeypatch.setenv("SABOT_DEMO_ORDERS", "500")
    path = os.path.join(HERE, "..", "..", "examples", "redis_pipeline.py")
    spec = importlib.util.spec_from_file_location("redis_pipeline_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    client = redis_server.client()
    for name in ("orders", "alerts", "ledger"):
        client.delete(name)
    ledger_rows = collector(example.app, example.ledger, kind="raw_batches")
    async with running(example.app):
        await wait_until(lambda: sum(len(b) for b in ledger_rows) == 500, what="ledger rows")
        await wait_until(lambda: pending(client, "orders", "redis-pipeline") == 0, what="XACK")
    expected = sum(1 for i in range(500) if (i * 7919) % 20_000 > 10_000)
    assert client.xlen("alerts") == expected
    assert client.xlen("orders") == 500


async def test_write_to_a_server_that_stays_down_fails_its_future(redis_server_factory, stream):
    server = redis_server_factory()
    app = make_app(server, broker_connect_timeout=0.5)
    ch = app.redis_channel(stream, value_serializer="json")
    assert await (await ch.send(value={"up": True}))  # an entry id
    server.stop()
    future = await ch.send(value={"up": False})
    with pytest.raises(BrokerUnavailable, match="cannot reach redis"):
        await asyncio.wait_for(future, 10)
    server.start()
    assert await (await ch.send(value={"up": "again"}))  # and it recovers
    await app.stop()


# -- stops and recovery races (regressions) ------------------------------------

async def test_dead_letter_retry_does_not_outlive_app_stop(redis_server, stream, monkeypatch):
    """A dead-letter write that keeps failing is retried while the app runs;
    at stop the retry is cancelled and nothing is written afterwards (no
    client is reopened). The source entry stays pending for the next worker."""
    from sabot.channels import dead_letters
    from sabot.exceptions import TransportError
    monkeypatch.setattr(dead_letters, "RETRY_POLICY",
                        dataclasses.replace(dead_letters.RETRY_POLICY, initial_delay=0.05,
                                            max_delay=0.05))
    client = redis_server.client()
    client.set(stream + ".dlq", b"x")  # every dead-letter XADD fails: WRONGTYPE
    app = make_app(redis_server, shutdown_timeout=0.3)

    @app.agent(app.redis_channel(stream))
    async def agent(entries):
        async for _ in entries:
            pass

    channel = app.redis_channel(stream)

    def retries():
        return channel.dead_letters.retrying

    await app.start()
    try:
        client.xadd(stream, {"value": b"{bad json"})
        await wait_until(retries, what="a dead-letter retry")
    finally:
        await app.stop()
    assert retries() == 0
    with pytest.raises(TransportError):
        redis_transport(app).client  # noqa: B018 - stopped: not reopened
    client.delete(stream + ".dlq")
    await asyncio.sleep(0.3)  # six retry periods
    assert not client.exists(stream + ".dlq")
    assert pending(client, stream, app.id) == 1


async def test_stop_after_a_failed_sink_write_does_not_wait_for_the_abandoned_batch(
        redis_server, stream, caplog):
    """A failed sink write abandons its input batch (it never finishes): a
    stop does not wait shutdown_timeout for it, and its entry stays pending."""
    client = redis_server.client()
    client.set(stream + ".out", b"not a stream")  # XADD -> WRONGTYPE
    client.xadd(stream, {"value": b'{"i":1}'})
    app = make_app(redis_server, shutdown_timeout=30.0)

    @app.agent(app.redis_channel(stream), sink=[app.redis_channel(stream + ".out")])
    async def forward(entries):
        async for value in entries:
            yield value

    await app.start()
    try:
        await wait_until(lambda: "delivery failed" in caplog.text, what="the failed write")
    finally:
        started = time.monotonic()
        await app.stop()
        elapsed = time.monotonic() - started
    assert pending(client, stream, app.id) == 1
    assert elapsed < 5, f"app.stop() took {elapsed:.1f}s"


def _intercept(monkeypatch, transport, match, between):
    """Run ``between()`` after the server answered the first command that
    ``match``\\ es with entries, before the reader gets the reply."""
    redis_client = transport.client
    original = redis_client.execute_command
    armed = [True]

    async def execute_command(*args, **options):
        reply = await original(*args, **options)
        if armed[0] and match(args, reply):
            armed[0] = False
            await between()
        return reply
    monkeypatch.setattr(redis_client, "execute_command", execute_command)
    return armed


@pytest.mark.parametrize("how", ["claim", "reconnect"])
async def test_entries_acked_while_a_recovery_read_is_on_its_way_are_not_delivered_again(
        redis_server, stream, monkeypatch, how):
    """The reply of a recovery read (XAUTOCLAIM of the worker's own idle
    entries, or XREADGROUP ... 0 after a reconnect) is built by the server
    while a batch is in the agent; the batch finishes and is XACKed on the
    ack connection before the reply is parsed. Those ids are no longer held,
    yet they must not go to a batch again."""
    import redis as redis_py
    client = redis_server.client()
    for i in range(10):
        client.xadd(stream, {"value": b'{"i":%d}' % i})
    app = make_app(redis_server, stream_batch_size=10,
                   redis_claim_idle_ms=30 if how == "claim" else 60000)
    entered, gate = asyncio.Event(), asyncio.Event()
    seen = []

    @app.agent(app.redis_channel(stream))
    async def agent(entries):
        async for value in entries:
            if not gate.is_set():
                entered.set()
                await gate.wait()
            seen.append(value["i"])

    async def finish_the_batch_and_its_xack():
        gate.set()
        await wait_until(lambda: pending(client, stream, app.id) == 0
                         and not reader.held, what="the XACK")

    def recovery_reply(args, reply):
        if how == "claim":
            return args[0] == "XAUTOCLAIM" and bool(reply[1])
        return args[0] == "XREADGROUP" and args[-1] == "0" and bool(reply and reply[0][1])

    await app.start()
    try:
        transport = redis_transport(app)
        reader = transport._readers[stream]
        await wait_until(entered.is_set, what="the batch in the agent")
        armed = _intercept(monkeypatch, transport, recovery_reply, finish_the_batch_and_its_xack)
        if how == "reconnect":
            original = transport.client.execute_command
            lose = [True]

            async def lose_the_next_read(*args, **options):
                if lose[0] and args[0] == "XREADGROUP" and args[-1] == ">":
                    lose[0] = False
                    raise redis_py.ConnectionError("connection lost (test)")
                return await original(*args, **options)
            monkeypatch.setattr(transport.client, "execute_command", lose_the_next_read)
        await wait_until(lambda: not armed[0], what="the recovery read")
        await wait_until(lambda: len(seen) >= 10, what="the batch")
        await asyncio.sleep(0.2)  # a second delivery would be under way by now
    finally:
        await app.stop()
    assert seen == list(range(10))
    assert pending(client, stream, app.id) == 0


# -- sends left behind by a script ---------------------------------------------

def _send_and_return(url, stream, n, *extra):
    return subprocess.run(
        [sys.executable, os.path.join(HERE, "send_and_return.py"), url, unique("script"),
         stream, str(n), *map(str, extra)],
        capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(HERE)))


def test_sends_still_queued_when_a_script_returns_are_written(redis_server, stream):
    proc = _send_and_return(redis_server.url, stream, 10_000)
    assert proc.returncode == 0, proc.stderr
    assert redis_server.client().xlen(stream) == 10_000


def test_sends_that_cannot_be_written_at_exit_are_reported_with_a_count(
        redis_server_factory, stream):
    server = redis_server_factory()
    proc = _send_and_return(server.url, stream, 500, server.proc.pid)
    assert proc.returncode == 0, proc.stderr
    assert "499 of 499 sends still pending when the event loop closed could not be written" \
        in proc.stderr, proc.stderr
