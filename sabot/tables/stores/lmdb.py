"""``lmdb://``: a table partition's durable store, one LMDB environment each.

Layout: the directory ``<path>`` holds LMDB's ``data.mdb`` and ``lock.mdb``
with two named databases: ``sabot.data`` (the table's keys and values) and
``sabot.meta`` (``format``: the ``StoreMetadata`` record; ``changelog_offset``
and ``source:<name>``: JSON positions). ``apply`` writes the data and the
positions in one LMDB write transaction: after any crash the data is exactly
what the recorded positions say.

Durability (``sync`` and ``metasync``, URL options, both off by default):

- default (``sync=false``): a committed ``apply`` survives ``kill -9`` of the
  process, at any moment: its pages are in the OS page cache, and LMDB's
  copy-on-write tree only switches to a new root by writing the meta page
  last, so a process killed mid-commit leaves the previous commit intact. A
  power loss or kernel crash may lose the last applies (the changelog
  restores them from the recorded offset); ``close()`` and ``flush()`` fsync.
- ``sync=true, metasync=false``: every commit fsyncs the data; a power loss
  may undo the last commit only (consistent, not durable).
- ``sync=true, metasync=true``: every commit is durable against power loss
  (two fsyncs per ``apply``; slow on most disks).

``writemap`` (off by default): LMDB writes into a shared mapping of its file
instead of with ``pwrite``. Into a sparse file, a page the disk has no room
for would kill the process with SIGBUS; so with ``writemap`` the store
allocates the map's disk space up front (``posix_fallocate``), starting at 16
MiB and doubling with the map: disk used is up to twice the data, and a full
disk fails the growth with ``StoreFull``, like a failed commit without it.
Off by default because the gain measured in ``benchmarks/_state_stores.py``
is within the noise of a busy machine, and the file takes up to twice the
space; a file system without ``posix_fallocate`` refuses ``writemap``.
Without ``writemap`` a full disk fails the commit: ``StoreFull`` naming the
table and partition, the last commit intact.

Size: the map (address space, not disk: the file grows with the data) starts
at ``map_size`` (default 1 GiB, or the file's size when larger) and doubles,
in the process, whenever a commit does not fit (``MapFullError``: the commit is
retried after growing) up to ``max_map_size`` (default: no limit but the
disk); past it, ``StoreFull``. Opening reads only LMDB's meta page and
Sabot's small metadata record: no scan, whatever the store's size.

Errors: files LMDB finds damaged or not LMDB's, a truncated data file, or a
metadata record that does not check out, raise ``StoreCorrupt`` (on open,
and on a read that meets a damaged page); another format version
``StoreVersionMismatch``; both are ``StoreUntrusted``: wipe and restore from
the changelog. A key longer than ``max_key_size`` (511 bytes) or empty
refuses the whole ``apply`` (``StoreKeyRejected``).

Verification: LMDB trusts its pages (no checksums), and walking a damaged
page may abort the process rather than raise. A file marker
(``sabot-open``, holding the machine's boot id) is written on open and removed
on close; if it is found on open from another boot, the machine went down
with the store open (the one case where LMDB without ``sync`` may be damaged)
and the file is first walked by py-lmdb's offline verifier (pure Python,
O(size): about 10 s for 1M keys on a busy 2-core machine; ``verify=auto``, the
default, does this only for stores without ``sync``). ``verify=true`` always
verifies, ``verify=false`` never. A process killed with the store open
leaves the marker with this boot's id: no verification, LMDB survives
process crashes.

Other options: ``readahead`` (default true, LMDB's default; false helps
random reads of a store larger than RAM). The same environment cannot be
opened twice in one process (``StoreError``; LMDB's locks would not see each
other).

Threads: use a store from one thread at a time. In particular, do not
``apply`` in an executor thread while another thread reads: growing the map
moves it under a concurrent reader.
"""
from __future__ import annotations

import errno
import itertools
import os
import shutil
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple,
                    Union)

import lmdb

from ...exceptions import (StoreCorrupt, StoreError, StoreFull, StoreKeyRejected,
                           StoreVersionMismatch)
from ...types import StoreChanges, StorePosition
from .base import (DirectoryStore, StoreMetadata, check_positions, decode_position, encode_position,
                   parse_bool, parse_size, split_changes)

__all__ = ["LMDBStore", "DEFAULT_MAP_SIZE", "OPTIONS"]

#: The initial map: address space only, the file grows with the data.
DEFAULT_MAP_SIZE = 1 << 30
#: The initial map with ``writemap``, whose disk space is allocated up front.
DEFAULT_WRITEMAP_SIZE = 16 << 20
#: Keys and values read per read transaction when iterating (no transaction
#: stays open while the caller holds the iterator, so the map can still grow).
ITER_CHUNK = 4096

