"""The local stores of tables: one store per (table, partition), chosen by URL.

``open_store(url, table=, partition=, app=, datadir=)`` opens (creating it if
needed) the store of one partition of one table, a ``sabot.types.StoreT``:

===============  ==========================================================
``memory://``    a dict (``MemoryStore``); nothing outlives the process
``lmdb://``      LMDB, one environment per partition (``LMDBStore``): the
                 default for Kafka and Redis apps
``rocksdb://``   RocksDB through ``rocksdict`` (``RocksDBStore``), for state
                 larger than memory: ``pip install sabot[rocksdb]``
===============  ==========================================================

Where a durable store lives: ``lmdb://`` and ``rocksdb://`` without a path
put it in ``<datadir>/<app>/<table>-<partition>/`` (``datadir`` defaults to
``./<app>-data``, as Faust's ``datadir``); a URL with a path puts it in
``<path>/<table>-<partition>/`` (``lmdb:///var/lib/sabot`` absolute,
``lmdb://state/tables`` relative). Options go in the query string or as
keywords (keywords win): ``lmdb://?sync=true&max_map_size=8GiB``. An unknown
scheme or option is a ``ConfigurationError`` naming it.

The contract every store keeps (the table relies on it):

- Keys and values are ``bytes`` (the table encodes them). ``get(key)`` gives
  the value or ``None``; ``get_many(keys)`` a list in the keys' order;
  ``items()``/``keys()``/``values()``/iteration and ``len()``. A store sees
  only what was applied: reads of changes not yet applied (a batch the
  table holds until its commit) are the table's to answer.
- ``apply(changes, changelog_offset=, source_positions=)`` writes the data
  (``key -> value``, ``None`` deleting the key; a mapping, or pairs where a
  key's last pair wins), the changelog position it reflects and the source
  positions, in ONE transaction: after a crash at any moment (``kill -9``),
  the store holds either everything of an apply or nothing of it, so its data
  is exactly what its recorded positions say. Positions are ``int`` (Kafka
  offsets) or ``str`` (Redis entry ids) and come back as given.
  ``changelog_offset=None`` leaves the recorded offset as it is;
  ``source_positions`` updates the named sources only (a source given
  ``None`` is removed). A key or value of the wrong type (``TypeError``), a
  key the store cannot hold (``StoreKeyRejected``) or a full disk
  (``StoreFull``) refuse the whole apply: nothing of it is written.
- ``changelog_offset()`` and ``source_positions()`` give what the last apply
  recorded (read from memory: the store reads them once, on open).
- ``reset()`` wipes data and positions, keeping the store open (recovery
  from scratch); ``drop()`` closes it and deletes its files; ``flush()``
  makes what was applied durable against power loss; ``close()``.
- Each store records its format version and its table and partition. Opening
  a store written by another format version raises ``StoreVersionMismatch``;
  one found damaged, or holding another table's state, ``StoreCorrupt``; both
  are ``StoreUntrusted`` and name the table and partition: wipe it
  (``wipe_store``) and restore it from the changelog. Every other failure is
  a ``StoreError`` that names them too.
- Opening reads metadata only: no scan, whatever the size.
- A store is used from one thread at a time (the table's): not one thread
  applying while another reads (LMDB's map may move when it grows).

Crash guarantees per store: ``sabot.tables.stores.lmdb`` and ``.rocksdb``.
"""
from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union
from urllib.parse import parse_qsl, urlsplit

from ...exceptions import ConfigurationError
from ...types import StoreT
from .base import FORMAT_VERSION, Store, StoreMetadata, parse_options
from .memory import MemoryStore

__all__ = ["open_store", "store_path", "wipe_store", "register_store", "schemes",
           "FORMAT_VERSION", "Store", "StoreMetadata", "MemoryStore"]

# scheme -> "module:Class", imported when first opened (rocksdict is an extra).
_REGISTRY: Dict[str, str] = {
    "memory": "sabot.tables.stores.memory:MemoryStore",
    "lmdb": "sabot.tables.stores.lmdb:LMDBStore",
    "rocksdb": "sabot.tables.stores.rocksdb:RocksDBStore",
}
# Schemes whose stores have no files.
_IN_MEMORY = {"memory"}
# Aliases Faust users write.
_ALIASES = {"rocksdict": "rocksdb"}


