"""Agents with executor="process": the coroutine runs in worker processes.

A batch is acknowledged only once its results reached the sinks; the agent's
errors come back with the worker's traceback and ``on_error`` applies as in a
native agent. Worker deaths are in test_pool.py, shared memory in
test_shm.py and test_arena.py, what crosses (and that nothing is pickled) in
test_ipc.py.
"""
import asyncio
import collections
import os

import pyarrow as pa
import pytest

import sabot
from sabot._fastpath import Batch
from sabot.agents.process import ProcessAgentRunner, check_importable
from sabot.exceptions import (AgentError, ConfigurationError,
                              NodeExecutionError)
from tests.helpers import drain, until

from . import agents_fixture
from .conftest import pid_alive, shm_segments


@pytest.fixture
def app():
    return sabot.App("process-agents-test")


async def test_process_agent_end_to_end_with_sinks(app):
    before = shm_segments()
    source = app.channel()
    out = app.channel()
    agent = app.agent(source, sink=[out], executor="process", concurrency=2)(
        agents_fixture.pid_agent)
    reader = asyncio.ensure_future(drain(out.stream(), 40, timeout=20.0))
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
        await until(lambda: len(acked_after) == 2, 20)
        # When a batch was acknowledged, its results had reached the sink.
        assert acked_after == [2, 4]
        assert delivered == [2, 4, 20, 22]
    finally:
        await app.stop()


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
        await until(lambda: len(delivered) == 4, 30)
        assert delivered == values + [{"n": 4}]
        assert agent._process_runner.pids() != first
        assert agent.bridge_metrics.as_dict()["worker_restarts"] == 1
    finally:
        await app.stop()


async def test_agent_whose_worker_exits_after_each_batch_is_replaced():
    outcomes = collections.Counter()
    async with ProcessAgentRunner(agents_fixture.returns_after_first) as runner:
        for i in range(6):
            try:
                await asyncio.wait_for(runner.process([i]), 20)
                outcomes["ok"] += 1
            except Exception as exc:  # noqa: BLE001 - counted, then asserted
                outcomes[type(exc).__name__] += 1
    assert outcomes == {"ok": 6}


async def test_agent_import_failure_reports_the_remote_error():
    for _ in range(3):
        runner = ProcessAgentRunner("tests.bridge.agents_fixture:no_such_agent")
        try:
            with pytest.raises(NodeExecutionError):
                await runner.start()
        finally:
            await runner.close()


# -- acknowledgement and delivery --------------------------------------------

async def test_concurrency_2_acks_each_batch_only_after_its_results_reached_the_sink(
        app, clean_slate):
    source = app.channel()
    delivered = []          # (batch tag, value) in sink order
    ack_violations = []
    acked = []
    app.agent(source, sink=[lambda v: delivered.append((v["b"], v["v"], v["pid"]))],
              executor="process", concurrency=2)(agents_fixture.slow_tagged)
    n_batches, per_batch = 12, 3
    await app.start()
    try:
        def on_done(tag):
            def cb(batch):
                got = sorted(v for b, v, _ in delivered if b == tag)
                if got != list(range(per_batch)):
                    ack_violations.append((tag, got))
                acked.append(tag)
            return cb
        for tag in range(n_batches):
            # Alternating slow and fast batches: completions come out of order.
            sleep = 0.15 if tag % 2 == 0 else 0.0
            values = [{"b": tag, "v": i, "sleep": sleep} for i in range(per_batch)]
            await source.publish(Batch(values, on_done=on_done(tag)))
        # Acknowledged means released: no batch is held any more, so none can
        # be sent again and delivered twice.
        await until(lambda: len(acked) == n_batches, 30, "every batch acked")
    finally:
        await app.stop()
    assert ack_violations == []
    assert sorted(acked) == list(range(n_batches))  # each acked exactly once
    # Nothing lost, nothing duplicated.
    assert sorted((b, v) for b, v, _ in delivered) == [
        (b, v) for b in range(n_batches) for v in range(per_batch)]
    # Both worker processes took part, none of them is this process.
    pids = {p for _, _, p in delivered}
    assert len(pids) == 2 and os.getpid() not in pids


