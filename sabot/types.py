"""Interfaces every layer of Sabot codes against.

Implementations depend on these Protocols, not on each other: an agent knows
a ``ChannelT`` and a ``SubscriberT``, never a Kafka consumer; the worker and
the command line know an ``AppT`` and its ``TransportT`` s. The classes that
implement them (``sabot.channels.channel.Channel``, ``sabot.agents.Agent``,
``sabot.channels.kafka.KafkaTransport``, ...) are held to them by mypy, which
runs as an ordinary test (``tests/test_sourcecode.py``), over the package and
over ``tests/typing/conformance.py``, which assigns each class to its
Protocol.
"""
from __future__ import annotations

import abc
import asyncio
from typing import (TYPE_CHECKING, Any, AsyncIterator, Callable, ContextManager, Dict, List,
                    Mapping, NamedTuple, Optional, Protocol, Sequence, runtime_checkable)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "Event", "Headers", "Position", "BatchT", "SubscriberT", "SinkT", "CodecT", "ChannelT",
    "StreamT", "AgentT", "TransportT", "AppT", "ExecutorBridgeT", "NodeExecutorT",
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

class BatchT(Protocol):
    """The unit a channel moves: values plus their envelope and an ack count.

    ``payload`` is a list of Python values (moved by reference) or a
    ``pyarrow.RecordBatch`` (never copied). ``keys``/``headers``/
    ``timestamps``/``positions`` are parallel sequences or ``None``.
    ``acquire``/``release`` count holders: when the last one releases,
    ``on_done(batch)`` fires once (transports commit or XACK there); a holder
    that gives up ``abandon`` s it, and ``on_abandon(batch)`` fires instead.
    """

    payload: Any
    keys: Optional[List[Any]]
    headers: Optional[List[Optional[Headers]]]
    timestamps: Optional[Sequence[float]]
    positions: Optional[Sequence[Position]]
    timestamp: float
    on_done: Optional[Callable[[Any], Any]]
    on_abandon: Optional[Callable[[Any], Any]]
    published_at: float
    nbytes: int

    def __len__(self) -> int: ...
    def rows(self) -> List[Any]: ...
    def event(self, i: int) -> Event: ...
    def acquire(self, n: int = ...) -> None: ...
    def release(self) -> None: ...
    def abandon(self) -> None: ...
    def link(self, upstream: Any) -> None: ...
    @property
    def tracked(self) -> bool: ...
    @property
    def done(self) -> bool: ...
    @property
    def abandoned(self) -> bool: ...
    @property
    def refs(self) -> int: ...


class SubscriberT(Protocol):
    """One reader's place in a channel: its queue of batches and its lag."""

    observer: Optional[Callable[[Any], Any]]
    on_wait: Optional[Callable[[], Any]]

    def take(self) -> Optional[Any]: ...
    def done(self, batch: Any) -> None: ...
    def waiter(self) -> "asyncio.Future[None]": ...
    def discard_waiter(self, fut: "asyncio.Future[None]") -> None: ...
    @property
    def exhausted(self) -> bool: ...
    @property
    def pending(self) -> int: ...
    @property
    def lag(self) -> int: ...
    def close(self) -> None: ...
    def values(self) -> Any: ...
    def batches(self) -> Any: ...
    def events(self) -> Any: ...


@runtime_checkable
class SinkT(Protocol):
    """Anything an agent can forward results to.

    ``send`` returns ``None`` once the value is handed over, or a future that
    completes when the value is durable (a Kafka delivery): the agent keeps
    the source batch unacknowledged until it has completed.
    """

    async def send(self, key: Any = None, value: Any = None,
                   headers: Optional[Headers] = None) -> Any: ...


class CodecT(Protocol):
    """Turns values into bytes and back; ``decode`` raises only ``DecodeError``."""

    name: str
    yields_batches: bool

    def encode(self, value: Any) -> bytes: ...
    def decode(self, data: bytes) -> Any: ...


