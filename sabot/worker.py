"""``Worker``: runs an App in this process until it is told to stop.

Lifecycle: logging, start-up banner, start the app, wait for SIGTERM/SIGINT
(or a finite job calling ``app.request_stop()``), then a graceful stop bounded
by ``shutdown_timeout``. A second SIGINT/SIGTERM exits at once; because
offsets and entry ids are only acknowledged after processing, that loses
nothing either (the uncommitted tail is processed again).
"""
from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys
import time
from typing import Any, Optional, Sequence

from .exceptions import SabotError
from .monitor import AgentFigures, Snapshot, WorkerMonitor, format_status
from .settings import redact_url, valid_bind_address
from .types import AppT
from .web import WebServer, WorkerMetrics, host_port

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
    # The level sits on the handler too: loggers that are kept at a lower
    # level for counting (dead letters, see sabot.monitor) still print nothing.
    handler.setLevel(level)
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


#: Faust's web port, served when ``web_enabled=True`` names no ``web_port``.
FAUST_WEB_PORT = 6066


def web_port_of(conf: Any) -> Optional[int]:
    """The port the app's settings ask the worker's web server to listen on (None: off)."""
    if conf.web_enabled is False:
        return None
    if conf.web_port is not None:
        return int(conf.web_port)
    return FAUST_WEB_PORT if conf.web_enabled else None


