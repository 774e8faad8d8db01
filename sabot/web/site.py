"""``Site``: the views of one app, ready to answer requests, whatever serves them.

The worker's aiohttp server (``sabot.web.server``) and the ASGI integration
(``sabot.contrib.asgi``) both hold a ``Site``: it makes one instance of
every view (the app's pages, then the built-in ones whose path is free),
owns the metrics and the status board the built-in pages read, and calls a
view so that a failure never escapes: a ``WebError`` answers its status, any
other exception is logged with its traceback and answers 500 with a body
that says nothing about it (no traceback, no value, no secret), and the
server goes on serving.
"""
from __future__ import annotations

import logging
from typing import Any, List, Optional, Tuple

from aiohttp import web as aioweb

from ..monitor import WorkerMonitor
from ..types import AppT
from .builtin import BUILTIN_ROUTES
from .metrics import WorkerMetrics
from .routes import Route, url_for
from .status import StatusBoard
from .views import View, json_response

__all__ = ["Site"]

logger = logging.getLogger("sabot.web")


class Site:
    """Every view of ``app`` and how to call one safely."""

    def __init__(self, app: AppT, metrics: Optional[WorkerMetrics] = None) -> None:
        self.app = app
        self.metrics = metrics if metrics is not None else WorkerMetrics(WorkerMonitor(app))
        self.board = StatusBoard(self.metrics.monitor)
        self._views: Optional[List[Tuple[Route, View]]] = None

    @property
    def routes(self) -> List[Route]:
        """The app's pages, then each built-in page whose path no page took."""
        mine: List[Route] = list(self.app.web_routes)
        taken = {r.path for r in mine}
        return mine + [r for r in BUILTIN_ROUTES if r.path not in taken]

    def views(self) -> List[Tuple[Route, View]]:
        """``(route, view instance)`` of every route (made once)."""
        if self._views is None:
            self._views = [(route, route.view(self.app, self)) for route in self.routes]
        return self._views

    def url_for(self, view_name: str, **kwargs: Any) -> str:
        """The path of the view called ``view_name``."""
        return url_for(self.routes, view_name, **kwargs)

    async def call(self, view: View, request: Any) -> aioweb.StreamResponse:
        """``view``'s answer to ``request``; 500 (logged, nothing leaked) if it fails."""
        try:
            response = await view(request)
        except aioweb.HTTPException:
            raise  # aiohttp's own answers (a redirect, ...) are responses
        except Exception as exc:
            logger.error("view %s failed on %s %s: %s", view.view_name, request.method,
                         request.path, type(exc).__name__, exc_info=True)
            return json_response({"error": "Internal server error."}, status=500)
        if not isinstance(response, aioweb.StreamResponse):
            logger.error("view %s returned %s, not a response (use self.json(...), "
                         "self.text(...))", view.view_name, type(response).__name__)
            return json_response({"error": "Internal server error."}, status=500)
        return response
