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
from typing import Any, List, Optional, Sequence

from .ipc import Frame, FrameDecoder

__all__ = ["FrameSocket"]

_RECV_SIZE = 256 * 1024


class FrameSocket:
    """Frames in and out of a non-blocking stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.decoder = FrameDecoder()
        #: True once the other end closed (or the socket failed).
        self.eof = False
        self._budget: Optional[float] = None  # adaptive spin, see spin_recv
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

        The budget adapts: a spin that ends empty-handed halves it (the
        peer is slow, or the machine has no core to spare, and spinning
        only takes CPU from the process being waited for), one that
        succeeds restores it. At zero, every 32nd wait probes again.
        """
        frames = self.recv_ready()
        if frames or seconds <= 0:
            return frames
        budget = min(self._budget if self._budget is not None else seconds, seconds)
        if budget <= 0:
            self._skipped += 1
            if self._skipped % 32:
                return frames
            budget = seconds
        deadline = time.perf_counter() + budget
        while not frames and not self.eof and time.perf_counter() < deadline:
            frames = self.recv_ready()
        if frames:
            self._budget = seconds
        else:
            self._budget = budget / 2 if budget > seconds / 16 else 0.0
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
