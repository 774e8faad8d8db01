"""Sabot's web layer: the worker's server, views, blueprints (Faust's ``faust.web``).

``from sabot import web`` gives what ``from faust import web`` gives:
``web.View``, ``web.Blueprint``, ``web.Request``, ``web.Response`` and
``web.exceptions``. Pages are registered with ``@app.page(path)``; the
worker serves them with ``/``, ``/status.json``, ``/metrics`` and ``/health``
(``WebServer``); ``sabot.contrib.asgi`` serves them inside a FastAPI or
Starlette app.
"""
from . import exceptions
from .blueprints import Blueprint
from .metrics import WorkerMetrics, host_port
from .routes import ResourceOptions, Route
from .server import MetricsServer, WebServer
from .site import Site
from .views import Request, Response, View, gives_model, takes_model

#: Faust's name for what serves the views (``view.web``).
Web = Site

__all__ = ["View", "Blueprint", "Request", "Response", "exceptions", "Route", "Site", "Web",
           "takes_model", "gives_model", "ResourceOptions",
           "WebServer", "MetricsServer", "WorkerMetrics", "host_port"]
