"""What crosses a process boundary (sabot/bridge/ipc.py): Arrow IPC for data, JSON
for the rest, both ways and both paths (inline and shared memory, seed 001,
test 1); what is refused instead of rewritten; frames split over many
receives; and no pickle anywhere on the data path."""
import json
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
from sabot.bridge.ipc import FrameDecoder, FrameReader, FrameWriter, convert
from sabot.exceptions import ConversionError
from sabot.nodes import NodeRegistry
from tests.helpers import until

from . import agents_fixture
from .conftest import pid_running, shm_segments
from .helpers import Echo


@pytest.fixture
def app():
    return sabot.App("bridge-ipc-test")


def roundtrip(value, threshold=64 * 1024):
    """Write a frame, cut it into bytes, decode it: what a worker would read."""
    writer = FrameWriter(threshold)
    desc = writer.describe(value)
    data = b"".join(memoryview(b) for b in writer.finish({"v": desc}))
    # Fed in two pieces, as a socket may deliver it.
    decoder = FrameDecoder()
    frames = decoder.feed(data[:7]) + decoder.feed(data[7:])
    (header, body), = frames
    reader = FrameReader(header, body)
    return reader.value(header["v"]), writer, reader


@pytest.mark.parametrize("threshold", [64 * 1024, 0], ids=["inline", "shm"])
def test_record_batch_round_trip_both_paths(threshold):
    batch = pa.RecordBatch.from_pydict({"x": [1, 2, 3], "s": ["a", None, "c"]})
    out, writer, _ = roundtrip(batch, threshold)
    assert out.equals(batch) and out.schema.equals(batch.schema)
    assert bool(writer.segments) == (threshold == 0)


@pytest.mark.parametrize("threshold", [64 * 1024, 0], ids=["inline", "shm"])
def test_table_list_and_json_values_round_trip(threshold):
    table = pa.table({"a": [1.5, 2.5]})
    assert roundtrip(table, threshold)[0].equals(table)
    values = [1, "two", {"three": [3]}, None, 4.5, True]
    assert roundtrip(values, threshold)[0] == values
    assert roundtrip([], threshold)[0] == []
    assert roundtrip({"k": [1, 2]}, threshold)[0] == {"k": [1, 2]}
    assert roundtrip(7, threshold)[0] == 7


def test_large_batch_goes_through_shared_memory_without_a_copy():
    before = shm_segments()
    big = pa.RecordBatch.from_pydict({"x": pa.array(range(1_000_000), pa.int64())})
    out, writer, reader = roundtrip(big)
    assert writer.segments and reader.mapped
    # Zero copy: the decoded column's data lies inside the shared mapping.
    mapping = reader.mapped[0]
    data = out.column(0).buffers()[1]
    assert mapping.address <= data.address < mapping.address + mapping.size
    assert out.equals(big)
    # The reader unlinked the name at once; the pages live on with `out`.
    assert shm_segments() <= before


def test_convert_reports_bytes_and_path():
    small = pa.RecordBatch.from_pydict({"x": [1]})
    out, nbytes, via_shm = convert(small)
    assert out.equals(small) and nbytes > 0 and not via_shm
    out, nbytes, via_shm = convert(small, inline_threshold=0)
    assert via_shm and nbytes > 0


def test_values_that_cannot_cross_raise_conversion_error():
    with pytest.raises(ConversionError, match="cannot cross"):
        FrameWriter().describe(object())
    with pytest.raises(ConversionError, match="list item"):
        FrameWriter().describe([1, {2, 3}])
    reader = FrameReader({"parts": []}, None)
    with pytest.raises(ConversionError):
        reader.value({"k": "batch", "shm": "psm_does_not_exist"})
    with pytest.raises(ConversionError):
        reader.value({"k": "batch", "p": 3})


def test_conversion_error_is_a_bridge_error_and_a_value_error():
    from sabot.exceptions import BridgeError
    assert issubclass(ConversionError, BridgeError)
    assert issubclass(ConversionError, ValueError)


# -- what crosses, both ways -------------------------------------------------

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
    async with ProcessAgentRunner(agents_fixture.echo_batches, inline_threshold=threshold) as runner:
        for name, data in _odd_batches():
            (out,) = await runner.process(data)
            if type(out) is not type(data) or not out.equals(data) or (
                    out.schema.metadata != data.schema.metadata):
                wrong.append((name, data, out))
        assert wrong == []
        if threshold == 0:
            assert runner.metrics.as_dict()["shm_transfers"] > 0


async def test_json_values_that_cross_and_those_refused(clean_slate):
    async with ProcessAgentRunner(agents_fixture.echo_batches) as runner:
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
    async with ProcessAgentRunner(agents_fixture.echo_batches) as runner:
        with pytest.raises(ConversionError):
            await runner.process([_Reducible()])
        with pytest.raises(ConversionError):
            await runner.process(_Reducible())


def test_lone_surrogate_in_a_string_list_crosses():
    for value in (["\ud800"], ["a", "\udfff b"]):
        out, _, _ = convert(value)
        assert out == value


def test_non_string_dict_keys_are_refused_not_rewritten():
    for value in ({1: "a"}, [{"x": {2: "b"}}, 3], {"ok": [{None: 1}]}):
        with pytest.raises(ConversionError, match="dict key"):
            convert(value)
    assert convert({"a": [{"b": 1}]})[0] == {"a": [{"b": 1}]}


async def test_non_string_dict_keys_through_a_process_agent():
    async with ProcessAgentRunner(agents_fixture.echo_batches) as runner:
        with pytest.raises(ConversionError):
            await runner.process([{1: "a"}])
        assert await runner.process([{"1": "a"}]) == [[{"1": "a"}]]


# -- dictionary-encoded batches cross inline ---------------------------------

def small_dictionary_batch():
    return pa.RecordBatch.from_pydict({"d": pa.array(["a", "b", "a"]).dictionary_encode()})


def nested_dictionary_batch():
    inner = pa.StructArray.from_arrays([pa.array(["x", "y"]).dictionary_encode()], ["s"])
    return pa.RecordBatch.from_arrays([inner], names=["st"])


def test_small_dictionary_batches_convert_inline():
    for batch in (small_dictionary_batch(), nested_dictionary_batch()):
        out, _, shm = convert(batch)
        assert not shm
        assert out.equals(batch)


async def test_small_dictionary_batch_through_a_process_agent_and_bridge():
    async with ProcessAgentRunner(agents_fixture.echo_batches) as runner:
        (out,) = await runner.process(small_dictionary_batch())
        assert out.equals(small_dictionary_batch())
    reg = NodeRegistry()
    reg.register("echo", native=Echo)
    async with ProcessBridge(reg) as bridge:
        out = await bridge.execute_node("e", "echo", small_dictionary_batch(), {})
        assert out.equals(small_dictionary_batch())


async def test_small_dictionary_batch_through_databridge():
    bridge = DataBridge(source="native", target="process")
    await bridge.put(small_dictionary_batch())
    assert (await bridge.get()).equals(small_dictionary_batch())


# -- frames split over many receives -----------------------------------------

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


# -- no pickle on the data path ----------------------------------------------

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
                      concurrency=2)(agents_fixture.pickle_free_echo)
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
        await until(lambda: not pid_running(victim), 5, "victim dead")
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
    reg.register("echo", native=Echo)
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
