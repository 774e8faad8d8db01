"""Worker processes seen from the parent (sabot/bridge/pool.py): a worker that
dies is noticed, replaced, and its batch sent again, so nothing is lost or
duplicated; a stop kills what does not answer; workers whose parent died exit.
"""
import asyncio
import multiprocessing
import os
import signal
import time

import pytest

import sabot
from sabot._fastpath import Batch
from sabot.bridge.shm import segment_prefix
from sabot.exceptions import WorkerProcessDied
from tests.helpers import idle, until, until_sync

from . import agents_fixture
from .conftest import pid_running, worker_children
from .helpers import FAST_RETRY


@pytest.fixture
def app():
    return sabot.App("bridge-pool-test")


# -- a worker dies mid-batch -------------------------------------------------

async def test_self_sigkill_mid_batch_under_concurrency_2_loses_and_duplicates_nothing(
        app, tmp_path, clean_slate):
    source = app.channel()
    delivered, acked, early = [], [], []
    agent = app.agent(source, sink=[delivered.append], executor="process", concurrency=2,
                      on_error="stop")(agents_fixture.kill_marked)
    marker = str(tmp_path / "killed")
    await app.start()
    try:
        first_pids = set(agent._process_runner.pids())

        def on_done(tag, n):
            def cb(batch):
                if sum(1 for v in delivered if v["b"] == tag) != n:
                    early.append(tag)
                acked.append(tag)
            return cb
        for tag in range(10):
            values = [{"b": tag, "i": i} for i in range(4)]
            if tag == 4:
                values[2]["kill"] = marker
            await source.publish(Batch(values, on_done=on_done(tag, len(values))))
        await until(lambda: len(acked) == 10, 30, "every batch acked")
        killed = int(open(marker).read())
        assert killed in first_pids
        await until(lambda: not pid_running(killed), 5, "killed worker reaped")
        now = set(agent._process_runner.pids())
        assert len(now) == 2 and killed not in now
        assert agent.bridge_metrics.as_dict()["worker_restarts"] == 1
        assert app.crash_reasons == [] and agent.crash_count == 0
    finally:
        await app.stop()
    assert early == []
    assert sorted(acked) == list(range(10))
    assert sorted((v["b"], v["i"]) for v in delivered) == [
        (b, i) for b in range(10) for i in range(4)]


async def test_external_sigkill_of_both_busy_workers_retries_both_batches(
        app, tmp_path, clean_slate):
    source = app.channel()
    delivered, acked = [], []
    agent = app.agent(source, sink=[delivered.append], executor="process", concurrency=2,
                      on_error="stop")(agents_fixture.announce_then_hang)
    await app.start()
    try:
        first = set(agent._process_runner.pids())
        for tag in (1, 2):
            await source.publish(Batch([{"b": tag, "dir": str(tmp_path), "hold": 30}],
                                       on_done=lambda b, t=tag: acked.append(t)))
        await until(lambda: len(list(tmp_path.glob("*.busy"))) == 2, 20, "both busy")
        busy = {int(p.stem) for p in tmp_path.glob("*.busy")}
        assert busy == first
        for pid in busy:
            os.kill(pid, signal.SIGKILL)
        # Both deaths noticed, both batches sent again (to workers that hold
        # them until "released"): what the dead ones would ack is acked by now.
        await until(lambda: agent.bridge_metrics.as_dict()["worker_restarts"] == 2, 20,
                    "both workers replaced")
        assert acked == [] and delivered == []  # a dead worker acks nothing
        (tmp_path / "released").touch()
        await until(lambda: len(acked) == 2, 30, "both batches acked")
        assert sorted(v["b"] for v in delivered) == [1, 2]
        assert not ({v["pid"] for v in delivered} & first)
        assert agent.bridge_metrics.as_dict()["worker_restarts"] == 2
        assert all(not pid_running(p) for p in first)
        assert app.crash_reasons == []
    finally:
        await app.stop()


async def test_sigkill_mid_batch_whose_data_came_by_shared_memory(app, tmp_path, clean_slate):
    source = app.channel()
    delivered, acked = [], []
    agent = app.agent(source, sink=[delivered.append], executor="process", concurrency=2,
                      on_error="stop")(agents_fixture.kill_marked)
    marker = str(tmp_path / "killed")
    await app.start()
    try:
        for tag in range(4):
            values = [{"b": tag, "i": i, "pad": "p" * 100} for i in range(1500)]
            if tag == 1:
                values[700]["kill"] = marker
            await source.publish(Batch(values, on_done=lambda b, t=tag: acked.append(t)))
        await until(lambda: len(acked) == 4, 30, "acks")
        metrics = agent.bridge_metrics.as_dict()
        assert metrics["worker_restarts"] == 1 and metrics["shm_transfers"] >= 5
        assert app.crash_reasons == []
    finally:
        await app.stop()
    assert sorted((v["b"], v["i"]) for v in delivered) == [
        (b, i) for b in range(4) for i in range(1500)]
    assert all(v["pad"] == "p" * 100 for v in delivered)