def parse_verify(text: Any) -> Union[bool, str]:
    """``verify``: ``auto`` (the default), or a boolean."""
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    return parse_bool(text)


#: The options of ``lmdb://`` URLs (query string or keywords to ``open_store``).
OPTIONS: Dict[str, Callable[[Any], Any]] = {
    "map_size": parse_size,
    "max_map_size": parse_size,
    "sync": parse_bool,
    "metasync": parse_bool,
    "writemap": parse_bool,
    "verify": parse_verify,
    "readahead": parse_bool,
}

_DATA_DB = b"sabot.data"
_META_DB = b"sabot.meta"
_FORMAT_KEY = b"format"
_OFFSET_KEY = b"changelog_offset"
_SOURCE_PREFIX = b"source:"
#: Present while a process has the store open; holds the machine's boot id.
OPEN_MARKER = "sabot-open"
_BOOT_ID = "/proc/sys/kernel/random/boot_id"

# Paths of the stores open in this process: LMDB must not open one
# environment twice in a process (its locks would not see each other).
_open_paths: Set[str] = set()

# LMDB found the files damaged, or not LMDB's.
_CORRUPT = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError,
            lmdb.IncompatibleError, lmdb.BadDbiError)
# Messages of errno values that mean: no room to write.
_NO_ROOM = ("No space left", "File too large", "Disk quota exceeded")