def register_store(scheme: str, target: str, *, on_disk: bool = True) -> None:
    """Register a store class (``"package.module:Class"``) for a URL scheme.

    The class (a ``sabot.types.StoreT``) is built as ``Class(url=, table=,
    partition=, path=, **options)``, without ``path`` when ``on_disk`` is
    false; its ``options`` class attribute maps each option name to the
    function that converts its text (see ``Store.options``).
    """
    if ":" not in target:
        raise ConfigurationError(f"store target {target!r} must be 'module:Class'")
    _REGISTRY[scheme.lower()] = target
    if on_disk:
        _IN_MEMORY.discard(scheme.lower())
    else:
        _IN_MEMORY.add(scheme.lower())


def schemes() -> Tuple[str, ...]:
    """The URL schemes ``open_store`` knows."""
    return tuple(sorted(_REGISTRY))


def _scheme(url: str) -> str:
    if "://" not in url:
        raise ConfigurationError(f"store URL {url!r} has no scheme (known: "
                                 f"{', '.join(f'{s}://' for s in schemes())})")
    scheme = url.split("://", 1)[0].lower()
    scheme = _ALIASES.get(scheme, scheme)
    if scheme not in _REGISTRY:
        raise ConfigurationError(f"unknown store {url!r} (known: "
                                 f"{', '.join(f'{s}://' for s in schemes())})")
    return scheme


def _store_class(scheme: str) -> Any:
    module_name, _, class_name = _REGISTRY[scheme].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if scheme == "rocksdb" and exc.name == "rocksdict":
            raise ConfigurationError(
                f"store 'rocksdb://' needs the rocksdict package: pip install "
                f"sabot[rocksdb] ({exc})") from None
        raise ConfigurationError(f"store '{scheme}://' cannot be loaded: {exc}") from None
    return getattr(module, class_name)


def store_path(url: str, *, table: str, partition: int, app: str = "sabot",
               datadir: Union[str, "os.PathLike[str]", None] = None) -> Optional[str]:
    """The directory of a durable store (``None`` for ``memory://``)."""
    if _scheme(url) in _IN_MEMORY:
        return None
    parts = urlsplit(url)
    location = (parts.netloc + parts.path) if (parts.netloc or parts.path) else ""
    if location:
        base = Path(location)
    else:
        base = (Path(datadir) if datadir is not None else Path(f"{app}-data")) / app
    return str(base / f"{table}-{partition}")


def open_store(url: str, *, table: str, partition: int, app: str = "sabot",
               datadir: Union[str, "os.PathLike[str]", None] = None,
               **options: Any) -> StoreT:
    """Open (creating if needed) the store of ``table``'s ``partition``.

    ``options`` override the URL's query options. Raises
    ``ConfigurationError`` (unknown scheme or option, rocksdict missing),
    ``StoreUntrusted`` (corrupt, or another format version: wipe and
    recover) or ``StoreError``.
    """
    if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
        raise ConfigurationError(f"table {table!r}: partition must be an int >= 0, "
                                 f"not {partition!r}")
    scheme = _scheme(url)
    cls = _store_class(scheme)
    given: Dict[str, Any] = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    given.update(options)
    parsed = parse_options(scheme, given, cls.options)
    path = store_path(url, table=table, partition=partition, app=app, datadir=datadir)
    if path is not None:
        parsed["path"] = path
    store: StoreT = cls(url=url, table=table, partition=partition, **parsed)
    return store


def wipe_store(url: str, *, table: str, partition: int, app: str = "sabot",
               datadir: Union[str, "os.PathLike[str]", None] = None) -> None:
    """Delete a durable store's files without opening it (one found untrusted).

    The store must be closed (in every process). ``memory://``: nothing to do.
    """
    path = store_path(url, table=table, partition=partition, app=app, datadir=datadir)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
