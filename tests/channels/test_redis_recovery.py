"""Redis Streams: nothing processed is lost, and nothing is delivered twice,
across a server restart, killed connections, a SIGKILLed worker, a stopped or
dead consumer whose entries are claimed, or a graceful stop.
"""
import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.channels.redis_streams import (acked_ids, json_bytes, last_delivered, make_app,
                                          pending_count, pending_ids, preload,
                                          redis_transport)
from tests.helpers import collector, idle, running, unique, until, until_sync

pytestmark = pytest.mark.redis

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))


# -- server restarts and dropped connections ---------------------------------

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
                                                                    stream, caplog):
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

    caplog.set_level(logging.INFO, logger="sabot.channels.redis")
    async with running(app):
        await until(lambda: len(seen) == 15, what="the agent to hold batch 2")
        await until(lambda: last_delivered(client, stream, app.id) == ids[-1],
                    what="every entry read")
        await asyncio.to_thread(server.restart, keep_data=True, down_for=0.3)
        client = server.client()
        # recovery runs (own pending, XAUTOCLAIM) while the batch is held
        await until(lambda: "reconnected" in caplog.text, timeout=15,
                    what="the reader to reconnect and recover")
        gate.set()
        await until(lambda: len(seen) >= 50, timeout=15, what="every value")
        await until(lambda: pending_count(client, stream, app.id) == 0, what="XACK")
        # Nothing pending (no recovery read can return an entry again) and
        # nothing queued for the agent: no second delivery can still come.
        await until(lambda: held.backlog == 0, what="nothing queued for the agent")
    assert sorted(seen) == list(range(50))
    assert len(seen) == 50, "an entry held across the restart was delivered twice"
    assert acked_ids(client, stream, app.id) == set(ids)


async def test_server_restart_mid_stream_each_id_acked_once(redis_server_factory, stream):
    server = redis_server_factory()
    client = server.client()
    preload(client, stream, [json_bytes(i) for i in range(3000)])
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
        await until(lambda: len(seen) >= 500, what="first values")
        await asyncio.to_thread(server.restart, keep_data=True, down_for=0.2)
        client = server.client()
        await until(lambda: len(set(seen)) == 3000, timeout=20, what="every value")
        await until(lambda: pending_count(client, stream, app.id) == 0, what="XACK")
    assert set(seen) == set(range(3000))
    # The server does not keep the ack history across the restart, but a
    # second delivery of an entry would show as a second XACK of its id
    # after the restart; before it, every id is acked at most once.
    from collections import Counter
    twice = [i for i, n in Counter(monitor.acks).items() if n > 1]
    dupes_seen = len(seen) - len(set(seen))
    assert len(twice) <= dupes_seen


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
        await until(lambda: len(seen) >= 400, what="first values")
        await asyncio.to_thread(server.restart, keep_data=True, down_for=0.5)
        client = server.client()
        await until(lambda: pending_count(client, stream, app.id) == 0
                    and len(set(seen)) == 2000, timeout=30, what="everything")
    assert {f[b"value"] for _, f in client.xrange(out)} == {json_bytes(i) for i in range(2000)}
    assert acked_ids(client, stream, app.id) == set(ids)


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
        await until(lambda: len(seen) >= 200, what="first values")
        caplog.set_level(logging.INFO, logger="sabot.channels.redis")
        await asyncio.to_thread(server.restart, keep_data=True, down_for=0.3)
        # Sent after the restart, through the same (reconnecting) producer.
        await (await ch.send_batch([{"i": i} for i in range(1000, 1500)]))
        await until(lambda: set(seen) >= set(range(1500)), timeout=20, what="every value")
        client = server.client()
        await until(lambda: pending_count(client, stream, app.id) == 0, what="XACK")
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
        await until(lambda: len(seen) == 100, what="values before the restart")
        await asyncio.to_thread(server.restart, keep_data=False)
        # The stream and its group are gone; the reader creates them again.
        await (await ch.send_batch([{"i": i} for i in range(100, 200)]))
        await until(lambda: len(seen) == 200, timeout=15, what="values after the restart")
        client = server.client()
        await until(lambda: pending_count(client, stream, app.id) == 0, what="XACK")
    assert [v["i"] for v in seen] == list(range(200))


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
        await until(lambda: seen, what="the first value")
        kills = 0
        while len(set(seen)) < total and kills < 40:
            # Drops every normal client connection (ours too; redis-py reconnects).
            admin.client_kill_filter(_type="normal", skipme=True)
            kills += 1
            # Kept: this paces the kills (the stimulus), so the worker
            # reconnects and reads between them; the outcome is waited for below.
            await asyncio.sleep(0.03)
        await until(lambda: len(set(seen)) == total, timeout=20, what="every value")
        await until(lambda: pending_count(client, stream, app.id) == 0, timeout=10,
                    what="XACK")
    assert kills >= 3
    # Nothing lost, and nothing delivered twice by the one worker: recovery
    # reads skip ids held here and ids acknowledged while they were on their way.
    assert set(seen) == set(range(total)), "lost"
    assert sorted(seen) == list(range(total)), "delivered twice"
    assert acked_ids(client, stream, app.id) == set(ids)


