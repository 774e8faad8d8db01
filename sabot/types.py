"""Interfaces every layer of Sabot codes against.

Implementations depend on these Protocols, not on each other: an agent knows
a ``ChannelT`` and a ``SubscriberT``, never a Kafka consumer; the worker and
the command line know an ``AppT`` and its ``TransportT`` s. The classes that
implement them (``sabot.channels.channel.Channel``, ``sabot.agents.Agent``,
``sabot.channels.kafka.KafkaTransport``, ...) are held to them by mypy, which
runs as an ordinary test (``tests/test_sourcecode.py``), over the package and
over ``tests/typing/conformance.py``, which assigns each class to its
Protocol.

A Protocol lists what other layers use, not every method of its classes
(``StreamT`` is for annotating agent functions, as in Faust). Members that
callers only read are declared as properties, so that a class may implement
them with an attribute, a class attribute or a property. Where a method
takes back an object of its own fast path (a subscriber's ``done(batch)``, a
channel's ``publish(batch)``: the compiled ``Batch``, not any ``BatchT``) the
parameter is ``Any``: a Protocol cannot say "the batch class that goes with
this subscriber class". The ``runtime_checkable`` ones are also how a layer
tells kinds of objects apart (``isinstance(target, AgentT)``), never
``getattr``/``hasattr``.
"""
from __future__ import annotations

import abc
import asyncio
from typing import (TYPE_CHECKING, Any, AsyncGenerator, AsyncIterator, Callable, ContextManager,
                    Dict, List, Mapping, NamedTuple, Optional, Protocol, Sequence, Union,
                    runtime_checkable)
from typing import Iterable, Iterator, Tuple, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa

    from .bridge.metrics import BridgeMetrics
    from .settings import Settings

#: What a channel or stream carries, for ``ChannelT[T]`` and ``StreamT[T]``.
_T_co = TypeVar("_T_co", covariant=True)

