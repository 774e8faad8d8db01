"""Worker processes seen from the parent: spawn, talk, notice death, replace.

``WorkerProcess`` is one spawned process and its socket; one request is in
flight at a time, so an answer always belongs to the request waiting for it.
``WorkerPool`` keeps N of them started the same way, lends an idle one per
request, replaces one that died, and retries the request under a
``RetryPolicy`` when the death was the failure (the batch is not lost).

Processes are started with the ``spawn`` method on every platform: a fresh
interpreter, no inherited locks or event loops, the same behaviour as on
macOS and Windows.
"""
from __future__ import annotations

import asyncio
import atexit
import dataclasses
import logging
import multiprocessing
import socket
import time
import weakref
from typing import Any, Callable, Dict, List, Optional

from ..exceptions import BridgeError, NodeExecutionError, WorkerProcessDied
from ..retry import RetryPolicy
from .arena import ShmArena
from .framesock import FrameSocket
from .ipc import Frame, discard_frame, pack_frame
from .metrics import BridgeMetrics
from .shm import discard_segments, worker_segment_prefix

__all__ = ["WorkerProcess", "WorkerPool", "Frame"]

logger = logging.getLogger(__name__)

_SPAWN = multiprocessing.get_context("spawn")
_reapers: "set[weakref.finalize]" = set()


def _hang_up(sock: socket.socket) -> None:
    # Shut down rather than close: an event loop may still watch the
    # descriptor; the worker sees end of file either way.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _reap(process: Any, sock: socket.socket, timeout: float = 2.0) -> None:
    # The worker sees end of file, cleans up (its shared memory) and exits.
    _hang_up(sock)
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        process.join(1.0)


@atexit.register
def _reap_all() -> None:
    # Registered after multiprocessing's own exit hook, so it runs first:
    # workers of a bridge nobody closed stop on their own (cleaning up)
    # instead of being terminated in the middle of it.
    pending = []
    for reaper in list(_reapers):
        held = reaper.peek()  # None once it ran or was detached
        if held is not None:
            _, _, (process, sock), _ = held
            pending.append((reaper, process, sock))
    for _, _, sock in pending:
        _hang_up(sock)
    deadline = time.monotonic() + 2.0
    for reaper, process, sock in pending:
        reaper.detach()
        _reap(process, sock, max(deadline - time.monotonic(), 0.0))


class _Connection:
    """The parent's end of a worker socket: frames in, one waiter at a time.

    The event loop watches the socket with ``add_reader``; right after a
    request is sent the caller may spin on it for ``spin`` seconds first,
    which answers short requests without a trip through the loop.

    A request cancelled after it was sent still gets its answer from the
    worker: that answer is *stale* and is dropped when it comes (its shared
    memory released), so the next request reads its own answer.
    """

    def __init__(self, sock: socket.socket, spin: float, arena: ShmArena) -> None:
        self.loop = asyncio.get_running_loop()
        self.fsock = FrameSocket(sock)
        self.spin = spin
        self.arena = arena
        self.waiter: Optional[asyncio.Future] = None
        self.stale = 0
        self.lost = self.loop.create_future()
        self.loop.add_reader(self.fsock.fileno(), self._readable)

    def _readable(self) -> None:
        self._deliver(self.fsock.recv_ready())

    def _deliver(self, frames: List[Frame]) -> None:
        for frame in frames:
            if self.stale:
                self.stale -= 1
                discard_frame(frame[0], self.arena)
                continue
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)
            else:
                logger.warning("bridge: unexpected frame from worker: %r", frame[0])
                discard_frame(frame[0], self.arena)
        if self.fsock.eof:
            self.close()

    async def request(self, buffers: List[Any]) -> Frame:
        """Send a frame, return the answer; ``ConnectionResetError`` if lost.

        A worker that exited (or is exiting) between requests shows as a
        broken pipe or a reset on send: that is the same lost connection.
        """
        if self.lost.done():
            raise ConnectionResetError("worker connection lost")
        self.waiter = waiter = self.loop.create_future()
        try:
            rest = self.fsock.send_some(buffers)
            if rest:
                await self.loop.sock_sendall(self.fsock.sock, rest)
        except asyncio.CancelledError:
            # Half a frame may have gone out: the stream cannot be
            # resynchronised.
            self.waiter = None
            self.close()
            raise
        except OSError as exc:
            # Nobody awaits the waiter now: drop it before close() fails it.
            self.waiter = None
            self.close()
            raise ConnectionResetError(f"worker connection lost: {exc}") from exc
        if self.spin and not rest:
            self._deliver(self.fsock.spin_recv(self.spin))
        try:
            return await waiter
        except asyncio.CancelledError:
            if not waiter.done() or waiter.cancelled():
                self.stale += 1
            else:
                discard_frame(waiter.result()[0], self.arena)
            self.waiter = None
            raise

    def send_nowait(self, buffers: List[Any]) -> None:
        """Send a frame that expects no answer (best effort)."""
        if not self.lost.done():
            try:
                self.fsock.send_some(buffers)
            except OSError:
                pass  # the worker is gone already (broken pipe): nothing to tell

    def close(self) -> None:
        """Stop watching and close the socket; a waiter gets the error."""
        if self.lost.done():
            return
        self.lost.set_result(None)
        self.loop.remove_reader(self.fsock.fileno())
        self.fsock.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("worker connection lost"))


