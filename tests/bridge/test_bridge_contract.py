"""Contract suite for the executor bridge and process agents (issue 6).

Written against the public API, independently of the other bridge tests:
acknowledgement only after results reached the sinks, SIGKILL of workers
mid-batch under concurrency, remote errors and ``on_error``, odd values and
Arrow types, /dev/shm and child-process hygiene, DataBridge close, pipeline
validation, retry policy, events, and no pickle on the data path.
"""
import asyncio
import collections
import multiprocessing
import os
import pickle
import signal
import time

import pyarrow as pa
import pytest

import sabot
from sabot._fastpath import Batch
from sabot.agents.process import ProcessAgentRunner
from sabot.bridge import DataBridge, ProcessBridge
from sabot.bridge.shm import segment_prefix
from sabot.exceptions import (AgentError, BridgeError, ChannelClosed, ConversionError,
                              NodeExecutionError, PipelineError, WorkerProcessDied)
from sabot.nodes import ErrorHandling, EventKind, NodeRegistry, RetryPolicy
from tests.bridge.helpers import make_pipeline

from . import contract_agents as ca

FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0)


# -- bookkeeping --------------------------------------------------------------

def our_segments():
    """Bridge segments in /dev/shm owned by this test process (and its workers)."""
    if not os.path.isdir("/dev/shm"):
        return set()
    prefix = segment_prefix(os.getpid())
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}


