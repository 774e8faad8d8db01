"""Pipeline: DAG checks, topological execution, retries, error handling, events."""
import asyncio
import multiprocessing
import os

import pyarrow as pa
import pytest

import sabot
from sabot._fastpath import Batch
from sabot.exceptions import NodeExecutionError, PipelineError
from sabot.nodes import (ErrorHandling, EventKind, NodeStatus,
                         RetryPolicy)
from tests.bridge.conftest import pid_alive
from tests.bridge.helpers import all_nodes_registry, make_pipeline, pipeline_registry
from tests.helpers import until

FAST = RetryPolicy(max_attempts=3, initial_delay=0.001, jitter=0)


@pytest.fixture
def app():
    return sabot.App("pipeline-test")


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


# -- validation --------------------------------------------------------------

@pytest.mark.parametrize("build, node", [
    (lambda p: p.add_node("ok", "echo").add_node("weird", "no-such-type"), "weird"),
    (lambda p: p.add_node("ok", "echo").connect("ok", "ghost"), "ghost"),
    (lambda p: p.add_node("ok", "echo").connect("phantom", "ok"), "phantom"),
    (lambda p: p.add_node("solo", "echo").connect("solo", "solo"), "solo"),
    (lambda p: p.add_node("s", "echo").add_node("m", "merge")
        .connect("s", "m", input="left"), "m"),
    (lambda p: p.add_node("s", "echo").add_node("t", "echo")
        .connect("s", "t", output="nope"), "t"),
    (lambda p: p.add_node("ok", "echo", runtime="gpu"), "ok"),
], ids=["unknown-type", "edge-to-unknown", "edge-from-unknown", "self-loop",
        "missing-input", "unknown-output", "unknown-runtime"])
async def test_invalid_dag_is_rejected_naming_the_node(build, node):
    p = make_pipeline(pipeline_registry(), name="bad")
    build(p)
    try:
        with pytest.raises(PipelineError, match=repr(node)):
            await p.start()
    finally:
        await p.close()


async def test_duplicate_node_id_and_empty_pipeline_are_errors():
    p = make_pipeline(pipeline_registry()).add_node("d", "echo")
    with pytest.raises(PipelineError, match="'d'"):
        p.add_node("d", "echo")
    with pytest.raises(PipelineError):
        await make_pipeline(pipeline_registry()).start()


async def test_cycle_error_names_a_node_on_the_cycle_when_it_is_isolated():
    p = make_pipeline(pipeline_registry())
    p.add_node("src", "echo").add_node("x", "echo").add_node("y", "echo")
    p.connect("src", "x").connect("x", "y").connect("y", "x")
    with pytest.raises(PipelineError, match="cycle") as info:
        p.validate()
    assert "'x'" in str(info.value)


def test_cycle_error_names_only_nodes_on_the_cycle():
    p = make_pipeline(all_nodes_registry())
    for n in ("src", "x", "y", "a_after"):
        p.add_node(n, "identity")
    p.connect("src", "x").connect("x", "y").connect("y", "x").connect("y", "a_after")
    with pytest.raises(PipelineError) as info:
        p.validate()
    message = str(info.value)
    assert "cycle through node 'x'" in message, message
    assert "['x', 'y']" in message and "a_after" not in message, message


async def test_failed_pipeline_start_leaves_no_worker():
    p = make_pipeline(all_nodes_registry())
    p.add_node("s", "identity", runtime="process")
    p.add_node("m", "merge", runtime="process").connect("s", "m", input="left")
    before = {c.pid for c in multiprocessing.active_children()}
    try:
        with pytest.raises(PipelineError, match="'m'"):
            async with p:
                pass
        left = [c for c in multiprocessing.active_children() if c.pid not in before]
        assert left == [], left
        # Fixed up, the same pipeline starts (on a fresh bridge) and runs.
        p.connect("s", "m", input="right")
        async with p:
            assert await p.run_batch({"input": [1]}) is not None
    finally:
        await p.close()


# -- retries, error handling, events -----------------------------------------

def _kinds(events, run_id=None):
    return [(e.kind.value, e.node_id, e.attempt) for e in events
            if run_id is None or e.run_id == run_id]


@pytest.mark.parametrize("runtime", ["native", "process"])
async def test_retryable_failure_is_retried_with_events_in_order(runtime, tmp_path,
                                                                 clean_slate):
    p = make_pipeline(pipeline_registry(), name="r", retry_policy=RetryPolicy(
        max_attempts=3, initial_delay=0.01, multiplier=2, jitter=0))
    p.add_node("a", "echo", runtime=runtime)
    p.add_node("f", "fail", {"counter": str(tmp_path / "c"), "times": 2}, runtime=runtime)
    p.connect("a", "f")
    seen = []
    p.events.subscribe(seen.append)
    async with p:
        result = await p.run([1, 2])
    assert result.output() == [1, 2]
    assert result.states["f"].attempts == 3 and result.states["a"].attempts == 1
    assert _kinds(seen) == [
        ("pipeline_started", None, 0),
        ("node_started", "a", 1), ("node_completed", "a", 1),
        ("node_started", "f", 1),
        ("node_retrying", "f", 1), ("node_retrying", "f", 2),
        ("node_completed", "f", 3),
        ("pipeline_completed", None, 0)]
    retrying = [e for e in seen if e.kind is EventKind.NODE_RETRYING]
    assert [e.delay for e in retrying] == [0.01, 0.02]
    assert all(isinstance(e.error, NodeExecutionError) and e.error.node_id == "f"
               for e in retrying)
    assert [e.timestamp for e in seen] == sorted(e.timestamp for e in seen)
    assert {e.run_id for e in seen} == {result.run_id}