__all__ = [
    "Event", "Headers", "Position", "BatchT", "CursorT", "SubscriberT", "SinkT", "CodecT",
    "ChannelT", "StreamT", "PipelineT", "AgentT", "TransportT", "AppT", "ExecutorBridgeT",
    "NodeExecutorT", "StorePosition", "StoreChanges", "StoreT", "ChangelogT", "TableT",
    "WebT", "CurrentEventT", "WindowedTableT",
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
# Data plane (sabot._fastpath: the compiled classes or their pure twins)
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

    #: Called once with the batch when the last holder released it.
    on_done: Optional[Callable[[Any], Any]]
    #: Called once with the batch when a holder abandoned it.
    on_abandon: Optional[Callable[[Any], Any]]

    @property
    def payload(self) -> Any: ...
    @property
    def keys(self) -> Optional[Sequence[Any]]: ...
    @property
    def headers(self) -> Optional[Sequence[Optional[Headers]]]: ...
    @property
    def timestamps(self) -> Optional[Sequence[float]]: ...
    @property
    def positions(self) -> Optional[Sequence[Position]]: ...
    @property
    def timestamp(self) -> float: ...
    #: When the batch reached the subscribers (``time.monotonic()``).
    @property
    def published_at(self) -> float: ...
    def __len__(self) -> int: ...
    def rows(self) -> List[Any]: ...
    def event(self, i: int) -> Event: ...
    def acquire(self, n: int = ...) -> None: ...
    def release(self) -> None: ...
    def abandon(self) -> None: ...


@runtime_checkable
class CursorT(Protocol):
    """An async iterator over one subscription that knows what it returned last.

    The fast path's ``ValueIterator``/``EventIterator``/``BatchIterator`` and
    ``sabot.value_dispatch.DispatchedIterator``. The batch of the last item
    stays held (unacknowledged) until the next item is asked for.
    """

    def __aiter__(self) -> Any: ...
    async def __anext__(self) -> Any: ...
    @property
    def current_batch(self) -> Optional[BatchT]: ...
    @property
    def current_index(self) -> int: ...
    def current_value(self) -> Any: ...
    def current_position(self) -> Any: ...
    def poll(self, empty: Any = ...) -> Any: ...


class SubscriberT(Protocol):
    """One reader's place in a channel: its queue of batches and its lag.

    ``done`` takes back a batch that this subscriber's ``take`` returned.
    """

    #: Called with each batch the subscriber finished (agents time them).
    observer: Optional[Callable[[Any], Any]]
    #: Called when a reader starts waiting for a batch.
    on_wait: Optional[Callable[[], Any]]

    def take(self) -> Optional[BatchT]: ...
    def done(self, batch: Any) -> None: ...
    def waiter(self) -> "asyncio.Future[None]": ...
    def discard_waiter(self, fut: "asyncio.Future[None]") -> None: ...
    @property
    def exhausted(self) -> bool: ...
    @property
    def lag(self) -> int: ...
    def close(self) -> None: ...
    def values(self) -> CursorT: ...
    def batches(self) -> CursorT: ...
    def events(self) -> CursorT: ...


# --------------------------------------------------------------------------
# Channels, codecs, sinks
# --------------------------------------------------------------------------

@runtime_checkable
class SinkT(Protocol):
    """Anything an agent can forward results to (a channel, an agent, ...).

    ``send`` returns ``None`` once the value is handed over, or a future that
    completes when the value is durable (a Kafka delivery): the agent keeps
    the source batch unacknowledged until it has completed.
    """

    async def send(self, key: Any = None, value: Any = None,
                   headers: Optional[Headers] = None) -> Any: ...


@runtime_checkable
class CodecT(Protocol):
    """Turns values into bytes and back; ``decode`` raises only ``DecodeError``.

    ``yields_batches`` is true when every decoded value is a
    ``pyarrow.RecordBatch`` (each message then becomes a batch of its own).
    Subclass ``sabot.codecs.Codec`` to get both attributes' defaults.
    """

    @property
    def name(self) -> str: ...
    @property
    def yields_batches(self) -> bool: ...
    def encode(self, value: Any) -> bytes: ...
    def decode(self, data: bytes) -> Any: ...


@runtime_checkable
class ChannelT(Protocol[_T_co]):
    """A channel: memory, Kafka topic or Redis stream, one interface.

    Subscriptable as in Faust (``ChannelT[Order]``: a channel of Orders), for
    annotations; the type argument is not checked at run time.

    What agents, streams, sinks, the dead-letter writer, transports, the
    monitor and the command line use of a channel (``sabot.channels.Channel``
    and its subclasses offer more: ``get``/``put``, ``clone``, ...).
    """

    @property
    def name(self) -> str: ...
    @property
    def schema(self) -> Optional[pa.Schema]: ...
    #: Name of the transport (``memory``, ``kafka``, ``redis``), for display.
    @property
    def transport_name(self) -> str: ...
    #: Faust's ``key_type``/``value_type`` (a Record class, int, str, ...; or None).
    @property
    def key_type(self) -> Any: ...
    @property
    def value_type(self) -> Any: ...

    # producing
    async def send(self, key: Any = None, value: Any = None,
                   headers: Optional[Headers] = None, **options: Any) -> Any: ...
    async def send_batch(self, batch: Any) -> Any: ...
    async def send_from(self, value: Any, sources: Sequence[BatchT] = ...) -> Any: ...
    def make_batch(self, values: Any, *, keys: Optional[Sequence[Any]] = None,
                   headers: Optional[Sequence[Any]] = None) -> BatchT: ...
    async def publish(self, batch: Any) -> None: ...
    async def flush(self) -> None: ...
    # consuming
    def subscribe(self) -> SubscriberT: ...
    def tail(self, *, from_beginning: bool = False) -> AsyncGenerator[Any, None]: ...
    @property
    def sent_count(self) -> int: ...
    # dead letters: as a source
    def dead_letter_channel(self) -> ChannelT: ...
    async def dead_letter(self, value: Any, reason: str,
                          headers: Optional[Mapping[str, Any]] = None,
                          position: Any = None) -> "asyncio.Future[None]": ...
    def position_headers(self, position: Any) -> Dict[str, bytes]: ...
    @property
    def dead_letters_sent(self) -> int: ...
    @property
    def dead_letters_truncated(self) -> int: ...
    # dead letters: what a dead-letter channel offers the writer
    @property
    def codec(self) -> Optional[CodecT]: ...
    @property
    def carries_bytes(self) -> bool: ...
    @property
    def max_message_bytes(self) -> Optional[int]: ...
    async def send_encoded(self, key: Optional[bytes], value: bytes,
                           headers: Optional[Headers] = None) -> Any: ...
    async def maybe_declare(self) -> None: ...
    def is_too_large(self, exc: BaseException) -> bool: ...
    @property
    def stopping(self) -> bool: ...


# --------------------------------------------------------------------------
# Streams and agents
# --------------------------------------------------------------------------

class StreamT(Protocol[_T_co]):
    """What an agent function is given: values, events or batches of one subscription.

    Subscriptable as in Faust (``async def f(stream: StreamT[Order])``).

    For annotating agent functions (``async def f(stream: StreamT)``, as in
    Faust); ``sabot.streams.Stream`` implements it.
    """

    @property
    def channel(self) -> ChannelT: ...
    def __aiter__(self) -> AsyncIterator[Any]: ...
    def events(self) -> AsyncIterator[Event]: ...
    def batches(self) -> AsyncIterator[Any]: ...
    def raw_batches(self) -> AsyncIterator[BatchT]: ...
    def filter(self, fun: Callable[[Any], Any]) -> StreamT: ...
    def map(self, fun: Callable[[Any], Any]) -> StreamT: ...
    def take(self, n: int, within: Optional[float] = None) -> StreamT: ...
    def enumerate(self, start: int = 0) -> StreamT: ...
    def through(self, target: Union[ChannelT, AgentT, PipelineT]) -> StreamT: ...
    def echo(self, *channels: SinkT) -> StreamT: ...
    def join(self, table: LookupT, on: Any = None, how: str = "left", *, prefix: str = "",
             value_schema: Any = None) -> StreamT: ...
    def join_within(self, other: Any, within: Any, on: Any = None, *, time: Any = None,
                    how: str = "inner", grace: Any = 0.0, prefix: str = "") -> StreamT: ...
    def window(self, spec: Any, *, key: Optional[str] = None, time: Optional[str] = None,
               grace: Any = 0.0, lateness: Any = 0.0, idle_timeout: Any = None,
               late: Optional[ChannelT] = None) -> Any: ...
    @property
    def current_batch(self) -> Optional[BatchT]: ...
    def current_value(self) -> Any: ...
    def current_position(self) -> Any: ...
    def close(self) -> None: ...


@runtime_checkable
class PipelineT(Protocol):
    """What ``stream.through`` runs on every batch: ``sabot.nodes.Pipeline``."""

    async def run_batch(self, batch: Any) -> Any: ...


@runtime_checkable
class AgentT(Protocol):
    """A user coroutine bound to an input channel, its sinks and an executor.

    What the worker, the monitor, the command line and other agents' sinks
    see of an agent (``sabot.agents.Agent``).
    """

    #: Instances (or child processes); the worker's ``--concurrency`` sets it.
    concurrency: int

    @property
    def name(self) -> str: ...
    @property
    def channel(self) -> ChannelT: ...
    @property
    def executor(self) -> str: ...
    #: The sinks as given: channels, topics, agents or callables.
    @property
    def sinks(self) -> Sequence[Union[SinkT, Callable[[Any], Any]]]: ...
    @property
    def crash_count(self) -> int: ...
    @property
    def events_out(self) -> int: ...
    @property
    def events_in(self) -> int: ...
    @property
    def backlog(self) -> int: ...
    @property
    def running(self) -> bool: ...
    @property
    def bridge_metrics(self) -> Optional[BridgeMetrics]: ...
    def drain_batch_latencies(self) -> List[float]: ...


# --------------------------------------------------------------------------
# Transports and the app
# --------------------------------------------------------------------------

class TransportT(Protocol):
    """The service behind a broker's channels (see ``sabot.channels.transport``).

    What its channels (``subscribe_channel``, ``tail``, ``topic`` for dead
    letters, ``stopping``), the worker, the monitor and the command line use.
    """

    @property
    def url(self) -> str: ...
    @property
    def scheme(self) -> str: ...
    #: True when values leave the process (a broker), shown in the banner.
    @property
    def external(self) -> bool: ...
    @property
    def topics(self) -> Mapping[str, ChannelT]: ...
    @property
    def label(self) -> str: ...
    def topic(self, name: str, **options: Any) -> ChannelT: ...
    def subscribe_channel(self, channel: ChannelT) -> None: ...
    async def lag(self) -> Dict[str, int]: ...
    async def partition_lag(self) -> Dict[Tuple[str, int], int]: ...
    def key_partition(self, topic: str, key: bytes) -> Optional[Tuple[int, bool]]: ...
    def tail(self, channel: ChannelT, *,
             from_beginning: bool = False) -> AsyncGenerator[bytes, None]: ...
    def status(self) -> Dict[str, Any]: ...
    @property
    def stopping(self) -> bool: ...
    async def stop(self) -> None: ...


@runtime_checkable
class AppT(Protocol):
    """The registry of channels, topics and agents; see ``sabot.app.App``.

    What the layers below it (channels, transports, agents) and the worker,
    the monitor and the command line use; ``isinstance(obj, AppT)`` is how
    the command line recognises an app.
    """

    @property
    def id(self) -> str: ...
    @property
    def conf(self) -> Settings: ...
    @property
    def agents(self) -> Mapping[str, AgentT]: ...
    @property
    def channels(self) -> Sequence[ChannelT]: ...
    @property
    def crash_reasons(self) -> Sequence[BaseException]: ...
    @property
    def transports(self) -> Sequence[TransportT]: ...
    def all_channels(self) -> Sequence[ChannelT]: ...
    def dead_letter_channel_for(self, channel: ChannelT, name: str) -> ChannelT: ...
    def quieted(self) -> ContextManager[None]: ...
    def report_crash(self, error: BaseException) -> None: ...
    def request_stop(self) -> None: ...
    def maybe_discover(self) -> None: ...
    #: The ``@app.page`` views (``sabot.web.routes.Route``), served by the worker.
    @property
    def web_routes(self) -> Sequence[Any]: ...
    #: An ASGI app the worker serves instead of its pages (``sabot.contrib.asgi.serve_asgi``).
    web_asgi: Any
    async def wait_for_stop_request(self) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


# --------------------------------------------------------------------------
# Executor bridge and nodes (seeds 001 and 003)
# --------------------------------------------------------------------------

class ExecutorBridgeT(abc.ABC):
    """Runs nodes somewhere (this process, worker processes, a WASM sandbox); seed 001.

    ``data`` given to ``execute_node`` is either a mapping of input names to
    values (the result is the node's whole output mapping) or one value,
    which becomes the ``"input"`` input (the result is the ``"output"``
    output). Values are RecordBatches, Tables, lists or JSON-able values.
    """

    @property
    @abc.abstractmethod
    def executor_type(self) -> str:
        """``"native"``, ``"process"`` or ``"wasm"``."""

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
        """The runtime the node was written for (``"native"``, ``"process"``, ``"wasm"``)."""

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


# --------------------------------------------------------------------------
# Table state: the local store of one table partition (sabot.tables.stores)
# --------------------------------------------------------------------------

#: A position recorded in a store: a Kafka offset (int) or a Redis entry id (str).
StorePosition = Union[int, str]
#: What ``StoreT.apply`` writes: key -> new value, ``None`` deleting the key;
#: a mapping, or ``(key, value)`` pairs where the last pair of a key wins.
StoreChanges = Union[Mapping[bytes, Optional[bytes]], Iterable[Tuple[bytes, Optional[bytes]]]]


class StoreT(Protocol):
    """The local store of one partition of one table (bytes in, bytes out).

    The table encodes keys and values; the store keeps bytes, and keeps
    with them, written in the same transaction, the changelog position and
    the source positions the data reflects. The full contract (atomicity,
    durability, errors, threading) is in ``sabot.tables.stores``'s docstring.
    """

    @property
    def url(self) -> str:
        """The store URL it was opened with (``memory://``, ``lmdb://...``)."""
    @property
    def table(self) -> str:
        """The table's name (every error names it)."""
    @property
    def partition(self) -> int:
        """The partition this store holds."""
    @property
    def path(self) -> Optional[str]:
        """The store's directory on disk; ``None`` in memory."""
    @property
    def persistent(self) -> bool:
        """Whether the data outlives the process (``memory://``: no)."""
    @property
    def max_key_size(self) -> Optional[int]:
        """The longest key the store accepts, in bytes (``None``: no limit)."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` or ``drop()`` was called."""

    def get(self, key: bytes) -> Optional[bytes]: ...
    def get_many(self, keys: Iterable[bytes]) -> List[Optional[bytes]]: ...
    def __contains__(self, key: object) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def keys(self) -> Iterator[bytes]: ...
    def values(self) -> Iterator[bytes]: ...
    def items(self) -> Iterator[Tuple[bytes, bytes]]: ...
    def apply(self, changes: StoreChanges, *,
              changelog_offset: Optional[StorePosition] = None,
              source_positions: Optional[Mapping[str, Optional[StorePosition]]] = None,
              ) -> None: ...
    def changelog_offset(self) -> Optional[StorePosition]: ...
    def source_positions(self) -> Dict[str, StorePosition]: ...
    def flush(self) -> None: ...
    def reset(self) -> None: ...
    def drop(self) -> None: ...
    def close(self) -> None: ...


# --------------------------------------------------------------------------
# Joins: what a stream-table join reads of a table (sabot.joins)
# --------------------------------------------------------------------------

@runtime_checkable
class LookupT(Protocol):
    """What ``stream.join(table, ...)`` reads of a table: many values at once.

    ``sabot.tables`` ``Table`` and ``GlobalTable`` implement it.
    ``get_many(keys)`` returns one entry per key, in order: the value, or
    ``None`` where the table holds no value for the key (never the table's
    ``default``, and a lookup never creates an entry). It raises for a key
    the table cannot hold (unhashable, wrong type); the join then looks the
    keys up one by one and dead-letters the rows of the keys that fail.
    """

    @property
    def name(self) -> str: ...
    def get_many(self, keys: Sequence[Any]) -> List[Any]: ...


# --------------------------------------------------------------------------
# Tables: what the app, the transports' barrier and recovery use (sabot.tables)
# --------------------------------------------------------------------------

class ChangelogT(Protocol):
    """A table's changelog on the app's broker (``sabot.tables.changelog``).

    ``write`` returns once the broker acknowledged every entry (``(key,
    value or None, headers)``), with the position of the last one; ``read``
    yields lists of entries (``offset``, ``key``, ``value``, ``headers``)
    after a position (all if ``None``) up to the end.
    """

    @property
    def name(self) -> str: ...
    @property
    def partitions(self) -> int: ...
    async def declare(self) -> None: ...
    async def write(self, partition: int,
                    entries: Sequence[Tuple[bytes, Optional[bytes], Headers]]
                    ) -> Optional[StorePosition]: ...
    def read(self, partition: int, after: Optional[StorePosition],
             count: int = ...) -> AsyncIterator[Any]: ...
    def needs_snapshot(self, partition: int, live_keys: int) -> bool: ...
    async def snapshot(self, partition: int, items: Iterable[Tuple[bytes, bytes]]
                       ) -> Optional[StorePosition]: ...


@runtime_checkable
class TableT(Protocol):
    """A table (``sabot.tables.Table`` and its kinds): dict-like keyed state.

    ``get_many`` as in ``LookupT``; ``flush`` writes the changes to the
    changelog (acknowledged) and then to the stores; ``held_partitions`` are
    the partitions this worker holds.
    """

    @property
    def name(self) -> str: ...
    @property
    def is_global(self) -> bool: ...
    def __getitem__(self, key: Any) -> Any: ...
    def __setitem__(self, key: Any, value: Any) -> None: ...
    def __delitem__(self, key: Any) -> None: ...
    def __contains__(self, key: object) -> bool: ...
    def __len__(self) -> int: ...
    def get_many(self, keys: Sequence[Any]) -> List[Any]: ...
    async def flush(self) -> None: ...
    @property
    def held_partitions(self) -> List[int]: ...


class CurrentEventT(Protocol):
    """The value an agent is processing, with its envelope (``sabot.current_event()``).

    What a windowed table reads of it: the time and partition that pick and
    close windows, and what a late event is sent with.
    """

    @property
    def key(self) -> Any: ...
    @property
    def value(self) -> Any: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def partition(self) -> int: ...
    @property
    def position(self) -> Any: ...
    @property
    def channel(self) -> Optional[ChannelT]: ...


class WindowedTableT(TableT, Protocol):
    """What a windowed table (``sabot.tables.windowed``) uses of the table it wraps.

    ``expire`` removes a key of a partition outside of any input (a window's
    expiry); ``on_recover`` registers a callback run after recovery;
    ``store_for`` is a held partition's store.
    """

    @property
    def app(self) -> Any: ...
    @property
    def window(self) -> Any: ...
    @property
    def on_window_close(self) -> Optional[Callable[..., Any]]: ...
    def expire(self, key: Any, partition: int) -> None: ...
    def store_for(self, partition: int) -> Optional[StoreT]: ...
    def on_recover(self, fun: Callable[..., Any]) -> Callable[..., Any]: ...


class WebT(Protocol):
    """What serves an app's web views (``sabot.web.WebServer``, ``sabot.contrib.asgi``).

    A view reaches it as ``self.web``: ``url_for`` gives the path of a view
    by its name, placeholders filled from ``kwargs``.
    """

    def url_for(self, view_name: str, **kwargs: Any) -> str: ...
