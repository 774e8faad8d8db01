"""Regressions of the bridge / process agent / pipeline bugs the contract suite found."""

import asyncio
import collections
import json
import multiprocessing
import os
import signal
import time

import pyarrow as pa
import pytest

from sabot.agents.process import ProcessAgentRunner
from sabot.bridge import DataBridge, ProcessBridge
from sabot.bridge.ipc import convert
from sabot.bridge.shm import worker_segment_prefix
from sabot.exceptions import (BridgeError, ConversionError, NodeExecutionError,
                              PipelineError)
from sabot.nodes import NodeRegistry

from . import contract_agents as ca
from .conftest import shm_segments
from .helpers import all_nodes_registry, make_pipeline


def small_dictionary_batch():
    return pa.RecordBatch.from_pydict({"d": pa.array(["a", "b", "a"]).dictionary_encode()})


def nested_dictionary_batch():
    inner = pa.StructArray.from_arrays([pa.array(["x", "y"]).dictionary_encode()], ["s"])
    return pa.RecordBatch.from_arrays([inner], names=["st"])


# -- 1: a small dictionary-encoded batch crosses on the inline path ------------

def test_small_dictionary_batches_convert_inline():
    for batch in (small_dictionary_batch(), nested_dictionary_batch()):
        out, _, shm = convert(batch)
        assert not shm
        assert out.equals(batch)


async def test_small_dictionary_batch_through_a_process_agent_and_bridge():
    async with ProcessAgentRunner(ca.echo_batches) as runner:
        (out,) = await runner.process(small_dictionary_batch())
        assert out.equals(small_dictionary_batch())
    reg = NodeRegistry()
    reg.register("echo", native=ca.Echo)
    async with ProcessBridge(reg) as bridge:
        out = await bridge.execute_node("e", "echo", small_dictionary_batch(), {})
        assert out.equals(small_dictionary_batch())


async def test_small_dictionary_batch_through_databridge():
    bridge = DataBridge(source="native", target="process")
    await bridge.put(small_dictionary_batch())
    assert (await bridge.get()).equals(small_dictionary_batch())


# -- 3: a worker gone between batches is worker death, not a broken pipe ------

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
        await asyncio.sleep(0)
        assert errors == []  # no "Future exception was never retrieved"
    finally:
        loop.set_exception_handler(None)


async def test_agent_whose_worker_exits_after_each_batch_is_replaced():
    outcomes = collections.Counter()
    async with ProcessAgentRunner(ca.returns_after_first) as runner:
        for i in range(6):
            try:
                await asyncio.wait_for(runner.process([i]), 20)
                outcomes["ok"] += 1
            except Exception as exc:  # noqa: BLE001 - counted, then asserted
                outcomes[type(exc).__name__] += 1
    assert outcomes == {"ok": 6}


# -- 4: an agent that cannot be imported reports the remote error -------------

async def test_agent_import_failure_reports_the_remote_error():
    for _ in range(3):
        runner = ProcessAgentRunner("tests.bridge.contract_agents:no_such_agent")
        try:
            with pytest.raises(NodeExecutionError):
                await runner.start()
        finally:
            await runner.close()


# -- 5: cleanup_node with a call in flight does not wait out the stop timeout --

async def test_cleanup_node_with_a_call_in_flight_is_prompt():
    reg = NodeRegistry()
    reg.register("sleepy", native=ca.Sleepy)
    bridge = ProcessBridge(reg)
    try:
        await bridge.initialize_node("s", "sleepy", {})
        call = asyncio.ensure_future(
            bridge.execute_node("s", "sleepy", [1], {"seconds": 0.5}))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await bridge.cleanup_node("s")
        took = time.monotonic() - started
        with pytest.raises(BridgeError):
            await call
    finally:
        await bridge.close()
    assert took < 2.5, f"cleanup_node took {took:.2f}s"


# -- 6: a closed ProcessBridge starts nothing ----------------------------------

async def test_closed_process_bridge_refuses_calls():
    reg = NodeRegistry()
    reg.register("echo", native=ca.Echo)
    bridge = ProcessBridge(reg)
    assert await bridge.execute_node("e", "echo", [1], {}) == [1]
    await bridge.close()
    try:
        with pytest.raises(BridgeError):
            await bridge.execute_node("e", "echo", [2], {})
        with pytest.raises(BridgeError):
            await bridge.initialize_node("f", "echo", {})
        assert bridge.worker_pids() == []
    finally:
        await bridge.close()


# -- 7: a pipeline whose start() fails stops the workers it started -----------

async def test_failed_pipeline_start_leaves_no_worker():
    p = make_pipeline(all_nodes_registry())
    p.add_node("s", "identity", runtime="process")
    p.add_node("m", "merge", runtime="process").connect("s", "m", input="left")
    before = {c.pid for c in multiprocessing.active_children()}
    try:
        with pytest.raises(PipelineError, match="'m'"):
            async with p:
                pass
        left = [c for c in multiprocessing.active_children() if c.pid not in before]
        assert left == [], left
        # Fixed up, the same pipeline starts (on a fresh bridge) and runs.
        p.connect("s", "m", input="right")
        async with p:
            assert await p.run_batch({"input": [1]}) is not None
    finally:
        await p.close()


# -- 8: the cycle error names only nodes on the cycle -------------------------

