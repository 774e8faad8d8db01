"""A table's changelog on the app's broker: written at each flush, read to recover.

* Kafka: the topic ``<app>-<table>-changelog`` (compacted), with as many
  partitions as the source; an entry's partition is its table partition, its
  key the encoded key, its value the encoded record or a tombstone (``None``).
* Redis: a stream of the same name; one partition (Redis sources have one).
  A deletion is an entry with an empty value and the ``sabot-tombstone``
  header.
* memory: lists kept by the app's ``TableManager`` (they live as long as
  the app object: a restarted app recovers from them).

Every entry carries the source position of the input behind it in its
headers (``sabot-source``, ``sabot-position``), and the value record holds
it too, so a store rebuilt from the changelog alone knows what input it has
applied.

``write`` returns once the broker acknowledged every entry, with the
position of the last one; ``read`` yields lists of entries after a position
until the end. The broker I/O is the transports' (``KafkaTransport.
read_partition``, ``RedisTransport.read_stream``): nothing here speaks a
wire protocol.

Exactly once (``processing_guarantee="exactly_once"``), entries made from
input of a source the transport commits in transactions go into that
source's transaction instead (``write_held``, when ``mode(source)`` says
``HOLD``): on Kafka the open transaction of the input partition
(``sabot.channels.kafka_eos``), on Redis the atomic script that also writes
the outputs and acknowledges the input (``sabot.channels.redis_eos``). They
count only once it commits: ``write_held`` returns a :class:`Held` the
transport marks committed, and the table applies those changes to its store
then (``sabot.tables.table``). An aborted transaction's changes are dropped
by the table (see ``Collection.drop_uncommitted``).
"""
from __future__ import annotations

import abc
import asyncio
from typing import (TYPE_CHECKING, Any, AsyncIterator, Callable, Dict, Iterable, List,
                    NamedTuple, Optional, Sequence, Tuple)

from ..exceptions import SabotError
from ..types import Headers, StorePosition
from .codec import decode_record

if TYPE_CHECKING:
    from ..types import AppT

__all__ = ["ChangelogEntry", "Changelog", "MemoryChangelog", "KafkaChangelog",
           "RedisChangelog", "ChangelogGap", "CHANGELOGS", "changelog_for", "TOMBSTONE_HEADER",
           "Entry", "Held", "HOLD", "PLAIN", "WAIT"]

#: A Redis changelog entry with this header deletes its key.
TOMBSTONE_HEADER = "sabot-tombstone"

#: What a flush writes: ``(key, value or None, headers)``.
Entry = Tuple[bytes, Optional[bytes], Headers]


#: ``Changelog.mode(source)``: the entries of ``source`` go into its transaction ...
HOLD = "hold"
#: ... are written at once (no transaction: at least once, deduplicated by position) ...
PLAIN = "plain"
#: ... or stay unflushed for now (another task is committing that transaction).
WAIT = "wait"


class Held:
    """Changelog entries written inside a transaction that has not committed yet.

    The transport calls ``committed(position)`` once the transaction
    committed (``position``: of the last entry, if not known at write time);
    every callback given to ``when_committed`` runs then with the position. An
    aborted transaction is never marked: the transport tells the tables
    which source aborted instead (they drop its changes).
    """

    __slots__ = ("source", "position", "_callbacks")

    def __init__(self, source: str, position: Optional[StorePosition] = None) -> None:
        self.source = source
        self.position = position
        self._callbacks: List[Callable[[Optional[StorePosition]], None]] = []

    def when_committed(self, callback: Callable[[Optional[StorePosition]], None]) -> None:
        self._callbacks.append(callback)

    def committed(self, position: Optional[StorePosition] = None) -> None:
        if position is not None:
            self.position = position
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self.position)


class ChangelogEntry(NamedTuple):
    """One change read back: its position, key, value (``None``: deleted), headers."""

    offset: StorePosition
    key: bytes
    value: Optional[bytes]
    headers: Optional[Headers]


