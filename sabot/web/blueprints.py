"""``Blueprint``: a reusable set of pages, registered on an app (Faust's ``web.Blueprint``).

.. code-block:: python

    from sabot import web

    users = web.Blueprint("users")

    @users.route("/{user_id}/", name="detail")
    class UserView(web.View):
        async def get(self, request, user_id):
            return self.json({"user": user_id})

    users.register(app, url_prefix="/user/")   # GET /user/42/

Routes are kept until ``register``, which calls ``app.page`` for each one
with the prefix in front and the name ``"<blueprint>:<name>"``. One blueprint
can be registered on several apps.
"""
from __future__ import annotations

import mimetypes
import pathlib
import warnings
from typing import Any, Callable, List, Mapping, NamedTuple, Optional, Type, Union

from ..exceptions import SabotCompatibilityWarning
from .exceptions import NotFound
from .views import View

__all__ = ["Blueprint"]


class FutureRoute(NamedTuple):
    """A route waiting for ``register``."""

    uri: str
    name: str
    handler: Any
    base: Type[View]


class FutureStaticRoute(NamedTuple):
    """A folder of files waiting for ``register``."""

    uri: str
    file_or_directory: pathlib.Path
    name: str


class _NoCache:
    """What ``Blueprint.cache`` gives: Sabot does not cache views (said once, by a warning)."""

    def view(self, timeout: Any = None, include_headers: bool = False,
             key_prefix: Optional[str] = None,
             **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Leave the view method as it is (every request runs it)."""
        def decorator(fun: Callable[..., Any]) -> Callable[..., Any]:
            return fun
        return decorator


class Blueprint:
    """A reusable web app: routes now, pages on ``register(app, url_prefix=)``."""

    view_name_separator = ":"

    def __init__(self, name: str, *, url_prefix: Optional[str] = None) -> None:
        self.name = name
        self.url_prefix = url_prefix
        self.routes: List[FutureRoute] = []
        self.static_routes: List[FutureStaticRoute] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.name}>"

    def cache(self, timeout: Any = None, include_headers: bool = False,
              key_prefix: Optional[str] = None, backend: Any = None) -> _NoCache:
        """Faust's response cache: not in Sabot (a warning; views run on every request)."""
        warnings.warn(f"blueprint {self.name!r}: Faust's cache is not supported by Sabot "
                      f"(views are not cached)", SabotCompatibilityWarning, stacklevel=2)
        return _NoCache()

    def route(self, uri: str, *, name: Optional[str] = None,
              cors_options: Optional[Mapping[str, Any]] = None,
              base: Type[View] = View) -> Callable[[Any], Any]:
        """Decorate a view class or ``async def`` handler to serve ``uri`` once registered."""
        if cors_options:
            warnings.warn(f"blueprint {self.name!r}: Faust's cors_options not supported by "
                          f"Sabot (ignored)", SabotCompatibilityWarning, stacklevel=2)

        def decorator(handler: Any) -> Any:
            self.routes.append(FutureRoute(uri, name or handler.__name__, handler, base))
            return handler
        return decorator

    def static(self, uri: str, file_or_directory: Union[str, pathlib.Path], *,
               name: Optional[str] = None) -> None:
        """Serve the files of a folder (or one file) under ``uri``."""
        full = name or "static"
        if not full.startswith(self.name + "."):
            full = f"{self.name}.{full}"
        self.static_routes.append(FutureStaticRoute(uri, pathlib.Path(file_or_directory), full))

    def register(self, app: Any, *, url_prefix: Optional[str] = None) -> None:
        """Add every route to ``app`` as a page, ``url_prefix`` in front."""
        prefix = url_prefix or self.url_prefix
        for route in self.routes:
            uri = _with_prefix(route.uri, prefix)
            app.page(uri[1:] if uri.startswith("//") else uri,
                     name=self.view_name_separator.join([self.name, route.name]),
                     base=route.base)(route.handler)
        for static in self.static_routes:
            uri = _with_prefix(static.uri, prefix).rstrip("/")
            app.page(uri + "/{filename:.+}", name=static.name)(_static_view(static.file_or_directory))

    def init_webserver(self, web: Any) -> None:
        """Called when a web server starts serving the blueprint."""
        self.on_webserver_init(web)

    def on_webserver_init(self, web: Any) -> None:
        """Override to act when a web server starts serving the blueprint."""


def _with_prefix(url: str, prefix: Optional[str]) -> str:
    if prefix:
        return prefix.rstrip("/") + "/" + url.lstrip("/")
    return url


def _static_view(root: pathlib.Path) -> Type[View]:
    """A view serving files under ``root``; nothing outside it (``..`` is refused)."""
    base = root.resolve()

    class StaticFiles(View):
        async def get(self, request: Any, filename: str = "") -> Any:
            target = base if base.is_file() else (base / filename).resolve()
            if not base.is_file() and base not in target.parents:
                raise NotFound()
            if not target.is_file():
                raise NotFound()
            ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            return self.bytes(target.read_bytes(), content_type=ctype)

    return StaticFiles
