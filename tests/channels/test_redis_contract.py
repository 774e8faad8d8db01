"""Adversarial contract tests for the Redis Streams transport (issue 5).

Written independently of tests/channels/test_redis.py, against the public API
(``app.redis_channel``, ``App(broker="redis://...")``, agents, sinks) and real
redis-server processes from tests/servers/redis.py. Every claim about
acknowledgement is checked on the server itself (XPENDING, XINFO, XRANGE):

- nothing is acknowledged before every subscribed agent (every instance,
  every ``take`` buffer, every sink write) is finished with it;
- nothing processed is lost, and nothing is delivered twice, across a server
  restart, a SIGKILLed worker, or a graceful stop;
- every kind of undecodable entry is dead-lettered and the worker goes on;
- a slow agent stops the reads (the pending list stays bounded);
- bad credentials and dead servers fail fast with one line, and secrets never
  leak into reprs, errors or logs.
"""
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

import sabot
from sabot.exceptions import AuthenticationError, BrokerUnavailable
from tests.channels.helpers import running, unique, wait_until

pytestmark = pytest.mark.redis

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- helpers --------------------------------------------------------------------

@pytest.fixture
def stream():
    return unique("c")


def make_app(server, app_id=None, **settings):
    settings.setdefault("broker_connect_timeout", 3.0)
    return sabot.App(app_id or unique("capp"), redis_url=server.url, **settings)


def pending_count(client, stream, group):
    """XPENDING's count; -1 while the group does not exist yet."""
    import redis
    try:
        return client.xpending(stream, group)["pending"]
    except redis.ResponseError as exc:
        if str(exc).startswith("NOGROUP"):
            return -1
        raise


def pending_ids(client, stream, group):
    return {p["message_id"].decode()
            for p in client.xpending_range(stream, group, "-", "+", 1_000_000)}


def acked_ids(client, stream, group):
    """Ids the group has read and acknowledged (delivered, no longer pending)."""
    info = {g["name"].decode(): g for g in client.xinfo_groups(stream)}[group]
    last = info["last-delivered-id"].decode()
    delivered = {eid.decode() for eid, _ in client.xrange(stream, "-", last)}
    return delivered - pending_ids(client, stream, group)


def preload(client, stream, values, field=b"value"):
    """XADD ``values`` (bytes) with redis-py; returns the entry ids in order."""
    pipe = client.pipeline(transaction=False)
    for v in values:
        pipe.xadd(stream, {field: v})
    return [eid.decode() for eid in pipe.execute()]


def json_bytes(i):
    return b'{"i":%d}' % i


# -- acknowledgement waits for every consumer -----------------------------------

