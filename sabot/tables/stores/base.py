"""What every table store shares: the metadata record, changes, options, errors.

A store keeps, besides the data, a small metadata record: the format name
and version of Sabot's stores and the table and partition it belongs to
(``StoreMetadata``), written once when the store is created and checked on
every open. A store written by another format version raises
``StoreVersionMismatch``; a record that does not parse, or that names
another table or partition, raises ``StoreCorrupt``. Both are
``StoreUntrusted``: the table wipes the store and restores it from its
changelog.

Positions (the applied changelog offset, the source positions) are kept as
JSON, so an ``int`` (a Kafka offset) comes back an ``int`` and a ``str`` (a
Redis entry id) a ``str``.

``Store`` is the base class of the concrete stores: it holds the table,
partition and URL, builds errors that name them, and derives ``__iter__``,
``__contains__``, ``keys`` and ``values`` from the store's own ``items`` and
``get``, so that each store writes only what differs.
"""
from __future__ import annotations

import abc
import json
import shutil
from typing import (Any, Callable, ClassVar, Dict, Iterable, Iterator, List, Mapping, NamedTuple,
                    Optional, Tuple, Type, TypeVar)

from ...exceptions import (ConfigurationError, StoreCorrupt, StoreError, StoreVersionMismatch)
from ...types import StoreChanges, StorePosition

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "StoreMetadata", "Store", "split_changes",
    "encode_position", "decode_position", "check_positions", "parse_options",
    "parse_bool", "parse_size",
]

#: Names the files as Sabot's: a store holding another record is not ours.
FORMAT_NAME = "sabot.tables.store"
#: Bumped whenever the layout of keys, values or metadata changes; a store
#: written with another version is not read (``StoreVersionMismatch``).
FORMAT_VERSION = 1

_E = TypeVar("_E", bound=StoreError)


class StoreMetadata(NamedTuple):
    """The record a store keeps about itself."""

    table: str
    partition: int
    version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        """The record as stored (JSON)."""
        return json.dumps({"format": FORMAT_NAME, "version": self.version,
                           "table": self.table, "partition": self.partition},
                          sort_keys=True).encode()

    @classmethod
    def check(cls, raw: bytes, *, table: str, partition: int,
              path: Optional[str]) -> "StoreMetadata":
        """Parse a stored record and check it is this table's and this version's.

        Raises ``StoreCorrupt`` (unreadable, another format, another table or
        partition) or ``StoreVersionMismatch``.
        """
        where = _where(table, partition, path)
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreCorrupt(f"{where}: its metadata record is not readable ({exc})",
                               table=table, partition=partition, path=path) from None
        if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
            raise StoreCorrupt(f"{where}: its metadata record is not a Sabot table store's "
                               f"({raw[:80]!r})", table=table, partition=partition, path=path)
        version = record.get("version")
        if version != FORMAT_VERSION:
            raise StoreVersionMismatch(
                f"{where}: written by store format version {version!r}, this Sabot reads "
                f"version {FORMAT_VERSION}", table=table, partition=partition, path=path,
                found=version, expected=FORMAT_VERSION)
        if record.get("table") != table or record.get("partition") != partition:
            raise StoreCorrupt(
                f"{where}: the store belongs to table {record.get('table')!r} partition "
                f"{record.get('partition')!r}", table=table, partition=partition, path=path)
        return cls(table, partition, version)


def _where(table: str, partition: int, path: Optional[str]) -> str:
    where = f"store of table {table!r} partition {partition}"
    return f"{where} at {path}" if path else where


def split_changes(changes: StoreChanges) -> Tuple[List[Tuple[bytes, bytes]], List[bytes]]:
    """``changes`` as the values to put and the keys to delete.

    For pairs, the last pair of a key wins (as in a dict), so that a key put
    then deleted in one batch ends up deleted whatever order the store
    writes puts and deletes in.
    """
    items = changes if isinstance(changes, Mapping) else dict(changes)
    puts = [(k, v) for k, v in items.items() if v is not None]
    if len(puts) == len(items):
        return puts, []
    return puts, [k for k, v in items.items() if v is None]


def encode_position(position: StorePosition) -> bytes:
    """A position as stored (JSON keeps ``int`` and ``str`` apart)."""
    return json.dumps(position).encode()


def decode_position(raw: bytes) -> StorePosition:
    """A stored position; ``ValueError`` when it is not an int or a str."""
    value = json.loads(raw)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"not a position: {raw[:80]!r}")
    return value


def check_positions(changelog_offset: Optional[StorePosition],
                    source_positions: Optional[Mapping[str, Optional[StorePosition]]],
                    ) -> None:
    """Refuse positions that are not an int or a str (before anything is written)."""
    if changelog_offset is not None and (
            isinstance(changelog_offset, bool)
            or not isinstance(changelog_offset, (int, str))):
        raise TypeError(f"changelog_offset must be an int or a str, "
                        f"not {type(changelog_offset).__name__}")
    if source_positions:
        for name, position in source_positions.items():
            if not isinstance(name, str):
                raise TypeError(f"a source position's name must be a str, not {name!r}")
            if position is not None and (isinstance(position, bool)
                                         or not isinstance(position, (int, str))):
                raise TypeError(f"source position {name!r} must be an int, a str or None, "
                                f"not {type(position).__name__}")


