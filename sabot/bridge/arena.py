"""ShmArena: shared-memory segments reused between two processes.

A fresh segment costs the kernel a page fault per 4 KiB on first touch, on
both sides: for 64 MiB that is more time than copying the data. So each
end of a worker connection keeps an arena: segments it created (its pool)
and segments of the peer that it has mapped (its views).

* Writing: ``lease(size)`` hands out a free pooled segment (or creates one);
  the frame names it with ``"pool": 1``.
* Reading: ``view(name)`` maps the peer's segment once and returns an Arrow
  buffer over it; when the last Arrow object built on that buffer is gone,
  the name is queued as *released*.
* Each frame carries the names its sender released (``"released"``); the
  receiver's arena marks those segments of its pool free again.

A segment is therefore written only when the reader holds nothing in it:
zero copy on the reading side stays safe. The pool is capped; past the cap
the writer falls back to one-shot segments (``sabot.bridge.shm``).

Cleanup: ``close()`` unlinks every pooled segment; ``forget_peer()``
unlinks the segments a dead peer owned and announced.
"""
from __future__ import annotations

import contextlib
import weakref
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Dict, Iterator, List, Optional, Tuple

import pyarrow as pa

from .shm import new_segment

__all__ = ["ShmArena", "DEFAULT_POOL_BYTES"]

#: Most bytes of pooled segments one end of a connection keeps.
DEFAULT_POOL_BYTES = 512 * 1024 * 1024
_GRANULE = 1024 * 1024  # sizes round up to whole MiB so segments get reused


@contextlib.contextmanager
def _untracked() -> Iterator[None]:
    # Attaching registers the name with the resource tracker, which the
    # owner's registration shares; unregistering ours would drop the
    # owner's too. A view is not ours to clean up: do not register it.
    # The module shared_memory calls resource_tracker.register through.
    original = resource_tracker.register
    resource_tracker.register = lambda name, rtype: None
    try:
        yield
    finally:
        resource_tracker.register = original


def _attach(name: str) -> SharedMemory:
    try:
        return SharedMemory(name=name, track=False)  # type: ignore[call-arg]  # 3.13+
    except TypeError:
        with _untracked():
            return SharedMemory(name=name)


def _unlink_all(pool: Dict[str, SharedMemory]) -> None:
    for shm in pool.values():
        with contextlib.suppress(BufferError):
            shm.close()
        with contextlib.suppress(FileNotFoundError):
            shm.unlink()
    pool.clear()


class _Lease:
    """Alive while Arrow data read from a view is; its end releases the name.

    It also holds the mapping: the segment stays mapped while Arrow data
    points into it, even after the arena let go of it.
    """

    __slots__ = ("arena", "name", "shm")

    def __init__(self, arena: "ShmArena", name: str, shm: SharedMemory) -> None:
        self.arena = arena
        self.name = name
        self.shm = shm

    def __del__(self) -> None:
        self.arena._released.append(self.name)


class ShmArena:
    """One end's pool of segments and views of the peer's; see module docstring."""

    def __init__(self, max_pool_bytes: int = DEFAULT_POOL_BYTES) -> None:
        self.max_pool_bytes = max_pool_bytes
        self._pool: Dict[str, SharedMemory] = {}
        # Unlink the pool even if close() is never called (the arena is
        # collected, or the program exits with the bridge open).
        self._finalizer = weakref.finalize(self, _unlink_all, self._pool)
        self._free: List[str] = []
        self._pool_bytes = 0
        self._views: Dict[str, Tuple[SharedMemory, int]] = {}
        self._released: List[str] = []

    # -- writing ---------------------------------------------------------------
    def lease(self, size: int) -> Optional[Tuple[str, pa.Buffer]]:
        """A free segment of at least ``size`` bytes as a writable buffer.

        None when the pool is full: the caller uses a one-shot segment.
        """
        best = None
        for name in self._free:
            if self._pool[name].size >= size and (
                    best is None or self._pool[name].size < self._pool[best].size):
                best = name
        if best is None:
            rounded = -(-size // _GRANULE) * _GRANULE
            if self._pool_bytes + rounded > self.max_pool_bytes:
                return None
            shm = new_segment(rounded)
            self._pool[shm.name] = shm
            self._pool_bytes += rounded
            best = shm.name
        else:
            self._free.remove(best)
        shm = self._pool[best]
        return best, pa.py_buffer(shm.buf)

    def give_back(self, names: Optional[List[str]]) -> None:
        """Mark segments the peer released (or never read) free again."""
        for name in names or ():
            if name in self._pool and name not in self._free:
                self._free.append(name)

    # -- reading ---------------------------------------------------------------
    def view(self, name: str, size: int) -> pa.Buffer:
        """``size`` bytes of the peer's segment ``name``, without a copy."""
        entry = self._views.get(name)
        if entry is None:
            shm = _attach(name)
            probe = pa.py_buffer(shm.buf)
            entry = self._views[name] = (shm, probe.address)
            del probe
        shm, address = entry
        return pa.foreign_buffer(address, size, base=_Lease(self, name, shm))

    def release_unread(self, name: str) -> None:
        """A peer segment this side will not read: tell the peer it is free."""
        self._released.append(name)

    def take_released(self) -> List[str]:
        """Names released since the last call, to tell the peer."""
        if not self._released:
            return []
        released, self._released = self._released, []
        return released

    # -- cleanup ---------------------------------------------------------------
    def forget_peer(self) -> None:
        """The peer is gone: unlink the segments it owned that we had mapped."""
        for name in list(self._views):
            with contextlib.suppress(FileNotFoundError):
                shm = _attach(name)
                shm.close()
                # The owner registered the name; unlink() unregisters it.
                shm.unlink()
        self._views.clear()

    def close(self) -> None:
        """Unlink every pooled segment (readers keep what they mapped)."""
        _unlink_all(self._pool)
        self._free.clear()
        self._pool_bytes = 0
        # A view is unmapped when its last lease ends, never here: Arrow
        # data may still point into it.
        self._views.clear()

    @property
    def pool_bytes(self) -> int:
        """Bytes of segments in this end's pool."""
        return self._pool_bytes

