"""``app.tables``: the app's tables, their recovery, flushes and commit barrier.

The manager is what the app and the transports see of tables:

* at start (before any agent runs) it declares the changelogs, registers
  ``flush`` as a commit barrier of every transport (no source position is
  committed before the table changes it depends on are in the changelog
  and the store) and recovers the partitions this worker holds: every
  partition of a GlobalTable; partition 0 on Redis and memory brokers (one
  partition); on Kafka, the partitions the consumer group assigns, recovered
  before they are fetched (``AssignmentListener``);
* every ``broker_commit_interval`` it flushes every table;
* exactly once, it is told the source of every aborted transaction
  (``drop_uncommitted``, registered with the Kafka transport's exactly-once
  side) and every table forgets that source's uncommitted changes; changes
  flushed into a transaction reach the stores when it commits
  (``sabot.tables.table``);
* at stop, after the agents, it flushes once more and closes the stores.
"""
from __future__ import annotations

import asyncio
import logging
import warnings
from typing import (TYPE_CHECKING, Any, Callable, Collection as CollectionT, Dict, Iterator, List,
                    Mapping, Optional)

from ..channels.transport import AssignmentListener
from ..exceptions import ConfigurationError, SabotCompatibilityWarning
from .changelog import ChangelogEntry, changelog_for
from .recovery import open_partition_store, recover_partition
from .standby import Standbys
from .stores import open_store

if TYPE_CHECKING:
    from ..app import App
    from .table import Collection

__all__ = ["TableManager"]

logger = logging.getLogger("sabot.tables")