def test_cycle_error_names_only_nodes_on_the_cycle():
    p = make_pipeline(all_nodes_registry())
    for n in ("src", "x", "y", "a_after"):
        p.add_node(n, "identity")
    p.connect("src", "x").connect("x", "y").connect("y", "x").connect("y", "a_after")
    with pytest.raises(PipelineError) as info:
        p.validate()
    message = str(info.value)
    assert "cycle through node 'x'" in message, message
    assert "['x', 'y']" in message and "a_after" not in message, message


# -- 2: segments a killed worker created are removed, even those never mapped --

async def test_segments_of_a_killed_agent_worker_are_removed():
    before = shm_segments()
    async with ProcessAgentRunner(ca.big_then_unjsonable) as runner:
        with pytest.raises(Exception):  # noqa: B017 - a set cannot cross back
            await runner.process([100_000, "bad"])  # leaves a pooled segment unread
        (pid,) = runner.pids()
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
        assert (await runner.process([5]))[0].num_rows == 5  # replaced fine
        assert not [n for n in shm_segments()
                    if n.startswith(worker_segment_prefix(pid))]
    assert shm_segments() <= before, shm_segments() - before


async def test_segments_of_a_killed_node_worker_are_removed_by_cleanup_node():
    before = shm_segments()
    reg = NodeRegistry()
    reg.register("btb", native=ca.BigThenBad)
    async with ProcessBridge(reg) as bridge:
        await bridge.initialize_node("n", "btb", {})
        with pytest.raises(NodeExecutionError):
            await bridge.execute_node("n", "btb", {"input": 100_000}, {})
        for pid in bridge.worker_pids():
            os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
        await bridge.cleanup_node("n")
        assert shm_segments() <= before, shm_segments() - before


async def test_stale_answer_segment_of_a_killed_worker_is_removed():
    before = shm_segments()
    async with ProcessAgentRunner(ca.slow_big) as runner:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(runner.process([100_000, 0.3]), 0.1)
        await asyncio.sleep(0.4)  # the big answer arrives and is dropped unread
        (pid,) = runner.pids()
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
        await runner.process([5, 0])
    assert shm_segments() <= before, shm_segments() - before


# -- 11: a frame split over many receives is joined once (linear, not quadratic)

def _frame_bytes(header, body=b""):
    from sabot.bridge.ipc import _PREFIX
    head = json.dumps(header).encode()
    return _PREFIX.pack(len(head), len(body)) + head + body


def test_frame_decoder_reassembles_frames_split_anywhere():
    from sabot.bridge.ipc import FrameDecoder
    stream = (_frame_bytes({"a": 1}, b"xyz") + _frame_bytes({"b": 2})
              + _frame_bytes({"c": 3}, b"0123456789"))
    expected = [({"a": 1}, b"xyz"), ({"b": 2}, None), ({"c": 3}, b"0123456789")]
    for step in (1, 2, 3, 5, 7, 11, 13, len(stream)):
        decoder = FrameDecoder()
        got = []
        for i in range(0, len(stream), step):
            got.extend(decoder.feed(stream[i:i + step]))
        assert [(h, bytes(b) if b is not None else None) for h, b in got] == expected, step


def test_frame_decoder_large_frame_in_receive_sized_chunks_is_linear():
    from sabot.bridge.ipc import FrameDecoder
    data = _frame_bytes({"big": True}, b"x" * (64 * 2 ** 20))
    chunk = 256 * 1024
    decoder = FrameDecoder()
    started = time.monotonic()
    frames = []
    for i in range(0, len(data), chunk):
        frames.extend(decoder.feed(data[i:i + chunk]))
    took = time.monotonic() - started
    assert len(frames) == 1 and len(frames[0][1]) == 64 * 2 ** 20
    assert took < 1.5, f"{took:.2f}s"  # quadratic joining: several seconds


# -- 9: a lone surrogate in a list of strings crosses (JSON), no UnicodeEncodeError

def test_lone_surrogate_in_a_string_list_crosses():
    for value in (["\ud800"], ["a", "\udfff b"]):
        out, _, _ = convert(value)
        assert out == value


# -- 12: closing a subscription ends its iteration ------------------------------

async def test_closing_a_subscription_ends_a_blocked_iteration():
    from sabot.nodes import EventBus
    bus = EventBus()
    sub = bus.subscribe()

    async def reader():
        return [e async for e in sub]
    task = asyncio.ensure_future(reader())
    await asyncio.sleep(0.01)
    sub.close()
    try:
        assert await asyncio.wait_for(task, 1) == []
    finally:
        task.cancel()


# -- 10: a dict key that JSON would turn into a string is refused ---------------

def test_non_string_dict_keys_are_refused_not_rewritten():
    for value in ({1: "a"}, [{"x": {2: "b"}}, 3], {"ok": [{None: 1}]}):
        with pytest.raises(ConversionError, match="dict key"):
            convert(value)
    assert convert({"a": [{"b": 1}]})[0] == {"a": [{"b": 1}]}


async def test_non_string_dict_keys_through_a_process_agent():
    async with ProcessAgentRunner(ca.echo_batches) as runner:
        with pytest.raises(ConversionError):
            await runner.process([{1: "a"}])
        assert await runner.process([{"1": "a"}]) == [[{"1": "a"}]]
