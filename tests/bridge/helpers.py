"""Node types for the bridge and pipeline tests.

They live at module level so that spawned worker processes import them by
path, exactly as a user's nodes would be.
"""
from __future__ import annotations

import asyncio
import os
import signal
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from sabot.exceptions import SabotError
from sabot.retry import RetryPolicy
from sabot.types import NodeExecutorT


class _Node(NodeExecutorT):
    """Base of the test nodes: keeps its params."""

    node_type_name = "test"

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)

    @property
    def node_type(self) -> str:
        return self.node_type_name

    @property
    def runtime(self) -> str:
        return "native"


class Identity(_Node):
    """output = input."""

    async def execute(self, inputs, params):
        return {"output": inputs["input"]}


class RowCount(_Node):
    """output = number of rows of the input batch."""

    async def execute(self, inputs, params):
        return {"output": inputs["input"].num_rows}


class AddColumn(_Node):
    """Adds ``params['amount']`` to column ``x`` of a batch."""

    async def execute(self, inputs, params):
        batch = inputs["input"]
        x = pc.add(batch.column("x"), params.get("amount", 1))
        return {"output": pa.RecordBatch.from_arrays([x], names=["x"])}


class Scale(_Node):
    """output = input * factor (numbers or lists of numbers)."""

    async def execute(self, inputs, params):
        value = inputs["input"]
        factor = params.get("factor", self.params.get("factor", 2))
        if isinstance(value, list):
            return {"output": [v * factor for v in value]}
        return {"output": value * factor}


class Merge(_Node):
    """output = left + right."""

    @property
    def input_keys(self):
        return ("left", "right")

    async def execute(self, inputs, params):
        return {"output": inputs["left"] + inputs["right"]}


class Pid(_Node):
    """output = the process id it runs in."""

    async def execute(self, inputs, params):
        return {"output": os.getpid()}


class Boom(_Node):
    """Always raises a non-retryable error."""

    async def execute(self, inputs, params):
        raise ValueError("boom: this node always fails")


class Flaky(SabotError):
    """A retryable error."""

    retryable = True


class FlakyNode(_Node):
    """Fails (retryably) until a counter file says it has failed enough."""

    async def execute(self, inputs, params):
        path = params["counter"]
        count = int(open(path).read() or 0) if os.path.exists(path) else 0
        with open(path, "w") as f:
            f.write(str(count + 1))
        if count < params.get("failures", 2):
            raise Flaky(f"transient failure {count + 1}")
        return {"output": inputs["input"]}


class KillOnce(_Node):
    """SIGKILLs its own process the first time (marker file), then echoes."""

    async def execute(self, inputs, params):
        marker = params["marker"]
        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return {"output": inputs["input"]}


class AlwaysDie(_Node):
    """SIGKILLs its own process every time."""

    async def execute(self, inputs, params):
        os.kill(os.getpid(), signal.SIGKILL)


class Sleep(_Node):
    """Sleeps ``params['seconds']`` then echoes."""

    async def execute(self, inputs, params):
        await asyncio.sleep(params.get("seconds", 0.05))
        return {"output": inputs.get("input")}


class BrokenFactory(Identity):
    """Fails to build."""

    def __init__(self, params):
        raise RuntimeError("native library missing")


def not_a_node(params):
    """A factory that builds something without execute()."""
    return object()


class ArrowAllocated(_Node):
    """output = bytes Arrow's memory pool holds while the input is alive.

    A zero-copy read of the input allocates nothing; a copy would show.
    """

    async def execute(self, inputs, params):
        batch = inputs["input"]
        return {"output": {"allocated": pa.total_allocated_bytes(),
                           "rows": batch.num_rows}}


class Remember(_Node):
    """Keeps each input; output = sum of column x of the *previous* input.

    Holding input data past ``execute`` must keep its shared memory from
    being reused by the parent.
    """

    def __init__(self, params):
        super().__init__(params)
        self.last = None

    async def execute(self, inputs, params):
        previous, self.last = self.last, inputs["input"]
        total = pc.sum(previous.column("x")).as_py() if previous is not None else None
        return {"output": total}


class _NamedNode(NodeExecutorT):
    """Base of the nodes below: keeps its params; its type is its class name."""

    def __init__(self, params):
        self.params = dict(params)

    @property
    def node_type(self):
        return type(self).__name__

    @property
    def runtime(self):
        return "native"


class Echo(_NamedNode):
    """output = input."""

    async def execute(self, inputs, params):
        return {"output": inputs["input"]}


class Sleepy(_NamedNode):
    """Sleeps ``params['seconds']`` and echoes."""

    async def execute(self, inputs, params):
        await asyncio.sleep(params.get("seconds", 1.0))
        return {"output": inputs["input"]}


class BigOut(_NamedNode):
    """output = a RecordBatch of ``input`` int64 rows (shm when large)."""

    async def execute(self, inputs, params):
        return {"output": pa.RecordBatch.from_pydict(
            {"x": pa.array(range(inputs["input"]), pa.int64())})}


class Retryable(SabotError):
    retryable = True


class FailTimes(_NamedNode):
    """Fails ``params['times']`` times (counter file), retryable or not."""

    async def execute(self, inputs, params):
        path = params["counter"]
        count = int(open(path).read() or 0) if os.path.exists(path) else 0
        with open(path, "w") as f:
            f.write(str(count + 1))
        if count < params.get("times", 1):
            if params.get("retryable", True):
                raise Retryable(f"transient {count + 1}")
            raise ValueError(f"permanent {count + 1}")
        return {"output": inputs["input"]}


class BigThenBad(_NamedNode):
    """Two outputs: a large RecordBatch, then a value that cannot cross."""

    @property
    def output_keys(self):
        return ("big", "bad")

    async def execute(self, inputs, params):
        return {"big": pa.RecordBatch.from_pydict(
                    {"x": pa.array(range(inputs["input"]), pa.int64())}),
                "bad": {1, 2}}


def all_nodes_registry():
    """A registry with every test node registered (native factories)."""
    from sabot.nodes.registry import NodeRegistry
    reg = NodeRegistry()
    for name, cls in [("identity", Identity), ("rows", RowCount), ("add", AddColumn),
                      ("scale", Scale), ("merge", Merge), ("pid", Pid), ("boom", Boom),
                      ("flaky", FlakyNode), ("kill_once", KillOnce),
                      ("always_die", AlwaysDie), ("sleep", Sleep),
                      ("allocated", ArrowAllocated), ("remember", Remember)]:
        reg.register(name, native=cls)
    return reg


def make_pipeline(registry, **kwargs):
    """A Pipeline with a native and a process bridge, as a user builds one."""
    from sabot.bridge import default_bridges
    from sabot.nodes import Pipeline
    return Pipeline(registry, bridges=default_bridges(registry), **kwargs)


def pipeline_registry():
    """A registry of echo, fail, sleepy and merge nodes (native factories)."""
    from sabot.nodes.registry import NodeRegistry
    reg = NodeRegistry()
    reg.register("echo", native=Echo)
    reg.register("fail", native=FailTimes)
    reg.register("sleepy", native=Sleepy)
    reg.register("merge", native=Merge)
    return reg


#: Retries of a worker's death that do not make a test wait.
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0)