async def test_worker_killed_while_idle_is_replaced_on_the_next_batch(app, clean_slate):
    source = app.channel()
    delivered, acked = [], []
    agent = app.agent(source, sink=[delivered.append], executor="process")(agents_fixture.tagged)
    await app.start()
    try:
        (pid,) = agent._process_runner.pids()
        os.kill(pid, signal.SIGKILL)
        await until(lambda: not pid_running(pid), 5, "worker dead")
        await source.publish(Batch([3], on_done=lambda b: acked.append(1)))
        await until(lambda: acked, 20, "ack")
        assert [v[:2] for v in delivered] == [[3, 30]]
        assert delivered[0][2] != pid
    finally:
        await app.stop()


async def test_worker_that_always_dies_exhausts_retries_and_on_error_applies(
        app, clean_slate):
    source = app.channel()
    dlq = source.dead_letter_channel()
    dead = []

    async def read_dlq():
        async for event in dlq.stream().events():
            dead.append(event)
            return
    reader = asyncio.ensure_future(read_dlq())
    acked = []
    agent = app.agent(source, sink=[print], executor="process", concurrency=2)(agents_fixture.always_die)
    await app.start()
    try:
        runner = agent._process_runner
        runner.pool.retry_policy = FAST_RETRY
        await source.publish(Batch([{"x": 1}], on_done=lambda b: acked.append(1)))
        await asyncio.wait_for(reader, 30)
        await until(lambda: acked, 10, "dead-lettered batch acked")
        assert isinstance(agent.last_error, WorkerProcessDied)
        assert agent.last_error.exitcode == -signal.SIGKILL
        assert agent.crash_count == 1
        assert dead[0].value == [{"x": 1}]
        assert b"WorkerProcessDied" in dead[0].headers["sabot-error"]
        assert runner.metrics.as_dict()["worker_restarts"] >= 3
    finally:
        await app.stop()


async def test_send_to_a_closed_worker_socket_is_a_lost_connection():
    import gc
    import socket

    from sabot.bridge.arena import ShmArena
    from sabot.bridge.ipc import pack_frame
    from sabot.bridge.pool import _Connection

    errors = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        ours, theirs = socket.socketpair()
        theirs.close()  # the worker exited; the loop has not seen EOF yet
        conn = _Connection(ours, 0.0, ShmArena())
        with pytest.raises(ConnectionResetError):
            await conn.request(pack_frame({"op": "batch"}))
        conn.send_nowait(pack_frame({"op": "stop"}))  # best effort: no error
        assert conn.lost.done()
        del conn
        gc.collect()
        await idle()  # whatever the collection scheduled has run
        assert errors == []  # no "Future exception was never retrieved"
    finally:
        loop.set_exception_handler(None)


# -- stops and a parent that dies --------------------------------------------

async def test_app_stop_with_a_wedged_worker_kills_it_in_bounded_time(app, clean_slate):
    source = app.channel()
    acked = []
    agent = app.agent(source, sink=[print], executor="process")(agents_fixture.wedged)
    await app.start()
    (pid,) = agent._process_runner.pids()
    await source.publish(Batch([{"wedge": 60}], on_done=lambda b: acked.append(1)))
    # Sent: the worker reads it before anything sent after it, and wedges.
    await until(lambda: agent.bridge_metrics.as_dict()["transfers"] >= 1, 20,
                "the batch sent to the worker")
    started = time.monotonic()
    await asyncio.wait_for(app.stop(), 15)
    assert time.monotonic() - started < 10
    assert not pid_running(pid) and acked == []


async def test_app_stop_with_a_busy_process_agent_leaves_no_child(app, tmp_path, clean_slate):
    source = app.channel()
    acked = []
    agent = app.agent(source, sink=[print], executor="process",
                      concurrency=2)(agents_fixture.announce_then_hang)
    await app.start()
    pids = agent._process_runner.pids()
    assert {c[0] for c in worker_children()} >= set(pids)
    assert {p.pid for p in multiprocessing.active_children()} >= set(pids)
    await source.publish(Batch([{"b": 1, "dir": str(tmp_path), "hold": 2}],
                               on_done=lambda b: acked.append(1)))
    await until(lambda: list(tmp_path.glob("*.busy")), 20, "busy")
    started = time.monotonic()
    await app.stop()
    assert time.monotonic() - started < 15
    assert acked == []  # in flight at stop: not acknowledged
    assert not [p for p in pids if pid_running(p)]
    assert not [p for p in multiprocessing.active_children() if p.pid in pids]


def test_workers_of_a_parent_that_dies_hard_exit_and_leave_no_segment():
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "tests.bridge.agents_fixture"],
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__)))),
                          capture_output=True, text=True, timeout=60)
    parent, *workers = map(int, proc.stdout.split())
    assert len(workers) == 3, proc.stderr
    until_sync(lambda: not any(pid_running(p) for p in workers), 15,
               "the orphaned workers to exit", interval=0.05)
    assert not [p for p in workers if pid_running(p)], "orphaned workers still running"
    prefix = segment_prefix(parent)
    until_sync(lambda: not [n for n in os.listdir("/dev/shm") if n.startswith(prefix)], 5,
               "the orphans' segments to go", interval=0.05)
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
