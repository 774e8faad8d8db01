"""The app's web routes: what ``@app.page`` registers and every server serves.

``app.web_routes`` lists ``Route(path, view, name)`` in registration order;
the worker's aiohttp server (``sabot.web.server``) and the ASGI integration
(``sabot.contrib.asgi``) both serve that one list, after the built-in pages
(``sabot.web.builtin``) unless a user page takes the same path.
"""
from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, List, Mapping, NamedTuple, Optional, Sequence, Type
from urllib.parse import quote

from ..exceptions import ConfigurationError, SabotCompatibilityWarning
from .views import View

__all__ = ["Route", "ResourceOptions", "make_page", "url_for"]


class ResourceOptions(NamedTuple):
    """Faust's CORS options of a route (``cors_options=``): accepted, not applied (a warning)."""

    allow_credentials: bool = False
    expose_headers: Any = ()
    allow_headers: Any = ()
    max_age: Optional[int] = None
    allow_methods: Any = ()


class Route(NamedTuple):
    """One page: its path (aiohttp's ``/word/{word}`` syntax), view class and name."""

    path: str
    view: Type[View]
    name: str


def make_page(routes: List[Route], path: str, handler: Any, *, base: Type[View] = View,
              name: Optional[str] = None,
              cors_options: Optional[Mapping[str, Any]] = None) -> Type[View]:
    """Register ``handler`` (a ``View`` subclass or ``async def fun(view, request)``) at ``path``."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigurationError(f"page path must be a string starting with '/', got {path!r}")
    if cors_options:
        warnings.warn("app.page: Faust's cors_options not supported by Sabot (ignored; "
                      "put a CORS middleware in front, or mount the pages in an ASGI app)",
                      SabotCompatibilityWarning, stacklevel=3)
    if inspect.isclass(handler):
        if not issubclass(handler, View):
            raise TypeError("When decorating class, it must be subclass of View")
        view = handler
    elif callable(handler):
        if not inspect.iscoroutinefunction(handler):
            raise ConfigurationError(
                f"page {path!r}: {getattr(handler, '__qualname__', handler)!r} must be an "
                f"async function (async def get(self, request))")
        view = base.from_handler(handler)
    else:
        raise TypeError(f"View handler must be callable, not {handler!r}")
    if any(r.path == path for r in routes):
        raise ConfigurationError(f"page {path!r} is defined twice")
    view.view_name = name or view.__name__
    view.view_path = path
    routes.append(Route(path, view, view.view_name))
    return view


def url_for(routes: Sequence[Route], view_name: str, **kwargs: Any) -> str:
    """The path of the view called ``view_name``, placeholders filled (URL-quoted)."""
    for route in routes:
        if route.name == view_name:
            return route.path.format(**{k: quote(str(v), safe="") for k, v in kwargs.items()})
    raise KeyError(f"No view with name {view_name!r} found")


def page_decorator(routes: List[Route], path: str, *, base: Type[View] = View,
                   name: Optional[str] = None,
                   cors_options: Optional[Mapping[str, Any]] = None
                   ) -> Callable[[Any], Type[View]]:
    """``@app.page(path)``: the decorator that registers into ``routes``."""
    def decorator(handler: Any) -> Type[View]:
        return make_page(routes, path, handler, base=base, name=name, cors_options=cors_options)
    return decorator
