"""``@app.agent(channel, executor="wasm", node=...)``: a WASM node over every batch.

The agent's function iterates the node's outputs, one per batch; a batch the
node fails on is the agent's failure (dead-lettered by default) and the
agent goes on with the next one.
"""
import asyncio

import pyarrow as pa
import pytest

import sabot
from sabot.bridge.wasm import WasmModule
from sabot.exceptions import ConfigurationError
from tests.helpers import until

from . import wat

pytestmark = pytest.mark.usefixtures("quiet_sabot_logs")

SCHEMA = pa.schema([("x", pa.int64())])


@pytest.fixture
def app():
    return sabot.App("test-wasm-agents", agent_restart_backoff=0.01)


def batch(*values):
    return pa.record_batch({"x": pa.array(values, pa.int64())})


async def test_a_wasm_agent_runs_its_node_on_every_batch(app):
    totals = []
    ch = app.channel(schema=SCHEMA)

    @app.agent(ch, executor="wasm", node=wat.SUM)
    async def summed(stream):
        async for out in stream:
            totals.append(out.column(0)[0].as_py())
            yield out

    results = app.channel()
    summed.add_sink(results)
    seen = results.stream().batches().__aiter__()
    await app.start()
    try:
        await ch.send_batch(batch(1, 2, None, 4))
        await ch.send_batch(batch(-5, 5, 10))
        await until(lambda: totals == [7, 10])
        assert (await asyncio.wait_for(seen.__anext__(), 5)) is not None
        assert summed.bridge_metrics.executions[summed.name] == 2
    finally:
        await app.stop()
    assert summed.bridge_metrics is None  # the node's instance is gone with the agent


async def test_a_batch_the_node_fails_on_goes_to_the_dead_letter_channel(app):
    ch = app.channel(name="numbers", schema=SCHEMA)
    dead = ch.dead_letter_channel().stream().events().__aiter__()
    passed = []

    @app.agent(ch, executor="wasm", node=WasmModule.load("fail", wat.FAIL_ON_13))
    async def picky(stream):
        async for out in stream:
            passed.append(out.column(0).to_pylist())

    await app.start()
    try:
        await ch.send_batch(batch(13, 1))
        await ch.send_batch(batch(14, 2))
        event = await asyncio.wait_for(dead.__anext__(), 5)
        assert b"unlucky number" in event.headers["sabot-error"]
        await until(lambda: passed == [[14, 2]])
        assert picky.crash_count == 1
    finally:
        await app.stop()


def test_executor_wasm_and_node_go_together(app):
    async def fun(stream):
        async for _ in stream:
            pass
    with pytest.raises(ConfigurationError, match="needs node="):
        app.agent(app.channel(), executor="wasm", name="a")(fun)
    with pytest.raises(ConfigurationError, match="needs executor='wasm'"):
        app.agent(app.channel(), node=wat.SUM, name="b")(fun)


def test_a_node_that_misses_the_abi_is_refused_when_the_agent_is_defined(app):
    async def fun(stream):
        async for _ in stream:
            pass
    broken = wat.SUM.replace('(export "sabot_run")', "", 1)
    with pytest.raises(ConfigurationError, match="missing export sabot_run"):
        app.agent(app.channel(), executor="wasm", node=broken, name="c")(fun)


async def test_instances_of_a_wasm_agent_share_its_node(app):
    totals = []
    ch = app.channel(schema=SCHEMA)

    @app.agent(ch, executor="wasm", node=wat.SUM, concurrency=3)
    async def summed(stream):
        async for out in stream:
            totals.append(out.column(0)[0].as_py())

    await app.start()
    try:
        for i in range(12):
            await ch.send_batch(batch(i, 1))
        await until(lambda: len(totals) == 12)
        assert sorted(totals) == [i + 1 for i in range(12)]
    finally:
        await app.stop()
