"""Interfaces every layer of Sabot codes against.

Implementations depend on these Protocols, not on each other: the agent runner
knows a ``ChannelT`` and a ``BatchT``, never a Kafka consumer. Concrete classes
live in their own modules (``sabot.channels.memory``, ``sabot.channels.kafka``,
``sabot.bridge.process``, ...).
"""
from __future__ import annotations

import abc
from typing import (Any, AsyncIterator, Callable, Dict, List, Mapping, NamedTuple, Optional, Protocol, Sequence,
                    Union, runtime_checkable)

try:  # only for annotations; pyarrow is a hard dependency anyway
    import pyarrow as pa
except ImportError:  # pragma: no cover
    pa = None  # type: ignore

__all__ = [
    "Event", "BatchT", "ChannelT", "SubscriberT", "StreamT", "AgentT",
    "CodecT", "SinkT", "AppT", "Headers", "Position",
    "ExecutorBridgeT", "NodeExecutorT",
]

#: Message headers: name -> bytes (Kafka's shape; Redis maps them to fields).
Headers = Mapping[str, bytes]
#: Where an event came from: ``(topic, partition, offset)`` for Kafka,
#: ``(stream, entry_id)`` for Redis, ``None`` in memory.
Position = Any


class Event(NamedTuple):
    """One value with its envelope, as ``stream.events()`` yields it."""

    key: Any
    value: Any
    headers: Optional[Headers]
    timestamp: float
    position: Position


# --------------------------------------------------------------------------
# Data plane
# --------------------------------------------------------------------------

@runtime_checkable
class BatchT(Protocol):
    """The unit a channel moves: values plus their envelope and an ack count.

    ``payload`` is either a list of Python values (moved by reference) or a
    ``pyarrow.RecordBatch`` (never copied; every subscriber gets the same
    object). ``keys``/``headers``/``timestamps``/``positions`` are parallel
    lists or ``None`` when absent. ``acquire``/``release`` count holders; when
    the count reaches zero ``on_done(batch)`` fires once (transports commit or
    XACK there).
    """

    payload: Union[List[Any], "pa.RecordBatch"]
    keys: Optional[List[Any]]
    headers: Optional[List[Optional[Headers]]]
    timestamps: Optional[List[float]]
    positions: Optional[List[Position]]
    timestamp: float
    on_done: Optional[Callable[["BatchT"], None]]

    def __len__(self) -> int: ...
    def rows(self) -> List[Any]: ...
    def event(self, i: int) -> Event: ...
    def acquire(self, n: int = 1) -> None: ...
    def release(self) -> None: ...
    @property
    def done(self) -> bool: ...


class SubscriberT(Protocol):
    """One reader's view of a channel: its own cursor and buffer."""

    def values(self) -> AsyncIterator[Any]: ...
    def batches(self) -> AsyncIterator[BatchT]: ...
    def events(self) -> AsyncIterator[Event]: ...
    @property
    def current_batch(self) -> Optional[BatchT]: ...
    def close(self) -> None: ...


@runtime_checkable
class SinkT(Protocol):
    """Anything an agent can forward results to.

    ``send`` returns ``None`` once the value is handed over, or an awaitable
    that completes when the value is durable (a Kafka delivery future): the
    agent keeps the source batch unacknowledged until it has completed.
    """

    async def send(self, key: Any = None, value: Any = None,
                   headers: Optional[Headers] = None) -> Any: ...


@runtime_checkable
class ChannelT(SinkT, Protocol):
    """A channel: memory, Kafka topic or Redis stream, one interface."""

    name: str
    schema: Optional["pa.Schema"]
    maxsize: int

    async def send(self, key: Any = None, value: Any = None,
                   headers: Optional[Headers] = None) -> Any: ...
    async def send_batch(self, batch: Union[Sequence[Any], "pa.RecordBatch"]) -> Any: ...
    async def put(self, value: Any) -> None: ...
    async def get(self, timeout: Optional[float] = None) -> Any: ...
    async def publish(self, batch: BatchT) -> None:
        """Hand a batch (built by a transport consumer) to every subscriber."""
    def subscribe(self) -> SubscriberT: ...
    def clone(self, **kwargs: Any) -> "ChannelT": ...
    def stream(self, **kwargs: Any) -> "StreamT": ...
    def derive(self, **kwargs: Any) -> "ChannelT": ...
    @property
    def subscriber_count(self) -> int: ...
    async def close(self) -> None: ...
    def __aiter__(self) -> AsyncIterator[Any]: ...


