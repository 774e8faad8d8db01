"""Standby copies of table partitions this worker does not hold (``table_standby_replicas``).

With ``table_standby_replicas >= 1`` on Kafka, every worker keeps a warm copy
of the partitions the consumer group gave to *other* workers: it keeps their
stores open here and, every ``broker_commit_interval``, applies their
changelogs from each store's offset to the end (the same replay as recovery,
``sabot.tables.recovery``). When the group then assigns one of them to this
worker (its owner died, or a rebalance moved it), recovery only reads the
few changes since the last refresh instead of the whole changelog.

What this gives is at least the number of copies asked for, not exactly it:
each worker keeps a copy of every partition it does not own, so with W
workers each partition has W - 1 standbys (Kafka's group tells a worker only
its own assignment, so Sabot cannot split standbys among workers the way
Faust's assignor does). A standby is never read by agents: the stores are
handed to the table only when the partition is assigned.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Tuple

from ..types import StoreT
from .recovery import open_partition_store, recover_partition

if TYPE_CHECKING:
    from .table import Collection

__all__ = ["Standbys"]

logger = logging.getLogger("sabot.tables")


class Standbys:
    """The standby stores of one worker, refreshed in the background."""

    def __init__(self, store_url: Callable[["Collection"], str], datadir: str,
                 interval: float) -> None:
        self._store_url = store_url
        self._datadir = datadir
        self._interval = interval
        self._stores: Dict[Tuple[str, int], StoreT] = {}
        self._wanted: Dict[Tuple[str, int], "Collection"] = {}
        self._task: Optional["asyncio.Task[None]"] = None
        self._lock = asyncio.Lock()
        #: Changes applied to standby stores so far (for tests and the status page).
        self.applied = 0

    def partitions(self) -> List[Tuple[str, int]]:
        """``(table, partition)`` kept warm now."""
        return sorted(self._wanted)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        async with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
            self._wanted.clear()

    async def keep(self, tables: Iterable["Collection"], held: Iterable[int]) -> None:
        """Keep warm every partition of ``tables`` that is not in ``held``."""
        held = set(held)
        async with self._lock:
            wanted = {(t.name, p): t for t in tables
                      for p in range(t.partitions or 1) if p not in held}
            for key in [k for k in self._stores if k not in wanted]:
                self._stores.pop(key).close()
            self._wanted = wanted

    async def release(self, partitions: Iterable[int]) -> None:
        """Close the standby stores of ``partitions`` (about to be recovered and held)."""
        gone = set(partitions)
        async with self._lock:
            for key in [k for k in self._wanted if k[1] in gone]:
                del self._wanted[key]
                store = self._stores.pop(key, None)
                if store is not None:
                    store.close()

    async def refresh(self) -> None:
        """Apply what each standby's changelog gained since its last refresh."""
        async with self._lock:
            for key, table in list(self._wanted.items()):
                store = self._stores.get(key)
                if store is None:
                    store, _ = open_partition_store(table, key[1], self._store_url(table),
                                                    self._datadir)
                    self._stores[key] = store
                stats = await recover_partition(table, key[1], store, quiet=True)
                self.applied += stats.changes

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next refresh tries again; recovery stays exact
                logger.warning("tables: refreshing standby copies failed: %s", exc)
            await asyncio.sleep(self._interval)
