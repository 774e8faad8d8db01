"""Pipeline: DAG checks, topological execution, retries, error handling, events."""
import asyncio
import os

import pyarrow as pa
import pytest

import sabot
from sabot.exceptions import NodeExecutionError, PipelineError
from sabot.nodes import (ErrorHandling, EventKind, NodeStatus,
                         RetryPolicy)
from tests.bridge.conftest import pid_alive
from tests.bridge.helpers import make_pipeline

FAST = RetryPolicy(max_attempts=3, initial_delay=0.001, jitter=0)


def diamond(registry, **kw):
    """src -> (left, right) -> merge: a diamond."""
    p = make_pipeline(registry, name="diamond", retry_policy=FAST, **kw)
    p.add_node("src", "identity")
    p.add_node("left", "scale", {"factor": 2})
    p.add_node("right", "scale", {"factor": 10})
    p.add_node("merge", "merge")
    p.connect("src", "left").connect("src", "right")
    p.connect("left", "merge", input="left").connect("right", "merge", input="right")
    return p


async def test_diamond_runs_in_topological_order_with_inputs_from_edges(registry):
    async with diamond(registry) as p:
        result = await p.run([1, 2])
        assert result.output() == [2, 4, 10, 20]
        assert result.sinks == ["merge"] and result.failed == []
        assert all(s.status is NodeStatus.COMPLETED for s in result.states.values())
        assert p.validate()[0] == "src" and p.validate()[-1] == "merge"


async def test_events_arrive_in_order(registry):
    p = diamond(registry)
    events = []
    p.events.subscribe(events.append)
    async with p:
        await p.run([1])
    kinds = [(e.kind, e.node_id) for e in events]
    assert kinds[0] == (EventKind.PIPELINE_STARTED, None)
    assert kinds[-1] == (EventKind.PIPELINE_COMPLETED, None)
    index = {k: i for i, k in enumerate(kinds)}
    for node in ("src", "left", "right", "merge"):
        assert index[(EventKind.NODE_STARTED, node)] < index[(EventKind.NODE_COMPLETED, node)]
    assert index[(EventKind.NODE_COMPLETED, "src")] < index[(EventKind.NODE_STARTED, "left")]
    assert index[(EventKind.NODE_COMPLETED, "left")] < index[(EventKind.NODE_STARTED, "merge")]
    assert index[(EventKind.NODE_COMPLETED, "right")] < index[(EventKind.NODE_STARTED, "merge")]
    assert len({e.run_id for e in events}) == 1


async def test_a_cycle_is_an_error_naming_a_node(registry):
    p = make_pipeline(registry)
    p.add_node("a", "identity").add_node("b", "identity").add_node("c", "identity")
    p.connect("a", "b").connect("b", "c").connect("c", "b")
    with pytest.raises(PipelineError, match="cycle through node 'b'"):
        p.validate()


async def test_unknown_type_unknown_node_and_missing_input_are_errors(registry):
    p = make_pipeline(registry)
    p.add_node("x", "no_such_type")
    with pytest.raises(PipelineError, match="node 'x' has unknown node type"):
        p.validate()
    p = make_pipeline(registry)
    p.add_node("a", "identity").connect("a", "ghost")
    with pytest.raises(PipelineError, match="'ghost'"):
        p.validate()
    p = make_pipeline(registry)
    p.add_node("a", "identity").add_node("m", "merge").connect("a", "m", input="left")
    with pytest.raises(PipelineError, match=r"node 'm' is missing input\(s\) \['right'\]"):
        await p.start()
    await p.close()
    with pytest.raises(PipelineError, match="already"):
        p.add_node("a", "identity")


async def test_retryable_failure_is_retried_then_succeeds(registry, tmp_path):
    p = make_pipeline(registry, retry_policy=FAST)
    p.add_node("f", "flaky", {"counter": str(tmp_path / "n"), "failures": 2})
    events = []
    p.events.subscribe(events.append)
    async with p:
        result = await p.run(["x"])
    assert result.output() == ["x"] and result.states["f"].attempts == 3
    kinds = [e.kind for e in events if e.node_id == "f"]
    assert kinds == [EventKind.NODE_STARTED, EventKind.NODE_RETRYING,
                     EventKind.NODE_RETRYING, EventKind.NODE_COMPLETED]


