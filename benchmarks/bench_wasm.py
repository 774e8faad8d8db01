"""WASM executor benchmark: a C node summing 10M int64 values, and the call overhead.

    python benchmarks/bench_wasm.py [--quick]

1. Sum of an int64 column of 10M values (80 MB): the example C node
   (examples/wasm_node/sum.c, built by ``make wasm-example``) through
   ``WasmBridge.execute_node`` (the copy into linear memory and the result
   out included), against ``pyarrow.compute.sum`` and a pure-Python loop
   over the same column (its conversion to Python ints included). GB/s of
   the column's bytes; target >= 1 GB/s for the WASM node. The same with
   one value in 16 null (the node reads the validity bitmap).
2. Call overhead: p50/p99 of ``execute_node`` on a one-row batch, against
   ``pyarrow.compute.sum`` of a one-row array.

Default limits throughout (256 MiB of memory, 2e9 fuel per call).
"""
from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, List

import pyarrow as pa
import pyarrow.compute as pc

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from sabot.bridge.wasm import WasmBridge  # noqa: E402
from sabot.nodes import NodeRegistry  # noqa: E402

QUICK = "--quick" in sys.argv
ROWS = 1_000_000 if QUICK else 10_000_000
REPEAT = 3 if QUICK else 7
EXAMPLE = os.path.join(ROOT, "examples", "wasm_node", "sum.wasm")


def build_example() -> bool:
    done = subprocess.run(["make", "-s", "wasm-example"], cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode != 0:
        print(f"skipped: make wasm-example failed (clang and lld installed?)\n{done.stderr}")
        return False
    return True


def timed(fn: Callable[[], Any], repeat: int) -> List[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


async def timed_async(fn: Callable[[], Any], repeat: int) -> List[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - start)
    return out


def python_sum(column: pa.Array) -> int:
    total = 0
    for v in column.to_pylist():
        if v is not None:
            total += v
    return total


def gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


async def throughput(bridge: WasmBridge, label: str, column: pa.Array) -> float:
    batch = pa.record_batch({"x": column})
    nbytes = column.nbytes
    expected = pc.sum(column)

    async def wasm_call() -> Any:
        out = await bridge.execute_node(label, "sum", batch, {})
        assert out.column(0)[0] == expected
    cold = (await timed_async(wasm_call, 1))[0]
    wasm = statistics.median(await timed_async(wasm_call, REPEAT))
    arrow = statistics.median(timed(lambda: pc.sum(column), REPEAT))
    python = statistics.median(timed(lambda: python_sum(column), 1 if not QUICK else 2))
    print(f"\n{label}: {len(column):,} int64 values, {nbytes / 1e6:.0f} MB "
          f"({column.null_count:,} nulls)")
    print(f"  WASM node (C, copies in and out) {gbps(nbytes, wasm):7.2f} GB/s  "
          f"{wasm * 1e3:8.1f} ms   (first call, instance made: {cold * 1e3:.1f} ms)")
    print(f"  pyarrow.compute.sum              {gbps(nbytes, arrow):7.2f} GB/s  "
          f"{arrow * 1e3:8.1f} ms")
    print(f"  pure-Python loop                 {gbps(nbytes, python):7.3f} GB/s  "
          f"{python * 1e3:8.1f} ms")
    print(f"  ratios: WASM / pyarrow = {arrow / wasm:.2f}x the speed; "
          f"WASM / Python = {python / wasm:.0f}x the speed")
    return gbps(nbytes, wasm)


async def overhead(bridge: WasmBridge) -> None:
    one = pa.record_batch({"x": pa.array([42], pa.int64())})
    n = 2000 if QUICK else 10000

    async def call() -> Any:
        return await bridge.execute_node("one", "sum", one, {})
    await call()
    wasm = sorted(await timed_async(call, n))
    column = one.column(0)
    arrow = sorted(timed(lambda: pc.sum(column), n))
    p50, p99 = wasm[n // 2], wasm[int(n * 0.99)]
    print(f"\ncall overhead, one-row batch ({n} calls)")
    print(f"  WASM node execute_node   p50 {p50 * 1e6:7.1f} us   p99 {p99 * 1e6:7.1f} us")
    print(f"  pyarrow.compute.sum      p50 {arrow[n // 2] * 1e6:7.1f} us")
    print(f"  ratio: a WASM call costs {p50 / arrow[n // 2]:.0f}x a pyarrow kernel call")


async def main() -> int:
    if not build_example():
        return 0
    registry = NodeRegistry()
    registry.register("sum", wasm=EXAMPLE)
    bridge = WasmBridge(registry)
    dense = pa.array(range(ROWS), pa.int64())
    rate = await throughput(bridge, "dense", dense)
    sparse = pc.if_else(pc.equal(pc.bit_wise_and(dense, 15), 3),
                        pa.scalar(None, pa.int64()), dense)
    sparse = pa.concat_arrays([sparse])
    await throughput(bridge, "1 in 16 null", sparse)
    await overhead(bridge)
    await bridge.close()
    print(f"\ntarget >= 1 GB/s for the WASM node: {'met' if rate >= 1 else 'MISSED'} "
          f"({rate:.2f} GB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