@pytest.mark.parametrize("case", ["non-retryable", "exhausted", "stop-policy"])
async def test_failures_that_are_not_retried_fail_the_run(case, tmp_path):
    retryable = case != "non-retryable"
    times = 10 if case == "exhausted" else 1
    handling = ErrorHandling.STOP if case == "stop-policy" else ErrorHandling.RETRY
    p = make_pipeline(pipeline_registry(), retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.001))
    p.add_node("f", "fail", {"counter": str(tmp_path / "c"), "times": times,
                             "retryable": retryable}, error_handling=handling)
    p.add_node("after", "echo").connect("f", "after")
    seen = []
    p.events.subscribe(seen.append)
    async with p:
        with pytest.raises(NodeExecutionError) as info:
            await p.run([1])
    assert info.value.node_id == "f"
    attempts = 3 if case == "exhausted" else 1
    assert int(open(tmp_path / "c").read()) == attempts
    assert _kinds(seen) == (
        [("pipeline_started", None, 0), ("node_started", "f", 1)]
        + [("node_retrying", "f", n) for n in range(1, attempts)]
        + [("node_failed", "f", attempts), ("pipeline_failed", None, 0)])
    assert seen[-1].error is info.value


async def test_continue_skips_descendants_and_finishes_the_rest(tmp_path):
    p = make_pipeline(pipeline_registry(), max_parallel=2)
    p.add_node("src", "echo")
    p.add_node("bad", "fail", {"counter": str(tmp_path / "c"), "times": 9,
                               "retryable": False}, error_handling="continue")
    p.add_node("below_bad", "echo")
    p.add_node("good", "echo")
    p.connect("src", "bad").connect("bad", "below_bad").connect("src", "good")
    seen = []
    p.events.subscribe(seen.append)
    async with p:
        result = await p.run("v")
    assert result.failed == ["bad"]
    assert result.states["below_bad"].status.value == "skipped"
    assert result.states["good"].status.value == "completed"
    assert result.outputs["good"] == {"output": "v"} and "below_bad" not in result.outputs
    kinds = _kinds(seen)
    assert kinds[0][0] == "pipeline_started" and kinds[-1][0] == "pipeline_completed"
    assert ("node_failed", "bad", 1) in kinds
    assert not [k for k in kinds if k[1] == "below_bad"]


async def test_events_follow_the_dag_under_parallelism():
    p = make_pipeline(pipeline_registry(), max_parallel=4)
    p.add_node("s", "echo").add_node("l", "sleepy", {"seconds": 0.05})
    p.add_node("r", "echo").add_node("m", "merge")
    p.connect("s", "l").connect("s", "r")
    p.connect("l", "m", input="left").connect("r", "m", input="right")
    sub = p.events.subscribe()
    async with p:
        assert (await p.run_batch([1])) == [1, 1]
        await p.run([2])
    events = sub.pending()
    sub.close()
    for run_id in (1, 2):
        kinds = [(k, n) for k, n, _ in _kinds(events, run_id)]
        pos = {key: i for i, key in enumerate(kinds)}
        assert kinds[0] == ("pipeline_started", None)
        assert kinds[-1] == ("pipeline_completed", None)
        for up, down in [("s", "l"), ("s", "r"), ("l", "m"), ("r", "m")]:
            assert pos[("node_completed", up)] < pos[("node_started", down)]
        for node in "slrm":
            assert pos[("node_started", node)] < pos[("node_completed", node)]


async def test_pipeline_respects_max_parallel():
    p = make_pipeline(pipeline_registry(), max_parallel=2)
    p.add_node("src", "echo")
    for i in range(6):
        p.add_node(f"s{i}", "sleepy", {"seconds": 0.05}).connect("src", f"s{i}")
    running, peak = set(), []

    def track(event):
        if event.kind is EventKind.NODE_STARTED:
            running.add(event.node_id)
        elif event.kind in (EventKind.NODE_COMPLETED, EventKind.NODE_FAILED):
            running.discard(event.node_id)
        peak.append(len(running))
    p.events.subscribe(track)
    async with p:
        result = await p.run(1)
    assert max(peak) == 2
    assert len(result.output()) == 6


# -- a stream through a pipeline ---------------------------------------------

async def test_stream_through_a_process_pipeline_acks_after_the_sink(app, clean_slate):
    p = make_pipeline(pipeline_registry(), name="thru")
    p.add_node("a", "echo", runtime="process").add_node("b", "echo", runtime="process")
    p.connect("a", "b")
    source = app.channel()
    delivered, acked, early = [], [], []

    async def through_agent(stream):
        async for result in stream.through(p):
            yield result
    app.agent(source, sink=[delivered.append])(through_agent)
    await p.start()
    await app.start()
    try:
        for tag in range(5):
            values = [tag, tag]
            await source.publish(Batch(values, on_done=lambda b, v=values: (
                early.append(v) if v not in delivered else None, acked.append(1))))
        await until(lambda: len(acked) == 5, 20, "acks")
        assert early == [] and delivered == [[t, t] for t in range(5)]
    finally:
        await app.stop()
        await p.close()