class ChannelT(Protocol):
    """A channel: memory, Kafka topic or Redis stream, one interface."""

    app: Any
    name: str
    schema: Optional["pa.Schema"]
    maxsize: int
    max_batches: int
    max_bytes: int
    batch_size: int
    codec: Any
    carries_bytes: bool
    max_message_bytes: Optional[int]
    transport_name: str

    # producing
    async def send(self, key: Any = None, value: Any = None,
                   headers: Optional[Headers] = None) -> Any: ...
    async def send_batch(self, batch: Any) -> Any: ...
    async def send_from(self, value: Any, sources: Sequence[Any] = ...) -> Any: ...
    async def send_encoded(self, key: Optional[bytes], value: bytes,
                           headers: Optional[Dict[str, bytes]] = None) -> Any: ...
    def make_batch(self, values: Any, *, keys: Optional[Sequence[Any]] = None,
                   headers: Optional[Sequence[Any]] = None) -> Any: ...
    async def publish(self, batch: Any) -> None: ...
    async def put(self, value: Any) -> None: ...
    async def flush(self) -> None: ...
    async def maybe_declare(self) -> None: ...
    # consuming
    async def get(self, timeout: Optional[float] = None) -> Any: ...
    def subscribe(self) -> Any: ...
    def stream(self, **kwargs: Any) -> Any: ...
    def tail(self, *, from_beginning: bool = False) -> AsyncIterator[Any]: ...
    @property
    def subscriber_count(self) -> int: ...
    @property
    def sent_count(self) -> int: ...
    # dead letters
    def dead_letter_channel(self) -> Any: ...
    async def dead_letter(self, value: Any, reason: str,
                          headers: Optional[Dict[str, Any]] = None,
                          position: Any = None) -> "asyncio.Future[None]": ...
    def position_headers(self, position: Any) -> Dict[str, bytes]: ...
    def is_too_large(self, exc: BaseException) -> bool: ...
    @property
    def dead_letters_sent(self) -> int: ...
    # lifecycle
    @property
    def stopping(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def clone(self, **kwargs: Any) -> Any: ...
    def derive(self, **overrides: Any) -> Any: ...
    async def close(self) -> None: ...


class StreamT(Protocol):
    """What an agent iterates: values, events or batches of one subscription."""

    channel: Any

    def __aiter__(self) -> Any: ...
    def events(self) -> Any: ...
    def batches(self) -> Any: ...
    def raw_batches(self) -> Any: ...
    def filter(self, fun: Callable[[Any], Any]) -> "StreamT": ...
    def map(self, fun: Callable[[Any], Any]) -> "StreamT": ...
    def take(self, n: int, within: Optional[float] = None) -> "StreamT": ...
    def enumerate(self, start: int = 0) -> "StreamT": ...
    def through(self, target: Any) -> "StreamT": ...
    def echo(self, *channels: Any) -> "StreamT": ...
    @property
    def current_batch(self) -> Any: ...
    def current_value(self) -> Any: ...
    def current_position(self) -> Any: ...
    def current_item(self) -> Any: ...
    def sources(self) -> List[Any]: ...
    def settle(self) -> None: ...
    def close(self) -> None: ...


class AgentT(Protocol):
    """A user coroutine bound to an input channel, its sinks and an executor."""

    name: str
    channel: Any
    concurrency: int
    executor: str
    on_error: str
    sinks: List[Any]
    crash_count: int
    events_out: int

    async def send(self, key: Any = None, value: Any = None,
                   headers: Optional[Dict[str, bytes]] = None) -> Any: ...
    async def send_batch(self, batch: Any) -> Any: ...
    async def forward(self, value: Any, sources: Sequence[Any] = ...) -> None: ...
    async def handle_failure(self, failure: Any) -> bool: ...
    @property
    def events_in(self) -> int: ...
    @property
    def backlog(self) -> int: ...
    @property
    def running(self) -> bool: ...
    @property
    def bridge_metrics(self) -> Any: ...
    @property
    def subscriber(self) -> Any: ...
    def drain_batch_latencies(self) -> List[float]: ...


class TransportT(Protocol):
    """The service behind a broker's channels (see ``sabot.channels.transport``)."""

    app: Any
    url: str
    scheme: str
    external: bool
    topics: Dict[str, Any]

    @property
    def label(self) -> str: ...
    def topic(self, name: str, **options: Any) -> Any: ...
    async def stop_fetching(self, timeout: float) -> None: ...
    async def lag(self) -> Dict[str, int]: ...
    def tail(self, channel: Any, *, from_beginning: bool = False) -> AsyncIterator[bytes]: ...
    def quieted(self) -> ContextManager[None]: ...
    def status(self) -> Dict[str, Any]: ...
    def handles(self, url: str) -> bool: ...
    @property
    def stopping(self) -> bool: ...
    async def flush_at_exit(self) -> None: ...
    async def stop(self) -> None: ...


@runtime_checkable
class AppT(Protocol):
    """The registry of channels, topics and agents; see ``sabot.app.App``."""

    id: str
    conf: Any
    agents: Dict[str, Any]
    channels: List[Any]
    crash_reasons: List[BaseException]

    @property
    def transport(self) -> Any: ...
    @property
    def transports(self) -> List[Any]: ...
    def channel(self, schema: Any = None, maxsize: Optional[int] = None, *,
                name: Optional[str] = None, **kwargs: Any) -> Any: ...
    def topic(self, name: str, **options: Any) -> Any: ...
    def redis_channel(self, name: str, **options: Any) -> Any: ...
    def all_channels(self) -> List[Any]: ...
    def dead_letter_channel_for(self, channel: Any, name: str) -> Any: ...
    def agent(self, channel: Any = None, **kwargs: Any) -> Callable[..., Any]: ...
    def quieted(self) -> ContextManager[None]: ...
    def report_crash(self, error: BaseException) -> None: ...
    def request_stop(self) -> None: ...
    async def wait_for_stop_request(self) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


# --------------------------------------------------------------------------
# Executor bridge and nodes (seeds 001 and 003)
# --------------------------------------------------------------------------

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
