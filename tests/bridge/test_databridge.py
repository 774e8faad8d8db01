"""DataBridge: bounded, closable, converting queue; BridgeMetrics."""
import asyncio
import time

import pyarrow as pa
import pytest

from sabot.bridge import BridgeMetrics, DataBridge
from sabot.exceptions import BridgeError, ChannelClosed, ConversionError
from tests.helpers import idle, until


async def test_full_bridge_makes_the_sender_wait():
    bridge = DataBridge(maxsize=2)
    await bridge.put(1)
    await bridge.put(2)
    third = asyncio.ensure_future(bridge.put(3))
    await idle()  # the put has looked at the bridge: full, it waits
    assert not third.done() and len(bridge) == 2
    assert await bridge.get() == 1
    await asyncio.wait_for(third, 1)
    assert [await bridge.get(), await bridge.get()] == [2, 3]


async def test_backpressure_timeout_is_a_bridge_error():
    bridge = DataBridge(maxsize=1)
    await bridge.put("a")
    with pytest.raises(BridgeError, match="backpressure timeout"):
        await bridge.put("b", timeout=0.05)


async def test_close_wakes_every_waiter_with_channel_closed():
    full = DataBridge(maxsize=1)
    await full.put(0)
    producers = [asyncio.ensure_future(full.put(i)) for i in range(3)]
    empty = DataBridge(maxsize=1)
    consumers = [asyncio.ensure_future(empty.get()) for _ in range(3)]
    await idle()  # every put and get is waiting
    await full.close()
    await empty.close()
    for fut in producers + consumers:
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(fut, 1)
    with pytest.raises(ChannelClosed):
        await full.put(1)


async def test_bridge_between_executors_converts_and_counts():
    metrics = BridgeMetrics()
    bridge = DataBridge(maxsize=4, source="native", target="process", metrics=metrics)
    batch = pa.RecordBatch.from_pydict({"x": [1, 2]})
    await bridge.put(batch)
    out = await bridge.get()
    assert out.equals(batch) and out is not batch
    same = DataBridge(maxsize=4)
    await same.put(batch)
    assert await same.get() is batch  # within one executor: by reference
    stats = metrics.as_dict()
    assert stats["transfers"] == 1 and stats["bytes_transferred"] > 0


def test_metrics_accumulate_per_node():
    m = BridgeMetrics()
    m.record_execution("a", 0.001)
    m.record_execution("a", 0.002)
    m.record_execution("b", 0.5)
    m.record_transfer(100, 0.0001)
    m.record_transfer(300, 0.0003, shm=True)
    d = m.as_dict()
    assert d["executions"] == {"a": 2, "b": 1} and d["total_executions"] == 3
    assert d["execution_time_us"]["a"] == pytest.approx(3000, abs=2)
    assert d["transfers"] == 2 and d["bytes_transferred"] == 400 and d["shm_transfers"] == 1
    assert d["avg_conversion_latency_us"] == pytest.approx(200, abs=2)


# -- close, cancelled waiters, conversion ------------------------------------

async def test_databridge_close_wakes_every_kind_of_waiter():
    full = DataBridge(maxsize=2)
    await full.put("a")
    await full.put("b")
    producers = [asyncio.ensure_future(full.put(i)) for i in range(5)]
    timed = [asyncio.ensure_future(full.put(i, timeout=30)) for i in range(5)]
    empty = DataBridge(maxsize=3, source="native", target="process")
    consumers = [asyncio.ensure_future(empty.get()) for _ in range(7)]
    await idle()  # every put and get has looked, and waits
    assert not any(f.done() for f in producers + timed + consumers)
    started = time.monotonic()
    await asyncio.gather(full.close(), empty.close())
    results = await asyncio.wait_for(
        asyncio.gather(*producers, *timed, *consumers, return_exceptions=True), 2)
    assert time.monotonic() - started < 2
    assert all(isinstance(r, ChannelClosed) for r in results), results
    assert len(full) == 0  # what was queued is dropped
    with pytest.raises(ChannelClosed):
        await full.put("late")
    with pytest.raises(ChannelClosed):
        await full.get()
    await full.close()  # idempotent
    assert full.closed


async def test_databridge_cancelled_waiter_does_not_eat_a_value_or_block_others():
    bridge = DataBridge(maxsize=1)
    cancelled = asyncio.ensure_future(bridge.get())
    waiting = asyncio.ensure_future(bridge.get())
    await idle()  # both gets wait
    cancelled.cancel()
    await until(cancelled.done, what="the cancelled get to end")
    await bridge.put("v")
    assert await asyncio.wait_for(waiting, 1) == "v"
    # A producer whose timeout ran out leaves the bridge usable.
    await bridge.put("w")
    with pytest.raises(BridgeError):
        await bridge.put("x", timeout=0.02)
    assert await bridge.get() == "w"
    await asyncio.wait_for(bridge.put("y"), 1)
    assert await bridge.get() == "y"


async def test_databridge_between_executors_converts_odd_types():
    bridge = DataBridge(maxsize=8, source="native", target="process", inline_threshold=0)
    sent = [pa.RecordBatch.from_pydict({"n": pa.nulls(2), "l": [[1], None]}),
            pa.RecordBatch.from_pydict({"x": pa.array([], pa.int64())}),
            [1, 2 ** 70], {"a": [1, None]}]
    for value in sent:
        await bridge.put(value)
    for value in sent:
        got = await bridge.get()
        assert got.equals(value) if isinstance(value, pa.RecordBatch) else got == value
    assert bridge.metrics.as_dict()["transfers"] == len(sent)
    with pytest.raises(ConversionError):
        await bridge.put(object())
    assert len(bridge) == 0
