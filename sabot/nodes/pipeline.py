"""Pipeline: a DAG of nodes run in topological order (seeds 003 and 004).

Build it with ``add_node`` and ``connect`` (an edge takes an output of one
node to an input of another). ``start`` checks the graph up front: an
unknown node type, an edge to a node that does not exist, a cycle, or a
required input that no edge feeds is a ``PipelineError`` naming the node;
then every node is initialized on the bridge its runtime selects (native
first, the next runtime when that fails). ``run`` executes a run: ready
nodes run concurrently up to ``max_parallel``, each node's inputs gathered
from its incoming edges, failures handled per node, every step published on
the event bus.
"""
from __future__ import annotations

import asyncio
import enum
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

from ..exceptions import PipelineError, RegistryError
from ..types import ExecutorBridgeT, NodeExecutorT
from .events import EventBus, EventKind, ExecutionEvent
from .node import node_error
from .registry import NodeRegistry
from ..retry import NO_RETRY, RetryPolicy
from .state import NodeState, NodeStatus

__all__ = ["ErrorHandling", "Pipeline", "PipelineResult"]

logger = logging.getLogger(__name__)


class ErrorHandling(str, enum.Enum):
    """What a node's failure does to the run.

    ``RETRY`` (default): retry retryable errors under the node's
    ``RetryPolicy``; if it still fails, the run fails. ``STOP``: the first
    failure fails the run, no retry. ``CONTINUE``: the failure is recorded,
    the nodes that depend on it are skipped, the rest of the run goes on.
    """

    STOP = "stop"
    CONTINUE = "continue"
    RETRY = "retry"


@dataclass
class _NodeSpec:
    node_id: str
    node_type: str
    params: Dict[str, Any]
    runtime: str
    error_handling: ErrorHandling
    retry_policy: Optional[RetryPolicy]
    chosen_runtime: Optional[str] = None
    input_keys: Tuple[str, ...] = ()
    output_keys: Tuple[str, ...] = ()


@dataclass(frozen=True)
class _Edge:
    source: str
    target: str
    output: str
    input: str


@dataclass
class PipelineResult:
    """One run: outputs of every completed node, state of every node."""

    run_id: int
    outputs: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    states: Dict[str, NodeState] = field(default_factory=dict)
    sinks: List[str] = field(default_factory=list)

    @property
    def failed(self) -> List[str]:
        """Ids of the nodes that failed."""
        return [n for n, s in self.states.items() if s.status is NodeStatus.FAILED]

    def output(self) -> Any:
        """The single sink's ``"output"``; with several sinks, the outputs of
        those that completed, by node id."""
        done = [n for n in self.sinks if n in self.outputs]
        if len(self.sinks) == 1 and done and "output" in self.outputs[done[0]]:
            return self.outputs[done[0]]["output"]
        return {n: self.outputs[n] for n in done}


def _node_keys(info: Any) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """``(input_keys, output_keys)`` from what ``initialize_node`` returned.

    A native bridge returns the node, a process bridge the worker's answer (a
    mapping); another bridge's answer tells nothing (no check).
    """
    if isinstance(info, NodeExecutorT):
        inputs, outputs = info.input_keys, info.output_keys
    elif isinstance(info, Mapping):
        inputs, outputs = info.get("input_keys") or (), info.get("output_keys") or ()
    else:
        inputs = outputs = ()
    return tuple(inputs or ()), tuple(outputs or ())