async def test_non_retryable_failure_stops_the_run_with_the_node_id(registry):
    p = make_pipeline(registry, retry_policy=FAST)
    p.add_node("src", "identity").add_node("bad", "boom").add_node("after", "identity")
    p.connect("src", "bad").connect("bad", "after")
    events = []
    p.events.subscribe(events.append)
    async with p:
        with pytest.raises(NodeExecutionError) as info:
            await p.run([1])
    assert info.value.node_id == "bad" and "boom" in str(info.value)
    kinds = [(e.kind, e.node_id) for e in events]
    assert (EventKind.NODE_RETRYING, "bad") not in kinds
    assert kinds[-2:] == [(EventKind.NODE_FAILED, "bad"), (EventKind.PIPELINE_FAILED, None)]
    assert (EventKind.NODE_STARTED, "after") not in kinds


async def test_retries_exhausted_and_stop_mode(registry, tmp_path):
    p = make_pipeline(registry, retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.001))
    p.add_node("f", "flaky", {"counter": str(tmp_path / "n"), "failures": 5})
    async with p:
        with pytest.raises(NodeExecutionError, match="transient") as info:
            await p.run([1])
    assert info.value.retryable
    p = make_pipeline(registry, retry_policy=FAST)
    p.add_node("f", "flaky", {"counter": str(tmp_path / "m"), "failures": 1},
               error_handling="stop")
    async with p:
        with pytest.raises(NodeExecutionError):
            await p.run([1])  # STOP: no retry even though it would succeed


async def test_continue_skips_dependents_and_finishes_the_rest(registry):
    p = make_pipeline(registry)
    p.add_node("src", "identity")
    p.add_node("bad", "boom", error_handling=ErrorHandling.CONTINUE)
    p.add_node("after_bad", "identity")
    p.add_node("good", "scale", {"factor": 3})
    p.connect("src", "bad").connect("bad", "after_bad").connect("src", "good")
    async with p:
        result = await p.run([1])
    assert result.failed == ["bad"]
    assert result.states["after_bad"].status is NodeStatus.SKIPPED
    assert result.outputs["good"] == {"output": [3]}
    assert result.output() == {"good": {"output": [3]}}


async def test_max_parallel_bounds_concurrent_nodes(registry):
    for limit, bound in ((1, 0.35), (4, None)):
        p = make_pipeline(registry, max_parallel=limit)
        for i in range(4):
            p.add_node(f"s{i}", "sleep", {"seconds": 0.1})
        async with p:
            loop = asyncio.get_running_loop()
            start = loop.time()
            await p.run({"input": 1})
            took = loop.time() - start
        if bound:
            assert took >= bound  # one at a time: about 0.4 s
        else:
            assert took < 0.3  # all four together: about 0.1 s


async def test_nodes_run_through_the_bridge_their_runtime_selects(registry):
    registry.register("both", native="tests.bridge.helpers:BrokenFactory",
                      process="tests.bridge.helpers:Pid")
    p = make_pipeline(registry)
    p.add_node("here", "pid")
    p.add_node("there", "pid", runtime="process")
    p.add_node("fallback", "both")  # native fails to build -> process
    async with p:
        result = await p.run(pa.RecordBatch.from_pydict({"x": [1]}))
        workers = p._bridges["process"].worker_pids()
        assert result.outputs["here"]["output"] == os.getpid()
        assert result.outputs["there"]["output"] in workers
        assert result.outputs["fallback"]["output"] in workers
        assert p._nodes["fallback"].chosen_runtime == "process"
    assert not [w for w in workers if pid_alive(w)]


async def test_stream_through_pipeline_runs_it_per_batch(registry):
    app = sabot.App("through-test")
    ch = app.channel()
    p = make_pipeline(registry)
    p.add_node("double", "scale", {"factor": 2})
    async with p:
        stream = ch.stream().through(p)
        await ch.send_batch([1, 2, 3])
        it = stream.__aiter__()
        assert await asyncio.wait_for(it.__anext__(), 5) == [2, 4, 6]