async def test_concurrency_n_acks_a_batch_only_when_all_its_values_are_finished(
        redis_server, stream):
    client = redis_server.client()
    ids = preload(client, stream, [json_bytes(i) for i in range(30)])
    app = make_app(redis_server, stream_batch_size=10)
    gates = {b: asyncio.Event() for b in range(3)}
    holding = []
    seen = []

    @app.agent(app.redis_channel(stream), concurrency=3)
    async def worker(entries):
        async for value in entries:
            holding.append(value["i"])
            await gates[value["i"] // 10].wait()
            seen.append(value["i"])

    async with running(app):
        # The three instances share the values of the first batch.
        await wait_until(lambda: len(holding) == 3, what="three values in hand")
        assert sorted(holding) == [0, 1, 2]
        assert pending_count(client, stream, app.id) == 30
        # The first batch's values finish; the instances move on to the
        # second batch and wait: exactly the first ten ids are acknowledged.
        gates[0].set()
        await wait_until(lambda: pending_count(client, stream, app.id) == 20, what="XACK")
        assert acked_ids(client, stream, app.id) == set(ids[:10])
        gates[1].set()
        gates[2].set()
        await wait_until(lambda: pending_count(client, stream, app.id) == 0, what="XACK all")
    assert sorted(seen) == list(range(30))


async def test_two_agents_at_different_speeds_ack_the_slower_ones_progress(redis_server,
                                                                            stream):
    client = redis_server.client()
    ids = preload(client, stream, [json_bytes(i) for i in range(20)])
    app = make_app(redis_server, stream_batch_size=5)
    ch = app.redis_channel(stream)
    fast, slow = [], []
    allowed = [0]

    @app.agent(ch, name="fast")
    async def fast_agent(entries):
        async for value in entries:
            fast.append(value["i"])

    @app.agent(ch, name="slow")
    async def slow_agent(entries):
        async for value in entries:
            while value["i"] >= allowed[0]:
                await asyncio.sleep(0.01)
            slow.append(value["i"])

    async with running(app):
        await wait_until(lambda: len(fast) == 20, what="the fast agent")
        await asyncio.sleep(0.3)
        assert pending_count(client, stream, app.id) == 20
        # The slow agent finishes 7 values: batch 0 (ids 0-4) is done, batch 1
        # is only partly done and must stay pending.
        allowed[0] = 7
        await wait_until(lambda: len(slow) == 7, what="seven slow values")
        await wait_until(lambda: pending_count(client, stream, app.id) == 15, what="XACK 1")
        await asyncio.sleep(0.3)
        assert acked_ids(client, stream, app.id) == set(ids[:5])
        allowed[0] = 20
        await wait_until(lambda: pending_count(client, stream, app.id) == 0, what="XACK all")
    assert fast == slow == list(range(20))


async def test_take_within_holds_buffered_entries_unacknowledged(redis_server, stream):
    client = redis_server.client()
    ids = preload(client, stream, [json_bytes(i) for i in range(7)])
    app = make_app(redis_server, stream_batch_size=1)
    chunks = []
    gate = asyncio.Event()

    @app.agent(app.redis_channel(stream))
    async def grouped(entries):
        async for chunk in entries.take(5, within=1.5):
            chunks.append([v["i"] for v in chunk])
            if len(chunks) == 1:
                await gate.wait()

    async with running(app):
        await wait_until(lambda: chunks, what="the first chunk")
        await asyncio.sleep(0.3)
        assert pending_count(client, stream, app.id) == 7  # 5 in hand, 2 buffered
        gate.set()
        # The first five are finished; the other two wait in take's buffer.
        await wait_until(lambda: pending_count(client, stream, app.id) == 2, what="XACK 5")
        assert acked_ids(client, stream, app.id) == set(ids[:5])
        assert len(chunks) == 1
        await wait_until(lambda: len(chunks) == 2, what="the window to close")
        await wait_until(lambda: pending_count(client, stream, app.id) == 0, what="XACK all")
    assert chunks == [[0, 1, 2, 3, 4], [5, 6]]


async def test_failing_sink_write_leaves_the_input_pending_for_the_next_worker(redis_server,
                                                                                stream):
    client = redis_server.client()
    out = stream + ".out"
    client.set(out, b"not a stream")  # every XADD to it fails with WRONGTYPE
    app_id = unique("sinkfail")
    preload(client, stream, [json_bytes(i) for i in range(10)])
    # shutdown_timeout: a stop currently waits that long for the abandoned
    # input (a defect reported separately); keep the test fast.
    app = make_app(redis_server, app_id, shutdown_timeout=1.0)
    seen = []

    @app.agent(app.redis_channel(stream), sink=[app.redis_channel(out)])
    async def forward(entries):
        async for value in entries:
            seen.append(value["i"])
            yield {"o": value["i"]}

    async with running(app):
        await wait_until(lambda: len(seen) == 10, what="the agent to run")
        await asyncio.sleep(0.5)
        # The output never reached Redis: the input must not be acknowledged.
        assert pending_count(client, stream, app_id) == 10
    assert pending_count(client, stream, app_id) == 10

    client.delete(out)
    second = make_app(redis_server, app_id, redis_claim_idle_ms=100)
    again = []

    @second.agent(second.redis_channel(stream), sink=[second.redis_channel(out)])
    async def forward2(entries):
        async for value in entries:
            again.append(value["i"])
            yield {"o": value["i"]}

    async with running(second):
        await wait_until(lambda: pending_count(client, stream, app_id) == 0, what="XACK")
    assert sorted(again) == list(range(10))
    assert sorted(int(f[b"value"][5:-1]) for _, f in client.xrange(out)) == list(range(10))


async def test_sink_output_is_stored_before_its_input_is_acked(redis_server, stream):
    # Every acknowledged input must have its output already in the sink stream.
    client = redis_server.client()
    out = stream + ".out"
    preload(client, stream, [json_bytes(i) for i in range(300)])
    app = make_app(redis_server, stream_batch_size=7)
    violations = []

    @app.agent(app.redis_channel(stream), sink=[app.redis_channel(out)])
    async def forward(entries):
        async for value in entries:
            yield {"o": value["i"]}

    async def audit():
        while True:
            try:
                written = client.xlen(out)
                acked = len(acked_ids(client, stream, app.id))
            except Exception:  # the group does not exist yet
                acked = 0
            if acked > written:
                violations.append((acked, written))
            await asyncio.sleep(0.005)

    async with running(app):
        task = asyncio.ensure_future(audit())
        await wait_until(lambda: pending_count(client, stream, app.id) == 0
                         and client.xlen(out) == 300, what="everything")
        task.cancel()
    assert violations == []


# -- restart, crash, stop --------------------------------------------------------

class Monitor:
    """Records every XACK the server executes (MONITOR through redis-py)."""

    def __init__(self, server):
        import threading
        self.acks = []
        self._client = server.client()
        self._mon = self._client.monitor()
        self._mon.connection.send_command("MONITOR")
        self._mon.connection.read_response()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for cmd in self._mon.listen():
                parts = cmd["command"].split(" ")
                if parts and parts[0].upper() == "XACK":
                    self.acks.extend(parts[3:])
        except Exception:
            pass


async def test_server_restart_mid_batch_no_loss_no_double_delivery(redis_server_factory,
                                                                    stream):
    server = redis_server_factory()
    client = server.client()
    ids = preload(client, stream, [json_bytes(i) for i in range(50)])
    app = make_app(server, stream_batch_size=10)
    seen = []
    gate = asyncio.Event()

    @app.agent(app.redis_channel(stream))
    async def held(entries):
        async for value in entries:
            if value["i"] == 15:
                await gate.wait()  # holds the second batch across the restart
            seen.append(value["i"])

    async with running(app):
        await wait_until(lambda: len(seen) == 15, what="the agent to hold batch 2")
        await asyncio.sleep(0.2)
        await asyncio.to_thread(server.restart, keep_data=True, down_for=0.3)
        client = server.client()
        await asyncio.sleep(1.0)  # recovery runs (own pending, XAUTOCLAIM) meanwhile
        gate.set()
        await wait_until(lambda: len(seen) >= 50, timeout=15, what="every value")
        await wait_until(lambda: pending_count(client, stream, app.id) == 0, what="XACK")
        await asyncio.sleep(0.5)
    assert sorted(seen) == list(range(50))
    assert len(seen) == 50, "an entry held across the restart was delivered twice"
    assert acked_ids(client, stream, app.id) == set(ids)


async def test_server_restart_mid_stream_each_id_acked_once(redis_server_factory, stream):
    server = redis_server_factory()
    client = server.client()
    ids = preload(client, stream, [json_bytes(i) for i in range(3000)])
    monitor = Monitor(server)
    app = make_app(server, stream_batch_size=50)
    seen = []

    @app.agent(app.redis_channel(stream))
    async def slowish(entries):
        async for value in entries:
            seen.append(value["i"])
            if value["i"] % 50 == 0:
                await asyncio.sleep(0.01)

    async with running(app):
        await wait_until(lambda: len(seen) >= 500, what="first values")
        await asyncio.to_thread(server.restart, keep_data=True, down_for=0.2)
        client = server.client()
        await wait_until(lambda: len(set(seen)) == 3000, timeout=20, what="every value")
        await wait_until(lambda: pending_count(client, stream, app.id) == 0, what="XACK")
    assert set(seen) == set(range(3000))
    # The server does not keep the ack history across the restart, but a
    # second delivery of an entry would show as a second XACK of its id
    # after the restart; before it, every id is acked at most once.
    from collections import Counter
    twice = [i for i, n in Counter(monitor.acks).items() if n > 1]
    dupes_seen = len(seen) - len(set(seen))
    assert len(twice) <= dupes_seen


WORKER = textwrap.dedent('''
    import asyncio, os, sys, time
    sys.path.insert(0, {root!r})
    import sabot
    from sabot.worker import Worker
    url, stream, outfile, app_id = sys.argv[1:5]
    app = sabot.App(app_id, redis_url=url, redis_claim_idle_ms=300,
                    stream_batch_size=20, stream_buffer_maxsize=40)
    fd = os.open(outfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @app.agent(app.redis_channel(stream), name="record")
    async def record(entries):
        async for value in entries:
            os.write(fd, b"%d %d\\n" % (os.getpid(), value["i"]))
            await asyncio.sleep(0.002)

    # Imported and ready; all three start reading together on "go".
    open(outfile + ".ready.%d" % os.getpid(), "w").close()
    while not os.path.exists(outfile + ".go"):
        time.sleep(0.01)
    sys.exit(Worker(app, loglevel="warning").execute())
''')


def test_sigkill_two_of_three_workers_the_survivor_claims_everything(redis_server, stream,
                                                                      tmp_path):
    total = 1500
    client = redis_server.client()
    preload(client, stream, [json_bytes(i) for i in range(total)])
    app_id = unique("trio")
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=ROOT))
    outfile = tmp_path / "out.txt"
    outfile.touch()

    def lines():
        return [tuple(map(int, ln.split())) for ln in outfile.read_bytes().splitlines()]

    procs = [subprocess.Popen([sys.executable, str(script), redis_server.url, stream,
                               str(outfile), app_id],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(3)]
    try:
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("out.txt.ready.*"))) < 3:
            for p in procs:
                assert p.poll() is None, p.stderr.read().decode()
            assert time.monotonic() < deadline, "workers did not all start"
            time.sleep(0.01)
        (tmp_path / "out.txt.go").touch()
        while len(lines()) < 300 or len({pid for pid, _ in lines()}) < 3:
            assert time.monotonic() < deadline, "no progress by all three"
            time.sleep(0.01)
        for p in procs[:2]:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        consumers = {c["name"].decode(): c["pending"]
                     for c in client.xinfo_consumers(stream, app_id)}
        dead = {str(p.pid) for p in procs[:2]}
        held_by_dead = sum(n for name, n in consumers.items()
                           if name.rsplit("-", 1)[-1] in dead)
        assert held_by_dead > 0, consumers  # they died holding entries
        deadline = time.monotonic() + 30
        while True:
            done = {i for _, i in lines()}
            if len(done) == total and pending_count(client, stream, app_id) == 0:
                break
            assert procs[2].poll() is None, procs[2].stderr.read().decode()
            assert time.monotonic() < deadline, (
                f"processed {len(done)}/{total}, pending {pending_count(client, stream, app_id)}")
            time.sleep(0.05)
        procs[2].send_signal(signal.SIGTERM)
        assert procs[2].wait(15) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stderr.close()
    assert {i for _, i in lines()} == set(range(total))
    assert pending_count(client, stream, app_id) == 0


