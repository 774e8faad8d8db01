"""WASM nodes over Arrow columns: each answer equals pyarrow's for the same data.

The nodes are WebAssembly text (tests/wasm/wat.py) compiled at test time.
They read the ABI's batch descriptor: validity bitmaps, int64 and float64
values, string offsets and bytes; and they write their outputs the same way.
"""
import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sabot.exceptions import NodeExecutionError
from sabot.nodes import Pipeline

from . import wat

INT64 = pa.array([5, None, -3, 12, None, 7, 0, -1, 40], pa.int64())
FLOAT64 = pa.array([1.5, None, -2.25, 1e10, None, 0.0, -0.5], pa.float64())
COLUMNS = [pytest.param(INT64, id="int64"), pytest.param(FLOAT64, id="float64")]


@pytest.mark.parametrize("column", COLUMNS)
async def test_sum_equals_pyarrow_with_nulls(bridge, column):
    out = await bridge.execute_node("sum", "sum", pa.record_batch({"x": column}), {})
    assert out.schema == pa.schema([("x", column.type)])
    assert out.column(0)[0] == pc.sum(column)


@pytest.mark.parametrize("column", COLUMNS)
async def test_sum_of_only_nulls_is_null_as_in_pyarrow(bridge, column):
    nulls = pa.array([None, None], column.type)
    out = await bridge.execute_node("sum", "sum", pa.record_batch({"x": nulls}), {})
    assert not pc.sum(nulls).is_valid
    assert out.column(0).null_count == 1


@pytest.mark.parametrize("column", COLUMNS)
async def test_filter_equals_pyarrow_with_nulls(bridge, column):
    out = await bridge.execute_node("f", "filter_positive", pa.record_batch({"v": column}), {})
    expected = pc.filter(column, pc.greater(column, 0))
    assert out.column(0).equals(expected)
    assert out.schema.names == ["v"]


async def test_string_length_equals_pyarrow(bridge):
    strings = pa.array(["", "abc", None, "héllo wörld", None, "x" * 1000], pa.utf8())
    out = await bridge.execute_node("l", "string_length", pa.record_batch({"s": strings}), {})
    assert out.column(0).equals(pc.binary_length(strings))


async def test_a_sliced_batch_crosses_as_its_slice(bridge):
    """A slice's bitmap and offsets start mid-buffer: the node sees only the slice."""
    batch = pa.record_batch({"x": INT64}).slice(3, 5)
    out = await bridge.execute_node("s", "sum", batch, {})
    assert out.column(0)[0] == pc.sum(batch.column(0))
    strings = pa.array(["a", None, "bcd", "ef", None, "ghij"]).slice(1, 4)
    out = await bridge.execute_node("l", "string_length", pa.record_batch({"s": strings}), {})
    assert out.column(0).equals(pc.binary_length(strings))


async def test_a_table_and_a_list_of_dicts_are_inputs_too(bridge):
    table = pa.Table.from_batches([pa.record_batch({"x": pa.array([1, 2], pa.int64())}),
                                   pa.record_batch({"x": pa.array([3, None], pa.int64())})])
    out = await bridge.execute_node("s", "sum", table, {})
    assert out.column(0)[0].as_py() == 6
    out = await bridge.execute_node("s", "sum", [{"x": 4}, {"x": None}, {"x": 5}], {})
    assert out.column(0)[0].as_py() == 9


async def test_an_empty_batch(bridge):
    out = await bridge.execute_node("f", "filter_positive",
                                    pa.record_batch({"x": pa.array([], pa.int64())}), {})
    assert out.num_rows == 0 and out.schema.names == ["x"]


async def test_parameters_arrive_as_json(bridge):
    params = {"threshold": 3, "names": ["a", "é"], "nested": {"ok": True}}
    out = await bridge.execute_node("p", "params_echo",
                                    pa.record_batch({"params": pa.array([1])}), params)
    assert json.loads(out.column(0)[0].as_py()) == params


async def test_parameters_that_are_not_json_fail_the_call(bridge):
    with pytest.raises(NodeExecutionError, match="JSON"):
        await bridge.execute_node("p", "params_echo", pa.record_batch({"a": [1]}),
                                  {"x": object()})


@pytest.mark.parametrize("arrow_type", [
    pa.bool_(), pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(),
    pa.uint32(), pa.uint64(), pa.float32(), pa.float64(), pa.utf8(), pa.binary()])
async def test_every_abi_type_crosses_both_ways_intact(bridge, arrow_type):
    """fail_on_13 hands its input back: in and out again, bitmaps included."""
    first = pa.array([14], pa.int64())
    values = {pa.bool_(): [True, None, False, True, True, False, None, True, False],
              pa.utf8(): ["a", None, "", "ü" * 5], pa.binary(): [b"\x00\xff", None, b""]}
    column = pa.array(values.get(arrow_type, [1, None, 3, 100, None, 0]), arrow_type)
    batch = pa.record_batch({"first": first.take([0] * len(column)), "c": column})
    out = await bridge.execute_node("echo", "fail_on_13", batch, {})
    assert out.equals(batch)


async def test_a_type_outside_the_abi_is_refused_naming_the_column(bridge):
    batch = pa.record_batch({"when": pa.array([1, 2], pa.timestamp("ms"))})
    with pytest.raises(NodeExecutionError, match="'when'.*timestamp"):
        await bridge.execute_node("s", "sum", batch, {})


async def test_the_node_s_own_failure_is_reported_with_its_message(bridge):
    batch = pa.record_batch({"x": pa.array([13], pa.int64())})
    with pytest.raises(NodeExecutionError, match="'unlucky'.*unlucky number"):
        await bridge.execute_node("unlucky", "fail_on_13", batch, {})
    ok = pa.record_batch({"x": pa.array([14], pa.int64())})
    assert (await bridge.execute_node("unlucky", "fail_on_13", ok, {})).equals(ok)
    # A clean failure is no trap: the instance is kept.
    assert bridge.node("unlucky").instantiations == 1


async def test_an_unsupported_column_type_is_the_node_s_failure(bridge):
    batch = pa.record_batch({"x": pa.array([1], pa.int32())})
    with pytest.raises(NodeExecutionError, match="unsupported column type"):
        await bridge.execute_node("s", "sum", batch, {})


async def test_a_large_batch_runs_off_the_event_loop_with_the_same_answer(bridge):
    column = pa.array(range(300_000), pa.int64())  # 2.4 MB: above THREAD_THRESHOLD
    out = await bridge.execute_node("s", "sum", pa.record_batch({"x": column}), {})
    assert out.column(0)[0] == pc.sum(column)


async def test_the_instance_is_made_once_and_reused(bridge):
    batch = pa.record_batch({"x": INT64})
    for _ in range(5):
        await bridge.execute_node("s", "sum", batch, {})
    assert bridge.node("s").instantiations == 1
    assert bridge.metrics.executions["s"] == 5


async def test_a_pipeline_runs_wasm_nodes_like_any_other(registry):
    from sabot.bridge import default_bridges
    bridges = default_bridges(registry)
    assert bridges["wasm"].executor_type == "wasm"
    pipe = Pipeline(registry, bridges=bridges)
    pipe.add_node("keep", "filter_positive").add_node("total", "sum")
    pipe.connect("keep", "total")
    async with pipe:
        out = await pipe.run_batch(pa.record_batch({"x": INT64}))
    assert out.column(0)[0] == pc.sum(pc.filter(INT64, pc.greater(INT64, 0)))


def test_the_wat_runtime_is_shared_by_every_node():
    assert all(wat.RUNTIME in text for text in (wat.SUM, wat.LOOP, wat.OPEN_FILE))