# -- dead consumers and claims -----------------------------------------------

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
        await until(lambda: len(got) == 5, timeout=5, what="the claimed entries")
        await until(lambda: pending_count(client, stream, app.id) == 0, what="XACK")
    assert got == [{"n": i} for i in range(5)]


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
    await until(lambda: first.crash_reasons, what="the agent to stop")
    started = time.monotonic()
    await first.stop()
    assert time.monotonic() - started < 3  # no wait for a batch that never finishes
    # The crashing batch is abandoned, not acknowledged (an earlier read of
    # the first value alone may have been finished and acknowledged).
    left = pending_count(client, stream, app_id)
    assert left >= 2

    second = make_app(redis_server, app_id, redis_claim_idle_ms=100)
    got = collector(second, second.redis_channel(stream, value_serializer="json"))
    async with running(second):
        await until(lambda: len(got) == left, what="the entries again")
        await until(lambda: pending_count(client, stream, app_id) == 0, what="XACK")
    assert got == values[-left:]


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
        def a_fifth_done():
            assert first.poll() is None, first.stderr.read().decode()
            return len(outfile.read_bytes().splitlines()) >= total // 5
        until_sync(a_fifth_done, 30, "the first worker to process a fifth")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        first.stderr.close()
    before = len(set(outfile.read_bytes().splitlines()))
    assert before < total, "the first worker finished before it was killed"
    assert pending_count(client, stream, "redis-crash-test") > 0  # it died holding entries

    second = subprocess.Popen([sys.executable, script, redis_server.url, stream, str(outfile)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def everything_done():
            assert second.poll() is None, second.stderr.read().decode()
            return (len({int(x) for x in outfile.read_bytes().splitlines()}) == total
                    and pending_count(client, stream, "redis-crash-test") == 0)
        until_sync(everything_done, 30, lambda: (
            f"processed {len(set(outfile.read_bytes().splitlines()))}/{total}, "
            f"pending {pending_count(client, stream, 'redis-crash-test')}"), interval=0.05)
        done = {int(x) for x in outfile.read_bytes().splitlines()}
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0
    finally:
        if second.poll() is None:
            second.kill()
        second.stderr.close()
    assert done == set(range(total))  # every entry at least once
    assert pending_count(client, stream, "redis-crash-test") == 0


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
        def all_ready():
            for p in procs:
                assert p.poll() is None, p.stderr.read().decode()
            return len(list(tmp_path.glob("out.txt.ready.*"))) == 3
        until_sync(all_ready, 30, "the workers to start")
        (tmp_path / "out.txt.go").touch()
        until_sync(lambda: len(lines()) >= 300 and len({pid for pid, _ in lines()}) == 3, 30,
                   "progress by all three")
        for p in procs[:2]:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        consumers = {c["name"].decode(): c["pending"]
                     for c in client.xinfo_consumers(stream, app_id)}
        dead = {str(p.pid) for p in procs[:2]}
        held_by_dead = sum(n for name, n in consumers.items()
                           if name.rsplit("-", 1)[-1] in dead)
        assert held_by_dead > 0, consumers  # they died holding entries

        def survivor_done():
            assert procs[2].poll() is None, procs[2].stderr.read().decode()
            return (len({i for _, i in lines()}) == total
                    and pending_count(client, stream, app_id) == 0)
        until_sync(survivor_done, 30, lambda: (
            f"processed {len({i for _, i in lines()})}/{total}, "
            f"pending {pending_count(client, stream, app_id)}"), interval=0.05)
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
        await until(lambda: os.path.exists(marker)
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
        await until(lambda: len(set(seen)) == 60
                    and pending_count(client, stream, app.id) == 0, what="everything")
        # Nothing pending (no claim can return an entry again) and nothing
        # queued for the agent: no second delivery can still come.
        await until(lambda: slow.backlog == 0, what="nothing queued for the agent")
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
        await until(lambda: len(set(seen)) >= total // 3, what="a third")
        await apps[0].stop()
        await until(lambda: len(set(seen)) == total, timeout=30, what="everything")
        await until(lambda: pending_count(client, stream, app_id) == 0, what="XACK")
    finally:
        for app in apps[1:]:
            await app.stop()
    assert set(seen) == set(range(total))  # duplicates allowed: idle < batch time


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
        await until(lambda: pending_count(client, stream, app_id) == 0
                    and len(got) == length, what="trimmed ids forgotten, rest read")
    assert all(i >= 100 for i in got)


def _intercept(monkeypatch, transport, match, between):
    """Run ``between()`` after the server answered the first command that
    ``match``\\ es with entries, before the reader gets the reply."""
    redis_client = transport.client
    original = redis_client.execute_command
    armed = [True]  # then False while between() runs, then "answered"

    async def execute_command(*args, **options):
        reply = await original(*args, **options)
        if armed[0] is True and match(args, reply):
            armed[0] = False
            await between()
            armed[0] = "answered"  # the reader parses the reply in this same step
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
        await until(lambda: pending_count(client, stream, app.id) == 0
                    and not reader.held, what="the XACK")

    def recovery_reply(args, reply):
        if how == "claim":
            return args[0] == "XAUTOCLAIM" and bool(reply[1])
        return args[0] == "XREADGROUP" and args[-1] == "0" and bool(reply and reply[0][1])

    await app.start()
    try:
        transport = redis_transport(app)
        reader = transport._readers[stream]
        await until(entered.is_set, what="the batch in the agent")
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
        await until(lambda: armed[0] == "answered", what="the recovery read")
        await until(lambda: len(seen) >= 10, what="the batch")
        # The reply was parsed when the reader got it: a second delivery would
        # be queued for the agent now, and taken once the loop has run.
        await idle()
        await until(lambda: agent.backlog == 0, what="nothing queued for the agent")
    finally:
        await app.stop()
    assert seen == list(range(10))
    assert pending_count(client, stream, app.id) == 0


# -- stops -------------------------------------------------------------------

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
    await until(lambda: len(finished) >= 200, what="some progress")
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
    await until(lambda: len(finished) == 25, what="25 values")
    # The two finished batches are acknowledged; the stop must add nothing.
    await until(lambda: acked_ids(client, stream, app.id) >= set(ids[:20]),
                what="the finished batches acknowledged")
    started = time.monotonic()
    await asyncio.wait_for(app.stop(), 15)
    assert time.monotonic() - started < 10
    assert acked_ids(client, stream, app.id) == set(ids[:20])
    assert pending_ids(client, stream, app.id) >= set(ids[20:30])


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
    await until(lambda: len(finished) == 50, what="50 values")
    # The agent holds one batch, one more is queued for it: the read that
    # queued it waits for capacity.
    await until(lambda: slow.backlog >= 200 and slow.subscriber.pending >= 1,
                what="the reads to be held back")
    started = time.monotonic()
    await asyncio.wait_for(app.stop(), 20)
    assert time.monotonic() - started < 6
    acked = acked_ids(client, stream, app.id)
    assert acked <= {id_of[i] for i in finished}
    assert pending_count(client, stream, app.id) <= 1000


async def test_stop_while_the_server_is_down_does_not_hang(redis_server_factory, stream,
                                                            caplog):
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
    await until(lambda: seen, what="the value")
    caplog.set_level(logging.INFO, logger="sabot.channels.redis")
    server.stop(kill=True)
    await until(lambda: "lost the connection" in caplog.text,
                what="the reader to notice the server is gone")
    started = time.monotonic()
    await asyncio.wait_for(app.stop(), 20)
    assert time.monotonic() - started < 8
    server.start()


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
        await until(lambda: "delivery failed" in caplog.text, what="the failed write")
    finally:
        started = time.monotonic()
        await app.stop()
        elapsed = time.monotonic() - started
    assert pending_count(client, stream, app.id) == 1
    assert elapsed < 5, f"app.stop() took {elapsed:.1f}s"


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
        def five_hundred_done():
            assert p.poll() is None, p.stderr.read().decode()
            return len(out.read_bytes().splitlines()) >= 500
        until_sync(five_hundred_done, 30, "500 values processed")
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
