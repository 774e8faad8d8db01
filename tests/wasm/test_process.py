"""WASM nodes in the process bridge's workers, and pipelines mixing every executor.

A worker gets a WASM node's module as its bytes in the ``init`` frame (JSON,
no pickle), compiles it and runs it under the same sandbox, so a CPU-heavy
WASM node can use every core.
"""
import os

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sabot.bridge import NativeBridge, ProcessBridge, default_bridges
from sabot.exceptions import NodeExecutionError
from sabot.nodes import Pipeline

from tests.bridge import helpers

pytestmark = pytest.mark.usefixtures("clean_slate")

COLUMN = pa.array([5, None, -3, 12, None, 7, 0, -1, 40], pa.int64())


async def test_a_wasm_node_runs_in_a_worker_process(registry):
    bridge = ProcessBridge(registry)
    try:
        info = await bridge.initialize_node("s", "sum", {})
        assert info["pid"] != os.getpid() and info["pid"] in bridge.worker_pids("s")
        out = await bridge.execute_node("s", "sum", pa.record_batch({"x": COLUMN}), {})
        assert out.column(0)[0] == pc.sum(COLUMN)
    finally:
        await bridge.close()


async def test_a_hostile_call_in_a_worker_fails_alone(registry):
    bridge = ProcessBridge(registry)
    try:
        await bridge.initialize_node("loop", "loop", {})
        pids = bridge.worker_pids("loop")
        with pytest.raises(NodeExecutionError, match="'loop' \\(loop\\) ran out of fuel"):
            await bridge.execute_node("loop", "loop",
                                      pa.record_batch({"x": pa.array([1], pa.int64())}), {})
        ok = pa.record_batch({"x": pa.array([2], pa.int64())})
        assert (await bridge.execute_node("loop", "loop", ok, {})).equals(ok)
        assert bridge.worker_pids("loop") == pids  # no worker died
    finally:
        await bridge.close()


async def test_a_module_refused_at_registration_never_reaches_a_worker(registry):
    """The worker checks the module again; a header it cannot load is its error."""
    from sabot.bridge.wasm import WasmModule
    from sabot.exceptions import RegistryError
    header = registry.process_spec("sum")["wasm"]
    header["capabilities"] = ["gpu"]
    with pytest.raises(RegistryError, match="unknown capability"):
        WasmModule.from_header(header)


async def test_a_pipeline_mixes_native_process_and_wasm_nodes(registry):
    registry.register("add", native=helpers.AddColumn, process=helpers.AddColumn)
    bridges = default_bridges(registry)
    pipe = Pipeline(registry, bridges=bridges, name="mixed")
    pipe.add_node("here", "add", {"amount": 1}, runtime="native")
    pipe.add_node("there", "add", {"amount": 10}, runtime="process")
    pipe.add_node("keep", "filter_positive")             # auto: the wasm runtime
    pipe.add_node("total", "sum", runtime="process")     # a WASM node in a worker
    pipe.connect("here", "there").connect("there", "keep").connect("keep", "total")
    try:
        async with pipe:
            out = await pipe.run_batch(pa.record_batch({"x": COLUMN}))
            # Each node ran where its runtime said.
            assert bridges["native"].node("here").runtime == "native"
            assert bridges["process"].worker_pids("there")
            assert bridges["wasm"].node("keep").runtime == "wasm"
            assert bridges["process"].worker_pids("total")
        shifted = pc.add(COLUMN, 11)
        assert out.column(0)[0] == pc.sum(pc.filter(shifted, pc.greater(shifted, 0)))
    finally:
        await bridges["process"].close()


async def test_the_native_bridge_can_run_a_wasm_node_in_process(registry):
    """A WasmModule is a factory like any other."""
    bridge = NativeBridge(registry)
    out = await bridge.execute_node("s", "sum", pa.record_batch({"x": COLUMN}), {})
    assert out.column(0)[0] == pc.sum(COLUMN)
    await bridge.close()
