"""Agents with executor="process": the coroutine runs in worker processes."""
import asyncio
import os

import pyarrow as pa
import pytest

import sabot
from sabot.agents.process import ProcessAgentRunner, check_importable
from sabot.exceptions import AgentError, ConfigurationError

from . import agents_fixture
from .conftest import pid_alive, shm_segments


@pytest.fixture
def app():
    return sabot.App("process-agents-test")


async def collect(channel, n, timeout=20.0):
    """The first ``n`` values that reach ``channel``."""
    got = []
    async def read():
        async for value in channel.stream():
            got.append(value)
            if len(got) >= n:
                return
    await asyncio.wait_for(read(), timeout)
    return got


async def test_process_agent_end_to_end_with_sinks(app):
    before = shm_segments()
    source = app.channel()
    out = app.channel()
    agent = app.agent(source, sink=[out], executor="process", concurrency=2)(
        agents_fixture.pid_agent)
    reader = asyncio.ensure_future(collect(out, 40))
    await app.start()
    try:
        for i in range(40):
            await source.send(value=i)
        pids = await reader
        runner = agent._process_runner
        workers = set(runner.pids())
        assert len(workers) == 2 and os.getpid() not in workers
        assert set(pids) <= workers  # every value went through a worker
    finally:
        await app.stop()
    assert not [p for p in workers if pid_alive(p)]
    assert shm_segments() <= before


async def test_process_agent_acks_only_after_the_result_is_back(app):
    from sabot._fastpath import Batch
    source = app.channel()
    delivered = []
    acked_after = []
    app.agent(source, sink=[delivered.append], executor="process")(agents_fixture.double)
    await app.start()
    try:
        batches = [Batch([i, i + 1], on_done=lambda b: acked_after.append(len(delivered)))
                   for i in (1, 10)]
        for batch in batches:
            await source.publish(batch)
        await asyncio.wait_for(_until(lambda: len(acked_after) == 2), 20)
        # When a batch was acknowledged, its results had reached the sink.
        assert acked_after == [2, 4]
        assert delivered == [2, 4, 20, 22]
    finally:
        await app.stop()


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0.01)


async def test_lambda_and_closure_agents_fail_at_decoration(app):
    ch = app.channel()

    async def closure(stream):
        async for v in stream:
            yield v
    with pytest.raises(ConfigurationError, match="module level"):
        app.agent(ch, executor="process")(closure)
    with pytest.raises(ConfigurationError):
        check_importable(lambda stream: stream)


async def test_runner_returns_what_the_agent_yields_per_batch():
    async with ProcessAgentRunner(agents_fixture.batch_sums, concurrency=1) as runner:
        batch = pa.RecordBatch.from_pydict({"x": [1, 2, 3]})
        (result,) = await runner.process(batch)
        assert result["sum"] == 6 and result["pid"] in runner.pids()
        assert await runner.process(pa.RecordBatch.from_pydict({"x": [10]})) == [
            {"sum": 10, "pid": result["pid"]}]


async def test_agent_error_fails_its_batch_and_the_agent_restarts():
    async with ProcessAgentRunner(agents_fixture.fails_on_negative) as runner:
        assert await runner.process([1, 2]) == [2, 4]
        with pytest.raises(AgentError, match="negative value -1") as info:
            await runner.process([3, -1])
        assert "Traceback" in str(info.value)
        assert await runner.process([5]) == [10]


async def test_sigkill_of_an_agent_process_mid_batch_loses_nothing(tmp_path):
    before = shm_segments()
    marker = str(tmp_path / "killed")
    async with ProcessAgentRunner(agents_fixture.kill_once, concurrency=1) as runner:
        first = runner.pids()
        batch = [{"n": 1}, {"kill_marker": marker}, {"n": 3}]
        out = await asyncio.wait_for(runner.process(batch), 30)
        assert out == batch  # the whole batch, re-run by the replacement
        assert runner.pids() != first and not pid_alive(first[0])
        assert runner.metrics.as_dict()["worker_restarts"] == 1
        pids = runner.pids()
    assert not [p for p in pids if pid_alive(p)]
    assert shm_segments() <= before


async def test_sigkill_mid_batch_through_the_app_delivers_every_result(app, tmp_path):
    source = app.channel()
    delivered = []
    agent = app.agent(source, sink=[delivered.append], executor="process")(
        agents_fixture.kill_once)
    await app.start()
    try:
        first = agent._process_runner.pids()
        values = [{"n": 1}, {"kill_marker": str(tmp_path / "k")}, {"n": 3}]
        await source.send_batch(values)
        await source.send_batch([{"n": 4}])
        await asyncio.wait_for(_until(lambda: len(delivered) == 4), 30)
        assert delivered == values + [{"n": 4}]
        assert agent._process_runner.pids() != first
        assert agent.bridge_metrics.as_dict()["worker_restarts"] == 1
    finally:
        await app.stop()
