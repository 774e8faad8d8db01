"""Reused shared-memory segments: reuse, and no reuse while data is held."""
import asyncio
import os

import pyarrow as pa
import pyarrow.compute as pc

from sabot.agents.process import ProcessAgentRunner
from sabot.bridge import ProcessBridge
from sabot.nodes import NodeRegistry
from tests.helpers import until

from . import agents_fixture
from .conftest import pid_alive, pid_running, shm_segments
from .helpers import Echo

N = 300_000  # 2.4 MB of int64: well above the inline threshold


def filled(value):
    return pa.RecordBatch.from_pydict({"x": pa.array([value] * N, pa.int64())})


async def test_segments_are_reused_across_calls(process_bridge):
    for i in range(5):
        assert await process_bridge.execute_node("r", "rows", filled(i), {}) == N
    pool = process_bridge._pools["r"].workers[0].arena
    # Each call's segment came back before the next one needed it (at most
    # one call late), so a couple of segments served all five.
    assert len(pool._pool) <= 2
    # The pooled segments are in /dev/shm under our name while the bridge
    # lives (the fixture checks they are gone after it closes).
    assert set(pool._pool) <= shm_segments()


async def test_data_a_node_keeps_is_not_overwritten(process_bridge):
    await process_bridge.execute_node("m", "remember", filled(1), {})
    for value in (2, 3, 4):
        previous = await process_bridge.execute_node("m", "remember", filled(value), {})
        assert previous == (value - 1) * N  # the kept batch is still intact


async def test_results_the_caller_keeps_are_not_overwritten(process_bridge):
    kept = [await process_bridge.execute_node("e", "identity", filled(v), {})
            for v in (5, 6, 7)]
    assert [pc.sum(b.column("x")).as_py() for b in kept] == [5 * N, 6 * N, 7 * N]
    del kept
    # Released results are reused: further calls need no new segments.
    for v in range(3):
        await process_bridge.execute_node("e", "identity", filled(v), {})


async def test_sigkill_after_large_results_leaves_no_segments(registry):
    from sabot.bridge import ProcessBridge
    before = shm_segments()
    async with ProcessBridge(registry) as bridge:
        out = await bridge.execute_node("e", "identity", filled(9), {})
        assert out.num_rows == N
        (pid,) = bridge.worker_pids("e")
        os.kill(pid, 9)
        await until(lambda: not pid_running(pid), 5, "the worker dead")  # before the next call
        again = await asyncio.wait_for(bridge.execute_node("e", "identity", filled(8), {}), 30)
        assert again.num_rows == N and pc.sum(out.column("x")).as_py() == 9 * N
        pids = bridge.worker_pids()
    assert not [p for p in pids + [pid] if pid_alive(p)]
    assert shm_segments() <= before


def test_a_program_that_never_closes_its_bridge_leaves_nothing(tmp_path):
    import subprocess
    import sys
    script = tmp_path / "forgetful.py"
    script.write_text(
        "import asyncio, os, pyarrow as pa\n"
        "from sabot.bridge import ProcessBridge\n"
        "from tests.bridge.helpers import all_nodes_registry\n"
        "async def main():\n"
        "    bridge = ProcessBridge(all_nodes_registry())\n"
        "    big = pa.RecordBatch.from_pydict({'x': pa.array(range(300_000), pa.int64())})\n"
        "    out = await bridge.execute_node('e', 'identity', big, {})\n"
        "    print(os.getpid(), bridge.worker_pids()[0], out.num_rows)\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=root, env={**os.environ, "PYTHONPATH": root})
    assert proc.returncode == 0, proc.stderr
    pid, worker, rows = map(int, proc.stdout.split())
    assert rows == N
    assert "leaked" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    from sabot.bridge.shm import segment_prefix
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(segment_prefix(pid))]
    assert not pid_alive(worker)


# -- data held on either side is never overwritten ---------------------------

async def test_results_held_by_the_parent_are_never_overwritten(clean_slate):
    async with ProcessAgentRunner(agents_fixture.keyed_big) as runner:
        kept = []
        for k in range(24):
            kept.extend(await runner.process([k]))
        assert [set(b.column("x").to_pylist()) for b in kept] == [{k} for k in range(24)]


async def test_inputs_held_by_the_agent_are_never_overwritten(clean_slate):
    async with ProcessAgentRunner(agents_fixture.remember_previous) as runner:
        outs = []
        for k in range(1, 16):
            batch = pa.RecordBatch.from_pydict({"x": pa.array([k] * 20_000, pa.int64())})
            outs.extend(await runner.process(batch))
            del batch
        assert outs[0] == {"prev_sum": None}
        assert [o["prev_first"] for o in outs[1:]] == list(range(1, 15))
        assert [o["prev_sum"] for o in outs[1:]] == [k * 20_000 for k in range(1, 15)]


async def test_concurrent_shm_calls_never_mix_up_their_data(clean_slate):
    reg = NodeRegistry()
    reg.register("echo", native=Echo)
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
