"""The pages every Sabot web server has: ``/``, ``/status.json``, ``/metrics``, ``/health``.

``/metrics`` is Prometheus text (``sabot.web.metrics``); ``/health``
answers 200 while every agent runs and 503 otherwise; ``/`` is the live
status page (``sabot.web.status_page``) and ``/status.json`` what it polls
(``sabot.web.status``). A user page at the same path takes its place.
"""
from __future__ import annotations

from typing import Any, List

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .holdings import holdings
from .routes import Route
from .status_page import STATUS_PAGE
from .views import Response, View

__all__ = ["BUILTIN_ROUTES"]


class SiteView(View):
    """A built-in view: ``self.web`` is the ``Site`` serving it (its metrics and board)."""

    @property
    def site(self) -> Any:
        return self.web


class MetricsView(SiteView):
    """Prometheus text of a fresh snapshot."""

    async def get(self, request: Any, **kwargs: Any) -> Response:
        body = await self.site.metrics.render()
        return self.bytes(body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class HealthView(SiteView):
    """200 while every agent runs, 503 otherwise; which agents run and what the worker holds."""

    async def get(self, request: Any, **kwargs: Any) -> Response:
        agents = self.site.metrics.monitor.agents()
        ok = all(a.running for a in agents)
        return self.json({"status": "ok" if ok else "unhealthy",
                          "agents": {a.name: a.running for a in agents},
                          "worker": holdings(self.site.metrics.monitor.app)},
                         status=200 if ok else 503)


class StatusPageView(SiteView):
    """The live status page."""

    async def get(self, request: Any, **kwargs: Any) -> Response:
        return self.html(STATUS_PAGE, headers={"Cache-Control": "no-store"})


class StatusJsonView(SiteView):
    """Agents, lag, tables, dead letters and pipelines as JSON."""

    async def get(self, request: Any, **kwargs: Any) -> Response:
        return self.json(await self.site.board.status(), headers={"Cache-Control": "no-store"})


def _route(path: str, view: type, name: str) -> Route:
    view.view_name = name  # type: ignore[attr-defined]
    view.view_path = path  # type: ignore[attr-defined]
    return Route(path, view, name)


#: The built-in pages, in the order they are served.
BUILTIN_ROUTES: List[Route] = [
    _route("/", StatusPageView, "sabot:status_page"),
    _route("/status.json", StatusJsonView, "sabot:status"),
    _route("/metrics", MetricsView, "sabot:metrics"),
    _route("/health", HealthView, "sabot:health"),
]