class Pipeline:
    """A DAG of nodes executed through executor bridges; see the module docstring."""

    def __init__(self, registry: NodeRegistry, *, name: str = "pipeline",
                 bridges: Optional[Mapping[str, ExecutorBridgeT]] = None,
                 max_parallel: int = 4, retry_policy: Optional[RetryPolicy] = None,
                 events: Optional[EventBus] = None) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.registry = registry
        self.name = name
        self.max_parallel = max_parallel
        self.retry_policy = retry_policy or RetryPolicy()
        self.events = events if events is not None else EventBus()
        #: Runtime name -> the bridge that runs its nodes (given by the caller).
        self._bridges: Dict[str, ExecutorBridgeT] = dict(bridges or {})
        self._nodes: Dict[str, _NodeSpec] = {}
        self._edges: List[_Edge] = []
        self._order: List[str] = []
        self._started = False
        self._run_ids = itertools.count(1)

    # -- building ------------------------------------------------------------
    def add_node(self, node_id: str, node_type: str,
                 params: Optional[Mapping[str, Any]] = None, *, runtime: str = "auto",
                 error_handling: Any = ErrorHandling.RETRY,
                 retry_policy: Optional[RetryPolicy] = None) -> "Pipeline":
        """Add a node; ``runtime`` is ``auto``, ``native``, ``wasm`` or ``process``."""
        if node_id in self._nodes:
            raise PipelineError(f"node {node_id!r} is already in pipeline {self.name!r}")
        self._nodes[node_id] = _NodeSpec(node_id, node_type, dict(params or {}), runtime,
                                         ErrorHandling(error_handling), retry_policy)
        self._started = False
        return self

    def connect(self, source: str, target: str, *, output: str = "output",
                input: str = "input") -> "Pipeline":
        """Feed ``source``'s ``output`` to ``target``'s ``input``."""
        self._edges.append(_Edge(source, target, output, input))
        self._started = False
        return self

    def _incoming(self, node_id: str) -> List[_Edge]:
        return [e for e in self._edges if e.target == node_id]

    def _successors(self, node_id: str) -> Set[str]:
        return {e.target for e in self._edges if e.source == node_id}

    @property
    def sinks(self) -> List[str]:
        """Nodes no edge leaves from: their outputs are the run's result."""
        return [n for n in self._nodes if not self._successors(n)]

    def validate(self) -> List[str]:
        """Check the graph's shape; return a topological order.

        Raises ``PipelineError`` naming the node for an unknown node type, an
        edge to or from an unknown node, or a cycle.
        """
        if not self._nodes:
            raise PipelineError(f"pipeline {self.name!r} has no nodes")
        for spec in self._nodes.values():
            if spec.node_type not in self.registry:
                raise PipelineError(f"node {spec.node_id!r} has unknown node type "
                                    f"{spec.node_type!r}")
        for edge in self._edges:
            for end in (edge.source, edge.target):
                if end not in self._nodes:
                    raise PipelineError(
                        f"edge {edge.source}.{edge.output} -> {edge.target}.{edge.input} "
                        f"names node {end!r}, which is not in the pipeline")
        indegree = {n: len({e.source for e in self._incoming(n)}) for n in self._nodes}
        ready = [n for n, d in indegree.items() if d == 0]
        order: List[str] = []
        while ready:
            node = ready.pop(0)
            order.append(node)
            for succ in sorted(self._successors(node)):
                indegree[succ] -= 1
                if indegree[succ] == 0:
                    ready.append(succ)
        if len(order) < len(self._nodes):
            # Nodes left unordered are on a cycle or downstream of one:
            # name only those on a cycle (reachable from themselves).
            stuck = set(self._nodes) - set(order)
            cyclic = sorted(n for n in stuck if self._reaches(n, n))
            raise PipelineError(f"pipeline {self.name!r} has a cycle through node "
                                f"{cyclic[0]!r} (nodes in cycles: {cyclic})")
        self._order = order
        return order

    def _reaches(self, source: str, target: str) -> bool:
        """True if an edge path of at least one edge leads from source to target."""
        seen: Set[str] = set()
        pending = list(self._successors(source))
        while pending:
            node = pending.pop()
            if node == target:
                return True
            if node not in seen:
                seen.add(node)
                pending.extend(self._successors(node))
        return False

    def _bridge(self, runtime: str) -> ExecutorBridgeT:
        bridge = self._bridges.get(runtime)
        if bridge is None:
            raise PipelineError(
                f"pipeline {self.name!r} has no bridge for runtime {runtime!r}: pass "
                f"bridges=sabot.bridge.default_bridges(registry) (or your own)")
        return bridge

    async def _initialize(self, spec: _NodeSpec) -> None:
        try:
            runtimes = self.registry.runtimes(spec.node_type, spec.runtime)
        except RegistryError as exc:
            raise PipelineError(f"node {spec.node_id!r}: {exc}") from exc
        errors = []
        for runtime in runtimes:
            try:
                info = await self._bridge(runtime).initialize_node(
                    spec.node_id, spec.node_type, spec.params)
            except Exception as exc:
                logger.warning("pipeline %s: node %r failed to start on %s (%r); "
                               "trying the next runtime", self.name, spec.node_id,
                               runtime, exc)
                errors.append(f"{runtime}: {exc}")
                continue
            spec.chosen_runtime = runtime
            spec.input_keys, spec.output_keys = _node_keys(info)
            return
        raise PipelineError(f"node {spec.node_id!r} ({spec.node_type}) could not start "
                            f"on any runtime: {'; '.join(errors)}")

    def _check_inputs(self) -> None:
        for node_id, spec in self._nodes.items():
            incoming = self._incoming(node_id)
            if not incoming:
                continue  # a source: fed by the run's inputs
            fed = {e.input for e in incoming}
            missing = [k for k in spec.input_keys if k not in fed]
            if missing:
                raise PipelineError(f"node {node_id!r} is missing input(s) {missing}: "
                                    f"no edge feeds them")
            for edge in incoming:
                produced = self._nodes[edge.source].output_keys
                if produced and edge.output not in produced:
                    raise PipelineError(
                        f"node {node_id!r} expects {edge.output!r} from node "
                        f"{edge.source!r}, which produces only {list(produced)}")

    async def start(self) -> None:
        """Validate, initialize every node on its bridge, check the inputs."""
        if self._started:
            return
        self.validate()
        results = await asyncio.gather(
            *(self._initialize(s) for s in self._nodes.values()), return_exceptions=True)
        try:
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            self._check_inputs()
        except BaseException:
            # `async with` never reaches __aexit__ when start() fails: stop
            # the workers of the nodes that did start, here.
            await self.close()
            raise
        self._started = True

    async def close(self) -> None:
        """Clean up every node (no process of this pipeline's nodes remains).

        The bridges were given to the pipeline: they stay open, so a later
        ``start()`` uses them again.
        """
        for spec in self._nodes.values():
            if spec.chosen_runtime is not None:
                await self._bridges[spec.chosen_runtime].cleanup_node(spec.node_id)
                spec.chosen_runtime = None
        self._started = False

    async def __aenter__(self) -> "Pipeline":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- running ---------------------------------------------------------------
    def _publish(self, kind: EventKind, run_id: int, **fields: Any) -> None:
        self.events.publish(ExecutionEvent(kind, self.name, run_id, **fields))

    def _gather(self, node_id: str, data: Mapping[str, Any],
                outputs: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
        incoming = self._incoming(node_id)
        if not incoming:
            return dict(data)
        return {e.input: outputs[e.source][e.output] for e in incoming}

    async def _execute(self, spec: _NodeSpec, inputs: Dict[str, Any], state: NodeState,
                       run_id: int, gate: asyncio.Semaphore) -> Dict[str, Any]:
        policy = spec.retry_policy or self.retry_policy
        if spec.error_handling is not ErrorHandling.RETRY:
            policy = NO_RETRY
        bridge = self._bridges[spec.chosen_runtime or "native"]

        async def attempt() -> Dict[str, Any]:
            state.start()
            try:
                return await bridge.execute_node(spec.node_id, spec.node_type, inputs,
                                                 spec.params)
            except Exception as exc:
                raise node_error(spec.node_id, spec.node_type, exc) from exc

        def retrying(attempt_no: int, error: BaseException, delay: float) -> None:
            state.status = NodeStatus.RETRYING
            self._publish(EventKind.NODE_RETRYING, run_id, node_id=spec.node_id,
                          attempt=state.attempts, error=error, delay=delay)

        async with gate:
            self._publish(EventKind.NODE_STARTED, run_id, node_id=spec.node_id, attempt=1)
            try:
                out = await policy.call(attempt, on_retry=retrying)
            except Exception as error:
                state.finish(NodeStatus.FAILED, error)
                self._publish(EventKind.NODE_FAILED, run_id, node_id=spec.node_id,
                              attempt=state.attempts, error=error)
                raise
            state.finish(NodeStatus.COMPLETED)
            self._publish(EventKind.NODE_COMPLETED, run_id, node_id=spec.node_id,
                          attempt=state.attempts, duration=state.duration)
            return out

    def _skip_descendants(self, node_id: str, states: Dict[str, NodeState]) -> None:
        for succ in self._successors(node_id):
            if states[succ].status is NodeStatus.PENDING:
                states[succ].finish(NodeStatus.SKIPPED)
                self._skip_descendants(succ, states)

    async def run(self, data: Any = None) -> PipelineResult:
        """Run once. ``data``: the source nodes' inputs (a mapping, or one value
        that becomes their ``"input"``). Raises the failing node's
        ``NodeExecutionError`` when a node that may not continue fails.
        """
        await self.start()
        inputs = dict(data) if isinstance(data, Mapping) else {"input": data}
        run_id = next(self._run_ids)
        result = PipelineResult(run_id, states={n: NodeState(n) for n in self._nodes},
                                sinks=self.sinks)
        states = result.states
        waiting = {n: {e.source for e in self._incoming(n)} for n in self._nodes}
        gate = asyncio.Semaphore(self.max_parallel)
        tasks: Dict["asyncio.Task[Any]", str] = {}
        self._publish(EventKind.PIPELINE_STARTED, run_id)

        def launch(node_id: str) -> None:
            spec = self._nodes[node_id]
            node_inputs = self._gather(node_id, inputs, result.outputs)
            task = asyncio.ensure_future(
                self._execute(spec, node_inputs, states[node_id], run_id, gate))
            tasks[task] = node_id

        try:
            for node_id in self._order:
                if not waiting[node_id]:
                    launch(node_id)
            while tasks:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: self._order.index(tasks[t])):
                    node_id = tasks.pop(task)
                    exc = task.exception()
                    if exc is not None:
                        if self._nodes[node_id].error_handling is not ErrorHandling.CONTINUE:
                            raise exc
                        self._skip_descendants(node_id, states)
                        continue
                    result.outputs[node_id] = task.result()
                    for succ in sorted(self._successors(node_id)):
                        waiting[succ].discard(node_id)
                        if not waiting[succ] and states[succ].status is NodeStatus.PENDING:
                            launch(succ)
        except BaseException as exc:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._publish(EventKind.PIPELINE_FAILED, run_id, error=exc)
            raise
        self._publish(EventKind.PIPELINE_COMPLETED, run_id)
        return result

    async def run_batch(self, batch: Any) -> Any:
        """Run on one batch (the sources' ``"input"``); the sink's ``"output"``.

        What ``stream.through(pipeline)`` calls for every batch.
        """
        return (await self.run(batch)).output()
