"""The sandbox holds: each hostile call fails alone, and the bridge keeps serving.

An endless loop runs out of fuel, a memory bomb is refused memory and traps,
an out-of-bounds read traps, an output pointing outside memory breaks the
ABI, a file outside the granted directory cannot be opened: each is a
``NodeExecutionError`` naming the node, the next call on the same node
answers (on a fresh instance after a trap), and other nodes are untouched.
"""
import asyncio
import os

import pyarrow as pa
import pytest

from sabot.bridge.wasm import WasmBridge
from sabot.exceptions import NodeExecutionError
from sabot.nodes import NodeRegistry

from . import wat
from .conftest import FUEL, MEMORY_LIMIT

HOSTILE = pa.record_batch({"x": pa.array([1], pa.int64())})
HARMLESS = pa.record_batch({"x": pa.array([2], pa.int64())})


@pytest.mark.parametrize("node_type,reason", [
    ("loop", f"ran out of fuel: more than {FUEL} instructions"),
    ("bomb", f"trapped: unreachable \\(memory in use \\d+ of {MEMORY_LIMIT} bytes"),
    ("out_of_bounds", "trapped: memory out of bounds"),
    ("bad_pointer", "broke the ABI: output column 0's values .* outside the module's memory"),
])
async def test_a_hostile_call_fails_alone_and_the_node_serves_on(bridge, node_type, reason):
    await bridge.execute_node("neighbour", "sum", HARMLESS, {})
    with pytest.raises(NodeExecutionError, match=f"WASM node 'victim' \\({node_type}\\) {reason}"
                       ) as err:
        await bridge.execute_node("victim", node_type, HOSTILE, {})
    assert err.value.node_id == "victim"
    assert bridge.metrics.failures["victim"] == 1
    # The same node answers the next call, on a new instance (the old one's
    # memory may be half-written).
    assert (await bridge.execute_node("victim", node_type, HARMLESS, {})).equals(HARMLESS)
    assert bridge.node("victim").instantiations == 2
    # Again and again: nothing leaks from one failure to the next.
    for _ in range(3):
        with pytest.raises(NodeExecutionError):
            await bridge.execute_node("victim", node_type, HOSTILE, {})
    assert (await bridge.execute_node("victim", node_type, HARMLESS, {})).equals(HARMLESS)
    # Its neighbour never noticed.
    assert bridge.node("neighbour").instantiations == 1
    assert (await bridge.execute_node("neighbour", "sum", HARMLESS, {})).equals(HARMLESS)


async def test_the_bomb_is_stopped_at_the_memory_limit(bridge):
    with pytest.raises(NodeExecutionError) as err:
        await bridge.execute_node("bomb", "bomb", HOSTILE, {})
    used = int(str(err.value).split("memory in use ")[1].split()[0])
    assert MEMORY_LIMIT - 16 * 65536 < used <= MEMORY_LIMIT


async def test_an_input_larger_than_the_memory_limit_fails_that_call(bridge):
    big = pa.record_batch({"x": pa.array(range(MEMORY_LIMIT // 8 + 1), pa.int64())})
    with pytest.raises(NodeExecutionError, match=r"could not allocate \d+ bytes for its input"):
        await bridge.execute_node("s", "sum", big, {})
    assert (await bridge.execute_node("s", "sum", HARMLESS, {})).equals(HARMLESS)


async def test_a_memory_limit_large_enough_lets_the_same_input_through():
    registry = NodeRegistry()
    registry.register("sum", wasm=wat.SUM, memory_limit=4 * MEMORY_LIMIT)
    big = pa.record_batch({"x": pa.array(range(MEMORY_LIMIT // 8 + 1), pa.int64())})
    bridge = WasmBridge(registry)
    out = await bridge.execute_node("s", "sum", big, {})
    assert out.column(0)[0].as_py() == sum(range(MEMORY_LIMIT // 8 + 1))


async def test_fuel_is_per_call_not_per_instance():
    """Each call gets the whole budget: many calls never exhaust it together."""
    registry = NodeRegistry()
    registry.register("sum", wasm=wat.SUM, fuel=200_000)
    bridge = WasmBridge(registry)
    batch = pa.record_batch({"x": pa.array(range(5000), pa.int64())})
    for _ in range(20):  # ~100k instructions a call, 2M in all
        await bridge.execute_node("s", "sum", batch, {})
    assert bridge.node("s").instantiations == 1
    big = pa.record_batch({"x": pa.array(range(50_000), pa.int64())})
    with pytest.raises(NodeExecutionError, match="ran out of fuel"):
        await bridge.execute_node("s", "sum", big, {})


@pytest.fixture
def files(tmp_path):
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "inside.txt").write_text("readable")
    (tmp_path / "secret.txt").write_text("not for the sandbox")
    return granted


async def test_a_file_outside_the_granted_directory_cannot_be_opened(files):
    registry = NodeRegistry()
    registry.register("open", wasm=wat.OPEN_FILE, capabilities=[f"fs:{files}"])
    bridge = WasmBridge(registry)

    def path(p):
        return pa.record_batch({"path": pa.array([p])})

    assert (await bridge.execute_node("o", "open", path("inside.txt"), {})).num_rows == 1
    for denied in ("../secret.txt", os.path.join(os.path.dirname(files), "secret.txt"),
                   "/etc/passwd", "missing.txt"):
        with pytest.raises(NodeExecutionError, match="'o' \\(open\\) reported a failure: "
                                                     "open failed"):
            await bridge.execute_node("o", "open", path(denied), {})
    # Denied opens are the node's failures, not traps: the instance serves on.
    assert (await bridge.execute_node("o", "open", path("inside.txt"), {})).num_rows == 1
    assert bridge.node("o").instantiations == 1


async def test_the_environment_holds_only_the_granted_variable(monkeypatch):
    monkeypatch.setenv("SABOT_WASM_GRANTED", "yes")
    monkeypatch.setenv("SABOT_WASM_SECRET", "never")
    registry = NodeRegistry()
    registry.register("env", wasm=wat.ENV_COUNT, capabilities=["env:SABOT_WASM_GRANTED"])
    bridge = WasmBridge(registry)
    out = await bridge.execute_node("e", "env", pa.record_batch({"n": [0]}), {})
    assert out.column(0).to_pylist() == [1]
    assert len(os.environ) > 2


async def test_concurrent_calls_on_one_node_take_turns(bridge):
    batches = [pa.record_batch({"x": pa.array(range(i, i + 200_000), pa.int64())})
               for i in range(4)]  # 1.6 MB each: run in threads
    outs = await asyncio.gather(*(bridge.execute_node("s", "sum", b, {}) for b in batches))
    assert [o.column(0)[0].as_py() for o in outs] == [
        sum(range(i, i + 200_000)) for i in range(4)]
    assert bridge.node("s").instantiations == 1


async def test_a_closed_bridge_refuses_calls(registry):
    bridge = WasmBridge(registry)
    await bridge.execute_node("s", "sum", HARMLESS, {})
    await bridge.close()
    from sabot.exceptions import BridgeError
    with pytest.raises(BridgeError, match="closed"):
        await bridge.execute_node("s", "sum", HARMLESS, {})


async def test_a_node_type_without_a_module_is_refused_by_the_wasm_bridge():
    from sabot.exceptions import RegistryError
    from tests.bridge.helpers import Identity
    registry = NodeRegistry()
    registry.register("py", native=Identity)
    with pytest.raises(RegistryError, match="no wasm module"):
        await WasmBridge(registry).initialize_node("p", "py", {})