class WorkerProcess:
    """One spawned worker process and the socket to it."""

    def __init__(self, target: Callable[[socket.socket], None], name: str,
                 node_id: str, spin: float = 0.0) -> None:
        self.target = target
        self.spin = spin
        self.name = name
        self.node_id = node_id
        self.process: Any = None
        self.conn: Optional[_Connection] = None
        #: What the worker answered to ``init`` (keys, pid).
        self.info: Dict[str, Any] = {}
        #: Shared-memory segments reused with this worker.
        self.arena = ShmArena()
        self._exit_watch: Optional[asyncio.Future] = None
        self._exit_waiters = 0
        #: Ends the process if this object is dropped without stop() (set by start).
        self._reaper: Optional[weakref.finalize] = None

    @property
    def pid(self) -> Optional[int]:
        """Process id, once started."""
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        """True while the process runs and its socket is open."""
        return (self.process is not None and self.conn is not None
                and not self.conn.lost.done() and self.process.exitcode is None)

    async def start(self, init_header: Dict[str, Any], timeout: float) -> Dict[str, Any]:
        """Spawn the process, send ``init``, return its ``ready`` header."""
        parent_sock, child_sock = socket.socketpair()
        self.process = _SPAWN.Process(target=self.target, args=(child_sock,),
                                      name=self.name, daemon=True)
        try:
            self.process.start()
        finally:
            # Only the child may hold its end, or its death would not show
            # as end of file here.
            child_sock.close()
        # If this object is dropped without stop(), still end the process.
        self._reaper = weakref.finalize(self, _reap, self.process, parent_sock)
        _reapers.add(self._reaper)
        self.conn = _Connection(parent_sock, self.spin, self.arena)
        try:
            header, _ = await asyncio.wait_for(self.request(pack_frame(init_header)), timeout)
        except asyncio.TimeoutError:
            await self.kill()
            raise BridgeError(f"worker for node {self.node_id!r} did not start "
                              f"within {timeout}s") from None
        except WorkerProcessDied as exc:
            await self.kill()
            raise BridgeError(
                f"worker for node {self.node_id!r} exited (code {exc.exitcode}) while "
                f"starting; its stderr says why. A script that starts Sabot must do "
                f"so under `if __name__ == '__main__':` (workers are spawned and "
                f"re-import it)") from exc
        if header.get("op") != "ready":
            await self.stop()
            raise NodeExecutionError(
                f"node {self.node_id!r} failed to start in its worker: "
                f"{header.get('type')}: {header.get('message')}",
                node_id=self.node_id, remote_traceback=header.get("traceback", ""))
        self.info = header
        return header

    async def request(self, buffers: List[Any]) -> Frame:
        """Send one frame and wait for the answer; death -> ``WorkerProcessDied``."""
        if self.conn is None:
            raise await self._died()
        try:
            return await self.conn.request(buffers)
        except (ConnectionError, EOFError):
            # Reset, broken pipe or end of file: the worker is gone.
            raise await self._died() from None

    async def _died(self) -> WorkerProcessDied:
        exitcode = await self.wait_exit(2.0)
        return WorkerProcessDied(
            f"worker process {self.pid} of node {self.node_id!r} died "
            f"(exit code {exitcode})", node_id=self.node_id, exitcode=exitcode)

    async def wait_exit(self, timeout: float) -> Optional[int]:
        """Wait up to ``timeout`` for the process to end; its exit code or None."""
        proc = self.process
        if proc is None:
            return None
        if proc.exitcode is not None:
            return proc.exitcode
        loop = asyncio.get_running_loop()
        # The sentinel becomes readable when the process ends: no thread,
        # no polling. One watcher per process, shared by every waiter (a
        # second add_reader would replace the first one's callback).
        ended = self._exit_watch
        if ended is None:
            ended = self._exit_watch = loop.create_future()
            sentinel = proc.sentinel

            def exited() -> None:
                loop.remove_reader(sentinel)
                if not ended.done():
                    ended.set_result(None)
            loop.add_reader(sentinel, exited)
        self._exit_waiters += 1
        try:
            await asyncio.wait_for(asyncio.shield(ended), timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self._exit_waiters -= 1
            if not self._exit_waiters and not ended.done():
                loop.remove_reader(proc.sentinel)
                ended.cancel()
                self._exit_watch = None
        # The sentinel closes a moment before the process can be reaped:
        # this join waits out that moment (it is about to return).
        proc.join(1.0)
        return proc.exitcode

    async def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to stop, then make sure it has (terminate, kill)."""
        if self.conn is not None:
            self.conn.send_nowait(pack_frame({"op": "stop"}))
            self.conn.close()
        if await self.wait_exit(timeout) is None:
            await self.kill()
        self._clean_arena()

    async def kill(self) -> None:
        """End the process at once."""
        if self.process is not None and self.process.exitcode is None:
            self.process.kill()
            await self.wait_exit(5.0)
        if self.conn is not None:
            self.conn.close()
        self._clean_arena()

    def _forget_reaper(self) -> None:
        reaper = self._reaper
        if reaper is not None:
            reaper.detach()
            _reapers.discard(reaper)

    def _clean_arena(self) -> None:
        # Only once the process is gone: a live worker unlinks its own
        # segments, and two unlinks of one name upset the resource tracker.
        if self.process is not None and self.process.exitcode is not None:
            self._forget_reaper()
            self.arena.forget_peer()
            self.arena.close()
            # A worker that was killed could not clean up: remove what it
            # created that we never mapped (its pool, unread one-shots).
            if self.process.exitcode != 0:
                discard_segments(worker_segment_prefix(self.process.pid))


class WorkerPool:
    """N worker processes started alike, lent out one request at a time."""

    def __init__(self, target: Callable[[socket.socket], None], node_id: str,
                 init_header: Dict[str, Any], size: int = 1, *,
                 retry_policy: Optional[RetryPolicy] = None,
                 start_timeout: float = 60.0, spin_us: int = 0,
                 metrics: Optional[BridgeMetrics] = None) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one process")
        self.target = target
        self.node_id = node_id
        self.init_header = init_header
        self.size = size
        self.retry_policy = retry_policy or RetryPolicy(max_attempts=3)
        self.start_timeout = start_timeout
        self.spin = spin_us / 1e6
        self.metrics = metrics if metrics is not None else BridgeMetrics()
        self.workers: List[WorkerProcess] = []
        self._idle: "asyncio.Queue[WorkerProcess]" = asyncio.Queue()
        self._closed = False
        self._closing: Optional[asyncio.Future] = None
        self._serial = 0

    @property
    def info(self) -> Dict[str, Any]:
        """The ``ready`` answer of the first worker (keys of the node)."""
        return self.workers[0].info if self.workers else {}

    def pids(self) -> List[int]:
        """Process ids of the current workers."""
        return [w.pid for w in self.workers if w.pid is not None]

    async def _spawn(self) -> WorkerProcess:
        self._serial += 1
        worker = WorkerProcess(self.target, f"sabot-{self.node_id}-{self._serial}",
                               self.node_id, self.spin)
        await worker.start(self.init_header, self.start_timeout)
        return worker

    async def start(self) -> None:
        """Start every worker (concurrently); any failure stops them all."""
        results = await asyncio.gather(*(self._spawn() for _ in range(self.size)),
                                       return_exceptions=True)
        started = [r for r in results if isinstance(r, WorkerProcess)]
        errors = [r for r in results if not isinstance(r, WorkerProcess)]
        self.workers.extend(started)
        if errors:
            await self.close()
            raise errors[0]
        for worker in started:
            self._idle.put_nowait(worker)

    async def _replace(self, dead: WorkerProcess) -> WorkerProcess:
        await dead.kill()
        if self._closed:
            raise BridgeError(f"the workers of node {self.node_id!r} are shut down")
        fresh = await self._spawn()
        self.workers[self.workers.index(dead)] = fresh
        self.metrics.record_restart()
        logger.warning("bridge: replaced dead worker %s of node %r by %s",
                       dead.name, self.node_id, fresh.pid)
        return fresh

    async def _acquire(self) -> WorkerProcess:
        if self._closed:
            raise BridgeError(f"the workers of node {self.node_id!r} are shut down")
        if not self._idle.empty():  # the common case: no task, no wait
            worker = self._idle.get_nowait()
        else:
            worker = await self._wait_idle()
        if not worker.alive:
            try:
                worker = await self._replace(worker)
            except BaseException:
                self._give_back(worker)  # keep the pool's size; try again later
                raise
        return worker

    async def _wait_idle(self) -> WorkerProcess:
        # Every worker is busy: wait for one, or for close() (never hang).
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
        getter = asyncio.ensure_future(self._idle.get())
        await asyncio.wait({getter, self._closing}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        raise BridgeError(f"the workers of node {self.node_id!r} were shut down")

    def _give_back(self, worker: WorkerProcess) -> None:
        if not self._closed:
            self._idle.put_nowait(worker)

    async def _request_once(self, make_frame: Callable[[ShmArena], Any],
                            read_reply: Callable[[Dict[str, Any], Any, ShmArena], Any]) -> Any:
        worker = await self._acquire()
        try:
            frame = make_frame(worker.arena)
            try:
                header, body = await worker.request(frame.buffers)
            except WorkerProcessDied:
                frame.discard()  # nobody will read it now
                raise
            # (Cancelled: the worker may be reading the frame; it releases
            # the frame's shared memory in its answer, dropped as stale.)
            # Read while the worker is still ours: the reply's shared
            # memory belongs to this worker's arena.
            return read_reply(header, body, worker.arena)
        except WorkerProcessDied:
            worker = await self._replace(worker)
            raise
        finally:
            self._give_back(worker)

    async def request(self, make_frame: Callable[[ShmArena], Any],
                      read_reply: Callable[[Dict[str, Any], Any, ShmArena], Any]) -> Any:
        """Send a frame to an idle worker; return ``read_reply`` of the answer.

        ``make_frame(arena)`` returns an object with ``buffers`` and
        ``discard()``; it is called once per attempt because an attempt's
        shared memory is consumed, or discarded when the attempt fails.
        ``read_reply(header, body, arena)`` decodes the answer. A dead worker
        is replaced and the request retried under the retry policy.
        """
        policy = dataclasses.replace(self.retry_policy, retry_on=(WorkerProcessDied,))

        def retrying(attempt: int, exc: BaseException, delay: float) -> None:
            logger.warning("bridge: %s; retrying in %.3fs (attempt %d of %s)",
                           exc, delay, attempt + 1, policy.max_attempts or "unlimited")

        # Only a dead worker is worth another attempt here: what the node
        # itself raised goes to the caller (a pipeline retries that itself).
        return await policy.call(lambda: self._request_once(make_frame, read_reply),
                                 on_retry=retrying, give_up=lambda: self._closed)

    async def request_on(self, slot: int, make_frame: Callable[[ShmArena], Any],
                         read_reply: Callable[[Dict[str, Any], Any, ShmArena], Any]) -> Any:
        """Like ``request``, to worker number ``slot`` and without retrying.

        For callers that keep a conversation with one worker (a process
        agent's instance and its child). A dead worker is replaced before
        ``WorkerProcessDied`` is raised: the caller resends what the dead one
        held, to the new one.
        """
        if self._closed:
            raise BridgeError(f"the workers of node {self.node_id!r} are shut down")
        worker = self.workers[slot]
        if not worker.alive:
            worker = await self._replace(worker)
        frame = make_frame(worker.arena)
        try:
            header, body = await worker.request(frame.buffers)
        except WorkerProcessDied:
            frame.discard()
            if not self._closed:
                await self._replace(worker)
            raise
        return read_reply(header, body, worker.arena)

    async def close(self) -> None:
        """Stop every worker; no process of this pool remains afterwards."""
        self._closed = True
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        workers, self.workers = self.workers, []
        results = await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        for worker, result in zip(workers, results):
            if isinstance(result, BaseException):
                logger.error("bridge: stopping worker %s failed: %r", worker.name, result)
                await worker.kill()