async def test_graceful_stop_acks_exactly_what_was_processed(redis_server, stream):
    client = redis_server.client()
    preload(client, stream, [json_bytes(i) for i in range(5000)])
    app = make_app(redis_server, stream_batch_size=20, shutdown_timeout=10.0,
                   stream_buffer_maxsize=200)
    started, finished = [], []
    id_of = {}

    @app.agent(app.redis_channel(stream))
    async def work(entries):
        async for event in entries.events():
            started.append(event.value["i"])
            id_of[event.value["i"]] = event.position[1]
            await asyncio.sleep(0.001)
            finished.append(event.value["i"])

    await app.start()
    await wait_until(lambda: len(finished) >= 200, what="some progress")
    await app.stop()
    done_ids = {id_of[i] for i in finished}
    acked = acked_ids(client, stream, app.id)
    assert acked <= done_ids, "an entry was acknowledged that no agent finished"
    # Reading stopped first, so everything read was finished and acknowledged.
    assert acked == done_ids
    assert pending_count(client, stream, app.id) == 0
    assert len(finished) < 5000


async def test_graceful_stop_with_a_stuck_agent_acks_nothing_unfinished(redis_server, stream):
    client = redis_server.client()
    ids = preload(client, stream, [json_bytes(i) for i in range(40)])
    app = make_app(redis_server, stream_batch_size=10, shutdown_timeout=0.5)
    finished = []

    @app.agent(app.redis_channel(stream))
    async def stuck(entries):
        async for value in entries:
            if value["i"] == 25:
                await asyncio.Event().wait()  # never finishes
            finished.append(value["i"])

    await app.start()
    await wait_until(lambda: len(finished) == 25, what="25 values")
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await asyncio.wait_for(app.stop(), 15)
    assert time.monotonic() - started < 10
    assert acked_ids(client, stream, app.id) == set(ids[:20])
    assert pending_ids(client, stream, app.id) >= set(ids[20:30])