class LMDBStore(DirectoryStore):
    """One table partition in one LMDB environment; see the module docstring."""

    scheme = "lmdb"
    options = OPTIONS

    def __init__(self, *, url: str, table: str, partition: int, path: str,
                 map_size: Optional[int] = None, max_map_size: Optional[int] = None,
                 sync: bool = False, metasync: bool = False, writemap: bool = False,
                 verify: Union[bool, str] = "auto", readahead: bool = True) -> None:
        super().__init__(url=url, table=table, partition=partition, path=path)
        self._max_map_size = max_map_size
        self._writemap = writemap
        self._closed = True  # until opened
        self._opening = True
        self._key = os.path.realpath(path)
        if self._key in _open_paths:
            raise self.error(StoreError, "it is already open in this process (close it first)")
        try:
            os.makedirs(path, exist_ok=True)
            file_size = _file_size(os.path.join(path, "data.mdb"))
            left_open_by = self._read_marker()
        except OSError as exc:
            raise self._os_error(exc, "cannot create or read its directory") from exc
        boot = _boot_id()
        crashed_machine = left_open_by is not None and (boot is None or left_open_by != boot)
        # With sync, LMDB's own guarantee holds through a power loss: no walk.
        if file_size and (verify is True or (verify == "auto" and crashed_machine and not sync)):
            self._verify()
        if map_size is None:
            map_size = DEFAULT_WRITEMAP_SIZE if writemap else DEFAULT_MAP_SIZE
        if max_map_size is not None:
            map_size = min(map_size, max_map_size)
        map_size = max(map_size, file_size)
        try:
            self._env = lmdb.open(path, map_size=map_size, subdir=True,
                                  max_dbs=2, sync=sync, metasync=metasync,
                                  writemap=writemap, readahead=readahead, meminit=False)
        except lmdb.Error as exc:
            raise self._lmdb_error(exc, "cannot open") from exc
        try:
            self._check_file_size(file_size)
            if writemap:
                self._allocate(map_size)
            self._env.reader_check()  # slots of readers killed with the process
            self._open_databases()
            self._reader = self._env.begin(db=self._data)
            self._write_marker()
        except BaseException:
            self._env.close()
            raise
        self._closed = self._opening = False
        _open_paths.add(self._key)

    # -- opening ----------------------------------------------------------------
    # The marker says whether the store was closed cleanly. A process killed
    # with the store open leaves it behind, harmlessly: LMDB survives a process
    # crash. A marker from another boot means the machine went down with the
    # store open; without sync a power loss can damage LMDB's pages, and LMDB
    # trusts its pages (a damaged one may abort the process), so the file is
    # walked by py-lmdb's verifier first (``verify=auto``).
    def _read_marker(self) -> Optional[str]:
        assert self.path is not None
        try:
            with open(os.path.join(self.path, OPEN_MARKER)) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    def _write_marker(self) -> None:
        assert self.path is not None
        try:
            with open(os.path.join(self.path, OPEN_MARKER), "w") as f:
                f.write(_boot_id() or "unknown")
                f.flush()
                os.fsync(f.fileno())  # it must outlive the power loss it is there to tell
            directory = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            raise self._os_error(exc, "cannot write its open marker") from exc

    def _remove_marker(self) -> None:
        assert self.path is not None
        try:
            os.unlink(os.path.join(self.path, OPEN_MARKER))
        except FileNotFoundError:
            pass

    def _verify(self) -> None:
        assert self.path is not None
        try:
            from lmdb import verify as verifier  # py-lmdb 3.0 and later
        except ImportError:
            # Without the verifier the file cannot be walked safely: do not trust it.
            raise self.error(StoreCorrupt, "it must be verified (verify=true, or open when "
                                           "the machine went down) and cannot be: py-lmdb "
                                           "older than 3.0 has no lmdb.verify") from None
        try:
            problems = verifier.verify(self.path, subdir=True)
        except Exception as exc:  # the verifier could not even start: not LMDB's file
            raise self.error(StoreCorrupt, f"verifying its file failed: {exc}") from None
        if problems:
            shown = "; ".join(problems[:3])
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise self.error(StoreCorrupt, f"verifying its file found {len(problems)} "
                                           f"problems: {shown}{more}")

    def _check_file_size(self, file_size: int) -> None:
        # A truncated data file would be mapped past its end: reading there is
        # SIGBUS, not an error, so refuse it before anything reads a page.
        info = self._env.info()
        page_size = self._env.stat()["psize"]
        needed = (info["last_pgno"] + 1) * page_size
        if file_size and file_size < needed:
            raise self.error(StoreCorrupt, f"data.mdb is truncated ({file_size} bytes, "
                                           f"its pages need {needed})")

    def _open_databases(self) -> None:
        env = self._env
        try:
            with env.begin(write=True) as txn:
                self._meta = env.open_db(_META_DB, txn=txn)
                self._data = env.open_db(_DATA_DB, txn=txn)
                raw = txn.get(_FORMAT_KEY, db=self._meta)
                if raw is None:
                    self._initialize(txn)
                else:
                    StoreMetadata.check(raw, table=self.table, partition=self.partition,
                                        path=self.path)
                    self._read_positions(txn)
        except lmdb.Error as exc:
            raise self._lmdb_error(exc, "cannot read its metadata") from exc

    def _initialize(self, txn: lmdb.Transaction) -> None:
        # A new store, or one whose metadata record is gone: only an empty
        # environment with nothing but our two databases is taken as new.
        others = [key for key in txn.cursor().iternext(values=False)
                  if key not in (_DATA_DB, _META_DB)]
        if others or txn.stat(self._data)["entries"] or txn.stat(self._meta)["entries"]:
            raise self.error(StoreCorrupt, "it holds data but no metadata record "
                                           "(not a Sabot table store, or damaged)")
        metadata = StoreMetadata(self.table, self.partition)
        txn.put(_FORMAT_KEY, metadata.encode(), db=self._meta)

    def _read_positions(self, txn: lmdb.Transaction) -> None:
        try:
            raw = txn.get(_OFFSET_KEY, db=self._meta)
            self._changelog_offset = None if raw is None else decode_position(bytes(raw))
            cursor = txn.cursor(db=self._meta)
            if cursor.set_range(_SOURCE_PREFIX):
                for key, value in cursor.iternext():
                    key = bytes(key)
                    if not key.startswith(_SOURCE_PREFIX):
                        break
                    name = key[len(_SOURCE_PREFIX):].decode()
                    self._sources[name] = decode_position(bytes(value))
        except (ValueError, UnicodeDecodeError) as exc:
            raise self.error(StoreCorrupt, f"a recorded position is not readable ({exc})"
                             ) from None

    # -- identity -----------------------------------------------------------------
    @property
    def max_key_size(self) -> Optional[int]:
        """LMDB's longest key (511 bytes as built); keys may not be empty either."""
        return int(self._env.max_key_size())

    @property
    def map_size(self) -> int:
        """The current size of the map, in bytes (grows on demand)."""
        return int(self._env.info()["map_size"])

    # -- reads --------------------------------------------------------------------
    # One read transaction serves every get; it is renewed after each write, so
    # gets see every committed apply and cost one B-tree lookup each.
    def get(self, key: bytes) -> Optional[bytes]:
        """The value stored for ``key``, ``None`` when there is none."""
        try:
            value: Optional[bytes] = self._reader.get(key)
            return value
        except lmdb.BadValsizeError:
            return None  # a key LMDB cannot hold is not in it
        except lmdb.Error as exc:
            raise self._lmdb_error(exc, "cannot read") from exc

    def get_many(self, keys: Iterable[bytes]) -> List[Optional[bytes]]:
        """The values of ``keys`` in their order, in one read transaction."""
        if not isinstance(keys, (list, tuple)):
            keys = list(keys)  # read twice if a key is one LMDB cannot hold
        get = self._reader.get
        try:
            return [get(key) for key in keys]
        except lmdb.BadValsizeError:
            return [self.get(key) for key in keys]
        except lmdb.Error as exc:
            raise self._lmdb_error(exc, "cannot read") from exc

    def items(self) -> Iterator[Tuple[bytes, bytes]]:
        """Every ``(key, value)`` in key order.

        Read in chunks of ``ITER_CHUNK``, each in its own read transaction:
        applies made while iterating may or may not be seen by the keys not
        yet reached (each key is seen at most once, in order).
        """
        self._check_open()
        return self._scan(values=True)

    def keys(self) -> Iterator[bytes]:
        """Every key, in key order (chunked as ``items``)."""
        self._check_open()
        return self._scan(values=False)

    def _scan(self, *, values: bool) -> Iterator[Any]:
        last: Optional[bytes] = None
        while True:
            try:
                with self._env.begin(db=self._data) as txn:
                    cursor = txn.cursor()
                    if last is None:
                        found = cursor.first()
                    else:
                        found = cursor.set_range(last)
                        if found and cursor.key() == last:
                            found = cursor.next()
                    if not found:
                        return
                    if values:
                        chunk: List[Any] = list(itertools.islice(cursor.iternext(), ITER_CHUNK))
                        last = chunk[-1][0]
                    else:
                        chunk = list(itertools.islice(cursor.iternext(values=False),
                                                      ITER_CHUNK))
                        last = chunk[-1]
            except lmdb.Error as exc:
                raise self._lmdb_error(exc, "cannot read") from exc
            yield from chunk
            if len(chunk) < ITER_CHUNK:
                return

    def __len__(self) -> int:
        try:
            return int(self._reader.stat(self._data)["entries"])
        except lmdb.Error as exc:
            raise self._lmdb_error(exc, "cannot read") from exc

    # -- writes and positions ---------------------------------------------------------
    def apply(self, changes: StoreChanges, *,
              changelog_offset: Optional[StorePosition] = None,
              source_positions: Optional[Mapping[str, Optional[StorePosition]]] = None,
              ) -> None:
        """Write ``changes`` and the positions in one LMDB transaction."""
        self._check_open()
        check_positions(changelog_offset, source_positions)
        puts, deletes = split_changes(changes)
        meta_puts: List[Tuple[bytes, bytes]] = []
        meta_deletes: List[bytes] = []
        if changelog_offset is not None:
            meta_puts.append((_OFFSET_KEY, encode_position(changelog_offset)))
        if source_positions:
            for name, position in source_positions.items():
                key = _SOURCE_PREFIX + name.encode()
                if position is None:
                    meta_deletes.append(key)
                else:
                    meta_puts.append((key, encode_position(position)))
        if not (puts or deletes or meta_puts or meta_deletes):
            return
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    if puts:
                        txn.cursor(db=self._data).putmulti(puts)
                    delete = txn.delete
                    for key in deletes:
                        delete(key, db=self._data)
                    for key, value in meta_puts:
                        txn.put(key, value, db=self._meta)
                    for key in meta_deletes:
                        txn.delete(key, db=self._meta)
                break
            except lmdb.MapFullError:
                self._grow()
            except lmdb.BadValsizeError:
                raise self._rejected_key(puts, deletes) from None
            except lmdb.Error as exc:
                raise self._lmdb_error(exc, "cannot write") from exc
        self._renew_reader()
        self._positions_applied(changelog_offset, source_positions)

    def _rejected_key(self, puts: List[Tuple[bytes, bytes]], deletes: List[bytes]
                      ) -> StoreKeyRejected:
        limit = self.max_key_size or 0
        for key in itertools.chain((k for k, _ in puts), deletes):
            if not key or len(key) > limit:
                return self.error(StoreKeyRejected,
                                  f"a key of {len(key)} bytes ({key[:40]!r}...): LMDB keys "
                                  f"must be 1 to {limit} bytes; nothing of this apply was "
                                  "written")
        return self.error(StoreKeyRejected, "LMDB refused a key or value size; nothing of "
                                            "this apply was written")

    def _grow(self) -> None:
        current = self.map_size
        limit = self._max_map_size
        if limit is not None and current >= limit:
            raise self.error(StoreFull, f"the store reached its max_map_size of {limit} "
                                        "bytes; nothing of this apply was written")
        new_size = current * 2 if limit is None else min(current * 2, limit)
        if self._writemap:
            self._allocate(new_size, "; nothing of this apply was written")
        # No transaction of this process may be open while the map moves.
        self._reader.abort()
        try:
            self._env.set_mapsize(new_size)
        except lmdb.Error as exc:
            raise self._lmdb_error(exc, f"cannot grow its map to {new_size} bytes") from exc
        finally:
            self._reader = self._env.begin(db=self._data)

    def _allocate(self, size: int, after: str = "") -> None:
        """Give data.mdb real blocks up to ``size`` before LMDB writes into its map.

        With ``writemap`` LMDB writes into a shared mapping of the file; a page
        of a sparse file that the disk has no room for kills the process with
        SIGBUS when written. Allocated blocks cannot run out: a full disk fails
        here, cleanly, before the map grows.
        """
        assert self.path is not None
        data = os.path.join(self.path, "data.mdb")
        try:
            fd = os.open(data, os.O_RDWR)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise self.error(StoreFull, f"cannot allocate {size} bytes for its map "
                                            f"(writemap): {exc};{self._free_space()}{after}"
                                 ) from None
            raise self.error(StoreError, f"cannot allocate {size} bytes for its map "
                                         f"(writemap needs posix_fallocate): {exc}") from None

    def _renew_reader(self) -> None:
        self._reader.abort()
        self._reader = self._env.begin(db=self._data)

    def flush(self) -> None:
        """fsync the data and meta pages: what was applied survives a power loss."""
        self._check_open()
        try:
            self._env.sync(True)
        except lmdb.Error as exc:
            raise self._lmdb_error(exc, "cannot flush") from exc

    def reset(self) -> None:
        """Wipe data and positions in one transaction (the metadata record stays)."""
        self._check_open()
        try:
            with self._env.begin(write=True) as txn:
                txn.drop(self._data, delete=False)
                txn.delete(_OFFSET_KEY, db=self._meta)
                for name in self._sources:
                    txn.delete(_SOURCE_PREFIX + name.encode(), db=self._meta)
        except lmdb.Error as exc:
            raise self._lmdb_error(exc, "cannot reset") from exc
        self._renew_reader()
        self._changelog_offset = None
        self._sources.clear()

    def close(self, *, flush: bool = True) -> None:
        """fsync (unless ``flush=False``) and close the environment; twice is harmless."""
        if self._closed:
            return
        self._closed = True
        _open_paths.discard(self._key)
        try:
            self._reader.abort()
            if flush:
                self._env.sync(True)
        except lmdb.Error as exc:
            raise self._lmdb_error(exc, "cannot flush on close") from exc
        finally:
            self._env.close()
        self._remove_marker()

    # -- errors -------------------------------------------------------------------
    def _lmdb_error(self, exc: lmdb.Error, doing: str) -> StoreError:
        """The Sabot error for an LMDB error, naming the table and partition."""
        if self._closed and not self._opening:
            return self.error(StoreError, "the store is closed")
        text = f"{doing}: {type(exc).__name__}: {exc}"
        if isinstance(exc, lmdb.VersionMismatchError):
            error: StoreError = self.error(StoreVersionMismatch,
                                           f"{text} (written by another LMDB format)")
            return error
        if isinstance(exc, _CORRUPT):
            return self.error(StoreCorrupt, text)
        if isinstance(exc, (lmdb.DiskError, lmdb.MapFullError)) or any(
                marker in str(exc) for marker in _NO_ROOM) or self._disk_nearly_full():
            return self.error(StoreFull, f"{text} (disk full?{self._free_space()}); "
                                         "the last commit is intact, reopen once there is room")
        if "Input/output error" in str(exc):
            text += (" (LMDB reports a short write as an I/O error: a full disk, a file size "
                     f"limit or a failing device;{self._free_space()})")
        return self.error(StoreError, text)

    def _os_error(self, exc: OSError, doing: str) -> StoreError:
        text = f"{doing}: {exc}"
        if any(marker in str(exc) for marker in _NO_ROOM):
            return self.error(StoreFull, text)
        return self.error(StoreError, text)

    def _disk_nearly_full(self) -> bool:
        assert self.path is not None
        try:
            return shutil.disk_usage(self.path).free < (1 << 20)
        except OSError:
            return False

    def _free_space(self) -> str:
        assert self.path is not None
        try:
            return f" {shutil.disk_usage(self.path).free} bytes free at {self.path}"
        except OSError:
            return ""


def _boot_id() -> Optional[str]:
    """This boot of the machine (Linux); elsewhere (``None``) any reopen after a crash verifies."""
    try:
        with open(_BOOT_ID) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