class Worker:
    """Run ``app`` until a signal or ``app.request_stop()``; return an exit code."""

    def __init__(self, app: AppT, *, loglevel: str = "info", json_logs: bool = False,
                 web_port: Optional[int] = None, concurrency: Optional[int] = None,
                 configure_logging: bool = True, web_bind: str | None = None,
                 worker_id: Optional[str] = None) -> None:
        self.app = app
        if worker_id is not None:  # --worker-id: the Redis consumer name, stable over restarts
            app.conf.worker_id = worker_id
        self.loglevel = loglevel
        self.json_logs = json_logs
        app.maybe_discover()  # autodiscover: the agents of other modules register first
        on_worker_init = getattr(app, "on_worker_init", None)
        if on_worker_init is not None:
            on_worker_init.send()  # Faust's signal: the worker exists, the app not started
        self.web_port = web_port if web_port is not None else web_port_of(app.conf)
        #: Where /metrics and /health listen: ``web_bind`` overrides the app's setting.
        self.web_bind = web_bind if web_bind is not None else app.conf.web_bind
        if self.web_port is None and app.conf.web_enabled is None and app.web_routes:
            # Pages and no word about the web: served, as Faust serves them (web_enabled=True).
            self.web_port = FAUST_WEB_PORT
        asgi = app.web_asgi  # serve_asgi: Faust's web_enabled default, the port it names
        if asgi is not None and app.conf.web_enabled is not False:
            if asgi.port is not None:
                self.web_port = asgi.port
            elif self.web_port is None:
                self.web_port = FAUST_WEB_PORT
            if asgi.host is not None:
                self.web_bind = asgi.host
        self.configure_logging = configure_logging
        self._signals = 0
        self.monitor = WorkerMonitor(app)
        self.metrics: Optional[WorkerMetrics] = None
        self.web: Optional[WebServer] = None
        if concurrency is not None:
            for agent in app.agents.values():
                agent.concurrency = concurrency

    def banner(self) -> str:
        """The start-up banner: app, broker, agents and their executors."""
        app = self.app
        lines = [f"sabot worker: app {app.id!r}",
                 f"  broker:   {redact_url(app.conf.broker)}",
                 *[f"  also:     {redact_url(t.url)}" for t in app.transports
                   if t.external and t.url != app.conf.broker],
                 f"  worker:   {app.conf.worker_id or '-'} (pid {os.getpid()})",
                 f"  fastpath: {'cython' if _fastpath() else 'pure-python'}",
                 f"  web:      {self._web_address()}",
                 f"  agents:   {len(app.agents)}"]
        for agent in app.agents.values():
            # Sinks as given: a channel or an agent has a name, a callable has not.
            sinks = ", ".join(getattr(s, "name", repr(s)) for s in agent.sinks) or "-"
            lines.append(f"    {agent.name} <- {agent.channel.name} [{agent.channel.transport_name}]"
                         f" executor={agent.executor} concurrency={agent.concurrency} sinks={sinks}")
        return "\n".join(lines)

    def _web_address(self) -> str:
        if self.web_port is None:
            return "off"
        if self.web is not None and self.web.addresses:
            return ", ".join(host_port(h, p) for h, p in self.web.addresses)
        shown = host_port(str(self.web_bind), self.web_port)
        return shown + " (a free port)" if self.web_port == 0 else shown

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
            try:
                if app.web_asgi is None:
                    await self._start_web()
                with app.quieted():
                    await app.start()
                if app.web_asgi is not None:  # as Faust: served once tables are recovered
                    await self._start_web()
            except (SabotError, OSError) as exc:
                logger.error("worker could not start: %s", _one_line(exc))
                await self._stop_quietly()
                return 1
            # Everything built at start (modules, the app, its services) lives
            # as long as the worker: keep it out of every collection, which
            # otherwise costs 20-30% of the per-message CPU on the fetch paths.
            gc.freeze()
            first = await self.monitor.snapshot()
            ticker = asyncio.ensure_future(self._status_loop(first))
            watcher = asyncio.ensure_future(self._watch_supervisor())
            try:
                await app.wait_for_stop_request()
            finally:
                ticker.cancel()
                watcher.cancel()
            logger.info("stopping (graceful, at most %.0fs)", app.conf.shutdown_timeout)
            if app.web_asgi is not None and self.web is not None:
                await self.web.stop()  # the ASGI app's lifespan ends while the app still runs
            try:
                await asyncio.wait_for(app.stop(), app.conf.shutdown_timeout + 5.0)
            except asyncio.TimeoutError:
                logger.error("graceful stop took longer than shutdown_timeout; exiting anyway")
                return 1
            logger.info("%s", self.summary(first, self.monitor.agents()))
            logger.info("stopped after %.1fs", time.monotonic() - started)
        finally:
            if self.web is not None:
                await self.web.stop()
        if app.crash_reasons:
            logger.error("worker stopped on error: %s", app.crash_reasons[0])
            return 1
        return 0

    async def _start_web(self) -> None:
        if self.web_port is None:
            return
        if not valid_bind_address(self.web_bind):
            raise SabotError(f"web_bind {self.web_bind!r} is not an IP address or host name")
        self.metrics = WorkerMetrics(self.monitor)
        asgi = self.app.web_asgi
        web = WebServer(self.metrics, self.web_port, host=self.web_bind,
                        asgi_app=asgi.asgi_app if asgi is not None else None)
        try:
            await web.start()
        except OSError as exc:
            raise SabotError(f"cannot serve metrics on port {self.web_port} of {self.web_bind}: "
                             f"{exc.strerror or exc}") from None
        self.web = web
        if asgi is not None:
            logger.info("serving %r on %s", asgi.asgi_app, " and ".join(web.urls))
            return
        logger.info("metrics on %s, health on /health, status page on /",
                    " and ".join(f"{url}/metrics" for url in web.urls))

    async def _status_loop(self, last: Snapshot) -> None:
        # Status lines every status_interval; the metrics histogram wants a
        # finer grain, so with --web-port the loop samples every second.
        interval = self.app.conf.status_interval
        tick = min(interval, 1.0) if self.metrics is not None else interval
        last_line = last
        while True:
            await asyncio.sleep(tick)
            try:
                now = await self.monitor.snapshot()
            except Exception as exc:  # status must never stop the worker
                logger.debug("status snapshot failed: %r", exc)
                continue
            if self.metrics is not None:
                self.metrics.observe(last, now)
            last = now
            if now.time - last_line.time >= interval - 1e-3:
                logger.info("%s", format_status(last_line, now))
                last_line = now

    async def _watch_supervisor(self) -> None:
        # A `--processes` child: stop gracefully once the supervising parent is
        # gone (killed with -9), rather than run on unsupervised.
        from .supervisor import SUPERVISOR_PID_ENV
        parent = os.environ.get(SUPERVISOR_PID_ENV, "")
        if not parent.isdigit():
            return
        while os.getppid() == int(parent):
            await asyncio.sleep(1.0)
        logger.error("supervisor (pid %s) is gone: stopping", parent)
        self.app.request_stop()

    def summary(self, first: Snapshot, agents: Sequence[AgentFigures]) -> str:
        """The final progress line: what each agent did over the whole run."""
        elapsed = max(time.monotonic() - first.time, 1e-9)
        dead = sum(self.monitor.dead_letters.counts.values())
        parts = [f"{a.name} {a.events_in:,} in / {a.events_out:,} out "
                 f"({a.events_in / elapsed:,.0f}/s, {a.errors} errors)" for a in agents]
        return f"processed in {elapsed:.2f}s: " + "; ".join(parts) + f"; dead letters {dead}"

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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _fastpath() -> bool:
    from . import fastpath_enabled
    return fastpath_enabled()