async def test_stop_while_the_server_is_down_does_not_hang(redis_server_factory, stream):
    server = redis_server_factory()
    app = make_app(server, shutdown_timeout=2.0, broker_connect_timeout=1.0)
    ch = app.redis_channel(stream)
    seen = []

    @app.agent(ch)
    async def collect(entries):
        async for value in entries:
            seen.append(value)

    await app.start()
    await (await ch.send(value={"a": 1}))
    await wait_until(lambda: seen, what="the value")
    server.stop(kill=True)
    await asyncio.sleep(0.5)
    started = time.monotonic()
    await asyncio.wait_for(app.stop(), 20)
    assert time.monotonic() - started < 8
    server.start()


# -- dead letters ----------------------------------------------------------------

async def test_every_kind_of_malformed_json_entry_is_dead_lettered(redis_server, stream):
    client = redis_server.client()
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    app = make_app(redis_server)
    got = []

    @app.agent(app.redis_channel(stream, schema=schema, key_serializer="json"))
    async def rows(entries):
        async for value in entries:
            got.append(value)

    bad = {}
    async with running(app):
        bad["json"] = client.xadd(stream, {"value": b"{nope"}).decode()
        client.xadd(stream, {"value": b'{"id":1,"name":"a"}'})
        bad["schema"] = client.xadd(stream, {"value": b'{"id":"x","name":2}'}).decode()
        bad["novalue"] = client.xadd(stream, {"val": b'{"id":9}'}).decode()
        bad["utf8"] = client.xadd(stream, {"value": b"\xff\xfe"}).decode()
        bad["key"] = client.xadd(stream, {"value": b'{"id":3,"name":"c"}',
                                          "key": b"{bad key"}).decode()
        client.xadd(stream, {"value": b'{"id":2,"name":"b"}'})
        await wait_until(lambda: client.exists(stream + ".dlq")
                         and client.xlen(stream + ".dlq") == len(bad), what="dead letters")
        await wait_until(lambda: pending_count(client, stream, app.id) == 0, what="XACK")
        # The worker goes on.
        client.xadd(stream, {"value": b'{"id":4,"name":"d"}'})
        await wait_until(lambda: len(got) == 3, what="values after the bad ones")
    assert [d["id"] for d in got] == [1, 2, 4]
    dead = {f[b"sabot-source-id"].decode(): f for _, f in client.xrange(stream + ".dlq")}
    assert set(dead) == set(bad.values())
    for f in dead.values():
        assert f[b"sabot-error"] and f[b"sabot-source"].decode() == stream
    assert dead[bad["json"]][b"value"] == b"{nope"
    assert dead[bad["utf8"]][b"value"] == b"\xff\xfe"


