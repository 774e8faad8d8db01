"""Shared-memory segments (sabot/bridge/shm.py): none is left in /dev/shm, not
even by a worker killed while it held one, or one whose answer nobody read.
"""
import asyncio
import os
import signal

import pyarrow as pa
import pytest

import sabot
from sabot._fastpath import Batch
from sabot.agents.process import ProcessAgentRunner
from sabot.bridge import ProcessBridge
from sabot.bridge.shm import worker_segment_prefix
from sabot.exceptions import NodeExecutionError
from sabot.nodes import NodeRegistry
from tests.helpers import until

from . import agents_fixture
from .conftest import pid_running, shm_segments, worker_children
from .helpers import FAST_RETRY, BigOut, BigThenBad, Echo


@pytest.fixture
def app():
    return sabot.App("bridge-shm-test")


async def test_shm_both_ways_then_sigkill_then_stop_leaves_nothing(app, clean_slate):
    source = app.channel()
    delivered, acked = [], []
    agent = app.agent(source, sink=[delivered.append], executor="process",
                      concurrency=2)(agents_fixture.echo_batches)
    big = pa.RecordBatch.from_pydict({"x": pa.array(range(50_000), pa.int64())})
    await app.start()
    try:
        runner = agent._process_runner
        for i in range(4):
            await source.publish(Batch(big, on_done=lambda b: acked.append(1)))
        await until(lambda: len(acked) == 4, 20, "acks")
        assert runner.metrics.as_dict()["shm_transfers"] >= 4
        assert shm_segments()  # the pools hold segments while running
        victim = runner.pids()[0]
        os.kill(victim, signal.SIGKILL)
        await until(lambda: not pid_running(victim), 5, "victim dead")
        for i in range(4):
            await source.publish(Batch(big, on_done=lambda b: acked.append(1)))
        await until(lambda: len(acked) == 8, 20, "acks after the kill")
        assert all(d.equals(big) for d in delivered) and len(delivered) == 8
        pids = runner.pids()
    finally:
        delivered.clear()  # drop our hold on data read from shared memory
        await app.stop()
    assert not [p for p in pids if pid_running(p)]


async def test_cleanup_node_after_a_crash_leaves_no_process_and_no_segment(
        tmp_path, clean_slate):
    reg = NodeRegistry()
    reg.register("big", native=BigOut)
    reg.register("echo", native=Echo)
    bridge = ProcessBridge(reg, workers_per_node=2, retry_policy=FAST_RETRY)
    try:
        await bridge.initialize_node("big-1", "big", {})
        await bridge.initialize_node("echo-1", "echo", {})
        outs = await asyncio.gather(*(bridge.execute_node("big-1", "big", 40_000, {})
                                      for _ in range(4)))
        assert [o.num_rows for o in outs] == [40_000] * 4
        big_in = pa.RecordBatch.from_pydict({"x": pa.array(range(40_000), pa.int64())})
        assert (await bridge.execute_node("echo-1", "echo", big_in, {})).equals(big_in)
        del outs
        victims = bridge.worker_pids("big-1")
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        await until(lambda: not any(pid_running(p) for p in victims), 5, "victims dead")
        await bridge.cleanup_node("big-1")
        assert bridge.worker_pids("echo-1")  # the other node is untouched
        assert len([c for c in worker_children()]) >= 2
        assert (await bridge.execute_node("echo-1", "echo", [1], {})) == [1]
    finally:
        await bridge.close()


async def test_segments_of_a_killed_agent_worker_are_removed():
    before = shm_segments()
    async with ProcessAgentRunner(agents_fixture.big_then_unjsonable) as runner:
        with pytest.raises(Exception):  # noqa: B017 - a set cannot cross back
            await runner.process([100_000, "bad"])  # leaves a pooled segment unread
        (pid,) = runner.pids()
        os.kill(pid, signal.SIGKILL)
        await until(lambda: not pid_running(pid), 5, "the worker dead")
        assert (await runner.process([5]))[0].num_rows == 5  # replaced fine
        assert not [n for n in shm_segments()
                    if n.startswith(worker_segment_prefix(pid))]
    assert shm_segments() <= before, shm_segments() - before


async def test_segments_of_a_killed_node_worker_are_removed_by_cleanup_node():
    before = shm_segments()
    reg = NodeRegistry()
    reg.register("btb", native=BigThenBad)
    async with ProcessBridge(reg) as bridge:
        await bridge.initialize_node("n", "btb", {})
        with pytest.raises(NodeExecutionError):
            await bridge.execute_node("n", "btb", {"input": 100_000}, {})
        pids = bridge.worker_pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        await until(lambda: not any(pid_running(p) for p in pids), 5, "the workers dead")
        await bridge.cleanup_node("n")
        assert shm_segments() <= before, shm_segments() - before


async def test_stale_answer_segment_of_a_killed_worker_is_removed():
    before = shm_segments()
    async with ProcessAgentRunner(agents_fixture.slow_big) as runner:
        conn = runner.pool.workers[0].conn
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(runner.process([100_000, 0.3]), 0.1)
        assert conn.stale == 1  # its answer is still to come
        # the big answer arrives and is dropped unread
        await until(lambda: conn.stale == 0, 10, "the late answer to be dropped")
        (pid,) = runner.pids()
        os.kill(pid, signal.SIGKILL)
        await until(lambda: not pid_running(pid), 5, "the worker dead")
        await runner.process([5, 0])
    assert shm_segments() <= before, shm_segments() - before
