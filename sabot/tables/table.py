"""Faust's tables: ``Table``, ``GlobalTable``, ``SetTable``, ``SetGlobalTable``.

A table is a dict-like view of keyed state, partitioned like the stream that
updates it: a write made while an agent processes a value goes to that
value's partition (``sabot.tables.context``). ``table[k]`` of a missing key
is ``default()`` (Faust's ``__missing__``), so ``table[k] += 1`` counts.

Where the state lives:

* ``_values``: a cache of the keys read or written (Python objects), which
  holds every change not yet flushed;
* ``_dirty``: per partition, the keys changed since the last flush and the
  input row (batch, index) of their last write;
* one store per partition (``sabot.tables.stores``): bytes, with the applied
  changelog offset and the source positions, written in one transaction;
* the changelog (``sabot.tables.changelog``): every flushed change, so a
  store that is lost or cannot be trusted is rebuilt from it.

``flush()`` (every commit interval, and before a transport commits source
positions: ``sabot.tables.manager``) writes the dirty keys to the changelog,
waits for the broker to acknowledge them, then applies them to the store.

Exact state after a crash: each stored value is a record of the value and
the source position of the input that last wrote it. After a restart the
source is read again from its last commit, which may be before inputs whose
writes were already flushed; a write made while processing such a replayed
input (its position is at or before the position recorded for that key) is
skipped, reads return the stored value. See docs/tables.md for what that
guarantees and what it assumes.

Exactly once (``processing_guarantee="exactly_once"``), the changes made
from input of a source its transport commits in transactions are *held*:
``flush()`` writes their changelog entries into that source's transaction
(``Changelog.write_held``), keeps the changes in ``_held`` (reads see them
through the cache) and applies them to the store only when the transaction
commits. So the store never holds a change whose changelog entry or input
position could still be rolled back: after an abort (``drop_uncommitted``:
the transport tells which source aborted) the table forgets every change
of that source not committed yet, held or still dirty, and the input
processed again from the last commit re-applies and re-writes them; after
a crash the store holds only committed changes, and its recovery reads the
committed rest from the changelog.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import warnings
import zlib
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Mapping,
                    MutableMapping, MutableSet, Optional, Set, Tuple)

from ..channels.transport_channel import TransportChannel
from ..exceptions import ConfigurationError, SabotCompatibilityWarning, SabotError
from ..streams import current_row, current_stream
from ..types import BatchT, ChangelogT, Headers, StorePosition, StoreT
from .changelog import HOLD, WAIT, Changelog
from .codec import TableValueError, decode, decode_record, encode, encode_record
from .context import position_le, source_of

if TYPE_CHECKING:
    from .windowed import WindowWrapper
    from .manager import TableManager

__all__ = ["Collection", "Table", "GlobalTable", "SetTable", "SetGlobalTable",
           "TableKeyError", "TableValueError"]

logger = logging.getLogger("sabot.tables")

#: Faust's table options Sabot accepts but does not have (a warning names them).
FAUST_ONLY_OPTIONS = ("on_changelog_event", "standby_buffer_size",
                      "extra_topic_configs", "use_partitioner", "schema", "options",
                      "key_index", "start_manager", "manager_topic_suffix")


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


#: In ``_values``: the key is known to have no value (deleted, or not stored).
_ABSENT: Any = _Absent()
#: What ``_values.get`` returns for a key never loaded.
_NOT_LOADED: Any = object()

#: The input row behind a write: its batch and index (``None``: no input).
Row = Tuple[Optional[BatchT], int]


class _HeldChanges:
    """Changes whose changelog entries are in a transaction not committed yet."""

    __slots__ = ("partition", "changes", "positions", "keys")

    def __init__(self, partition: int, changes: Dict[bytes, Optional[bytes]],
                 positions: Dict[str, StorePosition], keys: List[Any]) -> None:
        self.partition = partition
        self.changes = changes
        self.positions = positions
        self.keys = keys


class TableKeyError(SabotError, ValueError):
    """A partitioned table was updated with a key that is not the message key."""


def _check_writable(kind: str) -> None:
    raise RuntimeError(f"Cannot modify {kind} outside of agent/stream.")


class Collection(MutableMapping[Any, Any]):
    """What every table shares: partitions, the cache, stores, flush and recovery."""

    #: GlobalTable: every partition on every worker, any key from any input.
    is_global = False

    def __init__(self, app: Any, name: str, *, default: Optional[Callable[[], Any]] = None,
                 key_type: Any = None, value_type: Any = None,
                 partitions: Optional[int] = None, changelog_topic: Optional[str] = None,
                 store: Optional[str] = None, help: Optional[str] = None,
                 window: Any = None, on_window_close: Optional[Callable[..., Any]] = None,
                 on_recover: Optional[Callable[..., Any]] = None,
                 recovery_buffer_size: int = 10_000,
                 **options: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"table name must be a non-empty string, got {name!r}")
        if default is not None and not callable(default):
            raise ConfigurationError(
                f"table {name!r}: default must be callable (int, list, lambda: 0), got {default!r}")
        if partitions is not None and (not isinstance(partitions, int)
                                       or isinstance(partitions, bool) or partitions < 1):
            raise ConfigurationError(f"table {name!r}: partitions must be a positive int")
        if not isinstance(recovery_buffer_size, int) or isinstance(recovery_buffer_size, bool) \
                or recovery_buffer_size < 1:
            raise ConfigurationError(f"table {name!r}: recovery_buffer_size must be a positive int")
        for what, typ in (("key_type", key_type), ("value_type", value_type)):
            if typ is not None and not isinstance(typ, type):
                raise ConfigurationError(f"table {name!r}: {what} must be a type, got {typ!r}")
        unknown = sorted(set(options) - set(FAUST_ONLY_OPTIONS))
        if unknown:
            raise ConfigurationError(f"table {name!r}: unknown option(s) {', '.join(unknown)}")
        if options:
            warnings.warn(f"table {name!r}: Faust's {', '.join(sorted(options))} not supported "
                          f"by Sabot (ignored)", SabotCompatibilityWarning, stacklevel=3)
        self.app = app
        self.name = name
        self.default = default
        self.key_type = key_type
        self.value_type = value_type
        # Checks beyond "a str or int key, a plain value" are needed (see __setitem__).
        self._typed = key_type is not None or value_type is not None or \
            type(self)._to_stored is not Collection._to_stored
        self.partitions = partitions
        self.help = help or ""
        self._warned_unkeyed = False  # see _check_key
        self.store_url = store
        self.window = window
        self.on_window_close = on_window_close
        #: Changelog entries read and applied to the store at a time (Faust's option).
        self.recovery_buffer_size = recovery_buffer_size
        self._changelog_topic = changelog_topic
        self._recover_callbacks: List[Callable[..., Any]] = [on_recover] if on_recover else []
        #: Set by the app's TableManager when the table is registered.
        self.manager: Optional[TableManager] = None
        self.changelog: Optional[ChangelogT] = None
        self._stores: Dict[int, StoreT] = {}
        self._values: Dict[Any, Any] = {}
        self._dirty: Dict[int, Dict[Any, Row]] = {}
        #: Per source: changes flushed into its open transaction, applied to
        #: the stores when it commits (exactly once; see the module doc).
        self._held: Dict[str, List[_HeldChanges]] = {}
        #: Per source: the last position recorded when the table was recovered.
        #: Input at or before it may be a replay (checked per key).
        self._replay: Dict[str, StorePosition] = {}
        #: Per key, while replays are possible: ``(source, position)`` of its last write.
        self._key_pos: Dict[Any, Tuple[Optional[str], Any]] = {}
        # The batch of the last write and what follows from it (one look per batch).
        self._batch: Optional[BatchT] = None
        self._batch_dirty: Dict[Any, Row] = {}
        self._batch_replay = False
        self._batch_stale = False
        self._flush_lock = asyncio.Lock()
        #: Writes skipped because their input had already been applied (replays).
        self.replays_skipped = 0
        #: How each partition was last recovered (``sabot.tables.recovery.RecoveryStats``).
        self.recovery_stats: Dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} partitions={sorted(self._stores)}>"

    def __hash__(self) -> int:
        return object.__hash__(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    # -- names ---------------------------------------------------------------
    @property
    def changelog_topic_name(self) -> str:
        """``<app id>-<table name>-changelog`` unless ``changelog_topic=`` was given."""
        if self._changelog_topic:
            return self._changelog_topic
        return f"{self.app.id}-{self.name}-changelog"

    @property
    def label(self) -> str:
        return f"{type(self).__name__}: {self.name}"

    def info(self) -> Mapping[str, Any]:
        """Faust's ``table.info()``: how the table was made."""
        return {"app": self.app, "name": self.name, "default": self.default,
                "store": self.store_url, "key_type": self.key_type,
                "value_type": self.value_type, "partitions": self.partitions,
                "changelog_topic": self.changelog_topic_name, "help": self.help,
                "window": self.window, "is_global": self.is_global}

    def on_recover(self, fun: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: call ``fun()`` (async or not) once the table is recovered."""
        self._recover_callbacks.append(fun)
        return fun

    async def call_recover_callbacks(self) -> None:
        """Run the ``on_recover`` callbacks (after recovery)."""
        for fun in self._recover_callbacks:
            result = fun()
            if asyncio.iscoroutine(result):
                await result

    # -- value transforms (SetTable stores sets as lists) -------------------
    def _to_stored(self, value: Any) -> Any:
        return value

    def _from_stored(self, value: Any) -> Any:
        return value

    # -- reading -------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        try:
            value = self._values.get(key, _NOT_LOADED)
        except TypeError:
            raise TableValueError(f"table {self.name!r}: key {key!r} is unhashable "
                                  f"({type(key).__name__})") from None
        if value is _NOT_LOADED:
            value = self._load(key)
        if value is _ABSENT:
            return self.__missing__(key)
        return value

    def __missing__(self, key: Any) -> Any:
        if self.default is not None:
            return self.default()
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        try:
            value = self._values.get(key, _NOT_LOADED)
        except TypeError:
            return False
        if value is _NOT_LOADED:
            value = self._load(key)
        return value is not _ABSENT

    def get_many(self, keys: Iterable[Any]) -> List[Any]:
        """The value of each key, ``None`` for a missing one (joins use it)."""
        out = []
        values = self._values
        for key in keys:
            try:
                value = values.get(key, _NOT_LOADED)
            except TypeError:
                raise TableValueError(f"table {self.name!r}: key {key!r} is unhashable "
                                      f"({type(key).__name__})") from None
            if value is _NOT_LOADED:
                value = self._load(key)
            out.append(None if value is _ABSENT else value)
        return out

    def _stored(self, key: Any) -> Tuple[Any, Optional[str], Any]:
        """``(value, source, position)`` of ``key`` in the stores (value ``_ABSENT`` if none)."""
        try:
            raw_key = encode(key, "key")
        except TableValueError:
            return _ABSENT, None, None  # could never have been stored
        for store in self._stores.values():
            raw = store.get(raw_key)
            if raw is not None:
                stored, source, position = decode_record(raw)
                return self._from_stored(stored), source, position
        return _ABSENT, None, None

    def _load(self, key: Any) -> Any:
        """Read ``key`` from the stores into the cache (``_ABSENT`` if none has it)."""
        value, source, position = self._stored(key)
        if self._replay and value is not _ABSENT:
            self._key_pos[key] = (source, position)
        self._values[key] = value
        return value

    def _items_now(self) -> Dict[Any, Any]:
        """Every key and value: the stores overlaid with the changes not flushed."""
        out: Dict[Any, Any] = {}
        for store in self._stores.values():
            for raw_key, raw in store.items():
                out[decode(raw_key)] = self._from_stored(decode_record(raw)[0])
        values = self._values
        for key in self._held_keys():
            value = values.get(key, _ABSENT)
            if value is _ABSENT:
                out.pop(key, None)
            else:
                out[key] = value
        for dirty in self._dirty.values():
            for key in dirty:
                value = values.get(key, _ABSENT)
                if value is _ABSENT:
                    out.pop(key, None)
                else:
                    out[key] = value
        # Values read since (a SetTable's sets) are the same objects: the
        # cache's copy is the one in use.
        for key in out:
            cached = values.get(key, _NOT_LOADED)
            if cached is not _NOT_LOADED and cached is not _ABSENT:
                out[key] = cached
        return out

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._items_now()))

    def __len__(self) -> int:
        return len(self._items_now())

    def items(self) -> Any:
        """``(key, value)`` pairs (a snapshot)."""
        return self._items_now().items()

    def keys(self) -> Any:
        """The keys (a snapshot)."""
        return self._items_now().keys()

    def values(self) -> Any:
        """The values (a snapshot)."""
        return self._items_now().values()

    def as_dict(self) -> Dict[str, Any]:
        """A plain dict copy of the table."""
        return dict(self._items_now())

    def as_ansitable(self, title: str = "{table.name}", **kwargs: Any) -> str:
        """The table as text rows (Faust's ``as_ansitable``, plain)."""
        rows = [f"{k!r}: {v!r}" for k, v in sorted(self._items_now().items(), key=repr)]
        return "\n".join([title.format(table=self), *rows])

    # -- writing -------------------------------------------------------------
    def __setitem__(self, key: Any, value: Any) -> None:
        row = current_row()
        if row is None:
            _check_writable(f"table {self.name!r}")
            return
        stream, batch, i, single = row
        if batch is not self._batch:
            self._enter_batch(batch)
        if single and not self.is_global and batch is not None:
            keys = batch.keys  # the usual cases inline: the message key itself,
            if keys is None:   # or its UTF-8 bytes (a Kafka or Redis key)
                self._check_key(key, stream, batch, i)
            else:
                message_key = keys[i]
                if message_key != key and not (type(message_key) is bytes and type(key) is str
                                               and message_key == key.encode()):
                    self._check_key(key, stream, batch, i)
        kt, vt = type(key), type(value)
        if self._typed or not ((kt is str or kt is int) and (vt is int or vt is str or vt is float)):
            self._check_value(key, value)
        if self._batch_replay and self._replayed(key, batch, i):
            return
        self._values[key] = value
        if self.is_global:
            self._global_dirty(key)[key] = (batch, i)
        else:
            self._batch_dirty[key] = (batch, i)

    def _global_dirty(self, key: Any) -> Dict[Any, Row]:
        """The buffer of the partition a global table keeps ``key`` in.

        A global table is written from any partition: the key, not the
        input, picks its partition, so each key lives in one store.
        """
        count = self.partitions or 1
        partition = zlib.crc32(encode(key, "key")) % count if count > 1 else 0
        dirty = self._dirty.get(partition)
        if dirty is None:
            dirty = self._dirty[partition] = {}
        return dirty

    def __delitem__(self, key: Any) -> None:
        if key not in self:
            raise KeyError(key)
        stream = current_stream()
        if stream is None:
            _check_writable(f"table {self.name!r}")
            return
        batch, i, single = stream.current_row()
        if batch is not self._batch:
            self._enter_batch(batch)
        if single and not self.is_global:
            self._check_key(key, stream, batch, i)
        if self._batch_replay and self._replayed(key, batch, i):
            return
        self._values[key] = _ABSENT
        if self.is_global:
            self._global_dirty(key)[key] = (batch, i)
        else:
            self._batch_dirty[key] = (batch, i)

    def _enter_batch(self, batch: Optional[BatchT]) -> None:
        # Once per input batch: its partition, and whether it may hold replays.
        partition = 0
        replay = False
        if batch is not None and batch.positions is not None and len(batch):
            source, partition, first = source_of(batch.positions[0])
            recorded = self._replay.get(source) if source is not None else None
            replay = recorded is not None and first is not None and position_le(first, recorded)
        manager = self.manager
        stale = bool(manager is not None and manager._stale_checks and manager.is_stale(batch))
        if stale:
            replay = True  # every write of it is skipped (see _replayed)
        if self.partitions is not None and partition >= self.partitions:
            raise TableKeyError(
                f"table {self.name!r} has {self.partitions} partitions, but is updated from "
                f"partition {partition}: a table must have as many partitions as its source")
        if partition not in self._stores and self.manager is not None:
            self.manager.partition_needed(self, partition)
        dirty = self._dirty.get(partition)
        if dirty is None:
            dirty = self._dirty[partition] = {}
        self._batch_dirty = dirty
        self._batch_replay = replay
        self._batch_stale = stale
        self._batch = batch  # last: a batch refused above is looked at again

    def _replayed(self, key: Any, batch: Any, i: int) -> bool:
        """True when the input at ``batch[i]`` was already applied to ``key`` (skip it).

        Also for every row of a stale batch (its transaction aborted after it
        was delivered: its records are processed again).
        """
        if self._batch_stale:
            return True
        source, _, position = source_of(batch.positions[i])
        recorded = self._replay.get(source) if source is not None else None
        if recorded is None or position is None or not position_le(position, recorded):
            return False
        last = self._key_pos.get(key)
        if last is None:
            _, stored_source, stored_position = self._stored(key)
            if stored_source is not None:
                last = (stored_source, stored_position)
        if last is not None and last[0] == source and last[1] is not None \
                and position_le(position, last[1]):
            self.replays_skipped += 1
            return True
        self._key_pos[key] = (source, position)
        return False

    def _check_key(self, key: Any, stream: Any, batch: Optional[BatchT], i: int) -> None:
        """The key written must be the message key: the table is partitioned like its source."""
        if batch is None or i < 0:
            return
        table_key = key
        if self.window is not None and type(key) is tuple and len(key) == 2:
            table_key = key[0]  # (key, (start, end)) of a windowed table
        message_key = batch.keys[i] if batch.keys is not None else None
        if message_key is None:
            if batch.positions is None or len(batch.positions[i]) != 3:
                return  # memory or Redis: one partition, any key lands in it
            # A message without a key: as in Faust, the write lands in the
            # message's partition (each partition keeps its own value).
            if not self._warned_unkeyed:
                self._warned_unkeyed = True
                _, partition, _ = source_of(batch.positions[i])
                logger.warning(
                    "table %r updated with key %r from a message without a key (%r partition %d): "
                    "as in Faust, each partition keeps its own value for that key; re-key the "
                    "stream (stream.group_by(...)) for one value per key", self.name, table_key,
                    stream.channel.name, partition)
            return
        elif message_key == table_key:
            return
        elif isinstance(message_key, bytes):
            channel = stream.channel
            if isinstance(channel, TransportChannel):  # keys as its producer encodes them
                try:
                    if channel.encode_key(table_key) == message_key:
                        return
                except Exception:  # a key the channel cannot encode is not the message's
                    pass
        position = batch.positions[i] if batch.positions is not None else None
        _, partition, _ = source_of(position)
        raise TableKeyError(
            f"table {self.name!r} updated with key {table_key!r} while processing a message "
            f"with key {message_key!r} (from {stream.channel.name!r} partition {partition}): "
            f"a table is partitioned like its source, so it must be updated with the message "
            f"key. Re-key the stream first (stream.group_by(...)), or use a GlobalTable")

    def _check_value(self, key: Any, value: Any) -> None:
        kt, vt = type(key), type(value)
        if self.key_type is not None and not isinstance(key, self.key_type):
            raise TableValueError(f"table {self.name!r}: key {key!r} is a {kt.__name__}, "
                                  f"not a {self.key_type.__name__} (key_type)")
        if self.value_type is not None and not isinstance(value, self.value_type):
            raise TableValueError(f"table {self.name!r}: value {value!r} for key {key!r} is a "
                                  f"{vt.__name__}, not a {self.value_type.__name__} (value_type)")
        if not (kt is str or kt is int):
            try:
                hash(key)
            except TypeError:
                raise TableValueError(f"table {self.name!r}: key {key!r} is unhashable "
                                      f"({kt.__name__})") from None
            encode(key, f"table {self.name!r}: key")
        if not (vt is int or vt is str or vt is float):
            encode(self._to_stored(value), f"table {self.name!r}: value for key {key!r}:")

    # -- partitions, flush, recovery (driven by the TableManager) ------------
    @property
    def dirty_count(self) -> int:
        """Keys changed and not yet flushed."""
        return sum(len(d) for d in self._dirty.values())

    def attach(self, partition: int, store: StoreT) -> None:
        """Hold ``partition`` in ``store`` (recovered); input at or before its positions replays."""
        self._stores[partition] = store
        for source, position in store.source_positions().items():
            known = self._replay.get(source)
            if known is None or position_le(known, position):
                self._replay[source] = position
        self._forget_clean()  # a key read as absent before may be in this store

    def _forget_clean(self) -> None:
        """Drop the cached keys that hold no unflushed change (the stores have them)."""
        keep = {key for dirty in self._dirty.values() for key in dirty}
        keep.update(self._held_keys())
        values = self._values
        self._values = {key: values[key] for key in keep if key in values}
        self._key_pos.clear()
        self._batch = None

    def detach(self, partition: int) -> Optional[StoreT]:
        """Let ``partition`` go (revoked); its cached keys are dropped. Returns its store."""
        store = self._stores.pop(partition, None)
        self._dirty.pop(partition, None)
        for source, held in list(self._held.items()):
            held[:] = [h for h in held if h.partition != partition]
            if not held:
                del self._held[source]
        self._forget_clean()
        return store

    @property
    def held_partitions(self) -> List[int]:
        """The partitions this worker holds."""
        return sorted(self._stores)

    def store_for(self, partition: int) -> Optional[StoreT]:
        """The store of ``partition`` (``None`` if not held)."""
        return self._stores.get(partition)

    async def flush(self) -> None:
        """Write every change to the changelog (acknowledged), then to the stores."""
        async with self._flush_lock:
            for partition in list(self._dirty):
                dirty = self._dirty.get(partition)
                if not dirty:
                    continue
                self._dirty[partition] = {}
                self._batch = None
                try:
                    await self._flush_partition(partition, dirty)
                except BaseException:
                    # Not written: keep the changes for the next flush (newer writes win).
                    dirty.update(self._dirty.get(partition, {}))
                    self._dirty[partition] = dirty
                    self._batch = None
                    raise
            await self._maybe_snapshot()
            self._maybe_shrink_cache()

    async def _maybe_snapshot(self) -> None:
        # A changelog the broker does not compact (Redis) is rewritten from
        # the store once long enough; only a partition whose store holds
        # every change (nothing left to flush) can be the snapshot.
        changelog = self.changelog
        if changelog is None:
            return
        for partition, store in list(self._stores.items()):
            if self._dirty.get(partition) or any(h.partition == partition for held in
                                                 self._held.values() for h in held) \
                    or not changelog.needs_snapshot(partition, len(store)):
                continue
            last = await changelog.snapshot(partition, store.items())
            if last is not None:
                store.apply({}, changelog_offset=last)
            logger.info("table %r partition %d: changelog %r rewritten as a snapshot of %d keys",
                        self.name, partition, changelog.name, len(store))

    def _entries(self, dirty: Dict[Any, Row]) -> Tuple[
            Dict[bytes, Optional[bytes]], List[Tuple[bytes, Optional[bytes], Headers]],
            Dict[str, StorePosition]]:
        values = self._values
        changes: Dict[bytes, Optional[bytes]] = {}
        entries: List[Tuple[bytes, Optional[bytes], Headers]] = []
        positions: Dict[str, StorePosition] = {}
        for key, (batch, i) in dirty.items():
            source: Optional[str] = None
            position: Any = None
            if batch is not None and batch.positions is not None and i >= 0:
                source, _, position = source_of(batch.positions[i])
            value = values.get(key, _ABSENT)
            raw_key = encode(key, "key")
            raw = None if value is _ABSENT else encode_record(self._to_stored(value),
                                                              source, position)
            changes[raw_key] = raw
            headers: Dict[str, bytes] = {}
            if source is not None and position is not None:
                headers = {"sabot-source": source.encode(),
                           "sabot-position": str(position).encode()}
                known = positions.get(source)
                if known is None or position_le(known, position):
                    positions[source] = position
            entries.append((raw_key, raw, headers))
        return changes, entries, positions

    async def _flush_partition(self, partition: int, dirty: Dict[Any, Row]) -> None:
        changelog = self.changelog
        if isinstance(changelog, Changelog) and changelog.transactional:
            dirty = await self._flush_held(partition, dirty, changelog)
            if not dirty:
                return
        changes, entries, positions = self._entries(dirty)
        offset: Optional[StorePosition] = None
        if self.changelog is not None:
            offset = await self.changelog.write(partition, entries)
        store = self._stores.get(partition)
        if store is None:
            raise SabotError(f"table {self.name!r}: partition {partition} has no store "
                             f"(not assigned to this worker)")
        store.apply(changes, changelog_offset=offset, source_positions=positions)

    async def _flush_held(self, partition: int, dirty: Dict[Any, Row],
                          changelog: Changelog) -> Dict[Any, Row]:
        """Write the changes of transactional sources into their transactions.

        Returns the rest (written plainly by the caller). The changes of a
        source whose transaction another task is committing right now stay
        dirty for the next flush.
        """
        by_source: Dict[str, Dict[Any, Row]] = {}
        rest: Dict[Any, Row] = {}
        for key, row in dirty.items():
            batch, i = row
            source = None
            if batch is not None and batch.positions is not None and i >= 0:
                source = source_of(batch.positions[i])[0]
            if source is None:
                rest[key] = row
            else:
                by_source.setdefault(source, {})[key] = row
        for source, part in by_source.items():
            mode = changelog.mode(source)
            if mode == WAIT:
                later = self._dirty.setdefault(partition, {})
                for key, row in part.items():
                    later.setdefault(key, row)  # a newer write made meanwhile wins
                continue
            if mode != HOLD:
                rest.update(part)
                continue
            changes, entries, positions = self._entries(part)
            held = await changelog.write_held(partition, entries, source)
            pending = _HeldChanges(partition, changes, positions, list(part))
            self._held.setdefault(source, []).append(pending)
            held.when_committed(functools.partial(self._apply_held, source, pending))
        return rest

    def _apply_held(self, source: str, pending: _HeldChanges,
                    offset: Optional[StorePosition]) -> None:
        """``pending``'s transaction committed: apply its changes to the store."""
        held = self._held.get(source)
        if held is None or pending not in held:
            return  # dropped meanwhile (its partition revoked)
        held.remove(pending)
        if not held:
            del self._held[source]
        store = self._stores.get(pending.partition)
        if store is None:
            return
        store.apply(pending.changes, changelog_offset=offset,
                    source_positions=pending.positions)

    def _held_keys(self) -> Set[Any]:
        return {key for held in self._held.values() for h in held for key in h.keys}

    def drop_uncommitted(self, source: str) -> None:
        """``source``'s transaction aborted: forget its changes not committed yet.

        Every change made from its input since its last commit, whether held
        (its changelog entries were in the aborted transaction) or still
        dirty: that input is processed again from the last commit and makes
        them again. The keys are read from the stores again (their committed
        values). A key written from another source after this one keeps its
        later change.
        """
        dropped: Set[Any] = set()
        for pending in self._held.pop(source, ()):
            dropped.update(pending.keys)
        for dirty in self._dirty.values():
            for key, (batch, i) in list(dirty.items()):
                if batch is not None and batch.positions is not None and i >= 0 \
                        and source_of(batch.positions[i])[0] == source:
                    del dirty[key]
                    dropped.add(key)
        if not dropped:
            return
        keep = {key for dirty in self._dirty.values() for key in dirty}
        keep.update(self._held_keys())
        for key in dropped:
            if key not in keep:
                self._values.pop(key, None)
        self._key_pos.clear()
        self._batch = None
        self._batch_dirty = {}
        logger.info("table %r: %d changes of %s dropped (its transaction aborted; "
                    "its input is processed again)", self.name, len(dropped), source)

    def _maybe_shrink_cache(self) -> None:
        limit = self.app.conf.table_cache_max_keys if self.app is not None else None
        if limit and len(self._values) > limit and not any(self._dirty.values()) \
                and not self._held:
            self._values.clear()

    def reset_state(self) -> None:
        """Forget the cached state (the stores keep theirs)."""
        self._values.clear()
        self._key_pos.clear()
        self._batch = None


class Table(Collection):
    """Faust's ``Table``: a partitioned, dict-like, changelogged key/value table."""

    def using_window(self, window: Any, *, key_index: bool = False,
                     **options: Any) -> "WindowWrapper":
        """Wrap the table in ``window`` (a windowed table: ``sabot.tables.windowed``).

        ``options`` are the wrapper's event-time settings: ``grace``,
        ``allowed_lateness``, ``idle_timeout``, ``late_channel``,
        ``on_window_close`` (default: the table's).
        """
        from .windowed import WindowWrapper
        self.window = window
        return WindowWrapper(self, window, key_index=key_index, **options)

    def tumbling(self, size: Any, expires: Any = None, key_index: bool = False,
                 **options: Any) -> "WindowWrapper":
        """Faust's ``table.tumbling(size, expires=)``: windows of ``size`` seconds, back to back."""
        from .window_ranges import TumblingWindow
        return self.using_window(TumblingWindow(size, expires), key_index=key_index, **options)

    def hopping(self, size: Any, step: Any, expires: Any = None, key_index: bool = False,
                **options: Any) -> "WindowWrapper":
        """Faust's ``table.hopping(size, step, expires=)``: ``size`` seconds every ``step``."""
        from .window_ranges import HoppingWindow
        return self.using_window(HoppingWindow(size, step, expires), key_index=key_index,
                                 **options)

    def sliding(self, before: Any, after: Any, expires: Any = None, key_index: bool = False,
                **options: Any) -> "WindowWrapper":
        """Faust's sliding window: ``(t - before, t + after)`` around each event's time ``t``."""
        from .window_ranges import SlidingWindow
        return self.using_window(SlidingWindow(before, after, expires), key_index=key_index,
                                 **options)

    def expire(self, key: Any, partition: int) -> None:
        """Remove ``key`` from ``partition`` outside of any input (a windowed table's expiry).

        The deletion is flushed like any change: to the changelog, then the
        store. Unlike ``del table[key]`` it needs no current event, and no
        key check: the windowed table knows the partition of its windows.
        """
        if key not in self:
            return
        self._values[key] = _ABSENT
        dirty = self._dirty.get(partition)
        if dirty is None:
            dirty = self._dirty[partition] = {}
        dirty[key] = (None, -1)


class GlobalTable(Table):
    """Faust's ``GlobalTable``: every partition on every worker; any key from any input."""

    is_global = True


class ChangeloggedSet(MutableSet[Any]):
    """A ``SetTable`` value: a set whose changes are written to the table."""

    __slots__ = ("table", "key", "data")

    def __init__(self, table: "SetTable", key: Any, data: Set[Any]) -> None:
        self.table = table
        self.key = key
        self.data = data

    def __contains__(self, member: object) -> bool:
        return member in self.data

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return repr(self.data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChangeloggedSet):
            return self.data == other.data
        return self.data == other

    __hash__ = None  # type: ignore[assignment]

    def _changed(self, new: Set[Any]) -> None:
        table = self.table
        table[self.key] = new
        # The table's set: ``new`` unless the write was a replay (then skipped).
        current = table._values.get(self.key)
        self.data = current if isinstance(current, set) else new

    def add(self, member: Any) -> None:
        """Add ``member`` (written to the table)."""
        self._changed(self.data | {member})

    def discard(self, member: Any) -> None:
        """Remove ``member`` if present (written to the table)."""
        if member in self.data:
            self._changed(self.data - {member})

    def update(self, *others: Iterable[Any]) -> None:
        """Add every member of ``others``."""
        self._changed(self.data.union(*others))

    def difference_update(self, *others: Iterable[Any]) -> None:
        """Remove every member of ``others``."""
        self._changed(self.data.difference(*others))

    def intersection_update(self, *others: Iterable[Any]) -> None:
        """Keep only members also in ``others``."""
        self._changed(self.data.intersection(*others))

    def symmetric_difference_update(self, other: Iterable[Any]) -> None:
        """Keep members in exactly one of the two."""
        self._changed(self.data.symmetric_difference(other))

    def clear(self) -> None:
        """Remove every member."""
        self._changed(set())


class SetTable(Table):
    """Faust's ``SetTable``: every value a set (``table[k].add(x)``)."""

    def __init__(self, app: Any, name: str, *, default: Optional[Callable[[], Any]] = set,
                 **kwargs: Any) -> None:
        super().__init__(app, name, default=default, **kwargs)

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        if isinstance(value, ChangeloggedSet):
            return value
        return ChangeloggedSet(self, key, value if isinstance(value, set) else set(value))

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, ChangeloggedSet):
            value = value.data
        if not isinstance(value, (set, frozenset)):
            raise TableValueError(f"table {self.name!r}: a SetTable's value must be a set, "
                                  f"got {type(value).__name__} for key {key!r}")
        super().__setitem__(key, set(value))

    def _to_stored(self, value: Any) -> Any:
        data = value.data if isinstance(value, ChangeloggedSet) else value
        try:
            return sorted(data)
        except TypeError:
            return list(data)

    def _from_stored(self, value: Any) -> Any:
        return set(value)

    def _check_value(self, key: Any, value: Any) -> None:
        for member in value:
            try:
                hash(member)
            except TypeError:
                raise TableValueError(f"table {self.name!r}: member {member!r} of the set for "
                                      f"key {key!r} is unhashable") from None
        super()._check_value(key, value)


class SetGlobalTable(SetTable):
    """Faust's ``SetGlobalTable``: a ``SetTable`` on every worker."""

    is_global = True