def _proc_children():
    """(pid, state, cmdline) of every process whose parent is us, from /proc."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        state, ppid = rest[0], int(rest[1])
        if ppid == me:
            out.append((int(entry), state, cmd))
    return out


def worker_children():
    """Our child processes other than multiprocessing's resource tracker
    (zombies included: an unreaped dead worker is a leak too)."""
    return [c for c in _proc_children() if "resource_tracker" not in c[2]]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): it is dead but not reaped.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def until(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
def clean_slate():
    """Asserts that the test leaves no worker child and no segment behind."""
    before_children = {c[0] for c in worker_children()}
    before_segments = our_segments()
    yield
    leftover = [c for c in worker_children() if c[0] not in before_children]
    assert not leftover, f"child processes left behind: {leftover}"
    assert not [p for p in multiprocessing.active_children()
                if p.pid not in before_children], "multiprocessing children left"
    assert our_segments() <= before_segments, (
        f"segments left in /dev/shm: {our_segments() - before_segments}")


@pytest.fixture
def app():
    return sabot.App("bridge-contract")


def _batch(values, log, tag):
    """A Batch whose on_done records (tag, what the sink had seen by then)."""
    return Batch(values, on_done=lambda b: log.append(tag))


# -- acknowledgement and delivery ---------------------------------------------

async def test_concurrency_2_acks_each_batch_only_after_its_results_reached_the_sink(
        app, clean_slate):
    source = app.channel()
    delivered = []          # (batch tag, value) in sink order
    ack_violations = []
    acked = []
    app.agent(source, sink=[lambda v: delivered.append((v["b"], v["v"], v["pid"]))],
              executor="process", concurrency=2)(ca.slow_tagged)
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
        await until(lambda: len(acked) == n_batches, 30, "every batch acked")
        await asyncio.sleep(0.05)
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
    delivered, acked = [], []

    async def sink(value):
        await gate.wait()
        delivered.append(value)
    app.agent(source, sink=[sink], executor="process")(ca.tagged)
    await app.start()
    try:
        await source.publish(Batch([7, 8], on_done=lambda b: acked.append(len(delivered))))
        await asyncio.sleep(0.5)  # the result is back in the parent by now
        assert acked == [] and delivered == []
        gate.set()
        await until(lambda: acked, 10, "ack")
        assert acked == [2]
        assert [v[:2] for v in delivered] == [[7, 70], [7, 80]]
    finally:
        await app.stop()


# -- worker death ---------------------------------------------------------------

async def test_self_sigkill_mid_batch_under_concurrency_2_loses_and_duplicates_nothing(
        app, tmp_path, clean_slate):
    source = app.channel()
    delivered, acked, early = [], [], []
    agent = app.agent(source, sink=[delivered.append], executor="process", concurrency=2,
                      on_error="stop")(ca.kill_marked)
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
        await until(lambda: not alive(killed), 5, "killed worker reaped")
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
                      on_error="stop")(ca.announce_then_hang)
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
        await asyncio.sleep(0.05)
        assert acked == [] and delivered == []  # a dead worker acks nothing
        (tmp_path / "released").touch()
        await until(lambda: len(acked) == 2, 30, "both batches acked")
        assert sorted(v["b"] for v in delivered) == [1, 2]
        assert not ({v["pid"] for v in delivered} & first)
        assert agent.bridge_metrics.as_dict()["worker_restarts"] == 2
        assert all(not alive(p) for p in first)
        assert app.crash_reasons == []
    finally:
        await app.stop()


async def test_worker_killed_while_idle_is_replaced_on_the_next_batch(app, clean_slate):
    source = app.channel()
    delivered, acked = [], []
    agent = app.agent(source, sink=[delivered.append], executor="process")(ca.tagged)
    await app.start()
    try:
        (pid,) = agent._process_runner.pids()
        os.kill(pid, signal.SIGKILL)
        await until(lambda: not alive(pid), 5, "worker dead")
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
    agent = app.agent(source, sink=[print], executor="process", concurrency=2)(ca.always_die)
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


# -- errors raised by the agent ----------------------------------------------

async def test_remote_error_carries_the_worker_traceback():
    async with ProcessAgentRunner(ca.raiser, concurrency=1) as runner:
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
                      on_error=on_error)(ca.raiser)
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
    app.agent(source, sink=[delivered.append], executor="process")(ca.raiser)
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
        await asyncio.sleep(0.3)
        assert acked == [0]
        assert delivered == [2]
        (error,) = app.crash_reasons
        assert isinstance(error, AgentError)
        assert "Kaboom" in str(error) or "Kaboom" in str(error.__cause__)
    finally:
        await app.stop()
    assert acked == [0]  # stopping does not ack what was never processed


async def test_unjsonable_yield_fails_the_batch_not_the_worker():
    async with ProcessAgentRunner(ca.yield_unjsonable) as runner:
        (pid,) = runner.pids()
        with pytest.raises(AgentError, match="ConversionError"):
            await runner.process(["a", "set", "b"])
        assert await runner.process(["c"]) == ["c"]
        assert runner.pids() == [pid]


# -- values and Arrow types that cross ------------------------------------------

def _odd_batches():
    import datetime
    import decimal
    yield "nested lists", pa.RecordBatch.from_pydict(
        {"l": pa.array([[[1], [2, 3]], [], None], pa.list_(pa.list_(pa.int32())))})
    yield "struct", pa.RecordBatch.from_pydict(
        {"s": pa.array([{"a": 1, "b": "x"}, None, {"a": None, "b": "z"}])})
    yield "map", pa.RecordBatch.from_pydict(
        {"m": pa.array([[("k", 1)], [], None], pa.map_(pa.string(), pa.int64()))})
    yield "null column", pa.RecordBatch.from_pydict({"n": pa.nulls(3), "x": [1, 2, 3]})
    yield "all-null typed", pa.RecordBatch.from_pydict({"x": pa.nulls(4, pa.float64())})
    yield "zero rows", pa.RecordBatch.from_pydict(
        {"x": pa.array([], pa.int64()), "s": pa.array([], pa.string())})
    yield "no columns", pa.RecordBatch.from_pydict({})
    yield "large strings", pa.RecordBatch.from_pydict(
        {"s": pa.array(["a" * 10, "é😀\x00", None], pa.large_string())})
    yield "huge string", pa.RecordBatch.from_pydict(
        {"s": pa.array(["x" * 300_000, ""], pa.large_string())})
    yield "large dictionary", pa.RecordBatch.from_pydict(
        {"d": pa.array(["a", "b"] * 50_000).dictionary_encode()})
    yield "timestamp tz", pa.RecordBatch.from_pydict(
        {"t": pa.array([datetime.datetime(2024, 1, 1)], pa.timestamp("us", tz="UTC"))})
    yield "decimal", pa.RecordBatch.from_pydict(
        {"d": pa.array([decimal.Decimal("1.25")], pa.decimal128(10, 2))})
    yield "binary", pa.RecordBatch.from_pydict({"b": pa.array([b"\x00\xff", None],
                                                              pa.large_binary())})
    yield "sliced", pa.RecordBatch.from_pydict({"x": list(range(10))}).slice(3, 4)
    yield "table", pa.table({"x": [1, 2]})
    yield "chunked table", pa.concat_tables([pa.table({"x": [1]}), pa.table({"x": [2, 3]})])
    yield "empty table", pa.table({"x": pa.array([], pa.int64())})
    yield "schema metadata", pa.RecordBatch.from_pydict({"x": [1]}).replace_schema_metadata(
        {"k": "v"})


@pytest.mark.parametrize("threshold", [64 * 1024, 0], ids=["inline", "shm"])
async def test_unusual_arrow_types_round_trip_both_ways(threshold, clean_slate):
    wrong = []
    async with ProcessAgentRunner(ca.echo_batches, inline_threshold=threshold) as runner:
        for name, data in _odd_batches():
            (out,) = await runner.process(data)
            if type(out) is not type(data) or not out.equals(data) or (
                    out.schema.metadata != data.schema.metadata):
                wrong.append((name, data, out))
        assert wrong == []
        if threshold == 0:
            assert runner.metrics.as_dict()["shm_transfers"] > 0


async def test_json_values_that_cross_and_those_refused(clean_slate):
    async with ProcessAgentRunner(ca.echo_batches) as runner:
        cases = [
            [1, 2 ** 70],                    # beyond int64: exact through JSON
            [1, 1.5], [True, 1], [None, None],
            [float("nan")], [float("inf"), -0.0],
            [], [[]], ["é😀\x00"],
            [{"a": [1, {"b": None}], "c": "d"}],
            [(1, 2)],                        # tuples arrive as tuples
            [b"bytes", b"\x00\xff"],          # bytes as a binary column
            [{"k": b"v", "t": (1, b"x")}, None],  # bytes and tuples inside JSON
            ["x" * 200_000, "y"],            # large list of strings: shared memory
            [{"k": "v" * 100_000}],          # large list of JSON: shared memory
        ]
        for values in cases:
            (out,) = await runner.process(values)
            assert repr(out) == repr(values)  # repr: NaN != NaN
        for bad in ([object()], [{1, 2}], [{"d": pa.scalar(1)}], [{1: "int key"}]):
            with pytest.raises(ConversionError):
                await runner.process(bad)
        # Nothing half-sent: the worker still answers.
        assert await runner.process([1]) == [[1]]


class _Reducible:
    def __reduce_ex__(self, protocol):  # pragma: no cover - must never run
        raise AssertionError("pickled")


async def test_a_custom_object_is_refused_not_pickled(clean_slate):
    async with ProcessAgentRunner(ca.echo_batches) as runner:
        with pytest.raises(ConversionError):
            await runner.process([_Reducible()])
        with pytest.raises(ConversionError):
            await runner.process(_Reducible())


async def test_zero_row_and_empty_batches_through_an_app_are_acked(app, clean_slate):
    source = app.channel()
    delivered, acked = [], []
    app.agent(source, sink=[delivered.append], executor="process")(ca.describe_batches)
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


# -- shared memory and child processes ---------------------------------------------

async def test_shm_both_ways_then_sigkill_then_stop_leaves_nothing(app, clean_slate):
    source = app.channel()
    delivered, acked = [], []
    agent = app.agent(source, sink=[delivered.append], executor="process",
                      concurrency=2)(ca.echo_batches)
    big = pa.RecordBatch.from_pydict({"x": pa.array(range(50_000), pa.int64())})
    await app.start()
    try:
        runner = agent._process_runner
        for i in range(4):
            await source.publish(Batch(big, on_done=lambda b: acked.append(1)))
        await until(lambda: len(acked) == 4, 20, "acks")
        assert runner.metrics.as_dict()["shm_transfers"] >= 4
        assert our_segments()  # the pools hold segments while running
        victim = runner.pids()[0]
        os.kill(victim, signal.SIGKILL)
        await until(lambda: not alive(victim), 5, "victim dead")
        for i in range(4):
            await source.publish(Batch(big, on_done=lambda b: acked.append(1)))
        await until(lambda: len(acked) == 8, 20, "acks after the kill")
        assert all(d.equals(big) for d in delivered) and len(delivered) == 8
        pids = runner.pids()
    finally:
        delivered.clear()  # drop our hold on data read from shared memory
        await app.stop()
    assert not [p for p in pids if alive(p)]


async def test_cleanup_node_after_a_crash_leaves_no_process_and_no_segment(
        tmp_path, clean_slate):
    reg = NodeRegistry()
    reg.register("big", native=ca.BigOut)
    reg.register("echo", native=ca.Echo)
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
        await until(lambda: not any(alive(p) for p in victims), 5, "victims dead")
        await bridge.cleanup_node("big-1")
        assert bridge.worker_pids("echo-1")  # the other node is untouched
        assert len([c for c in worker_children()]) >= 2
        assert (await bridge.execute_node("echo-1", "echo", [1], {})) == [1]
    finally:
        await bridge.close()


async def test_app_stop_with_a_busy_process_agent_leaves_no_child(app, tmp_path, clean_slate):
    source = app.channel()
    acked = []
    agent = app.agent(source, sink=[print], executor="process",
                      concurrency=2)(ca.announce_then_hang)
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
    assert not [p for p in pids if alive(p)]
    assert not [p for p in multiprocessing.active_children() if p.pid in pids]


# -- no pickle on the data path ----------------------------------------------------

@pytest.fixture
def forbid_pickle(monkeypatch):
    """Make every pickling entry point of this process raise, on demand."""
    from multiprocessing.reduction import ForkingPickler

    def arm():
        def boom(*a, **k):
            raise AssertionError("pickle used on the data path")
        monkeypatch.setattr(pickle, "dumps", boom)
        monkeypatch.setattr(pickle, "loads", boom)
        monkeypatch.setattr(pickle, "dump", boom)
        monkeypatch.setattr(pickle, "load", boom)
        monkeypatch.setattr(ForkingPickler, "dumps", classmethod(lambda cls, *a, **k: boom()))
        monkeypatch.setattr(ForkingPickler, "loads", staticmethod(boom))
    return arm


async def test_process_agent_data_path_never_pickles(app, forbid_pickle, tmp_path,
                                                     clean_slate):
    source = app.channel()
    delivered, acked = [], []
    agent = app.agent(source, sink=[delivered.append], executor="process",
                      concurrency=2)(ca.pickle_free_echo)
    small = pa.RecordBatch.from_pydict({"x": [1, 2], "s": ["a", None]})
    big = pa.RecordBatch.from_pydict({"x": pa.array(range(30_000), pa.int64())})
    payloads = [small, big, [1, 2, 3], [{"a": [1]}, None], ["x" * 100_000]]
    await app.start()
    try:
        forbid_pickle()
        for p in payloads:
            await source.publish(Batch(p, on_done=lambda b: acked.append(1)))
        await until(lambda: len(acked) == len(payloads), 20, "acks")
        # A replacement worker (spawned after a SIGKILL) is on the same footing.
        victim = agent._process_runner.pids()[0]
        os.kill(victim, signal.SIGKILL)
        await until(lambda: not alive(victim), 5, "victim dead")
        for p in payloads:
            await source.publish(Batch(p, on_done=lambda b: acked.append(1)))
        await until(lambda: len(acked) == 2 * len(payloads), 20, "acks after kill")
        assert app.crash_reasons == [] and agent.crash_count == 0
    finally:
        await app.stop()
    def canon(v):
        return repr(v.to_pydict()) if isinstance(v, pa.RecordBatch) else repr(v)
    # Two workers: order across batches is free; the multiset is not.
    assert sorted(map(canon, delivered)) == sorted(map(canon, payloads * 2))
    assert [type(v) for v in delivered].count(pa.RecordBatch) == 4


async def test_process_bridge_data_path_never_pickles(forbid_pickle, clean_slate):
    reg = NodeRegistry()
    reg.register("echo", native=ca.Echo)
    async with ProcessBridge(reg, workers_per_node=2) as bridge:
        await bridge.initialize_node("e", "echo", {})
        forbid_pickle()
        big = pa.RecordBatch.from_pydict({"x": pa.array(range(30_000), pa.int64())})
        assert (await bridge.execute_node("e", "echo", big, {"p": [1, {"q": None}]})
                ).equals(big)
        assert await bridge.execute_node("e", "echo", {"input": [1, "a"]}, {}) == {
            "output": [1, "a"]}
        with pytest.raises(ConversionError):
            await bridge.execute_node("e", "echo", [1], {"bad": object()})


# -- DataBridge ---------------------------------------------------------------------

async def test_databridge_close_wakes_every_kind_of_waiter():
    full = DataBridge(maxsize=2)
    await full.put("a")
    await full.put("b")
    producers = [asyncio.ensure_future(full.put(i)) for i in range(5)]
    timed = [asyncio.ensure_future(full.put(i, timeout=30)) for i in range(5)]
    empty = DataBridge(maxsize=3, source="native", target="process")
    consumers = [asyncio.ensure_future(empty.get()) for _ in range(7)]
    await asyncio.sleep(0.05)
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
    await asyncio.sleep(0.01)
    cancelled.cancel()
    await asyncio.sleep(0)
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


# -- pipelines: validation ------------------------------------------------------------

def _registry():
    reg = NodeRegistry()
    reg.register("echo", native=ca.Echo)
    reg.register("fail", native=ca.FailTimes)
    reg.register("sleepy", native=ca.Sleepy)
    from .helpers import Merge
    reg.register("merge", native=Merge)
    return reg


@pytest.mark.parametrize("build, node", [
    (lambda p: p.add_node("ok", "echo").add_node("weird", "no-such-type"), "weird"),
    (lambda p: p.add_node("ok", "echo").connect("ok", "ghost"), "ghost"),
    (lambda p: p.add_node("ok", "echo").connect("phantom", "ok"), "phantom"),
    (lambda p: p.add_node("solo", "echo").connect("solo", "solo"), "solo"),
    (lambda p: p.add_node("s", "echo").add_node("m", "merge")
        .connect("s", "m", input="left"), "m"),
    (lambda p: p.add_node("s", "echo").add_node("t", "echo")
        .connect("s", "t", output="nope"), "t"),
    (lambda p: p.add_node("ok", "echo", runtime="gpu"), "ok"),
], ids=["unknown-type", "edge-to-unknown", "edge-from-unknown", "self-loop",
        "missing-input", "unknown-output", "unknown-runtime"])
async def test_invalid_dag_is_rejected_naming_the_node(build, node):
    p = make_pipeline(_registry(), name="bad")
    build(p)
    try:
        with pytest.raises(PipelineError, match=repr(node)):
            await p.start()
    finally:
        await p.close()


async def test_duplicate_node_id_and_empty_pipeline_are_errors():
    p = make_pipeline(_registry()).add_node("d", "echo")
    with pytest.raises(PipelineError, match="'d'"):
        p.add_node("d", "echo")
    with pytest.raises(PipelineError):
        await make_pipeline(_registry()).start()


async def test_cycle_error_names_a_node_on_the_cycle_when_it_is_isolated():
    p = make_pipeline(_registry())
    p.add_node("src", "echo").add_node("x", "echo").add_node("y", "echo")
    p.connect("src", "x").connect("x", "y").connect("y", "x")
    with pytest.raises(PipelineError, match="cycle") as info:
        p.validate()
    assert "'x'" in str(info.value)


# -- retry policy -----------------------------------------------------------------------

def test_backoff_bounds_for_every_attempt():
    policy = RetryPolicy(max_attempts=10, initial_delay=0.01, multiplier=3.0,
                         max_delay=0.5, jitter=0.2)
    for attempt in range(1, 10):
        base = min(0.01 * 3.0 ** (attempt - 1), 0.5)
        for _ in range(200):
            d = policy.delay(attempt)
            assert base * 0.8 - 1e-12 <= d <= base * 1.2 + 1e-12
    flat = RetryPolicy(initial_delay=0.0, jitter=0.5)
    assert flat.delay(1) == 0.0
    assert RetryPolicy(initial_delay=1, multiplier=10, max_delay=2, jitter=0).delay(50) == 2


async def test_retry_call_attempts_delays_and_classification():
    from sabot.exceptions import TransportError
    policy = RetryPolicy(max_attempts=4, initial_delay=0.02, multiplier=2, jitter=0)
    calls, retries = [], []

    async def always_transient():
        calls.append(time.monotonic())
        raise TransportError(f"down {len(calls)}")
    started = time.monotonic()
    with pytest.raises(TransportError, match="down 4"):  # the last error
        await policy.call(always_transient, on_retry=lambda a, e, d: retries.append((a, d)))
    assert len(calls) == 4
    assert retries == [(1, 0.02), (2, 0.04), (3, 0.08)]
    assert time.monotonic() - started >= 0.14 - 0.01  # it really waited
    for (a, d), t0, t1 in zip(retries, calls, calls[1:]):
        assert t1 - t0 >= d - 0.005

    calls.clear()

    async def permanent():
        calls.append(1)
        raise NodeExecutionError("nope", node_id="n", retryable=False)
    with pytest.raises(NodeExecutionError):
        await policy.call(permanent)
    assert calls == [1]

    async def cancelled():
        calls.append(1)
        raise asyncio.CancelledError()
    calls.clear()
    with pytest.raises(asyncio.CancelledError):
        await policy.call(cancelled)
    assert calls == [1]
    assert RetryPolicy().is_retryable(WorkerProcessDied("x", node_id="n", exitcode=-9))
    assert not RetryPolicy().is_retryable(ValueError("x"))


async def test_process_node_errors_keep_their_retryable_flag_and_traceback(
        tmp_path, clean_slate):
    async with ProcessBridge(_registry()) as bridge:
        for retryable in (True, False):
            counter = str(tmp_path / f"c{retryable}")
            params = {"counter": counter, "times": 1, "retryable": retryable}
            with pytest.raises(NodeExecutionError) as info:
                await bridge.execute_node(f"f{retryable}", "fail", [1], params)
            err = info.value
            assert err.node_id == f"f{retryable}"
            assert err.retryable is retryable
            assert "FailTimes" in err.remote_traceback or "execute" in err.remote_traceback
            assert ("transient 1" if retryable else "permanent 1") in err.remote_traceback
            assert await bridge.execute_node(f"f{retryable}", "fail", [2], params) == [2]


# -- pipelines: retries, error handling, events ---------------------------------------

def _kinds(events, run_id=None):
    return [(e.kind.value, e.node_id, e.attempt) for e in events
            if run_id is None or e.run_id == run_id]


@pytest.mark.parametrize("runtime", ["native", "process"])
async def test_retryable_failure_is_retried_with_events_in_order(runtime, tmp_path,
                                                                 clean_slate):
    p = make_pipeline(_registry(), name="r", retry_policy=RetryPolicy(
        max_attempts=3, initial_delay=0.01, multiplier=2, jitter=0))
    p.add_node("a", "echo", runtime=runtime)
    p.add_node("f", "fail", {"counter": str(tmp_path / "c"), "times": 2}, runtime=runtime)
    p.connect("a", "f")
    seen = []
    p.events.subscribe(seen.append)
    async with p:
        result = await p.run([1, 2])
    assert result.output() == [1, 2]
    assert result.states["f"].attempts == 3 and result.states["a"].attempts == 1
    assert _kinds(seen) == [
        ("pipeline_started", None, 0),
        ("node_started", "a", 1), ("node_completed", "a", 1),
        ("node_started", "f", 1),
        ("node_retrying", "f", 1), ("node_retrying", "f", 2),
        ("node_completed", "f", 3),
        ("pipeline_completed", None, 0)]
    retrying = [e for e in seen if e.kind is EventKind.NODE_RETRYING]
    assert [e.delay for e in retrying] == [0.01, 0.02]
    assert all(isinstance(e.error, NodeExecutionError) and e.error.node_id == "f"
               for e in retrying)
    assert [e.timestamp for e in seen] == sorted(e.timestamp for e in seen)
    assert {e.run_id for e in seen} == {result.run_id}


@pytest.mark.parametrize("case", ["non-retryable", "exhausted", "stop-policy"])
async def test_failures_that_are_not_retried_fail_the_run(case, tmp_path):
    retryable = case != "non-retryable"
    times = 10 if case == "exhausted" else 1
    handling = ErrorHandling.STOP if case == "stop-policy" else ErrorHandling.RETRY
    p = make_pipeline(_registry(), retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.001))
    p.add_node("f", "fail", {"counter": str(tmp_path / "c"), "times": times,
                             "retryable": retryable}, error_handling=handling)
    p.add_node("after", "echo").connect("f", "after")
    seen = []
    p.events.subscribe(seen.append)
    async with p:
        with pytest.raises(NodeExecutionError) as info:
            await p.run([1])
    assert info.value.node_id == "f"
    attempts = 3 if case == "exhausted" else 1
    assert int(open(tmp_path / "c").read()) == attempts
    assert _kinds(seen) == (
        [("pipeline_started", None, 0), ("node_started", "f", 1)]
        + [("node_retrying", "f", n) for n in range(1, attempts)]
        + [("node_failed", "f", attempts), ("pipeline_failed", None, 0)])
    assert seen[-1].error is info.value


async def test_continue_skips_descendants_and_finishes_the_rest(tmp_path):
    p = make_pipeline(_registry(), max_parallel=2)
    p.add_node("src", "echo")
    p.add_node("bad", "fail", {"counter": str(tmp_path / "c"), "times": 9,
                               "retryable": False}, error_handling="continue")
    p.add_node("below_bad", "echo")
    p.add_node("good", "echo")
    p.connect("src", "bad").connect("bad", "below_bad").connect("src", "good")
    seen = []
    p.events.subscribe(seen.append)
    async with p:
        result = await p.run("v")
    assert result.failed == ["bad"]
    assert result.states["below_bad"].status.value == "skipped"
    assert result.states["good"].status.value == "completed"
    assert result.outputs["good"] == {"output": "v"} and "below_bad" not in result.outputs
    kinds = _kinds(seen)
    assert kinds[0][0] == "pipeline_started" and kinds[-1][0] == "pipeline_completed"
    assert ("node_failed", "bad", 1) in kinds
    assert not [k for k in kinds if k[1] == "below_bad"]


async def test_events_follow_the_dag_under_parallelism():
    p = make_pipeline(_registry(), max_parallel=4)
    p.add_node("s", "echo").add_node("l", "sleepy", {"seconds": 0.05})
    p.add_node("r", "echo").add_node("m", "merge")
    p.connect("s", "l").connect("s", "r")
    p.connect("l", "m", input="left").connect("r", "m", input="right")
    sub = p.events.subscribe()
    async with p:
        assert (await p.run_batch([1])) == [1, 1]
        await p.run([2])
    events = sub.pending()
    sub.close()
    for run_id in (1, 2):
        kinds = [(k, n) for k, n, _ in _kinds(events, run_id)]
        pos = {key: i for i, key in enumerate(kinds)}
        assert kinds[0] == ("pipeline_started", None)
        assert kinds[-1] == ("pipeline_completed", None)
        for up, down in [("s", "l"), ("s", "r"), ("l", "m"), ("r", "m")]:
            assert pos[("node_completed", up)] < pos[("node_started", down)]
        for node in "slrm":
            assert pos[("node_started", node)] < pos[("node_completed", node)]


# -- more delivery, zero-copy safety, parallelism ---------------------------------

async def test_many_small_batches_concurrency_2_exactly_once_each_acked_after_its_results(
        app, clean_slate):
    source = app.channel()
    delivered, acked, early = [], [], []
    seen = collections.Counter()
    app.agent(source, sink=[lambda v: (delivered.append(v), seen.update([v[0]]))],
              executor="process", concurrency=2)(ca.tagged)
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


async def test_results_held_by_the_parent_are_never_overwritten(clean_slate):
    async with ProcessAgentRunner(ca.keyed_big) as runner:
        kept = []
        for k in range(24):
            kept.extend(await runner.process([k]))
        assert [set(b.column("x").to_pylist()) for b in kept] == [{k} for k in range(24)]


async def test_inputs_held_by_the_agent_are_never_overwritten(clean_slate):
    async with ProcessAgentRunner(ca.remember_previous) as runner:
        outs = []
        for k in range(1, 16):
            batch = pa.RecordBatch.from_pydict({"x": pa.array([k] * 20_000, pa.int64())})
            outs.extend(await runner.process(batch))
            del batch
        assert outs[0] == {"prev_sum": None}
        assert [o["prev_first"] for o in outs[1:]] == list(range(1, 15))
        assert [o["prev_sum"] for o in outs[1:]] == [k * 20_000 for k in range(1, 15)]


async def test_cleanup_node_fails_running_and_waiting_calls_without_hanging(clean_slate):
    reg = NodeRegistry()
    reg.register("sleepy", native=ca.Sleepy)
    bridge = ProcessBridge(reg)
    try:
        await bridge.initialize_node("s", "sleepy", {})
        calls = [asyncio.ensure_future(bridge.execute_node("s", "sleepy", [i],
                                                           {"seconds": 0.5}))
                 for i in range(3)]
        await asyncio.sleep(0.1)
        await asyncio.wait_for(bridge.cleanup_node("s"), 15)
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 15)
        assert all(isinstance(r, BridgeError) for r in results), results
        assert bridge.worker_pids() == []
    finally:
        await bridge.close()


async def test_pipeline_respects_max_parallel():
    p = make_pipeline(_registry(), max_parallel=2)
    p.add_node("src", "echo")
    for i in range(6):
        p.add_node(f"s{i}", "sleepy", {"seconds": 0.05}).connect("src", f"s{i}")
    running, peak = set(), []

    def track(event):
        if event.kind is EventKind.NODE_STARTED:
            running.add(event.node_id)
        elif event.kind in (EventKind.NODE_COMPLETED, EventKind.NODE_FAILED):
            running.discard(event.node_id)
        peak.append(len(running))
    p.events.subscribe(track)
    async with p:
        result = await p.run(1)
    assert max(peak) == 2
    assert len(result.output()) == 6


async def test_stream_through_a_process_pipeline_acks_after_the_sink(app, clean_slate):
    p = make_pipeline(_registry(), name="thru")
    p.add_node("a", "echo", runtime="process").add_node("b", "echo", runtime="process")
    p.connect("a", "b")
    source = app.channel()
    delivered, acked, early = [], [], []

    async def through_agent(stream):
        async for result in stream.through(p):
            yield result
    app.agent(source, sink=[delivered.append])(through_agent)
    await p.start()
    await app.start()
    try:
        for tag in range(5):
            values = [tag, tag]
            await source.publish(Batch(values, on_done=lambda b, v=values: (
                early.append(v) if v not in delivered else None, acked.append(1))))
        await until(lambda: len(acked) == 5, 20, "acks")
        assert early == [] and delivered == [[t, t] for t in range(5)]
    finally:
        await app.stop()
        await p.close()


# -- stop and crashes that must not hang or leak ---------------------------------

async def test_on_error_stop_under_concurrency_2_acks_nothing_past_the_failure(
        app, clean_slate):
    source = app.channel()
    delivered, acked = [], []
    app.agent(source, sink=[delivered.append], executor="process", concurrency=2,
              on_error="stop")(ca.raiser)
    await app.start()
    try:
        for tag, values in enumerate([[1], [2], [-3], [4], [5], [6]]):
            await source.publish(Batch(values, on_done=lambda b, t=tag: acked.append(t)))
        await until(lambda: app.crash_reasons, 20, "crash")
        await asyncio.sleep(0.3)
    finally:
        await app.stop()
    assert isinstance(app.crash_reasons[0], AgentError)
    # The failing batch is never acked; every acked batch had its result
    # delivered (a delivered one may stay unacked: at least once); nothing
    # is acked or delivered twice.
    assert 2 not in acked and len(acked) == len(set(acked))
    assert {2 * (t + 1) for t in acked} <= set(delivered)
    assert len(delivered) == len(set(delivered)) and -6 not in delivered


async def test_app_stop_with_a_wedged_worker_kills_it_in_bounded_time(app, clean_slate):
    source = app.channel()
    acked = []
    agent = app.agent(source, sink=[print], executor="process")(ca.wedged)
    await app.start()
    (pid,) = agent._process_runner.pids()
    await source.publish(Batch([{"wedge": 60}], on_done=lambda b: acked.append(1)))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await asyncio.wait_for(app.stop(), 15)
    assert time.monotonic() - started < 10
    assert not alive(pid) and acked == []


def test_workers_of_a_parent_that_dies_hard_exit_and_leave_no_segment():
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "tests.bridge.contract_agents"],
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__)))),
                          capture_output=True, text=True, timeout=60)
    parent, *workers = map(int, proc.stdout.split())
    assert len(workers) == 3, proc.stderr
    deadline = time.monotonic() + 15
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in workers if alive(p)], "orphaned workers still running"
    prefix = segment_prefix(parent)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and [
            n for n in os.listdir("/dev/shm") if n.startswith(prefix)]:
        time.sleep(0.05)
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]


async def test_sigkill_mid_batch_whose_data_came_by_shared_memory(app, tmp_path, clean_slate):
    source = app.channel()
    delivered, acked = [], []
    agent = app.agent(source, sink=[delivered.append], executor="process", concurrency=2,
                      on_error="stop")(ca.kill_marked)
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


async def test_runner_metrics_count_what_happened():
    async with ProcessAgentRunner(ca.raiser, concurrency=2) as runner:
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


async def test_concurrent_shm_calls_never_mix_up_their_data(clean_slate):
    reg = NodeRegistry()
    reg.register("echo", native=ca.Echo)
    async with ProcessBridge(reg, workers_per_node=2) as bridge:
        await bridge.initialize_node("e", "echo", {})

        async def call(k):
            size = 10_000 + 1_000 * (k % 7)  # sizes vary: segments get reused
            data = pa.RecordBatch.from_pydict({"x": pa.array([k] * size, pa.int64())})
            out = await bridge.execute_node("e", "echo", data, {"k": k})
            return k, size, out
        held = []
        for wave in range(3):
            held.extend(await asyncio.gather(*(call(wave * 100 + i) for i in range(16))))
        for k, size, out in held:  # everything kept is still intact
            assert out.num_rows == size and set(out.column("x").to_pylist()) == {k}
        assert bridge.metrics.as_dict()["shm_transfers"] >= 96
        del held
