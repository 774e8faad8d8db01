"""``Worker``: runs an App in this process until it is told to stop.

Lifecycle: logging, start-up banner, start the app, wait for SIGTERM/SIGINT
(or a finite job calling ``app.request_stop()``), then a graceful stop bounded
by ``shutdown_timeout``. A second SIGINT/SIGTERM exits at once; because
offsets and entry ids are only acknowledged after processing, that loses
nothing either (the uncommitted tail is processed again).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from typing import Any, Optional

from .exceptions import SabotError
from .settings import redact_url

__all__ = ["Worker", "setup_logging"]

logger = logging.getLogger("sabot.worker")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": record.created, "level": record.levelname, "logger": record.name,
               "pid": record.process, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(loglevel: str = "info", json_logs: bool = False) -> None:
    """Configure the root logger for a worker process."""
    level = getattr(logging, str(loglevel).upper(), None)
    if not isinstance(level, int):
        raise SabotError(f"unknown log level {loglevel!r}; use debug, info, warning or error")
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # mode is chatty at info about every service it starts.
    logging.getLogger("mode").setLevel(max(level, logging.WARNING))


class Worker:
    """Run ``app`` until a signal or ``app.request_stop()``; return an exit code."""

    def __init__(self, app: Any, *, loglevel: str = "info", json_logs: bool = False,
                 web_port: Optional[int] = None, concurrency: Optional[int] = None,
                 configure_logging: bool = True) -> None:
        self.app = app
        self.loglevel = loglevel
        self.json_logs = json_logs
        self.web_port = web_port
        self.configure_logging = configure_logging
        self._signals = 0
        if concurrency is not None:
            for agent in app.agents.values():
                agent.concurrency = concurrency

    def banner(self) -> str:
        """The start-up banner: app, broker, agents and their executors."""
        app = self.app
        lines = [f"sabot worker: app {app.id!r}",
                 f"  broker:   {redact_url(app.conf.broker)}",
                 f"  fastpath: {'cython' if _fastpath() else 'pure-python'}",
                 f"  web:      {self.web_port if self.web_port else 'off'}",
                 f"  agents:   {len(app.agents)}"]
        for agent in app.agents.values():
            sinks = ", ".join(getattr(s, "name", repr(s)) for s in agent.sinks) or "-"
            lines.append(f"    {agent.name} <- {agent.channel.name} [{agent.channel.transport_name}]"
                         f" executor={agent.executor} concurrency={agent.concurrency} sinks={sinks}")
        return "\n".join(lines)

    def execute(self) -> int:
        """Run to completion in a new event loop; the process exit code."""
        if self.configure_logging:
            setup_logging(self.loglevel, self.json_logs)
        try:
            return asyncio.run(self._run())
        except KeyboardInterrupt:
            return 130

    async def _run(self) -> int:
        app = self.app
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        logger.info("%s", self.banner())
        started = time.monotonic()
        try:
            await app.start()
        except SabotError as exc:
            logger.error("worker could not start: %s", exc)
            await self._stop_quietly()
            return 1
        await app.wait_for_stop_request()
        logger.info("stopping (graceful, at most %.0fs)", app.conf.shutdown_timeout)
        try:
            await asyncio.wait_for(app.stop(), app.conf.shutdown_timeout + 5.0)
        except asyncio.TimeoutError:
            logger.error("graceful stop took longer than shutdown_timeout; exiting anyway")
            return 1
        logger.info("stopped after %.1fs", time.monotonic() - started)
        if app.crash_reasons:
            logger.error("worker stopped on error: %s", app.crash_reasons[0])
            return 1
        return 0

    async def _stop_quietly(self) -> None:
        try:
            await asyncio.wait_for(self.app.stop(), 10.0)
        except Exception:  # already failing; the start error is the one to show
            pass

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        name = signal.Signals(sig).name
        if self._signals > 1:
            logger.warning("second %s: exiting now", name)
            logging.shutdown()
            os._exit(1)
        logger.info("%s received: stopping gracefully (send it again to exit now)", name)
        self.app.request_stop()


def _fastpath() -> bool:
    from . import fastpath_enabled
    return fastpath_enabled()
