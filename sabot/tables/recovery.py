"""Recovering one table partition: open its store, replay the changelog's tail.

The store records the changelog position it has applied; recovery reads the
changelog after it, to its end, and applies every change in batches (each
batch with its last position and the source positions its entries carry, in
one transaction), so an interrupted recovery resumes where it stopped.

A store that cannot be trusted (corrupt, written by another format version)
is wiped and rebuilt from the whole changelog, with an error in the log
naming the table and partition. A changelog entry that cannot be decoded
stops the recovery with ``TableRecoveryError`` naming the table, the
partition and the entry's position: a table is never silently wrong.

Progress: a log line every few seconds, and a bar on a terminal.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional, Tuple

from ..exceptions import SabotError, StoreUntrusted
from ..types import StorePosition, StoreT
from .codec import decode, decode_record
from .context import position_le
from .stores import open_store, wipe_store

if TYPE_CHECKING:
    from .table import Collection

__all__ = ["TableRecoveryError", "RecoveryStats", "recover_partition", "open_partition_store"]

logger = logging.getLogger("sabot.tables.recovery")

#: Seconds between progress lines in the log.
PROGRESS_INTERVAL = 5.0


class RecoveryStats(NamedTuple):
    """How one partition was recovered (``table.recovery_stats[partition]``)."""

    changes: int
    fetches: int
    seconds: float
    wiped: bool


class TableRecoveryError(SabotError, RuntimeError):
    """A table partition cannot be recovered (an undecodable changelog entry, ...)."""

    def __init__(self, message: str, *, table: str = "", partition: int = -1) -> None:
        super().__init__(message)
        self.table = table
        self.partition = partition


def _position(text: bytes) -> StorePosition:
    value = text.decode()
    return int(value) if value.isdigit() else value


def open_partition_store(table: Collection, partition: int, url: str,
                         datadir: Any) -> Tuple[StoreT, bool]:
    """The store of ``table``'s ``partition``, and whether it had to be wiped first.

    A store that cannot be trusted (corrupt, another format version) is
    wiped and then restored from the whole changelog.
    """
    options: Dict[str, Any] = dict(table=table.name, partition=partition, app=table.app.id,
                                   datadir=datadir)
    try:
        return open_store(url, **options), False
    except StoreUntrusted as exc:
        logger.error("table %r partition %d: %s; wiping it and restoring it from the "
                     "changelog %r", table.name, partition, exc, table.changelog_topic_name)
        wipe_store(url, **options)
        return open_store(url, **options), True


async def recover_partition(table: Collection, partition: int, store: StoreT,
                            wiped: bool = False) -> RecoveryStats:
    """Apply ``table``'s changelog after ``store``'s offset to its end."""
    changelog = table.changelog
    started = time.monotonic()
    if changelog is None:
        return RecoveryStats(0, 0, 0.0, wiped)
    start = store.changelog_offset()
    fetches = 0
    last_log = started
    tty = sys.stderr.isatty()
    count = 0
    name = table.name
    async for entries in changelog.read(partition, start, table.recovery_buffer_size):
        fetches += 1
        changes: Dict[bytes, Optional[bytes]] = {}
        positions: Dict[str, StorePosition] = {}
        for entry in entries:
            try:
                decode(entry.key)
                if entry.value is not None:
                    decode_record(entry.value)
                headers = entry.headers
                if headers and "sabot-source" in headers:
                    source = headers["sabot-source"].decode()
                    position = _position(headers["sabot-position"])
                    known = positions.get(source)
                    if known is None or position_le(known, position):
                        positions[source] = position
            except Exception as exc:
                raise TableRecoveryError(
                    f"table {name!r} partition {partition}: changelog "
                    f"{changelog.name!r} entry at {entry.offset!r} cannot be decoded "
                    f"({type(exc).__name__}: {exc}); the table is not recovered",
                    table=name, partition=partition) from None
            changes[entry.key] = entry.value
        if not entries:
            continue
        store.apply(changes, changelog_offset=entries[-1].offset, source_positions=positions)
        count += len(entries)
        now = time.monotonic()
        if tty:
            rate = count / max(now - started, 1e-9)
            sys.stderr.write(f"\rrecovering table {name} partition {partition}: "
                             f"{count:,} changes ({rate:,.0f}/s)")
            sys.stderr.flush()
        if now - last_log >= PROGRESS_INTERVAL:
            last_log = now
            logger.info("table %r partition %d: %d changes recovered so far", name,
                        partition, count)
    if tty and count:
        sys.stderr.write("\n")
    elapsed = time.monotonic() - started
    if count:
        logger.info("table %r partition %d: recovered %d changes from %r in %.2fs", name,
                    partition, count, changelog.name, elapsed)
    return RecoveryStats(count, fetches, elapsed, wiped)