async def test_slow_async_sink_holds_the_ack_until_it_returns(app, clean_slate):
    source = app.channel()
    gate = asyncio.Event()
    delivered, acked, entered = [], [], []

    async def sink(value):
        entered.append(value)
        await gate.wait()
        delivered.append(value)
    app.agent(source, sink=[sink], executor="process")(agents_fixture.tagged)
    await app.start()
    try:
        await source.publish(Batch([7, 8], on_done=lambda b: acked.append(len(delivered))))
        # The result is back in the parent and held in the sink.
        await until(lambda: entered, 20, "the first result at the sink")
        assert acked == [] and delivered == []
        gate.set()
        await until(lambda: acked, 10, "ack")
        assert acked == [2]
        assert [v[:2] for v in delivered] == [[7, 70], [7, 80]]
    finally:
        await app.stop()


async def test_many_small_batches_concurrency_2_exactly_once_each_acked_after_its_results(
        app, clean_slate):
    source = app.channel()
    delivered, acked, early = [], [], []
    seen = collections.Counter()
    app.agent(source, sink=[lambda v: (delivered.append(v), seen.update([v[0]]))],
              executor="process", concurrency=2)(agents_fixture.tagged)
    n = 300
    await app.start()
    try:
        def done(tag, size):
            def cb(batch):
                if seen[tag] != size:
                    early.append(tag)
                acked.append(tag)
            return cb
        for tag in range(n):
            values = [tag * 1000 + i for i in range(1 + tag % 3)]
            await source.publish(Batch(values, on_done=done(values[0], len(values))))
        await until(lambda: len(acked) == n, 30, "every ack")
    finally:
        await app.stop()
    assert early == []
    assert len(acked) == len(set(acked)) == n
    expected = sorted(t * 1000 + i for t in range(n) for i in range(1 + t % 3))
    assert sorted(v[1] // 10 for v in delivered) == expected


async def test_zero_row_and_empty_batches_through_an_app_are_acked(app, clean_slate):
    source = app.channel()
    delivered, acked = [], []
    app.agent(source, sink=[delivered.append], executor="process")(agents_fixture.describe_batches)
    await app.start()
    try:
        empty = pa.RecordBatch.from_pydict({"x": pa.array([], pa.int64()),
                                            "n": pa.nulls(0)})
        await source.publish(Batch(empty, on_done=lambda b: acked.append("rb")))
        await source.publish(Batch(pa.RecordBatch.from_pydict({"x": [5]}),
                                   on_done=lambda b: acked.append("one")))
        await until(lambda: len(acked) == 2, 20, "acks")
        assert acked == ["rb", "one"]
        assert [d["rows"] for d in delivered] == [0, 1]
        assert delivered[0]["schema"] == str(empty.schema)
    finally:
        await app.stop()


# -- errors raised by the agent ----------------------------------------------

async def test_remote_error_carries_the_worker_traceback():
    async with ProcessAgentRunner(agents_fixture.raiser, concurrency=1) as runner:
        (pid,) = runner.pids()
        with pytest.raises(AgentError) as info:
            await runner.process([1, -5, 3])
        text = str(info.value)
        assert "Kaboom" in text and "kaboom on -5" in text
        assert "Traceback (most recent call last)" in text
        assert "_deep_frame_for_traceback" in text  # a frame only the worker ran
        assert f"pid {pid}" in text
        assert runner.metrics.as_dict()["failures"].get(runner.name) == 1
        # The agent was restarted in the same process for the next batch.
        assert await runner.process([4]) == [8]
        assert runner.pids() == [pid]


async def _run_raiser(app, on_error, batches):
    source = app.channel()
    delivered, acked = [], []
    agent = app.agent(source, sink=[delivered.append], executor="process",
                      on_error=on_error)(agents_fixture.raiser)
    await app.start()
    for tag, values in enumerate(batches):
        await source.publish(Batch(values, on_done=lambda b, t=tag: acked.append(t)))
    return source, agent, delivered, acked


async def test_on_error_skip_skips_only_the_failing_value(app, clean_slate):
    _, agent, delivered, acked = await _run_raiser(app, "skip", [[1], [2, -1, 3], [4]])
    try:
        await until(lambda: len(acked) == 3, 20, "all acked")
        assert acked == [0, 1, 2]
        # As in a native agent, only the failing value is skipped.
        assert delivered == [2, 4, 6, 8]
        assert agent.crash_count == 1
        assert isinstance(agent.last_error, AgentError)
        assert "_deep_frame_for_traceback" in str(agent.last_error)
    finally:
        await app.stop()


async def test_on_error_dead_letter_sends_the_failing_value_to_the_dlq(app, clean_slate):
    source = app.channel()
    dlq_values = []

    async def read_dlq():
        async for event in source.dead_letter_channel().stream().events():
            dlq_values.append((event.value, event.headers))
            return
    reader = asyncio.ensure_future(read_dlq())
    delivered, acked = [], []
    app.agent(source, sink=[delivered.append], executor="process")(agents_fixture.raiser)
    await app.start()
    try:
        for tag, values in enumerate([[1], [-2], [3]]):
            await source.publish(Batch(values, on_done=lambda b, t=tag: acked.append(t)))
        await asyncio.wait_for(reader, 20)
        await until(lambda: len(acked) == 3, 20, "all acked")
        assert delivered == [2, 6]
        (value, headers), = dlq_values
        assert value == -2  # the failing value, as in a native agent
        assert b"Kaboom" in headers["sabot-error"]
    finally:
        await app.stop()


async def test_on_error_stop_crashes_the_app_and_leaves_the_batch_unacked(app, clean_slate):
    _, agent, delivered, acked = await _run_raiser(app, "stop", [[1], [-2], [3], [4]])
    try:
        await until(lambda: app.crash_reasons, 20, "crash reported")
        # Stopped: no instance is left to deliver or acknowledge anything.
        await until(lambda: not agent.running, 20, "the agent to stop")
        assert acked == [0]
        assert delivered == [2]
        (error,) = app.crash_reasons
        assert isinstance(error, AgentError)
        assert "Kaboom" in str(error) or "Kaboom" in str(error.__cause__)
    finally:
        await app.stop()
    assert acked == [0]  # stopping does not ack what was never processed


async def test_on_error_stop_under_concurrency_2_acks_nothing_past_the_failure(
        app, clean_slate):
    source = app.channel()
    delivered, acked = [], []
    agent = app.agent(source, sink=[delivered.append], executor="process", concurrency=2,
                      on_error="stop")(agents_fixture.raiser)
    await app.start()
    try:
        for tag, values in enumerate([[1], [2], [-3], [4], [5], [6]]):
            await source.publish(Batch(values, on_done=lambda b, t=tag: acked.append(t)))
        await until(lambda: app.crash_reasons, 20, "crash")
        # Stopped: no instance is left to deliver or acknowledge anything.
        await until(lambda: not agent.running, 20, "the agent to stop")
    finally:
        await app.stop()
    assert isinstance(app.crash_reasons[0], AgentError)
    # The failing batch is never acked; every acked batch had its result
    # delivered (a delivered one may stay unacked: at least once); nothing
    # is acked or delivered twice.
    assert 2 not in acked and len(acked) == len(set(acked))
    assert {2 * (t + 1) for t in acked} <= set(delivered)
    assert len(delivered) == len(set(delivered)) and -6 not in delivered


async def test_unjsonable_yield_fails_the_batch_not_the_worker():
    async with ProcessAgentRunner(agents_fixture.yield_unjsonable) as runner:
        (pid,) = runner.pids()
        with pytest.raises(AgentError, match="ConversionError"):
            await runner.process(["a", "set", "b"])
        assert await runner.process(["c"]) == ["c"]
        assert runner.pids() == [pid]


async def test_runner_metrics_count_what_happened():
    async with ProcessAgentRunner(agents_fixture.raiser, concurrency=2) as runner:
        for values in ([1], [2, 3], [4]):
            await runner.process(values)
        with pytest.raises(AgentError):
            await runner.process([-1])
        m = runner.metrics.as_dict()
        assert m["executions"][runner.name] == 3
        assert m["failures"][runner.name] == 1
        assert m["transfers"] >= 4 and m["bytes_transferred"] > 0
        assert m["worker_restarts"] == 0 and m["shm_transfers"] == 0
        assert m["execution_time_us"][runner.name] > 0