class TableManager(Mapping[str, "Collection"], AssignmentListener):
    """The tables of one app, by name (Faust's ``app.tables``)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._tables: Dict[str, Collection] = {}
        #: memory:// changelogs: kept here, so a restarted app recovers from them.
        self._memory_logs: Dict[str, Dict[int, List[ChangelogEntry]]] = {}
        self._flusher: Optional["asyncio.Future[None]"] = None
        self._started = False
        # Assignments and revocations, one at a time: a rebalance may revoke
        # partitions whose recovery has not finished yet.
        self._assignment_lock = asyncio.Lock()
        #: Partitions recovered and held (Kafka: assigned), besides global tables'.
        self.partitions: List[int] = []
        #: Warm copies of the partitions other workers hold (``table_standby_replicas``).
        self.standbys: Optional[Standbys] = None
        #: Exactly once: tell a batch delivered before its transaction aborted.
        self._stale_checks: List[Callable[[Any], bool]] = []

    # -- the mapping -----------------------------------------------------------
    def __getitem__(self, name: str) -> Collection:
        return self._tables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    def __repr__(self) -> str:
        return f"<TableManager {sorted(self._tables)}>"

    def add(self, table: Collection) -> Collection:
        """Register ``table`` (``app.Table`` does it)."""
        if table.name in self._tables:
            raise ConfigurationError(f"table {table.name!r} is defined twice")
        if self._started:
            raise ConfigurationError(f"table {table.name!r} defined after the app started")
        table.manager = self
        self._tables[table.name] = table
        return table

    # -- settings ---------------------------------------------------------------
    def store_url(self, table: Collection) -> str:
        """The table's ``store=``, else the ``store`` setting, else by broker."""
        if table.store_url:
            return table.store_url
        conf = self.app.conf
        if conf.store:
            return str(conf.store)
        return "memory://" if not self.app.transport.external else "lmdb://"

    def datadir(self) -> str:
        """Faust's ``datadir`` (``<app id>-data`` unless set)."""
        return str(self.app.conf.datadir or f"{self.app.id}-data")

    def _partition_count(self, table: Collection) -> int:
        if table.partitions is not None:
            return table.partitions
        if self.app.transport.assigns_partitions:
            return int(self.app.conf.topic_partitions)
        return 1

    def reset_state(self, table: Collection) -> None:
        """Delete ``table``'s local stores (Faust's ``reset``); its changelog is kept.

        Only while no worker of the app runs: the stores must be closed.
        """
        from .stores import wipe_store
        url = self.store_url(table)
        for partition in range(self._partition_count(table)):
            wipe_store(url, table=table.name, partition=partition, app=self.app.id,
                       datadir=self.datadir())

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Declare changelogs, register barriers, recover what this worker holds now."""
        if not self._tables:
            return
        self._started = True
        conf = self.app.conf
        transport = self.app.transport
        if conf.table_standby_replicas:
            if transport.assigns_partitions:
                self.standbys = Standbys(self.store_url, self.datadir(),
                                         conf.broker_commit_interval)
            else:
                warnings.warn("table_standby_replicas: a Redis or memory broker has one "
                              "worker per table partition, so there is nothing to keep a "
                              "standby copy of", SabotCompatibilityWarning, stacklevel=2)
        for table in self._tables.values():
            count = self._partition_count(table)
            table.changelog = changelog_for(self.app, transport, table.changelog_topic_name,
                                            count, self._memory_logs)
            if not table.partitions:
                table.partitions = count
            if conf.topic_allow_declare:
                await table.changelog.declare()
        for t in self.app.transports:
            t.add_commit_barrier(self.flush)
            # Exactly once on Kafka: an aborted transaction's table changes are dropped.
            eos = getattr(t, "eos", None)
            listeners = getattr(eos, "abort_listeners", None)
            if eos is not None and listeners is not None:
                listeners.append(self.drop_uncommitted)
                self._stale_checks.append(eos.is_stale)
        if transport.assigns_partitions:
            transport.add_assignment_listener(self)
            await self._recover([t for t in self._tables.values() if t.is_global], None)
        else:
            await self._recover(list(self._tables.values()), [0])
            self.partitions = [0]
        self._flusher = asyncio.ensure_future(self._flush_loop())
        if self.standbys is not None:
            await self._keep_standbys()
            self.standbys.start()

    async def _keep_standbys(self) -> None:
        if self.standbys is not None:
            await self.standbys.keep([t for t in self._tables.values() if not t.is_global],
                                     self.partitions)

    async def stop(self) -> None:
        """Flush what is left and close the stores (after the agents stopped)."""
        if self.standbys is not None:
            await self.standbys.stop()
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        try:
            await self.flush()
        except Exception as exc:
            logger.error("tables: final flush failed (the changes not flushed are "
                         "recomputed from the uncommitted input): %s", exc)
        for table in self._tables.values():
            for partition in table.held_partitions:
                store = table.detach(partition)
                if store is not None:
                    store.close()
        self._started = False

    async def _flush_loop(self) -> None:
        interval = self.app.conf.broker_commit_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # retried at the next interval; commits wait for it
                logger.error("tables: flush failed: %s", exc)

    async def flush(self) -> None:
        """Flush every table: changelog acknowledged, then the store (the commit barrier)."""
        for table in list(self._tables.values()):
            await table.flush()

    def is_stale(self, batch: Any) -> bool:
        """True when ``batch``'s transaction aborted after it was delivered (drop its writes)."""
        return any(check(batch) for check in self._stale_checks)

    def drop_uncommitted(self, source: str) -> None:
        """The transaction of ``source`` aborted: every table forgets its uncommitted changes."""
        for table in self._tables.values():
            table.drop_uncommitted(source)

    # -- partitions ----------------------------------------------------------------
    async def _recover(self, tables: List[Collection], partitions: Optional[List[int]]) -> None:
        url_datadir = self.datadir()
        jobs = []
        for table in tables:
            wanted = partitions if partitions is not None and not table.is_global \
                else list(range(table.partitions or 1))
            for partition in wanted:
                if partition in table.held_partitions:
                    continue
                if table.partitions is not None and partition >= table.partitions:
                    continue
                jobs.append(self._recover_one(table, partition, url_datadir))
        if jobs:
            await asyncio.gather(*jobs)
        for table in tables:
            await table.call_recover_callbacks()

    async def _recover_one(self, table: Collection, partition: int, datadir: str) -> None:
        store, wiped = open_partition_store(table, partition, self.store_url(table), datadir)
        try:
            stats = await recover_partition(table, partition, store, wiped)
        except BaseException:
            store.close()
            raise
        table.recovery_stats[partition] = stats
        table.attach(partition, store)

    async def on_assigned(self, partitions: CollectionT[int]) -> None:
        """Kafka assigned ``partitions``: recover them before they are fetched."""
        async with self._assignment_lock:
            wanted = [p for p in partitions if p not in self.partitions]
            if not wanted:
                return
            logger.info("tables: recovering partitions %s", wanted)
            if self.standbys is not None:
                await self.standbys.release(wanted)  # warm: recovery reads only the tail
            await self._recover([t for t in self._tables.values() if not t.is_global], wanted)
            self.partitions = sorted(set(self.partitions) | set(wanted))
            await self._keep_standbys()

    async def on_revoked(self, partitions: CollectionT[int]) -> None:
        """Kafka revoked ``partitions`` (committed, so flushed): close their stores."""
        async with self._assignment_lock:
            await self.flush()
            for table in self._tables.values():
                if table.is_global:
                    continue
                for partition in partitions:
                    store = table.detach(partition)
                    if store is not None:
                        store.close()
            self.partitions = [p for p in self.partitions if p not in partitions]
            await self._keep_standbys()  # what was held is kept warm from now on

    def partition_needed(self, table: Collection, partition: int) -> None:
        """A write for a partition this worker does not hold: open its store now.

        Happens for input from a channel that is not the broker's (a memory
        channel in a Kafka app); such a partition is recovered from the
        store only (its changelog tail is read at the next start).
        """
        if not self._started:
            # The app is not running here: an agent's test_context(), or an
            # agent in a child process. The table lives in memory, in this
            # process only, with no changelog (nothing durable to share).
            table.attach(partition, open_store("memory://", table=table.name,
                                               partition=partition, app=self.app.id))
            return
        store, _ = open_partition_store(table, partition, self.store_url(table), self.datadir())
        logger.warning("table %r: partition %d was not assigned to this worker; opened its "
                       "store without reading its changelog", table.name, partition)
        table.attach(partition, store)
