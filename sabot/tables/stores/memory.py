"""``memory://``: a table partition's store in a dict, gone with the process.

The store for ``memory://`` apps and for tests. Its ``apply`` validates
everything (positions, and that ``changes`` is well formed) before it touches
the dict, so it is all or nothing like the durable stores. Nothing outlives the
process: a restart starts empty, with no changelog offset, and recovers from
the changelog (on ``memory://`` the changelog is in memory too, so a new
process starts from nothing, as in Faust).
"""
from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from ...types import StoreChanges, StorePosition
from .base import Store, check_positions, split_changes

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """A dict of bytes with the positions beside it."""

    scheme = "memory"

    def __init__(self, *, url: str = "memory://", table: str, partition: int) -> None:
        super().__init__(url=url, table=table, partition=partition, path=None)
        self._data: Dict[bytes, bytes] = {}

    # -- reads ----------------------------------------------------------------
    def get(self, key: bytes) -> Optional[bytes]:
        """The value stored for ``key``, ``None`` when there is none."""
        if self._closed:
            self._check_open()
        return self._data.get(key)

    def get_many(self, keys: Iterable[bytes]) -> List[Optional[bytes]]:
        """The values of ``keys`` in their order (``None`` for each missing one)."""
        self._check_open()
        get = self._data.get
        return [get(key) for key in keys]

    def items(self) -> Iterator[Tuple[bytes, bytes]]:
        """Every ``(key, value)``, in insertion order (a snapshot: applies may follow)."""
        self._check_open()
        return iter(list(self._data.items()))

    def keys(self) -> Iterator[bytes]:
        """Every key, in insertion order (a snapshot)."""
        self._check_open()
        return iter(list(self._data))

    def __len__(self) -> int:
        self._check_open()
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        self._check_open()
        return key in self._data

    # -- writes and positions ---------------------------------------------------
    def apply(self, changes: StoreChanges, *,
              changelog_offset: Optional[StorePosition] = None,
              source_positions: Optional[Mapping[str, Optional[StorePosition]]] = None,
              ) -> None:
        """Write ``changes`` and the positions, all or nothing."""
        self._check_open()
        check_positions(changelog_offset, source_positions)
        puts, deletes = split_changes(changes)
        for key, value in puts:
            if not isinstance(key, bytes) or not isinstance(value, bytes):
                raise TypeError(f"{self.describe()}: keys and values must be bytes, "
                                f"not {type(key).__name__} and {type(value).__name__}")
        self._data.update(puts)
        pop = self._data.pop
        for key in deletes:
            pop(key, None)
        self._positions_applied(changelog_offset, source_positions)

    def flush(self) -> None:
        """Nothing to make durable in memory."""
        self._check_open()

    def reset(self) -> None:
        """Wipe data and positions."""
        self._check_open()
        self._data.clear()
        self._changelog_offset = None
        self._sources.clear()

    def drop(self) -> None:
        """Wipe and close."""
        if not self._closed:
            self.reset()
        self.close()

    def close(self) -> None:
        """Close; the data is released (nothing outlives a memory store)."""
        self._closed = True
        self._data = {}
