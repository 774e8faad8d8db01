"""FrameSocket: one end of a worker socket pair, moving whole frames.

The socket stays non-blocking on both sides. The worker blocks in
``poll()`` when idle and the parent's event loop watches it with
``add_reader``; both may first *spin* for a few microseconds, because on a
busy machine a reply often arrives sooner than a sleeping process wakes up
(an idle wait costs tens of microseconds per wake-up, a round trip two).
"""
from __future__ import annotations

import select
import socket
import time
from typing import Any, List, Sequence

from .ipc import Frame, FrameDecoder

__all__ = ["FrameSocket"]

_RECV_SIZE = 256 * 1024
_GIVE_UP = 8
_PROBE_EVERY = 32


class FrameSocket:
    """Frames in and out of a non-blocking stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.decoder = FrameDecoder()
        #: True once the other end closed (or the socket failed).
        self.eof = False
        self._misses = 0  # spins in a row that ended empty-handed
        self._skipped = 0

    def fileno(self) -> int:
        """The socket's descriptor, for ``add_reader`` or ``poll``."""
        return self.sock.fileno()

    def recv_ready(self) -> List[Frame]:
        """The frames that can be read without waiting (maybe none)."""
        frames: List[Frame] = []
        while not self.eof:
            try:
                data = self.sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self.eof = True
                break
            frames.extend(self.decoder.feed(data))
            if len(data) < _RECV_SIZE:
                break
        return frames

    def spin_recv(self, seconds: float) -> List[Frame]:
        """Poll for frames for at most ``seconds`` without sleeping.

        Spinning pays only while answers come within the budget. After
        ``_GIVE_UP`` spins in a row end empty-handed (a slow node, or a
        machine with no core to spare, where spinning only takes CPU from
        the process being waited for), it stops, probing again every
        ``_PROBE_EVERY``-th wait; one success resumes it.
        """
        frames = self.recv_ready()
        if frames or seconds <= 0:
            return frames
        if self._misses >= _GIVE_UP:
            self._skipped += 1
            if self._skipped % _PROBE_EVERY:
                return frames
        deadline = time.perf_counter() + seconds
        while not frames and not self.eof and time.perf_counter() < deadline:
            frames = self.recv_ready()
        self._misses = 0 if frames else self._misses + 1
        return frames

    def recv_blocking(self, spin: float = 0.0) -> List[Frame]:
        """Wait (spin first, then sleep in ``poll``) until frames or end of file."""
        frames = self.spin_recv(spin)
        poller = None
        while not frames and not self.eof:
            if poller is None:
                poller = select.poll()
                poller.register(self.sock, select.POLLIN)
            poller.poll()
            frames = self.recv_ready()
        return frames

    def send_some(self, buffers: Sequence[Any]) -> bytes:
        """Send what the socket takes now; return the rest (b"" when all went)."""
        total = sum(memoryview(b).nbytes for b in buffers)
        try:
            sent = self.sock.sendmsg(buffers)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent >= total:
            return b""
        return b"".join(memoryview(b) for b in buffers)[sent:]

    def send_blocking(self, buffers: Sequence[Any]) -> None:
        """Send a whole frame, waiting for room when the peer reads slowly."""
        rest = memoryview(self.send_some(buffers))
        while rest:
            select.select([], [self.sock], [])
            try:
                rest = rest[self.sock.send(rest):]
            except (BlockingIOError, InterruptedError):
                pass

    def close(self) -> None:
        """Close the socket."""
        self.eof = True
        self.sock.close()