async def test_every_kind_of_malformed_arrow_entry_is_dead_lettered(redis_server, stream):
    client = redis_server.client()
    schema = pa.schema([("x", pa.int64())])
    good = pa.record_batch({"x": pa.array([1, 2, 3], pa.int64())})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(good)
    ipc = sink.getvalue().to_pybytes()
    other = pa.BufferOutputStream()
    wrong = pa.record_batch({"y": pa.array(["a"])})
    with pa.ipc.new_stream(other, wrong.schema) as writer:
        writer.write_batch(wrong)

    app = make_app(redis_server)
    got = []

    @app.agent(app.redis_channel(stream, value_serializer="arrow", schema=schema))
    async def batches(entries):
        async for rb in entries.batches():
            got.append(rb.to_pylist())

    bad = {}
    async with running(app):
        bad["truncated"] = client.xadd(stream, {"value": ipc[: len(ipc) // 2]}).decode()
        client.xadd(stream, {"value": ipc})
        bad["garbage"] = client.xadd(stream, {"value": b"\x00" * 3 + b"junk"}).decode()
        bad["empty"] = client.xadd(stream, {"value": b""}).decode()
        bad["schema"] = client.xadd(stream, {"value": other.getvalue().to_pybytes()}).decode()
        bad["novalue"] = client.xadd(stream, {"other": b"x"}).decode()
        client.xadd(stream, {"value": ipc})
        await wait_until(lambda: client.exists(stream + ".dlq")
                         and client.xlen(stream + ".dlq") == len(bad), what="dead letters")
        await wait_until(lambda: pending_count(client, stream, app.id) == 0, what="XACK")
        client.xadd(stream, {"value": ipc})
        await wait_until(lambda: len(got) == 3, what="good batches")
    assert got == [[{"x": 1}, {"x": 2}, {"x": 3}]] * 3
    dead = {f[b"sabot-source-id"].decode(): f for _, f in client.xrange(stream + ".dlq")}
    assert set(dead) == set(bad.values())
    assert dead[bad["truncated"]][b"value"] == ipc[: len(ipc) // 2]


async def test_failing_dead_letter_write_keeps_the_entry_pending_until_it_succeeds(
        redis_server, stream):
    client = redis_server.client()
    client.set(stream + ".dlq", b"blocks XADD")  # WRONGTYPE for every dead letter
    app = make_app(redis_server)
    got = []

    @app.agent(app.redis_channel(stream))
    async def values(entries):
        async for value in entries:
            got.append(value)

    async with running(app):
        bad_id = client.xadd(stream, {"value": b"{bad"}).decode()
        await asyncio.sleep(0.3)
        client.xadd(stream, {"value": b'{"ok":1}'})
        await wait_until(lambda: got == [{"ok": 1}], what="the worker to go on")
        await asyncio.sleep(1.5)  # a retry or two fail as well
        assert bad_id in pending_ids(client, stream, app.id)
        client.delete(stream + ".dlq")
        await wait_until(lambda: pending_count(client, stream, app.id) == 0, timeout=10,
                         what="the dead letter written and the entry acked")
    dead = client.xrange(stream + ".dlq")
    assert [f[b"sabot-source-id"].decode() for _, f in dead][:1] == [bad_id]


# -- trimming, backpressure ----------------------------------------------------

async def test_maxlen_trims_and_a_reader_behind_it_acks_what_is_gone(redis_server, stream):
    client = redis_server.client()
    app_id = unique("trim")
    client.xgroup_create(stream, app_id, id="0", mkstream=True)
    preload(client, stream, [json_bytes(i) for i in range(20)])
    # A consumer that dies holding all 20.
    assert len(client.xreadgroup(app_id, "ghost", {stream: ">"})[0][1]) == 20
    producer = make_app(redis_server)
    ch = producer.redis_channel(stream, value_serializer="raw", maxlen=5)
    await (await ch.send_batch([json_bytes(100 + i) for i in range(400)]))
    await producer.stop()
    assert client.xlen(stream) < 200
    assert client.xrange(stream, count=1)[0][1][b"value"] != json_bytes(0)

    app = make_app(redis_server, app_id, redis_claim_idle_ms=100)
    got = []

    @app.agent(app.redis_channel(stream))
    async def read(entries):
        async for value in entries:
            got.append(value["i"])

    length = client.xlen(stream)
    async with running(app):
        await wait_until(lambda: pending_count(client, stream, app_id) == 0
                         and len(got) == length, what="trimmed ids forgotten, rest read")
    assert all(i >= 100 for i in got)


async def test_slow_agent_stops_xreadgroup_pending_stays_bounded(redis_server, stream):
    client = redis_server.client()
    preload(client, stream, [json_bytes(i) for i in range(20000)])
    app = make_app(redis_server, stream_batch_size=100, stream_buffer_maxsize=200)
    seen = []
    gate = asyncio.Event()

    @app.agent(app.redis_channel(stream))
    async def slow(entries):
        async for value in entries:
            seen.append(value["i"])
            await gate.wait()

    async with running(app):
        await wait_until(lambda: seen, what="the first value")
        await asyncio.sleep(1.0)
        first = pending_count(client, stream, app.id)
        await asyncio.sleep(1.0)
        second = pending_count(client, stream, app.id)
        assert second == first, "XREADGROUP kept fetching for a stuck agent"
        assert second <= 1000, f"{second} entries read ahead of a stuck agent"
        info = {g["name"].decode(): g for g in client.xinfo_groups(stream)}[app.id]
        assert info["pending"] == second
        gate.set()
        await wait_until(lambda: len(seen) == 20000, timeout=30, what="everything")
        await wait_until(lambda: pending_count(client, stream, app.id) == 0, what="XACK")
    assert seen == list(range(20000))


# -- connection errors and secrets ---------------------------------------------

async def test_wrong_password_fails_app_start_fast_with_one_line(redis_auth_server, stream,
                                                                 caplog):
    url = redis_auth_server.url_with_password("hunter2-wrong", username="default")
    app = sabot.App(unique("badpw"), redis_url=url, broker_connect_timeout=5.0)

    @app.agent(app.redis_channel(stream))
    async def never(entries):
        async for _ in entries:
            pass

    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        await asyncio.wait_for(app.start(), 15)
    elapsed = time.monotonic() - started
    await asyncio.wait_for(app.stop(), 10)
    assert elapsed < 2.0, "an authentication failure is not worth retrying"
    message = str(info.value)
    assert "\n" not in message and str(redis_auth_server.port) in message
    assert "'default'" in message
    for text in (message, repr(app), caplog.text):
        assert "hunter2-wrong" not in text
        assert redis_auth_server.password not in text


async def test_unreachable_server_fails_start_within_the_connect_timeout(stream):
    from tests.servers.redis import free_port
    app = sabot.App(unique("down"), redis_url=f"redis://:pw-zz9@127.0.0.1:{free_port()}/0",
                    broker_connect_timeout=1.0)

    @app.agent(app.redis_channel(stream))
    async def never(entries):
        async for _ in entries:
            pass

    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        await asyncio.wait_for(app.start(), 15)
    assert time.monotonic() - started < 3.0
    await asyncio.wait_for(app.stop(), 10)
    assert "\n" not in str(info.value) and "pw-zz9" not in str(info.value)


async def test_silent_server_fails_start_within_the_connect_timeout(stream):
    # Accepts TCP connections and never answers: PING must time out.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    try:
        app = sabot.App(unique("mute"), redis_url=f"redis://127.0.0.1:{port}/0",
                        broker_connect_timeout=1.0)

        @app.agent(app.redis_channel(stream))
        async def never(entries):
            async for _ in entries:
                pass

        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as info:
            await asyncio.wait_for(app.start(), 15)
        assert time.monotonic() - started < 3.0
        assert "\n" not in str(info.value)
        await asyncio.wait_for(app.stop(), 10)
    finally:
        listener.close()


async def test_secrets_never_in_repr_errors_or_logs_during_a_run(redis_server_factory,
                                                                stream, caplog):
    secret = "S3cr@t:pa/ss%"
    from urllib.parse import quote
    server = redis_server_factory(password=secret)
    url = f"redis://:{quote(secret, safe='')}@127.0.0.1:{server.port}/0"
    caplog.set_level(logging.DEBUG)
    app = sabot.App(unique("secret"), redis_url=url, broker_connect_timeout=1.0)
    ch = app.redis_channel(stream)
    got = []

    @app.agent(ch)
    async def collect(entries):
        async for value in entries:
            got.append(value)

    texts = [repr(app), repr(ch)]
    async with running(app):
        await (await ch.send(value={"a": 1}))
        await wait_until(lambda: got, what="the value")
        transport = next(t for t in app.transports if t.scheme == "redis")
        texts += [repr(transport), transport.label, str(transport.status())]
        # Lose the server: the reconnect warnings and a failed write's error.
        server.stop(kill=True)
        future = await ch.send(value={"a": 2})
        with pytest.raises(BrokerUnavailable) as info:
            await asyncio.wait_for(future, 10)
        texts.append(str(info.value))
        server.start()
        await (await ch.send(value={"a": 3}))
        await wait_until(lambda: len(got) == 2, timeout=15, what="after the restart")
    texts.append(caplog.text)
    encoded = quote(secret, safe="")
    for text in texts:
        assert secret not in text and encoded not in text
        assert "S3cr" not in text


# -- connections dropped under load ------------------------------------------------

async def test_connections_killed_repeatedly_nothing_lost_nothing_twice(redis_server_factory,
                                                                        stream):
    server = redis_server_factory()
    client = server.client()
    total = 4000
    ids = preload(client, stream, [json_bytes(i) for i in range(total)])
    app = make_app(server, stream_batch_size=50)
    seen = []

    @app.agent(app.redis_channel(stream))
    async def work(entries):
        async for value in entries:
            seen.append(value["i"])
            if value["i"] % 25 == 0:
                await asyncio.sleep(0.002)

    admin = server.client()
    async with running(app):
        await wait_until(lambda: seen, what="the first value")
        kills = 0
        while len(set(seen)) < total and kills < 40:
            # Drops every normal client connection (ours too; redis-py reconnects).
            admin.client_kill_filter(_type="normal", skipme=True)
            kills += 1
            await asyncio.sleep(0.03)
        await wait_until(lambda: len(set(seen)) == total, timeout=20, what="every value")
        await wait_until(lambda: pending_count(client, stream, app.id) == 0, timeout=10,
                         what="XACK")
    assert kills >= 3
    # Nothing lost, and nothing delivered twice by the one worker: recovery
    # reads skip ids held here and ids acknowledged while they were on their way.
    assert set(seen) == set(range(total)), "lost"
    assert sorted(seen) == list(range(total)), "delivered twice"
    assert acked_ids(client, stream, app.id) == set(ids)


async def test_stop_while_a_dead_letter_write_keeps_failing(redis_server, stream):
    client = redis_server.client()
    client.set(stream + ".dlq", b"blocks XADD")
    app = make_app(redis_server, shutdown_timeout=1.0)
    got = []

    @app.agent(app.redis_channel(stream))
    async def values(entries):
        async for value in entries:
            got.append(value)

    await app.start()
    bad_id = client.xadd(stream, {"value": b"{bad"}).decode()
    good_id = client.xadd(stream, {"value": b'{"ok":1}'}).decode()
    await wait_until(lambda: got, what="the good value")
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await asyncio.wait_for(app.stop(), 15)
    assert time.monotonic() - started < 5
    assert bad_id in pending_ids(client, stream, app.id)  # not lost
    assert good_id in acked_ids(client, stream, app.id) | pending_ids(client, stream, app.id)
    client.delete(stream + ".dlq")

    second = make_app(redis_server, app.id, redis_claim_idle_ms=100)
    again = []

    @second.agent(second.redis_channel(stream))
    async def values2(entries):
        async for value in entries:
            again.append(value)

    async with running(second):
        await wait_until(lambda: pending_count(client, stream, app.id) == 0, what="XACK")
    # A set: the stopped app's dead-letter retry currently outlives its stop
    # and may write it too (a defect reported separately).
    assert {f[b"sabot-source-id"].decode() for _, f in client.xrange(stream + ".dlq")} == {bad_id}


async def test_agent_error_dead_letter_is_stored_before_the_entry_is_acked(redis_server,
                                                                          stream):
    client = redis_server.client()
    client.set(stream + ".dlq", b"blocks XADD")  # the agent's dead letter fails first
    ids = preload(client, stream, [json_bytes(i) for i in range(6)])
    app = make_app(redis_server, stream_batch_size=1, shutdown_timeout=1.0)
    seen = []

    @app.agent(app.redis_channel(stream), on_error="dead_letter")
    async def picky(entries):
        async for value in entries:
            if value["i"] == 3:
                raise ValueError("three")
            seen.append(value["i"])

    channel = app.redis_channel(stream)
    async with running(app):
        await wait_until(lambda: len(seen) == 5, what="the other values")
        await wait_until(lambda: channel.dead_letters.retried >= 1, what="a failed retry")
        assert ids[3] in pending_ids(client, stream, app.id)
        # Counters count what was written: nothing yet.
        assert channel.dead_letters_sent == 0
        client.delete(stream + ".dlq")
        await wait_until(lambda: ids[3] not in pending_ids(client, stream, app.id),
                         timeout=40, what="the dead letter stored, then the entry acked")
        assert channel.dead_letters_sent == 1
    (dead,) = client.xrange(stream + ".dlq")
    assert dead[1][b"sabot-source-id"].decode() == ids[3]
    assert seen == [0, 1, 2, 4, 5]


@pytest.mark.parametrize("how", ["redis_url", "broker"])
async def test_wrong_password_via_broker_or_redis_url(redis_auth_server, stream, how):
    url = redis_auth_server.url_with_password("nope-" + how)
    kwargs = {how: url, "broker_connect_timeout": 5.0}
    app = sabot.App(unique("pw"), **kwargs)
    ch = app.topic(stream) if how == "broker" else app.redis_channel(stream)

    @app.agent(ch)
    async def never(entries):
        async for _ in entries:
            pass

    started = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        await asyncio.wait_for(app.start(), 15)
    assert time.monotonic() - started < 2.0
    await asyncio.wait_for(app.stop(), 10)
    assert "nope-" not in str(info.value) and "\n" not in str(info.value)


# -- slow sinks, stops under backpressure, groups, process agents, claims -----

async def test_stalled_sink_server_holds_the_input_until_the_write_lands(
        redis_server, redis_server_factory, stream):
    # The sink is a stream on a second server, frozen with SIGSTOP: its XADD
    # hangs, and the input must stay pending until the write is stored.
    other = redis_server_factory()
    client, oclient = redis_server.client(), other.client()
    out = stream + ".out"
    preload(client, stream, [json_bytes(i) for i in range(20)])
    sink_app = sabot.App(unique("sinkapp"), redis_url=other.url, broker_connect_timeout=8.0)
    sink = sink_app.redis_channel(out)
    await (await sink.send(value={"warm": 1}))  # connection made before the freeze
    app = make_app(redis_server, stream_batch_size=5)
    seen = []

    @app.agent(app.redis_channel(stream), sink=[sink])
    async def forward(entries):
        async for value in entries:
            seen.append(value["i"])
            yield value

    other.proc.send_signal(signal.SIGSTOP)
    try:
        async with running(app):
            await wait_until(lambda: len(seen) >= 5, what="values")
            await asyncio.sleep(1.5)
            assert pending_count(client, stream, app.id) == 20
            other.proc.send_signal(signal.SIGCONT)
            await wait_until(lambda: pending_count(client, stream, app.id) == 0, timeout=15,
                             what="XACK")
            assert oclient.xlen(out) >= 21
    finally:
        other.proc.send_signal(signal.SIGCONT)
        await sink_app.stop()
    written = {f[b"value"] for _, f in oclient.xrange(out)}
    assert {json_bytes(i) for i in range(20)} <= written


async def test_stop_under_backpressure_is_bounded_and_acks_only_finished(redis_server,
                                                                         stream):
    client = redis_server.client()
    preload(client, stream, [json_bytes(i) for i in range(20000)])
    app = make_app(redis_server, stream_batch_size=100, stream_buffer_maxsize=200,
                   shutdown_timeout=1.0)
    finished = []
    id_of = {}
    gate = asyncio.Event()

    @app.agent(app.redis_channel(stream))
    async def slow(entries):
        async for event in entries.events():
            id_of[event.value["i"]] = event.position[1]
            if event.value["i"] >= 50:
                await gate.wait()
            finished.append(event.value["i"])

    await app.start()
    await wait_until(lambda: len(finished) == 50, what="50 values")
    await asyncio.sleep(0.5)
    started = time.monotonic()
    await asyncio.wait_for(app.stop(), 20)
    assert time.monotonic() - started < 6
    acked = acked_ids(client, stream, app.id)
    assert acked <= {id_of[i] for i in finished}
    assert pending_count(client, stream, app.id) <= 1000


async def test_custom_groups_each_see_every_entry(redis_server, stream):
    client = redis_server.client()
    preload(client, stream, [json_bytes(i) for i in range(100)])
    apps, seen = [], {}
    for g in ("g1", "g2"):
        app = make_app(redis_server)  # same stream, different app ids and groups
        seen[g] = []

        @app.agent(app.redis_channel(stream, group=stream + g))
        async def read(entries, out=seen[g]):
            async for value in entries:
                out.append(value["i"])
        apps.append(app)
    async with running(*apps):
        await wait_until(lambda: len(seen["g1"]) == len(seen["g2"]) == 100, what="all")
        await wait_until(lambda: pending_count(client, stream, stream + "g1") == 0
                         and pending_count(client, stream, stream + "g2") == 0, what="XACK")
    assert seen["g1"] == seen["g2"] == list(range(100))
    assert {g["name"].decode() for g in client.xinfo_groups(stream)} == {stream + "g1",
                                                                          stream + "g2"}


async def test_process_agent_worker_sigkilled_mid_stream_loses_nothing(redis_server, stream,
                                                                      tmp_path):
    import json
    from tests.bridge import agents_fixture
    client = redis_server.client()
    out = stream + ".out"
    marker = str(tmp_path / "killed")
    values = [json_bytes(i) for i in range(200)]
    values[77] = b'{"i":77,"kill_marker":%s}' % json.dumps(marker).encode()
    preload(client, stream, values)
    app = make_app(redis_server, stream_batch_size=10)
    app.agent(app.redis_channel(stream), sink=[app.redis_channel(out)],
              executor="process")(agents_fixture.kill_once)
    async with running(app):
        await wait_until(lambda: os.path.exists(marker)
                         and pending_count(client, stream, app.id) == 0, timeout=40,
                         what="XACK of everything")
    got = {json.loads(f[b"value"])["i"] for _, f in client.xrange(out)}
    assert got == set(range(200))


async def test_one_slow_worker_claiming_its_own_entries_loses_nothing(redis_server, stream):
    client = redis_server.client()
    preload(client, stream, [json_bytes(i) for i in range(60)])
    app = make_app(redis_server, stream_batch_size=10, redis_claim_idle_ms=20)
    seen = []

    @app.agent(app.redis_channel(stream))
    async def slow(entries):
        async for value in entries:
            seen.append(value["i"])
            await asyncio.sleep(0.01)  # a batch takes 100 ms, five claim periods

    async with running(app):
        await wait_until(lambda: len(set(seen)) == 60
                         and pending_count(client, stream, app.id) == 0, what="everything")
        await asyncio.sleep(0.2)
    # Exactly once: claims of the worker's own entries skip those it still
    # holds and those it acknowledged while the claim was on its way.
    assert sorted(seen) == list(range(60))


async def test_claim_storm_three_workers_one_stopped_nothing_left(redis_server, stream):
    client = redis_server.client()
    total = 300
    preload(client, stream, [json_bytes(i) for i in range(total)])
    app_id = unique("storm")
    apps, seen = [], []
    for _ in range(3):
        app = make_app(redis_server, app_id, stream_batch_size=10, redis_claim_idle_ms=50,
                       stream_buffer_maxsize=20, shutdown_timeout=2.0)

        @app.agent(app.redis_channel(stream))
        async def work(entries):
            async for value in entries:
                seen.append(value["i"])
                await asyncio.sleep(0.01)
        apps.append(app)
    for app in apps:
        await app.start()
    try:
        await wait_until(lambda: len(set(seen)) >= total // 3, what="a third")
        await apps[0].stop()
        await wait_until(lambda: len(set(seen)) == total, timeout=30, what="everything")
        await wait_until(lambda: pending_count(client, stream, app_id) == 0, what="XACK")
    finally:
        for app in apps[1:]:
            await app.stop()
    assert set(seen) == set(range(total))  # duplicates allowed: idle < batch time


async def test_server_restart_with_a_sink_on_the_same_server(redis_server_factory, stream):
    # Reads, sink writes and XACKs all lose their connection at once; every
    # input ends acknowledged with its output stored.
    server = redis_server_factory()
    client = server.client()
    out = stream + ".out"
    ids = preload(client, stream, [json_bytes(i) for i in range(2000)])
    app = make_app(server, stream_batch_size=50, broker_connect_timeout=10.0)
    seen = []

    @app.agent(app.redis_channel(stream), sink=[app.redis_channel(out)])
    async def forward(entries):
        async for value in entries:
            seen.append(value["i"])
            if value["i"] % 50 == 0:
                await asyncio.sleep(0.01)
            yield value

    async with running(app):
        await wait_until(lambda: len(seen) >= 400, what="first values")
        await asyncio.to_thread(server.restart, keep_data=True, down_for=0.5)
        client = server.client()
        await wait_until(lambda: pending_count(client, stream, app.id) == 0
                         and len(set(seen)) == 2000, timeout=30, what="everything")
    assert {f[b"value"] for _, f in client.xrange(out)} == {json_bytes(i) for i in range(2000)}
    assert acked_ids(client, stream, app.id) == set(ids)


# -- a real worker stopped with SIGTERM; agent errors; oversized reads ------------

TERM_WORKER = textwrap.dedent('''
    import asyncio, os, sys
    sys.path.insert(0, {root!r})
    import sabot
    from sabot.worker import Worker
    url, stream, outfile, app_id = sys.argv[1:5]
    app = sabot.App(app_id, redis_url=url, stream_batch_size=25, stream_buffer_maxsize=100)
    fd = os.open(outfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @app.agent(app.redis_channel(stream), name="rec", concurrency=3)
    async def rec(entries):
        async for ev in entries.events():
            await asyncio.sleep(0.003)
            os.write(fd, ev.position[1].encode() + b"\\n")

    sys.exit(Worker(app, loglevel="warning").execute())
''')


def test_sigterm_worker_acks_exactly_what_it_processed(redis_server, stream, tmp_path):
    client = redis_server.client()
    preload(client, stream, [json_bytes(i) for i in range(5000)])
    script = tmp_path / "w.py"
    script.write_text(TERM_WORKER.format(root=ROOT))
    out = tmp_path / "out"; out.touch()
    app_id = unique("term")
    p = subprocess.Popen([sys.executable, str(script), redis_server.url, stream, str(out), app_id], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while len(out.read_bytes().splitlines()) < 500:
            assert p.poll() is None, p.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(30)
        err = p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
    assert rc == 0, err
    done = {l.decode() for l in out.read_bytes().splitlines()}
    acked = acked_ids(client, stream, app_id)
    assert acked <= done, "acknowledged without being processed"
    assert acked == done, "processed before the stop, left unacknowledged"
    assert pending_count(client, stream, app_id) == 0


async def test_agent_errors_mid_batch_dead_letter_one_and_go_on(redis_server, stream):
    client = redis_server.client()
    preload(client, stream, [json_bytes(i) for i in range(30)])
    app = make_app(redis_server, stream_batch_size=10)
    seen = []

    @app.agent(app.redis_channel(stream), concurrency=2)
    async def picky(entries):
        async for v in entries:
            if v["i"] in (3, 14, 25):
                raise ValueError("bad %d" % v["i"])
            seen.append(v["i"])
            await asyncio.sleep(0.005)

    async with running(app):
        await wait_until(lambda: pending_count(client, stream, app.id) == 0, what="ack")
        await wait_until(lambda: client.exists(stream + ".dlq") and client.xlen(stream + ".dlq") == 3, what="dlq")
    assert sorted(seen) == [i for i in range(30) if i not in (3, 14, 25)]


async def test_read_batch_bigger_than_the_buffer_does_not_hang(redis_server, stream):
    client = redis_server.client()
    preload(client, stream, [json_bytes(i) for i in range(3000)])
    app = make_app(redis_server, stream_batch_size=1000, stream_buffer_maxsize=10)
    seen = []
    ch = app.redis_channel(stream)

    @app.agent(ch, name="a1")
    async def a1(entries):
        async for v in entries:
            seen.append(v["i"])

    @app.agent(ch, name="a2", concurrency=2)
    async def a2(entries):
        async for b in entries.take(7, within=0.05):
            await asyncio.sleep(0)

    async with running(app):
        await wait_until(lambda: len(seen) == 3000 and pending_count(client, stream, app.id) == 0, timeout=20, what="all")


PW_APP = textwrap.dedent('''
    import os, sys
    sys.path.insert(0, {root!r})
    import sabot
    app = sabot.App("pwapp", redis_url=os.environ["CONTRACT_URL"], broker_connect_timeout=3)

    @app.agent(app.redis_channel("pw-s"))
    async def read(entries):
        async for _ in entries:
            pass
''')


def test_worker_cli_with_a_wrong_password_exits_with_one_clear_line(redis_auth_server,
                                                                    tmp_path):
    (tmp_path / "pwapp.py").write_text(PW_APP.format(root=ROOT))
    env = dict(os.environ, CONTRACT_URL=redis_auth_server.url_with_password("wrong-pw-77"),
               PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sabot", "-A", "pwapp:app", "worker",
                           "-l", "debug"], env=env, capture_output=True, timeout=30,
                          cwd=str(tmp_path))
    output = (proc.stdout + proc.stderr).decode()
    assert proc.returncode != 0, output
    assert time.monotonic() - started < 10
    assert "wrong-pw-77" not in output and redis_auth_server.password not in output
    errors = [ln for ln in output.splitlines() if "refused the credentials" in ln]
    assert errors, output
    assert "Traceback" not in output
