"""Each implementation assigned to the Protocol of ``sabot.types`` it implements.

mypy checks this module (``files`` in pyproject.toml's ``[tool.mypy]``, run by
``tests/test_sourcecode.py::test_mypy_passes``): a class that drifts from its
Protocol (a member renamed, removed, or given another signature or type)
fails the suite here, even where no code of the package happens to pass it
where the Protocol is wanted. Nothing here runs: importing the module only
defines the functions (there is no ``test_`` name for pytest to collect).
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from mode.services import ServiceTask

from sabot._cython import channels as compiled  # the stub, channels.pyi
from sabot._cython import channels_py as pure
from sabot.agents import Agent
from sabot.app import App
from sabot.channels import Channel, MemoryChannel, MemoryTransport
from sabot.channels.kafka import KafkaTopic, KafkaTransport
from sabot.channels.redis import RedisStreamChannel, RedisTransport
from sabot.codecs import ArrowCodec, Codec, JsonCodec, RawCodec
from sabot.bridge.wasm import BatchRunner, WasmBridge, WasmNode
from sabot.nodes import Pipeline
from sabot.streams import Stream
from sabot.tables.stores.lmdb import LMDBStore
from sabot.tables.stores.memory import MemoryStore
from sabot.tables.stores.rocksdb import RocksDBStore
from sabot.types import (AgentT, AppT, BatchT, ChannelT, CodecT, CursorT, PipelineT, SinkT,
                         StreamT, SubscriberT, TransportT)
from sabot.types import StoreT
from sabot.types import ExecutorBridgeT, NodeExecutorT
from sabot.value_dispatch import DispatchedIterator
from sabot.tables.table import GlobalTable, Table
from sabot.types import LookupT


# -- the fast path: the compiled classes (as the stub says) and their twins ------
def _batch(b: compiled.Batch) -> BatchT: return b
def _batch_py(b: pure.Batch) -> BatchT: return b
def _subscriber(s: compiled.Subscriber) -> SubscriberT: return s
def _subscriber_py(s: pure.Subscriber) -> SubscriberT: return s
def _values(c: compiled.ValueIterator) -> CursorT: return c
def _values_py(c: pure.ValueIterator) -> CursorT: return c
def _events(c: compiled.EventIterator) -> CursorT: return c
def _events_py(c: pure.EventIterator) -> CursorT: return c
def _batches(c: compiled.BatchIterator) -> CursorT: return c
def _batches_py(c: pure.BatchIterator) -> CursorT: return c
def _dispatched(c: DispatchedIterator) -> CursorT: return c


# -- channels -------------------------------------------------------------------
def _channel(c: Channel) -> ChannelT: return c
def _memory_channel(c: MemoryChannel) -> ChannelT: return c
def _kafka_topic(c: KafkaTopic) -> ChannelT: return c
def _redis_channel(c: RedisStreamChannel) -> ChannelT: return c
def _channel_sink(c: Channel) -> SinkT: return c


# -- streams, agents, pipelines ----------------------------------------------------
def _stream(s: Stream) -> StreamT: return s
def _agent(a: Agent) -> AgentT: return a
def _agent_sink(a: Agent) -> SinkT: return a
def _pipeline(p: Pipeline) -> PipelineT: return p
def _batch_runner(r: BatchRunner) -> PipelineT: return r


# -- the WASM executor: a bridge and a node like the others ------------------------
def _wasm_bridge(b: WasmBridge) -> ExecutorBridgeT: return b
def _wasm_node(n: WasmNode) -> NodeExecutorT: return n


# -- transports and the app -------------------------------------------------------
def _memory_transport(t: MemoryTransport) -> TransportT: return t
def _kafka_transport(t: KafkaTransport) -> TransportT: return t
def _redis_transport(t: RedisTransport) -> TransportT: return t
def _app(a: App) -> AppT: return a


# On the class, App.task is still mode's decorator for service methods
# (app.task on an app is Faust's): an App subclass remains a mode.Service.
def _app_class_task() -> Callable[[Callable[[Any], Awaitable[None]]], ServiceTask]:
    return App.task


# -- codecs -----------------------------------------------------------------------
def _codec(c: Codec) -> CodecT: return c
def _raw(c: RawCodec) -> CodecT: return c
def _json(c: JsonCodec) -> CodecT: return c
def _arrow(c: ArrowCodec) -> CodecT: return c


# -- table stores -------------------------------------------------------------------
def _memory_store(s: MemoryStore) -> StoreT: return s
def _lmdb_store(s: LMDBStore) -> StoreT: return s
def _rocksdb_store(s: RocksDBStore) -> StoreT: return s


# -- joins: what stream.join reads of a table -------------------------------------
def _table_lookup(t: Table) -> LookupT: return t
def _global_table_lookup(t: GlobalTable) -> LookupT: return t


# -- windowed tables: what they use of a table and of the current event ------------
from sabot.tables.context import CurrentEvent  # noqa: E402
from sabot.types import CurrentEventT, WindowedTableT  # noqa: E402


def _windowed_table(t: Table) -> WindowedTableT: return t
def _current_event(e: CurrentEvent) -> CurrentEventT: return e


# -- models: a channel's typed key or value codec is a codec -----------------------
from sabot.models.codec import TypedCodec  # noqa: E402


def _typed_codec(c: TypedCodec) -> CodecT: return c


# -- what serves web views: the worker's Site and the ASGI pages --------------
from sabot.contrib.asgi import SabotPages  # noqa: E402
from sabot.types import WebT  # noqa: E402
from sabot.web.site import Site  # noqa: E402


def _web_site(s: Site) -> WebT: return s
def _asgi_pages(p: SabotPages) -> WebT: return p


# -- tables: kinds of table and their changelogs ----------------------------------
from sabot.tables.changelog import KafkaChangelog, MemoryChangelog, RedisChangelog  # noqa: E402
from sabot.tables.table import SetGlobalTable, SetTable  # noqa: E402
from sabot.types import ChangelogT, TableT  # noqa: E402


def _table(t: Table) -> TableT: return t
def _global_table(t: GlobalTable) -> TableT: return t
def _set_table(t: SetTable) -> TableT: return t
def _set_global_table(t: SetGlobalTable) -> TableT: return t
def _memory_changelog(c: MemoryChangelog) -> ChangelogT: return c
def _kafka_changelog(c: KafkaChangelog) -> ChangelogT: return c
def _redis_changelog(c: RedisChangelog) -> ChangelogT: return c
