"""``WebServer``: the worker's web server on aiohttp (``sabot worker --web-port N``).

It serves the app's ``Site`` (its pages, ``/``, ``/status.json``,
``/metrics`` and ``/health``), or the ASGI app given to ``serve_asgi``
(``sabot.web.asgi_bridge``), on the worker's own event loop, so a request
never races the agents it reads. It listens on ``web_bind``
(``--web-bind``): the loopback address unless told otherwise, ``0.0.0.0``
for every IPv4 interface, or a host name (every address it resolves to).
"""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, List, Optional, Tuple

from aiohttp import web as aioweb

from ..canonical import forget_served, record_served
from .asgi_bridge import ASGIBridge
from .metrics import WorkerMetrics, host_port
from .site import Site
from .views import View

__all__ = ["WebServer", "MetricsServer"]

logger = logging.getLogger("sabot.web")


class WebServer:
    """Serves the app of ``metrics`` over HTTP on ``host:port`` (port 0: any free port)."""

    def __init__(self, metrics: WorkerMetrics, port: int, host: str = "127.0.0.1", *,
                 asgi_app: Any = None) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self.site = Site(metrics.monitor.app, metrics)
        #: ``serve_asgi``: an ASGI app answering every request instead of the pages.
        self.asgi = ASGIBridge(asgi_app) if asgi_app is not None else None
        self._runner: Optional[aioweb.AppRunner] = None

    def application(self) -> aioweb.Application:
        """The aiohttp application with a route per view and method."""
        web_app = aioweb.Application()
        if self.asgi is not None:
            web_app.router.add_route("*", "/{tail:.*}", self.asgi.handle)
            return web_app
        for route, view in self.site.views():
            handler = self._handler(view)
            for method in sorted(view.get_methods()):
                web_app.router.add_route(method, route.path, handler)
        return web_app

    def _handler(self, view: View) -> Callable[[aioweb.Request], Awaitable[Any]]:
        site = self.site

        async def handle(request: aioweb.Request) -> aioweb.StreamResponse:
            return await site.call(view, request)
        handle.__doc__ = view.__doc__
        return handle

    async def start(self) -> None:
        """Listen; ``port`` then holds the bound port and ``addresses`` every bound address."""
        runner = aioweb.AppRunner(self.application(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await aioweb.TCPSite(runner, self.host, self.port).start()
            if self.asgi is not None:
                await self.asgi.startup()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = self.addresses[0][1]
        record_served(self.site.app, self.host, self.port)  # the default canonical_url

    @property
    def addresses(self) -> List[Tuple[str, int]]:
        """``(address, port)`` of every listening socket (empty before ``start``)."""
        if self._runner is None:
            return []
        out = []
        for address in self._runner.addresses:
            host, port = address[:2]  # IPv6 adds flow info and scope id
            out.append((host, port))
        return out

    @property
    def urls(self) -> List[str]:
        """``http://address:port`` of every listening socket."""
        return [f"http://{host_port(host, port)}" for host, port in self.addresses]

    async def stop(self) -> None:
        """Stop listening, finish the requests in progress and close the sockets."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            forget_served(self.site.app)
            try:
                await runner.cleanup()
            finally:
                if self.asgi is not None:
                    await self.asgi.shutdown()


#: The name of the worker's server before it served pages (``/metrics`` and ``/health`` only).
MetricsServer = WebServer