class StreamT(Protocol):
    """What an agent iterates: values, events or batches of one subscriber."""

    def __aiter__(self) -> AsyncIterator[Any]: ...
    def events(self) -> AsyncIterator[Event]: ...
    def batches(self) -> AsyncIterator[BatchT]: ...
    def filter(self, fun: Callable[[Any], Any]) -> "StreamT": ...
    def map(self, fun: Callable[[Any], Any]) -> "StreamT": ...
    def take(self, n: int, within: Optional[float] = None) -> AsyncIterator[List[Any]]: ...
    def enumerate(self, start: int = 0) -> AsyncIterator[Any]: ...
    def through(self, target: Any) -> "StreamT": ...
    def echo(self, *channels: SinkT) -> "StreamT": ...


class AgentT(Protocol):
    """A user coroutine bound to an input channel, its sinks and an executor."""

    name: str
    channel: ChannelT
    concurrency: int
    executor: str

    async def send(self, key: Any = None, value: Any = None,
                   headers: Optional[Headers] = None) -> Any: ...
    async def send_batch(self, batch: Any) -> Any: ...


class CodecT(Protocol):
    """Turns values into bytes and back. Names: raw, json, arrow, or a user's.

    ``decode`` raises ``sabot.exceptions.DecodeError`` on bad input, never
    another exception type.
    """

    name: str

    def encode(self, value: Any) -> bytes: ...
    def decode(self, data: bytes) -> Any: ...


class AppT(Protocol):
    """The registry of channels, topics and agents; see ``sabot.app.App``."""

    id: str
    conf: Any

    def channel(self, schema: Any = None, maxsize: Optional[int] = None,
                **kwargs: Any) -> ChannelT: ...
    def topic(self, name: str, **kwargs: Any) -> ChannelT: ...
    def agent(self, channel: Any = None, **kwargs: Any) -> Callable[..., AgentT]: ...


# --------------------------------------------------------------------------
# Executor bridge and nodes (seeds 001 and 003)
# --------------------------------------------------------------------------
# BEGIN bridge/nodes interfaces (owned by the executor-bridge work)


class ExecutorBridgeT(abc.ABC):
    """Runs nodes somewhere (this process, worker processes); seed 001.

    ``data`` given to ``execute_node`` is either a mapping of input names to
    values (the result is the node's whole output mapping) or one value,
    which becomes the ``"input"`` input (the result is the ``"output"``
    output). Values are RecordBatches, Tables, lists or JSON-able values.
    """

    @property
    @abc.abstractmethod
    def executor_type(self) -> str:
        """``"native"`` or ``"process"``."""

    @abc.abstractmethod
    async def initialize_node(self, node_id: str, node_type: str,
                              params: Mapping[str, Any]) -> Any:
        """Build the node (and its workers); returns what tells its keys."""

    @abc.abstractmethod
    async def execute_node(self, node_id: str, node_type: str, data: Any,
                           params: Mapping[str, Any]) -> Any:
        """Run the node once on ``data`` (initializing it if needed)."""

    @abc.abstractmethod
    async def cleanup_node(self, node_id: str) -> None:
        """Release the node's resources; no process of it remains."""


class NodeExecutorT(abc.ABC):
    """One node's behaviour; seed 003.

    A node class is its own factory: ``NodeClass(params)``. ``node_type``,
    ``runtime``, ``input_keys`` and ``output_keys`` may be plain class
    attributes.
    """

    @property
    @abc.abstractmethod
    def node_type(self) -> str:
        """The registered type name."""

    @property
    @abc.abstractmethod
    def runtime(self) -> str:
        """The runtime the node was written for (``"native"``, ``"process"``)."""

    @property
    def input_keys(self) -> Sequence[str]:
        """Inputs the node needs; ``validate_inputs`` checks them."""
        return ("input",)

    @property
    def output_keys(self) -> Sequence[str]:
        """Outputs the node produces (empty: unknown)."""
        return ("output",)

    def validate_inputs(self, inputs: Mapping[str, Any]) -> None:
        """Raise ``NodeExecutionError`` when a needed input is missing."""
        missing = [k for k in self.input_keys if k not in inputs]
        if missing:
            from .exceptions import NodeExecutionError
            raise NodeExecutionError(
                f"node type {self.node_type!r} is missing inputs {missing}")

    @abc.abstractmethod
    async def execute(self, inputs: Mapping[str, Any],
                      params: Mapping[str, Any]) -> Dict[str, Any]:
        """Compute the outputs (a dict of output names to values)."""

# END bridge/nodes interfaces