def parse_bool(text: Any) -> bool:
    """A boolean option from a URL query (``true``/``false``, ``1``/``0``, ``yes``/``no``)."""
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
          "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def parse_size(text: Any) -> int:
    """A size in bytes from a URL query: ``1048576``, ``64MiB``, ``1g`` (powers of 2)."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        lowered = str(text).strip().lower()
        number = lowered.rstrip("abcdefghijklmnopqrstuvwxyz").strip()
        unit = lowered[len(number):].strip() if number else lowered
        if not number or unit not in _UNITS:
            raise ValueError(f"not a size: {text!r}")
        size = int(float(number) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"not a positive size: {text!r}")
    return size


def parse_options(scheme: str, given: Mapping[str, Any],
                  spec: Mapping[str, Callable[[Any], Any]]) -> Dict[str, Any]:
    """Check and convert a store's options (from the URL query or keywords).

    An unknown name, or a value its converter refuses, is a
    ``ConfigurationError`` naming it and the options the store knows.
    """
    options: Dict[str, Any] = {}
    for name, value in given.items():
        convert = spec.get(name)
        if convert is None:
            known = ", ".join(sorted(spec)) or "none"
            raise ConfigurationError(f"{scheme}:// stores have no option {name!r} "
                                     f"(options: {known})")
        try:
            options[name] = convert(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{scheme}:// store option {name}={value!r}: {exc}") from None
    return options


class Store(abc.ABC):
    """Base of the table stores; see ``sabot.tables.stores`` for the contract."""

    #: The URL scheme the store is registered under.
    scheme: ClassVar[str] = ""
    #: Its options (URL query or keywords): name -> converter of the text.
    options: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}

    def __init__(self, *, url: str, table: str, partition: int,
                 path: Optional[str] = None) -> None:
        self._url = url
        self._table = table
        self._partition = partition
        self._path = path
        #: The positions recorded with the data (kept in step by ``apply``).
        self._changelog_offset: Optional[StorePosition] = None
        self._sources: Dict[str, StorePosition] = {}
        self._closed = False

    # -- identity -------------------------------------------------------------
    @property
    def url(self) -> str:
        """The store URL it was opened with."""
        return self._url

    @property
    def table(self) -> str:
        """The table's name."""
        return self._table

    @property
    def partition(self) -> int:
        """The partition this store holds."""
        return self._partition

    @property
    def path(self) -> Optional[str]:
        """The store's directory (``None`` in memory)."""
        return self._path

    @property
    def persistent(self) -> bool:
        """Whether the data outlives the process."""
        return self._path is not None

    @property
    def max_key_size(self) -> Optional[int]:
        """The longest key accepted, in bytes (``None``: no limit)."""
        return None

    @property
    def closed(self) -> bool:
        """Whether the store was closed (or dropped)."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise self.error(StoreError, "the store is closed")

    def describe(self) -> str:
        """``store of table 't' partition 3 at /path``: what every error starts with."""
        return _where(self._table, self._partition, self._path)

    def error(self, cls: Type[_E], message: str) -> _E:
        """An error of class ``cls`` whose message names the table and partition."""
        return cls(f"{self.describe()}: {message}", table=self._table,
                   partition=self._partition, path=self._path)

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<{type(self).__name__} {self.describe()}{state}>"

    # -- reads ----------------------------------------------------------------
    @abc.abstractmethod
    def get(self, key: bytes) -> Optional[bytes]:
        """The value stored for ``key``, ``None`` when there is none."""

    @abc.abstractmethod
    def get_many(self, keys: Iterable[bytes]) -> List[Optional[bytes]]:
        """The values of ``keys`` in their order (``None`` for each missing one)."""

    @abc.abstractmethod
    def items(self) -> Iterator[Tuple[bytes, bytes]]:
        """Every ``(key, value)`` in key order (memory: insertion order)."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """How many keys the store holds."""

    def keys(self) -> Iterator[bytes]:
        """Every key (the order of ``items``)."""
        for key, _ in self.items():
            yield key

    def values(self) -> Iterator[bytes]:
        """Every value (the order of ``items``)."""
        for _, value in self.items():
            yield value

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.get(key) is not None

    # -- writes and positions ---------------------------------------------------
    @abc.abstractmethod
    def apply(self, changes: StoreChanges, *,
              changelog_offset: Optional[StorePosition] = None,
              source_positions: Optional[Mapping[str, Optional[StorePosition]]] = None,
              ) -> None:
        """Write ``changes`` and the positions in one transaction (all or nothing)."""

    def changelog_offset(self) -> Optional[StorePosition]:
        """The changelog position of the last change applied (``None``: none yet)."""
        self._check_open()
        return self._changelog_offset

    def source_positions(self) -> Dict[str, StorePosition]:
        """The recorded source positions, by source name."""
        self._check_open()
        return dict(self._sources)

    def _positions_applied(self, changelog_offset: Optional[StorePosition],
                           source_positions: Optional[Mapping[str, Optional[StorePosition]]]
                           ) -> None:
        """Keep the in-memory positions in step once ``apply`` committed them."""
        if changelog_offset is not None:
            self._changelog_offset = changelog_offset
        if source_positions:
            for name, position in source_positions.items():
                if position is None:
                    self._sources.pop(name, None)
                else:
                    self._sources[name] = position

    @abc.abstractmethod
    def flush(self) -> None:
        """Make what was applied durable against power loss (fsync)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Wipe data and positions (keeping the store open), in one transaction."""

    @abc.abstractmethod
    def drop(self) -> None:
        """Close the store and delete it (its files) altogether."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store; closing twice is harmless."""


class DirectoryStore(Store):
    """A store kept in a directory of its own (LMDB, RocksDB)."""

    def drop(self) -> None:
        """Close the store and delete its directory."""
        self.close(flush=False)
        assert self.path is not None
        shutil.rmtree(self.path, ignore_errors=True)

    @abc.abstractmethod
    def close(self, *, flush: bool = True) -> None:
        """Flush (unless ``flush=False``) and release the store; closing twice is harmless."""