class Changelog(abc.ABC):
    """The changelog of one table (``sabot.types.ChangelogT``)."""

    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.partitions = partitions

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} partitions={self.partitions}>"

    async def declare(self) -> None:
        """Create the topic or stream if missing."""

    @property
    def transactional(self) -> bool:
        """True when some sources' entries may go into transactions (``mode``)."""
        return False

    def mode(self, source: str) -> str:
        """``HOLD``, ``PLAIN`` or ``WAIT`` for entries made from input of ``source``."""
        return PLAIN

    async def write_held(self, partition: int, entries: Sequence[Entry], source: str) -> Held:
        """Write ``entries`` (all from ``source``) into ``source``'s open transaction."""
        raise NotImplementedError(f"{type(self).__name__} writes no transactions")

    @abc.abstractmethod
    async def write(self, partition: int, entries: Sequence[Entry]) -> Optional[StorePosition]:
        """Write ``entries`` to ``partition``; return the last one's position once acknowledged."""

    @abc.abstractmethod
    def read(self, partition: int, after: Optional[StorePosition], count: int = 10_000
             ) -> AsyncIterator[List[ChangelogEntry]]:
        """Entries of ``partition`` after ``after`` (all if ``None``), in order, to the end.

        In lists of at most ``count`` entries. Raises ``ChangelogGap`` when
        entries after ``after`` were trimmed away (read from the start then).
        """

    def needs_snapshot(self, partition: int, live_keys: int) -> bool:
        """True when ``partition`` should be rewritten as a snapshot (``snapshot``).

        Kafka compacts its topic itself; a Redis stream is never compacted,
        so its changelog is snapshotted once it holds many more entries
        than keys.
        """
        return False

    async def snapshot(self, partition: int, items: Iterable[Tuple[bytes, bytes]]
                       ) -> Optional[StorePosition]:
        """Write every ``(key, record)`` of ``partition`` again, drop what came before.

        Returns the position of the last entry written.
        """
        raise NotImplementedError(f"{type(self).__name__} takes no snapshots")


class MemoryChangelog(Changelog):
    """A changelog in memory (``memory://`` apps): a list per partition."""

    def __init__(self, name: str, partitions: int,
                 logs: Optional[Dict[int, List[ChangelogEntry]]] = None) -> None:
        super().__init__(name, partitions)
        self.logs: Dict[int, List[ChangelogEntry]] = logs if logs is not None else {}

    async def write(self, partition: int, entries: Sequence[Entry]) -> Optional[StorePosition]:
        log = self.logs.setdefault(partition, [])
        for key, value, headers in entries:
            log.append(ChangelogEntry(len(log), key, value, headers))
        return len(log) - 1 if log else None

    async def read(self, partition: int, after: Optional[StorePosition], count: int = 10_000
                   ) -> AsyncIterator[List[ChangelogEntry]]:
        log = self.logs.get(partition, [])
        start = 0 if after is None else int(after) + 1
        for i in range(start, len(log), count):
            yield log[i:i + count]
            await asyncio.sleep(0)


class KafkaChangelog(Changelog):
    """A compacted Kafka topic, co-partitioned with the source."""

    def __init__(self, app: AppT, transport: Any, name: str, partitions: int) -> None:
        super().__init__(name, partitions)
        self.transport = transport
        self.topic = transport.topic(name, partitions=partitions, value_serializer="raw")

    async def declare(self) -> None:
        await self.transport.declare_topic(self.name, self.partitions,
                                           config={"cleanup.policy": "compact"})

    @property
    def transactional(self) -> bool:
        return getattr(self.transport, "eos", None) is not None

    def mode(self, source: str) -> str:
        eos = getattr(self.transport, "eos", None)
        return PLAIN if eos is None else eos.changelog_mode(source)

    async def write_held(self, partition: int, entries: Sequence[Entry], source: str) -> Held:
        # The transport's exactly-once side picks the producer of the input
        # partition ``source`` names; ``write`` sends through it.
        held = Held(source)
        await self.transport.eos.write_held(held, lambda: self.write(partition, entries))
        return held

    async def write(self, partition: int, entries: Sequence[Entry]) -> Optional[StorePosition]:
        produce = self.topic.produce
        futures = [await produce(key, value, headers, partition=partition)
                   for key, value, headers in entries]
        if not futures:
            return None
        results = await asyncio.gather(*futures)
        return max(r.offset for r in results)

    async def read(self, partition: int, after: Optional[StorePosition], count: int = 10_000
                   ) -> AsyncIterator[List[ChangelogEntry]]:
        start = 0 if after is None else int(after) + 1
        async for records in self.transport.read_partition(self.name, partition, start,
                                                           max_records=count):
            yield [ChangelogEntry(r.offset, r.key, r.value,
                                  dict(r.headers) if r.headers else None) for r in records]


class ChangelogGap(SabotError, LookupError):
    """Entries the reader has not applied were trimmed from the changelog.

    The store is then restored from the start of the changelog (a snapshot).
    """


