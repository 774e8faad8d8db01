"""The example node in C (examples/wasm_node/sum.c), built by ``make wasm-example``.

clang compiles it for wasm32 and lld's wasm-ld links it (Debian's clang and
lld packages; .ci/run installs them). Without them the test skips, except
under CI=true, where it fails: the example must keep building.
"""
import os
import shutil
import subprocess

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sabot.bridge.wasm import WasmBridge
from sabot.nodes import NodeRegistry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "wasm_node", "sum.wasm")


@pytest.fixture(scope="module")
def example_wasm():
    missing = [tool for tool in ("clang", "wasm-ld", "make") if shutil.which(tool) is None]
    if missing:
        reason = (f"{', '.join(missing)} not found: the C example needs clang and lld "
                  f"(apt-get install clang lld)")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    # -B: built by this run, whatever an earlier run left.
    done = subprocess.run(["make", "-s", "-B", "wasm-example"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"make wasm-example failed:\n{done.stdout}\n{done.stderr}"
    return EXAMPLE


async def test_the_c_example_sums_like_pyarrow(example_wasm):
    registry = NodeRegistry()
    registry.register("csum", wasm=example_wasm)
    bridge = WasmBridge(registry)
    ints = pa.array([3, None, -10, 2 ** 40, None, 7], pa.int64())
    floats = pa.array([0.25, None, 1e-3, -8.5, None, 2.0], pa.float64())
    empty = pa.array([None, None, None, None, None, None], pa.int64())
    out = await bridge.execute_node("c", "csum", pa.record_batch(
        {"ints": ints, "floats": floats, "empty": empty}), {})
    assert out.schema.names == ["ints", "floats", "empty"]
    assert out.column("ints")[0] == pc.sum(ints)
    assert out.column("floats")[0] == pc.sum(floats)
    assert out.column("empty")[0] == pc.sum(empty)  # both null
    big = pa.array(range(1_000_000), pa.int64())  # no validity bitmap: the fast loop
    out = await bridge.execute_node("c", "csum", pa.record_batch({"big": big}), {})
    assert out.column(0)[0] == pc.sum(big)


async def test_the_c_example_reports_an_unsupported_column(example_wasm):
    from sabot.exceptions import NodeExecutionError
    registry = NodeRegistry()
    registry.register("csum", wasm=example_wasm)
    bridge = WasmBridge(registry)
    with pytest.raises(NodeExecutionError, match="int64 and float64 columns only"):
        await bridge.execute_node("c", "csum", pa.record_batch({"s": ["a"]}), {})


def test_the_agent_example_runs_and_matches_python(example_wasm):
    """examples/wasm_node/totals.py: a worker with executor="wasm" that stops by itself."""
    import sys
    done = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "wasm_node",
                                                        "totals.py"), "worker", "-l", "warning"],
                          cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "50 batches summed by the WASM node" in done.stdout
    assert "matches Python's" in done.stdout


def test_the_built_module_is_not_committed():
    ignored = subprocess.run(["git", "check-ignore", "-q", EXAMPLE], cwd=ROOT)
    assert ignored.returncode == 0, "examples/wasm_node/sum.wasm must be ignored by git"
