"""``Supervisor``: ``sabot worker --processes N`` runs N worker processes and watches them.

Each child is a whole ``sabot worker`` (``--processes 1``) with a worker id
of its own, ``<base>-<index>``, where the base is ``--worker-id`` (or the
``worker_id`` setting, or the host name): every child is a member of the
app's Kafka consumer group and has a stable Redis consumer name, so a child
started again after a crash reads its own pending entries first. Each child
serves its web pages on ``web_port + index`` (one port per process; a port
of 0 gives every child a free port of its own).

The parent only supervises, with a plain loop and no event loop of its own:

- a child that dies (``kill -9``, an exit code other than 0) is started
  again, after ``backoff_initial`` seconds, doubled for every further exit
  that comes less than ``stable_after`` seconds after its start, up to
  ``backoff_max``: a child that crashes in a loop is backed off, and each
  restart is reported in one line;
- a child that exits 0 on its own (a finite job) is done and not restarted;
- SIGTERM or SIGINT is forwarded to every child once (one graceful stop for
  all; the children run in their own session, so a terminal's Ctrl-C reaches
  them only through the parent); a second signal kills them (SIGKILL);
- the exit code is 0 when every child's last exit was 0 (or the forwarded
  signal itself, for a child stopped before it could handle it), else 1.

A child watches its parent (``SABOT_SUPERVISOR_PID``) and stops gracefully
when the parent is gone, so a parent killed with ``kill -9`` leaves no
worker behind for long.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from .types import AppT

__all__ = ["Supervisor", "Child", "child_worker_id", "run_processes", "SUPERVISOR_PID_ENV"]

logger = logging.getLogger("sabot.supervisor")

#: Environment variable a child finds its parent's pid in (the child stops when it is gone).
SUPERVISOR_PID_ENV = "SABOT_SUPERVISOR_PID"
#: Environment variable holding a child's index (0 .. N-1), for the app to read if it likes.
WORKER_INDEX_ENV = "SABOT_WORKER_INDEX"


def child_worker_id(base: str, index: int) -> str:
    """The worker id of child ``index``: ``<base>-<index>``, the same at every restart."""
    return f"{base}-{index}"


@dataclass
class Child:
    """One supervised worker process and its restart bookkeeping."""

    index: int
    proc: Optional["subprocess.Popen[bytes]"] = None
    started: float = 0.0
    #: Exits in a row that came sooner than ``stable_after`` after their start.
    quick_failures: int = 0
    #: When to start it again (monotonic time); None while it runs or is done.
    restart_at: Optional[float] = None
    starts: int = 0
    last_exit: Optional[int] = None
    done: bool = False
    exits: List[int] = field(default_factory=list)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Start ``processes`` children with ``command(index)`` and keep them running until told to stop."""

    def __init__(self, command: Callable[[int], Sequence[str]], processes: int, *,
                 env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 stable_after: float = 10.0, stop_timeout: float = 45.0,
                 poll_interval: float = 0.1) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, not {processes}")
        self.command = command
        self.children = [Child(i) for i in range(processes)]
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self._signals: List[int] = []
        self._stopping = False
        self._stop_began = 0.0
        self._stop_signal = 0

    # -- the loop -----------------------------------------------------------------

    def run(self) -> int:
        """Supervise until every child is done; the exit code for the parent process."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in self.children:
                self._start(child)
            while not all(c.done for c in self.children):
                self._handle_signals()
                now = time.monotonic()
                for child in self.children:
                    self._check(child, now)
                if self._stopping and now - self._stop_began > self.stop_timeout:
                    logger.error("children still running %.0fs after the stop: killing them",
                                 self.stop_timeout)
                    self._kill_all()
                time.sleep(self.poll_interval)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_all()  # an exception in the loop leaves no child behind
        # A child that the forwarded signal ended before its worker installed
        # its handlers (still importing) stopped as asked: not a failure.
        failed = [c for c in self.children
                  if c.last_exit not in (0, None, -self._stop_signal)]
        for child in failed:
            logger.error("worker %d ended with %s", child.index, _describe_exit(child.last_exit or 0))
        logger.info("all %d worker processes stopped", len(self.children))
        return 1 if failed else 0

    def _on_signal(self, sig: int, frame: object) -> None:
        self._signals.append(sig)  # handled by the loop, not inside the handler

    def _handle_signals(self) -> None:
        while self._signals:
            sig = self._signals.pop(0)
            name = signal.Signals(sig).name
            if not self._stopping:
                self._stopping = True
                self._stop_began = time.monotonic()
                self._stop_signal = sig
                logger.info("%s received: stopping %d worker processes gracefully "
                            "(send it again to kill them)", name, len(self.children))
                for child in self.children:
                    child.restart_at = None  # a child waiting for its restart is done
                    if child.proc is not None and child.proc.poll() is None:
                        child.proc.send_signal(sig)
            else:
                logger.warning("second %s: killing the worker processes", name)
                self._kill_all()

    def _check(self, child: Child, now: float) -> None:
        if child.done:
            return
        proc = child.proc
        if proc is not None:
            code = proc.poll()
            if code is None:
                return
            child.proc = None
            child.last_exit = code
            child.exits.append(code)
            self._exited(child, proc.pid, code, now)
            return
        if child.restart_at is not None and now >= child.restart_at and not self._stopping:
            self._start(child)
        elif self._stopping:
            child.done = True

    def _exited(self, child: Child, pid: int, code: int, now: float) -> None:
        if self._stopping:
            child.done = True
            return
        if code == 0:
            logger.info("worker %d finished (exit code 0)", child.index)
            child.done = True
            return
        ran = now - child.started
        child.quick_failures = child.quick_failures + 1 if ran < self.stable_after else 1
        delay = min(self.backoff_initial * 2 ** (child.quick_failures - 1), self.backoff_max)
        child.restart_at = now + delay
        if child.quick_failures >= 3:
            logger.error("worker %d crashes in a loop: %d exits in a row within %.0fs of their "
                         "start (last: %s); backing off, next start in %.1fs", child.index,
                         child.quick_failures, self.stable_after, _describe_exit(code), delay)
        else:
            logger.warning("worker %d (pid %s) ended with %s after %.1fs; starting it again in "
                           "%.1fs", child.index, pid, _describe_exit(code), ran, delay)

    def _start(self, child: Child) -> None:
        env = {**self.env, SUPERVISOR_PID_ENV: str(os.getpid()), WORKER_INDEX_ENV: str(child.index)}
        argv = list(self.command(child.index))
        # Its own session: a terminal's Ctrl-C reaches the children only once, through us.
        child.proc = subprocess.Popen(argv, env=env, cwd=self.cwd, start_new_session=True)
        child.started = time.monotonic()
        child.restart_at = None
        child.starts += 1
        logger.info("worker %d started (pid %d)%s", child.index, child.proc.pid,
                    f", start {child.starts}" if child.starts > 1 else "")

    def _kill_all(self) -> None:
        for child in self.children:
            proc = child.proc
            if proc is not None and proc.poll() is None:
                proc.kill()
        for child in self.children:
            proc = child.proc
            if proc is not None:
                code = proc.wait()
                child.last_exit = code
                child.exits.append(code)
                child.proc = None
            child.done = True


def run_processes(app: AppT, processes: int, *, spec: str, loglevel: str = "info",
                  json_logs: bool = False, web_port: Optional[int] = None,
                  web_bind: Optional[str] = None, concurrency: Optional[int] = None) -> int:
    """``sabot worker --processes N``: supervise N children running ``app``; the exit code.

    ``spec`` is the ``-A`` the children import (empty: the app came from
    ``app.main()``, and the children run the same script again).
    """
    from .worker import setup_logging, web_port_of
    setup_logging(loglevel, json_logs)
    base = app.conf.worker_id or socket.gethostname()
    port = web_port if web_port is not None else web_port_of(app.conf)
    prefix = [sys.executable, "-m", "sabot", "-A", spec] if spec else [sys.executable, sys.argv[0]]

    def command(index: int) -> List[str]:
        argv = [*prefix, "-l", loglevel, "worker", "--processes", "1",
                "--worker-id", child_worker_id(base, index)]
        if json_logs:
            argv.append("--json-logs")
        if port:  # 0 or None: each child does as its settings say (0: a free port of its own)
            argv += ["--web-port", str(port + index)]
        if web_bind is not None:
            argv += ["--web-bind", web_bind]
        if concurrency is not None:
            argv += ["--concurrency", str(concurrency)]
        return argv

    logger.info("sabot worker: app %r in %d processes, worker ids %s .. %s%s", app.id, processes,
                child_worker_id(base, 0), child_worker_id(base, processes - 1),
                f", web ports {port} .. {port + processes - 1}" if port else "")
    supervisor = Supervisor(command, processes, cwd=os.getcwd(),
                            stop_timeout=float(app.conf.shutdown_timeout) + 15.0)
    return supervisor.run()
