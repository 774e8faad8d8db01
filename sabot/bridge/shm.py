"""Shared-memory segments that carry one Arrow IPC stream across processes.

Ownership passes with the message: the writer creates a segment, fills it and
hands it over; the reader maps it and unlinks the name at once. The mapping
stays valid after the unlink (POSIX keeps the pages until the last unmap), so
no name is left in ``/dev/shm`` once a message has been read, and the pages
live exactly as long as the Arrow buffers that point into them.

``multiprocessing``'s resource tracker registers every segment a process
creates or attaches and unlinks what is still registered when the program
ends. To keep its books balanced (and silent) each process undoes its own
registration: the writer right after creating (before it sends, so its
unregister reaches the tracker before the reader's), the reader through
``unlink``, which unregisters what ``attach`` registered.
"""
from __future__ import annotations

import os
import secrets
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Optional

import pyarrow as pa

__all__ = ["write_segment", "map_segment", "discard_segment", "new_segment",
           "segment_prefix", "set_segment_owner", "worker_segment_prefix",
           "discard_segments"]

# Segment names carry the pid of the process that owns the bridge (workers
# use their parent's), so a leak can be traced to its owner and tests can
# count their own segments while other programs use /dev/shm too. A
# worker's names also carry its own pid (``sabot_<parent>_w<worker>_``), so
# that the parent can remove what a worker that was killed left behind.
_owner = os.getpid()
_worker_tag = ""


def set_segment_owner(pid: int, worker: Optional[int] = None) -> None:
    """Name this process's new segments after ``pid`` (a worker: its parent)
    and, for a worker, after its own pid ``worker`` too."""
    global _owner, _worker_tag
    _owner = pid
    _worker_tag = f"w{worker}_" if worker is not None else ""


def worker_segment_prefix(worker: int, parent: Optional[int] = None) -> str:
    """The name prefix of the segments worker process ``worker`` creates."""
    return f"{segment_prefix(parent)}w{worker}_"


def discard_segments(prefix: str) -> None:
    """Remove every segment whose name starts with ``prefix``.

    For the segments of a worker that died without cleaning up: its pool,
    and one-shot segments it wrote that nobody will read. Only call it once
    that process is gone.
    """
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        return  # no /dev/shm (macOS): nothing to list
    for name in names:
        if name.startswith(prefix):
            discard_segment(name)


def segment_prefix(pid: Optional[int] = None) -> str:
    """The name prefix of segments owned by ``pid`` (default: this owner)."""
    return f"sabot_{_owner if pid is None else pid}_"


def new_segment(size: int) -> SharedMemory:
    """Create a segment of ``size`` bytes with an owner-prefixed name."""
    while True:
        try:
            return SharedMemory(name=segment_prefix() + _worker_tag + secrets.token_hex(6),
                                create=True, size=max(size, 1))
        except FileExistsError:  # a 48-bit name collided: draw again
            continue


def _tracked_name(shm: SharedMemory) -> str:
    # The tracker knows the segment by its POSIX name, with the leading slash.
    return getattr(shm, "_name", None) or "/" + shm.name


def write_segment(size: int, fill: Any) -> str:
    """Create a segment of ``size`` bytes, call ``fill(pa_buffer)``, return its name.

    The caller owns the name until a reader maps it; ``discard_segment``
    removes it when the message never reaches a reader.
    """
    shm = new_segment(size)
    resource_tracker.unregister(_tracked_name(shm), "shared_memory")
    try:
        target = pa.py_buffer(shm.buf)
        try:
            fill(target)
        finally:
            # The mapping cannot close while an Arrow buffer still exports it.
            del target
    except BaseException:
        shm.close()
        _unlink_quietly(shm)
        raise
    shm.close()
    return shm.name


class _Mapping:
    """Keeps a segment mapped for as long as an Arrow buffer refers to it."""

    __slots__ = ("shm",)

    def __init__(self, shm: SharedMemory) -> None:
        self.shm = shm

    def __del__(self) -> None:
        try:
            self.shm.close()
        except (OSError, BufferError):  # already closed or still exported
            pass


def map_segment(name: str) -> pa.Buffer:
    """Map segment ``name`` read-only, unlink its name, return it as a buffer.

    No byte is copied: the returned buffer points into the mapping, which is
    released when the last Arrow object built on it is garbage collected.
    """
    shm = SharedMemory(name=name)
    try:
        probe = pa.py_buffer(shm.buf)
        address, size = probe.address, probe.size
        del probe
    finally:
        shm.unlink()
    return pa.foreign_buffer(address, size, base=_Mapping(shm))


def _unlink_quietly(shm: SharedMemory) -> None:
    try:
        shm.unlink()
    except FileNotFoundError:
        pass


def discard_segment(name: str) -> None:
    """Remove segment ``name`` if no reader has taken it yet."""
    try:
        shm = SharedMemory(name=name)
    except FileNotFoundError:
        return
    shm.close()
    _unlink_quietly(shm)
