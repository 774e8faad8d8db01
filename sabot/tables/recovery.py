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
import json
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Tuple

from ..exceptions import SabotError, StoreUntrusted
from ..types import StorePosition, StoreT
from .changelog import ChangelogEntry, ChangelogGap
from .codec import decode, decode_record
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


def _checked_changes(entries: List[ChangelogEntry]) -> Tuple[
        Dict[bytes, Optional[bytes]], Dict[str, StorePosition]]:
    """The store changes of ``entries`` and the largest source positions they carry.

    Every key and value is checked to decode as a table's key and record:
    all of them in one JSON parse (a per-entry parse would cost more than
    the rest of the recovery); raises on the first that does not.
    """
    keys = [e.key for e in entries]
    values = [e.value for e in entries]
    parsed_keys = json.loads(b"[" + b",".join(keys) + b"]")
    if len(parsed_keys) != len(keys):
        raise ValueError("a key is not one JSON value")
    records = [v for v in values if v is not None]
    parsed = json.loads(b"[" + b",".join(records) + b"]")
    # C-level checks: every record a list of three ([value, source, position]).
    if len(parsed) != len(records) or (parsed and (set(map(type, parsed)) != {list}
                                                   or set(map(len, parsed)) != {3})):
        raise ValueError("a value is not a table record")
    tagged = [h for h in (e.headers for e in entries) if h and "sabot-source" in h]
    sources = {h["sabot-source"] for h in tagged}
    positions: Dict[str, StorePosition] = {}
    for source in sources:
        texts = [h["sabot-position"] for h in tagged if h["sabot-source"] == source] \
            if len(sources) > 1 else [h["sabot-position"] for h in tagged]
        try:
            positions[source.decode()] = max(map(int, texts))  # Kafka offsets
        except ValueError:  # Redis entry ids
            positions[source.decode()] = max((t.decode() for t in texts), key=_entry_order)
    return dict(zip(keys, values)), positions


def _entry_order(entry_id: str) -> Tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _undecodable(table: Collection, partition: int,
                 entries: List[ChangelogEntry]) -> TableRecoveryError:
    """The error naming the first entry of ``entries`` that does not decode."""
    changelog_name = table.changelog.name if table.changelog is not None else "?"
    for entry in entries:
        try:
            decode(entry.key)
            if entry.value is not None:
                decode_record(entry.value)
            headers = entry.headers
            if headers and "sabot-source" in headers:
                headers["sabot-source"].decode()
                _position(headers["sabot-position"])
        except Exception as exc:
            return TableRecoveryError(
                f"table {table.name!r} partition {partition}: changelog {changelog_name!r} "
                f"entry at {entry.offset!r} cannot be decoded ({type(exc).__name__}: {exc}); "
                f"the table is not recovered", table=table.name, partition=partition)
    return TableRecoveryError(
        f"table {table.name!r} partition {partition}: changelog {changelog_name!r} entries "
        f"from {entries[0].offset!r} cannot be decoded; the table is not recovered",
        table=table.name, partition=partition)


async def recover_partition(table: Collection, partition: int, store: StoreT,
                            wiped: bool = False, *, quiet: bool = False) -> RecoveryStats:
    """Apply ``table``'s changelog after ``store``'s offset to its end.

    When entries the store has not applied were trimmed from the changelog
    (a Redis changelog after a snapshot), the store is wiped and rebuilt
    from the start of the changelog.
    """
    changelog = table.changelog
    started = time.monotonic()
    if changelog is None:
        return RecoveryStats(0, 0, 0.0, wiped)
    try:
        count, fetches = await _replay(table, partition, store, store.changelog_offset(),
                                       started, quiet)
    except ChangelogGap as exc:
        logger.error("table %r partition %d: %s; wiping the store and restoring it from the "
                     "changelog", table.name, partition, exc)
        store.reset()
        wiped = True
        count, fetches = await _replay(table, partition, store, None, started, quiet)
    elapsed = time.monotonic() - started
    if count and not quiet:
        logger.info("table %r partition %d: recovered %d changes from %r in %.2fs", table.name,
                    partition, count, changelog.name, elapsed)
    return RecoveryStats(count, fetches, elapsed, wiped)


async def _replay(table: Collection, partition: int, store: StoreT,
                  start: Optional[StorePosition], started: float,
                  quiet: bool = False) -> Tuple[int, int]:
    """Apply the changelog after ``start``; ``(changes, reads)``."""
    changelog = table.changelog
    assert changelog is not None
    fetches = count = 0
    last_log = started
    tty = sys.stderr.isatty() and not quiet
    name = table.name
    async for entries in changelog.read(partition, start, table.recovery_buffer_size):
        fetches += 1
        if not entries:
            continue
        try:
            changes, positions = _checked_changes(entries)
        except Exception:
            raise _undecodable(table, partition, entries) from None
        store.apply(changes, changelog_offset=entries[-1].offset, source_positions=positions)
        count += len(entries)
        now = time.monotonic()
        if tty:
            rate = count / max(now - started, 1e-9)
            sys.stderr.write(f"\rrecovering table {name} partition {partition}: "
                             f"{count:,} changes ({rate:,.0f}/s)")
            sys.stderr.flush()
        if now - last_log >= PROGRESS_INTERVAL and not quiet:
            last_log = now
            logger.info("table %r partition %d: %d changes recovered so far", name,
                        partition, count)
    if tty and count:
        sys.stderr.write("\n")
    return count, fetches
