"""Agent functions for the process-agent tests (importable by path).

Spawned worker processes import these by module path, exactly as a user's
agents would be imported. Coordination with the test process goes through
files (the test passes their paths inside the values).
"""
from __future__ import annotations

import asyncio
import os
import pickle
import signal
import time

import pyarrow as pa


async def double(stream):
    """Yields each value times two."""
    async for value in stream:
        yield value * 2


async def batch_sums(stream):
    """Yields one dict per batch: the sum of column x and the worker pid."""
    async for batch in stream.batches():
        yield {"sum": sum(batch.column("x").to_pylist()), "pid": os.getpid()}


async def fails_on_negative(stream):
    """Raises on a negative value, doubles the rest."""
    async for value in stream:
        if value < 0:
            raise ValueError(f"negative value {value}")
        yield value * 2


async def kill_once(stream):
    """Echoes values; a dict with ``kill_marker`` SIGKILLs the process once."""
    async for value in stream:
        marker = value.get("kill_marker") if isinstance(value, dict) else None
        if marker and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        yield value


async def pid_agent(stream):
    """Yields the pid of the process handling each value."""
    async for _ in stream:
        yield os.getpid()


async def tagged(stream):
    """For each batch (a list of ints), yields ``[batch_tag, value * 10, pid]``
    per value; the batch tag is its first value."""
    async for batch in stream.batches():
        for value in batch:
            yield [batch[0], value * 10, os.getpid()]


async def slow_tagged(stream):
    """Like ``tagged`` but each batch takes a while: dicts ``{"b": tag,
    "v": value, "sleep": s}``; sleeps ``s`` before answering."""
    async for batch in stream.batches():
        delay = max((v.get("sleep", 0) for v in batch), default=0)
        if delay:
            await asyncio.sleep(delay)
        for value in batch:
            yield {"b": value["b"], "v": value["v"], "pid": os.getpid()}


async def kill_marked(stream):
    """Echoes dict values; one with ``kill`` (a marker path) SIGKILLs the
    process the first time it is seen (the marker file records that)."""
    async for batch in stream.batches():
        for value in batch:
            marker = value.get("kill")
            if marker and not os.path.exists(marker):
                with open(marker, "w") as f:
                    f.write(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
        for value in batch:
            yield value


async def always_die(stream):
    """SIGKILLs itself on every batch."""
    async for _ in stream.batches():
        os.kill(os.getpid(), signal.SIGKILL)
        yield None  # pragma: no cover


async def announce_then_hang(stream):
    """For a batch of dicts with ``dir``: writes a file named after its pid
    into ``dir`` then waits ``hold`` seconds before echoing (a window in which
    the test kills the process)."""
    async for batch in stream.batches():
        spec = batch[0]
        directory = spec.get("dir")
        if directory and not os.path.exists(os.path.join(directory, "released")):
            with open(os.path.join(directory, f"{os.getpid()}.busy"), "w") as f:
                f.write(str(spec.get("b")))
            deadline = time.monotonic() + spec.get("hold", 30)
            while time.monotonic() < deadline and not os.path.exists(
                    os.path.join(directory, "released")):
                await asyncio.sleep(0.01)
        for value in batch:
            yield {"b": value.get("b"), "pid": os.getpid()}


class Kaboom(Exception):
    """Raised by ``raiser``."""


def _deep_frame_for_traceback(value):
    raise Kaboom(f"kaboom on {value!r} in pid {os.getpid()}")


async def raiser(stream):
    """Doubles ints; raises ``Kaboom`` (from a named helper) on a negative one."""
    async for value in stream:
        if value < 0:
            _deep_frame_for_traceback(value)
        yield value * 2


async def echo_batches(stream):
    """Yields each batch as it came (RecordBatch, Table or list)."""
    async for batch in stream.batches():
        yield batch


async def describe_batches(stream):
    """Yields, for each RecordBatch, its schema text, row count and rows."""
    async for batch in stream.batches():
        yield {"schema": str(batch.schema), "rows": batch.num_rows,
               "values": batch.to_pylist(), "type": type(batch).__name__}


async def yield_unjsonable(stream):
    """Yields a set for a value equal to "set", else echoes."""
    async for value in stream:
        if value == "set":
            yield {1, 2, 3}
        else:
            yield value


def _no_pickle(*args, **kwargs):
    raise AssertionError("pickle used on the data path")


async def pickle_free_echo(stream):
    """Forbids pickle in the worker, then echoes each batch it receives."""
    pickle.dumps = _no_pickle
    pickle.loads = _no_pickle
    pickle.dump = _no_pickle
    pickle.load = _no_pickle
    try:
        from multiprocessing.reduction import ForkingPickler
        ForkingPickler.dumps = classmethod(lambda cls, *a, **k: _no_pickle())
        ForkingPickler.loads = staticmethod(_no_pickle)
    except Exception:  # pragma: no cover
        pass
    async for batch in stream.batches():
        yield batch


async def returns_after_first(stream):
    """A plain coroutine agent that handles one batch and returns."""
    async for batch in stream.batches():
        return


async def big_then_unjsonable(stream):
    """For each batch: yields a RecordBatch of ``n`` rows (n: the batch's first
    value), then, if the batch holds "bad", a set (which cannot cross)."""
    async for batch in stream.batches():
        yield pa.RecordBatch.from_pydict({"x": pa.array(range(batch[0]), pa.int64())})
        if "bad" in batch:
            yield {1, 2}


async def slow_big(stream):
    """For each batch ``[n, seconds]``: sleeps, then yields n int64 rows."""
    async for batch in stream.batches():
        await asyncio.sleep(batch[1])
        yield pa.RecordBatch.from_pydict({"x": pa.array(range(batch[0]), pa.int64())})


async def keyed_big(stream):
    """For each int k: yields 20k int64 rows all equal to k (shm-sized)."""
    async for value in stream:
        yield pa.RecordBatch.from_pydict({"x": pa.array([value] * 20_000, pa.int64())})


async def remember_previous(stream):
    """Keeps each input batch; yields the sum of column x of the previous one
    (data held past its batch must not be overwritten by the parent)."""
    previous = None
    async for batch in stream.batches():
        if previous is not None:
            yield {"prev_sum": sum(previous.column("x").to_pylist()),
                   "prev_first": previous.column("x")[0].as_py()}
        else:
            yield {"prev_sum": None}
        previous = batch


async def wedged(stream):
    """Blocks its event loop (time.sleep) on a batch holding ``{"wedge": s}``."""
    async for batch in stream.batches():
        for value in batch:
            if isinstance(value, dict) and value.get("wedge"):
                time.sleep(value["wedge"])
            yield value


async def _orphan_main():
    """A parent that starts workers, uses shared memory, then dies hard."""
    from sabot.agents.process import ProcessAgentRunner
    from sabot.bridge import ProcessBridge
    from sabot.nodes import NodeRegistry
    from tests.bridge.helpers import Echo
    runner = ProcessAgentRunner(echo_batches, concurrency=2)
    await runner.start()
    big = pa.RecordBatch.from_pydict({"x": pa.array(range(50_000), pa.int64())})
    await runner.process(big)
    reg = NodeRegistry()
    reg.register("echo", native=Echo)
    bridge = ProcessBridge(reg)
    await bridge.execute_node("e", "echo", big, {})
    print(os.getpid(), " ".join(map(str, runner.pids() + bridge.worker_pids())), flush=True)
    os._exit(1)


if __name__ == "__main__":  # python -m tests.bridge.agents_fixture: orphan workers
    asyncio.run(_orphan_main())