class RedisChangelog(Changelog):
    """A Redis stream: one partition, deletions as tombstone entries.

    A stream is never compacted by Redis: once it holds more than
    ``snapshot_factor`` times as many entries as the table has keys (and at
    least ``snapshot_min``), the table writes every live key again (a
    snapshot) and the entries before the snapshot are trimmed (``XTRIM
    MINID``). A store whose position is older than the first entry kept
    may not have applied all of the trimmed entries: at recovery it is
    rebuilt from the snapshot on.
    """

    #: Entries written since the last snapshot before a new one is taken ...
    snapshot_min = 100_000
    #: ... and at least this many times the live keys.
    snapshot_factor = 4

    def __init__(self, app: AppT, transport: Any, name: str) -> None:
        super().__init__(name, 1)
        self.transport = transport
        self.channel = transport.topic(name, value_serializer="raw")
        #: Entries written (or found at recovery) since the last snapshot.
        self.written = 0

    @property
    def transactional(self) -> bool:
        return bool(getattr(self.transport, "exactly_once", False))

    def mode(self, source: str) -> str:
        from ..channels import redis_eos
        return HOLD if redis_eos.outbox_of(self.transport, source) is not None else PLAIN

    async def write_held(self, partition: int, entries: Sequence[Entry], source: str) -> Held:
        # Staged in the outbox of the input stream ``source``: XADDed by the
        # script that also writes its outputs and acknowledges its entries.
        from ..channels import redis_eos
        held = Held(source)
        await redis_eos.write_held(self.transport, held, lambda: self._write_ids(entries))
        return held

    async def _write_ids(self, entries: Sequence[Entry]) -> List[str]:
        # XADD every entry (pipelined by the producer); their ids once stored.
        produce = self.channel.produce
        futures = []
        for key, value, headers in entries:
            if value is None:
                headers = dict(headers, **{TOMBSTONE_HEADER: b"1"})
                value = b""
            futures.append(await produce(key, value, headers))
        ids = await asyncio.gather(*futures) if futures else []
        self.written += len(ids)
        return [str(i) for i in ids]

    async def write(self, partition: int, entries: Sequence[Entry]) -> Optional[StorePosition]:
        ids = await self._write_ids(entries)
        return ids[-1] if ids else None

    def needs_snapshot(self, partition: int, live_keys: int) -> bool:
        return self.written >= max(self.snapshot_min, self.snapshot_factor * live_keys)

    async def snapshot(self, partition: int, items: Iterable[Tuple[bytes, bytes]]
                       ) -> Optional[StorePosition]:
        first: Optional[str] = None
        last: Optional[str] = None
        chunk: List[Entry] = []
        for key, record in items:
            _, source, position = decode_record(record)
            headers: Dict[str, bytes] = {}
            if source is not None and position is not None:
                headers = {"sabot-source": source.encode(),
                           "sabot-position": str(position).encode()}
            chunk.append((key, record, headers))
            if len(chunk) >= 10_000:
                ids = await self._write_ids(chunk)
                first, last, chunk = first or ids[0], ids[-1], []
        if chunk:
            ids = await self._write_ids(chunk)
            first, last = first or ids[0], ids[-1]
        if first is not None:
            # Everything before the snapshot's first entry is in the snapshot
            # (or was deleted since): drop it.
            await self.transport.trim_stream(self.name, first)
        self.written = 0
        return last

    async def read(self, partition: int, after: Optional[StorePosition], count: int = 10_000
                   ) -> AsyncIterator[List[ChangelogEntry]]:
        if after is not None:
            info = await self.transport.stream_info(self.name)
            first = info.get("recorded-first-entry-id")
            removed = int(info.get("entries-added") or 0) > int(info.get("length") or 0)
            if removed and isinstance(first, str) and first != "0-0" \
                    and _entry_order(str(after)) < _entry_order(first):
                # Entries before the first one kept were trimmed (a snapshot):
                # the store may not have applied them all.
                raise ChangelogGap(
                    f"changelog {self.name!r}: entries before {first} were trimmed after a "
                    f"snapshot, and the store has applied only up to {after}")
        async for entries in self.transport.read_stream(
                self.name, None if after is None else str(after), count):
            out = []
            for entry_id, value, key, headers in entries:
                if headers and TOMBSTONE_HEADER in headers:
                    value = None
                out.append(ChangelogEntry(entry_id, key, value, headers))
            self.written += len(out)
            yield out


def _entry_order(entry_id: str) -> Tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


#: The changelog of each transport's scheme (as ``sabot.channels.TRANSPORTS``);
#: a transport not listed keeps its tables' changelogs in memory.
CHANGELOGS: Dict[str, Callable[[AppT, Any, str, int], Changelog]] = {
    "kafka": KafkaChangelog,
    "redis": lambda app, transport, name, partitions: RedisChangelog(app, transport, name),
    "rediss": lambda app, transport, name, partitions: RedisChangelog(app, transport, name),
}


def changelog_for(app: AppT, transport: Any, name: str, partitions: int,
                  memory_logs: Dict[str, Dict[int, List[ChangelogEntry]]]) -> Changelog:
    """The changelog called ``name`` on ``transport`` (the app's broker)."""
    make = CHANGELOGS.get(transport.scheme)
    if make is None:
        return MemoryChangelog(name, partitions, memory_logs.setdefault(name, {}))
    return make(app, transport, name, partitions)
