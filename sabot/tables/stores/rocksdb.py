"""``rocksdb://``: a table partition's store in RocksDB, through ``rocksdict``.

For state larger than memory (``pip install sabot[rocksdb]``); LMDB is the
default and faster on reads. One RocksDB database per partition, in raw mode
(keys and values are bytes, nothing pickled): the table's keys and values in
the default column family, Sabot's metadata (``format``,
``changelog_offset``, ``source:<name>``, as in ``sabot.tables.stores.lmdb``)
in the ``sabot.meta`` column family. ``apply`` writes data and positions in
one ``WriteBatch``, which RocksDB applies atomically (one WAL record).

Durability: the write-ahead log is on. By default (``sync=false``) a
committed ``apply`` survives ``kill -9`` of the process (the WAL record is in
the OS page cache) but not a power loss; ``sync=true`` fsyncs the WAL on every
apply. ``flush()`` and ``close()`` flush the memtables and fsync the WAL.

``len()`` counts by iterating the keys (RocksDB keeps only an estimate), as
Faust's RocksDB store does: O(n). RocksDB checksums its blocks, so damage is
found on open or on the read that meets it (``StoreCorrupt``); its lock file
refuses a second opener (``StoreError``); a full disk fails the write
(``StoreFull``, nothing of the apply written).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import rocksdict

from ...exceptions import StoreCorrupt, StoreError, StoreFull, StoreVersionMismatch
from ...types import StoreChanges, StorePosition
from .base import (DirectoryStore, StoreMetadata, check_positions, decode_position, encode_position,
                   parse_bool, split_changes)

__all__ = ["RocksDBStore", "OPTIONS"]

#: The options of ``rocksdb://`` URLs (query string or keywords to ``open_store``).
OPTIONS: Dict[str, Callable[[Any], Any]] = {
    "sync": parse_bool,
}

_META_CF = "sabot.meta"
_FORMAT_KEY = b"format"
_OFFSET_KEY = b"changelog_offset"
_SOURCE_PREFIX = b"source:"
_NO_ROOM = ("No space left", "File too large", "Disk quota exceeded")


def _options() -> rocksdict.Options:
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    return options


class RocksDBStore(DirectoryStore):
    """One table partition in one RocksDB database; see the module docstring."""

    scheme = "rocksdb"
    options = OPTIONS

    def __init__(self, *, url: str, table: str, partition: int, path: str,
                 sync: bool = False) -> None:
        super().__init__(url=url, table=table, partition=partition, path=path)
        self._closed = True
        self._opening = True
        self._meta_cf: Any = None  # the handle a WriteBatch names the column family by
        self._meta: Any = None  # the column family as an Rdict
        try:
            existing = rocksdict.Rdict.list_cf(path, rocksdict.Options(raw_mode=True))
        except Exception:  # no database there yet (or not one: opening will say)
            existing = []
        column_families = {_META_CF: rocksdict.Options(raw_mode=True)} \
            if _META_CF in existing else None
        try:
            self._db = rocksdict.Rdict(path, _options(), column_families=column_families)
        except Exception as exc:
            raise self._rocks_error(exc, "cannot open") from None
        try:
            write_options = rocksdict.WriteOptions()
            write_options.sync = sync
            self._db.set_write_options(write_options)
            self._check_metadata(existing)
        except BaseException:
            self._release()
            raise
        self._closed = self._opening = False

    def _check_metadata(self, existing: List[str]) -> None:
        try:
            if _META_CF not in existing:
                if self._has_data(existing):
                    raise self.error(StoreCorrupt, "it holds data but no metadata record "
                                                   "(not a Sabot table store, or damaged)")
                self._db.create_column_family(_META_CF, rocksdict.Options(raw_mode=True))
            self._meta_cf = self._db.get_column_family_handle(_META_CF)
            self._meta = self._db.get_column_family(_META_CF)
            raw = self._meta.get(_FORMAT_KEY)
            if raw is None:
                if self._has_data(existing):
                    raise self.error(StoreCorrupt, "it holds data but no metadata record")
                self._meta.put(_FORMAT_KEY, StoreMetadata(self.table, self.partition).encode())
                return
            StoreMetadata.check(raw, table=self.table, partition=self.partition, path=self.path)
            raw = self._meta.get(_OFFSET_KEY)
            self._changelog_offset = None if raw is None else decode_position(raw)
            for key, value in self._meta.items(from_key=_SOURCE_PREFIX):
                key = bytes(key)
                if not key.startswith(_SOURCE_PREFIX):
                    break
                self._sources[key[len(_SOURCE_PREFIX):].decode()] = decode_position(bytes(value))
        except (ValueError, UnicodeDecodeError) as exc:
            raise self.error(StoreCorrupt, f"a recorded position is not readable ({exc})"
                             ) from None
        except StoreError:
            raise
        except Exception as exc:
            raise self._rocks_error(exc, "cannot read its metadata") from None

    def _has_data(self, existing: List[str]) -> bool:
        if any(name not in ("default", _META_CF) for name in existing):
            return True
        return next(iter(self._db.keys()), None) is not None

    # -- identity ------------------------------------------------------------------
    # -- reads ----------------------------------------------------------------------
    def get(self, key: bytes) -> Optional[bytes]:
        """The value stored for ``key``, ``None`` when there is none."""
        try:
            value: Optional[bytes] = self._db.get(key)
            return value
        except Exception as exc:
            raise self._rocks_error(exc, "cannot read") from None

    def get_many(self, keys: Iterable[bytes]) -> List[Optional[bytes]]:
        """The values of ``keys`` in their order (one multi-get)."""
        self._check_open()
        wanted: Any = keys if isinstance(keys, list) else list(keys)
        try:
            values: Any = self._db[wanted]
            return list(values)
        except Exception as exc:
            raise self._rocks_error(exc, "cannot read") from None

    def items(self) -> Iterator[Tuple[bytes, bytes]]:
        """Every ``(key, value)`` in key order (a RocksDB iterator: its own snapshot)."""
        self._check_open()
        return self._guarded(self._db.items())

    def keys(self) -> Iterator[bytes]:
        """Every key, in key order."""
        self._check_open()
        return self._guarded(self._db.keys())

    def values(self) -> Iterator[bytes]:
        """Every value, in key order."""
        self._check_open()
        return self._guarded(self._db.values())

    def _guarded(self, iterator: Iterable[Any]) -> Iterator[Any]:
        try:
            yield from iterator
        except Exception as exc:
            raise self._rocks_error(exc, "cannot read") from None

    def __len__(self) -> int:
        """How many keys: a scan of the keys (RocksDB only estimates its size)."""
        self._check_open()
        return sum(1 for _ in self.keys())

    # -- writes and positions ---------------------------------------------------------
    def apply(self, changes: StoreChanges, *,
              changelog_offset: Optional[StorePosition] = None,
              source_positions: Optional[Mapping[str, Optional[StorePosition]]] = None,
              ) -> None:
        """Write ``changes`` and the positions in one ``WriteBatch``."""
        self._check_open()
        check_positions(changelog_offset, source_positions)
        puts, deletes = split_changes(changes)
        batch = rocksdict.WriteBatch(raw_mode=True)
        try:
            put = batch.put
            for key, value in puts:
                put(key, value)
            delete = batch.delete
            for key in deletes:
                delete(key)
        except (KeyError, ValueError) as exc:  # rocksdict's words for "not bytes" (raw mode)
            raise TypeError(f"{self.describe()}: keys and values must be bytes ({exc})"
                            ) from None
        if changelog_offset is not None:
            batch.put(_OFFSET_KEY, encode_position(changelog_offset), self._meta_cf)
        if source_positions:
            for name, position in source_positions.items():
                key = _SOURCE_PREFIX + name.encode()
                if position is None:
                    batch.delete(key, self._meta_cf)
                else:
                    batch.put(key, encode_position(position), self._meta_cf)
        try:
            self._db.write(batch)
        except Exception as exc:
            raise self._rocks_error(exc, "cannot write") from None
        self._positions_applied(changelog_offset, source_positions)

    def flush(self) -> None:
        """Flush the memtables and fsync the write-ahead log."""
        self._check_open()
        try:
            self._db.flush(True)
            self._db.flush_wal(True)
        except Exception as exc:
            raise self._rocks_error(exc, "cannot flush") from None

    def reset(self) -> None:
        """Wipe data and positions in one ``WriteBatch`` (a range delete)."""
        self._check_open()
        batch = rocksdict.WriteBatch(raw_mode=True)
        first = next(iter(self._db.keys()), None)
        if first is not None:
            last: Any = next(iter(self._db.keys(backwards=True)))
            batch.delete_range(first, last + b"\0")
        batch.delete(_OFFSET_KEY, self._meta_cf)
        for name in self._sources:
            batch.delete(_SOURCE_PREFIX + name.encode(), self._meta_cf)
        try:
            self._db.write(batch)
        except Exception as exc:
            raise self._rocks_error(exc, "cannot reset") from None
        self._changelog_offset = None
        self._sources.clear()

    def close(self, *, flush: bool = True) -> None:
        """Flush (unless ``flush=False``) and close the database; twice is harmless."""
        if self._closed:
            return
        self._closed = True
        try:
            if flush:
                self._db.flush(True)
                self._db.flush_wal(True)
        except Exception as exc:
            raise self._rocks_error(exc, "cannot flush on close") from None
        finally:
            self._release()

    def _release(self) -> None:
        # Every handle on a column family keeps the database (and its lock) alive.
        self._meta_cf = None
        self._meta = None
        self._db.close()

    # -- errors -----------------------------------------------------------------------
    def _rocks_error(self, exc: BaseException, doing: str) -> StoreError:
        """The Sabot error for a RocksDB error (rocksdict raises plain exceptions)."""
        if self._closed and not self._opening:
            return self.error(StoreError, "the store is closed")
        if isinstance(exc, rocksdict.DbClosedError):
            return self.error(StoreError, "the store is closed")
        text = f"{doing}: {exc}"
        message = str(exc)
        if "Corruption" in message:
            return self.error(StoreCorrupt, text)
        if "does not match" in message and "version" in message.lower():
            return self.error(StoreVersionMismatch, text)
        if any(marker in message for marker in _NO_ROOM):
            return self.error(StoreFull, f"{text}; the last write is intact, reopen once "
                                         "there is room")
        return self.error(StoreError, text)
