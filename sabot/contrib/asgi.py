"""Sabot inside an ASGI app (FastAPI, Starlette): its lifespan and its pages.

.. code-block:: python

    from fastapi import FastAPI
    from sabot.contrib.asgi import lifespan, pages

    api = FastAPI(lifespan=lifespan(app))   # the Sabot app starts and stops with the server
    api.mount("/sabot", pages(app))          # its @app.page views, /, /status.json, /metrics, /health

``lifespan(app)`` starts the Sabot app (agents, tables, transports) when the
ASGI server starts and stops it gracefully when the server stops; another
lifespan can run inside it (``lifespan(app, then=other)``), or the app can run
inside another (``async with app_running(app): ...``); ``LifespanMiddleware``
does it for an ASGI app without a lifespan hook (Django). ``serve_asgi(app,
api)`` goes the other way: ``sabot worker`` serves the ASGI app. Faust's names
(``faust_lifespan``, ``faust_app_running``, ``FaustLifespanMiddleware``) are
the same functions. ``pages(app)`` is
a plain ASGI application serving the app's ``Site`` (``sabot.web.site``):
the same views as the worker's aiohttp server, the same answers, and the
same guard (a view that raises answers 500 and nothing of the error is
shown). Views get a request with aiohttp's reading API (``match_info``,
``query``, ``headers``, ``await request.json()``, ...); bodies larger than
``client_max_size`` (aiohttp's default, 1 MiB) answer 413 unread. Nothing
here imports FastAPI or Starlette: any ASGI server or framework will do.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import warnings
from http.cookies import SimpleCookie
from typing import (TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Dict, List, Mapping, MutableMapping,
                    Optional, Pattern, Tuple)
from urllib.parse import parse_qsl

from aiohttp import web as aioweb
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

from ..exceptions import ConfigurationError, SabotCompatibilityWarning
from ..types import AppT
from ..web.routes import Route
from ..web.site import Site
from ..web.views import View, json_response

if TYPE_CHECKING:
    from ..app import App

__all__ = ["app_running", "lifespan", "LifespanMiddleware", "pages", "SabotPages", "ASGIRequest",
           "serve_asgi", "AsgiService",
           "faust_app_running", "faust_lifespan", "FaustLifespanMiddleware"]

logger = logging.getLogger("sabot.web")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: aiohttp's default ``client_max_size``: the largest request body read.
CLIENT_MAX_SIZE = 1024 ** 2


@contextlib.asynccontextmanager
async def app_running(app: "App", *, finalize: bool = True, discover: Optional[bool] = None,
                      stop_timeout: Optional[float] = None) -> AsyncIterator["App"]:
    """Start ``app`` on the running loop and stop it on exit (Faust's ``faust_app_running``).

    ``discover`` imports the app's modules first (None: when the
    ``autodiscover`` setting asks for it). An app that was already running
    is left running. ``stop_timeout`` bounds the graceful stop (None: the
    app's own ``shutdown_timeout`` applies). ``finalize`` is Faust's: a Sabot
    app is complete once made, there is nothing to finalize.
    """
    if discover is None:
        app.maybe_discover()
    elif discover:
        app.discover()
    started = await app.maybe_start()
    try:
        yield app
    finally:
        if started:
            if stop_timeout is None:
                await app.stop()
            else:
                await asyncio.wait_for(app.stop(), timeout=stop_timeout)
            if app.crash_reasons:
                logger.error("sabot app %s stopped on error: %s", app.id, app.crash_reasons[0])


def lifespan(app: "App", *, then: Optional[Callable[[Any], Any]] = None,
             opentelemetry: Optional[bool] = None,
             **kwargs: Any) -> Callable[..., contextlib.AbstractAsyncContextManager[Any]]:
    """A Starlette/FastAPI ``lifespan=``: ``app`` runs while the server does (Faust's ``faust_lifespan``).

    ``then`` is another lifespan (a function of the ASGI app returning an
    async context manager) run while the Sabot app runs; what it yields is
    the lifespan's state. Keyword arguments go to ``app_running``.
    ``opentelemetry=True`` (Faust instruments the ASGI app) is not supported
    and warns.
    """
    if opentelemetry:
        warnings.warn("lifespan: Faust's opentelemetry instrumentation is not supported by "
                      "Sabot (the ASGI app is not instrumented)", SabotCompatibilityWarning,
                      stacklevel=2)

    @contextlib.asynccontextmanager
    async def run(*args: Any, **_: Any) -> AsyncIterator[Any]:
        async with app_running(app, **kwargs):
            if then is None:
                yield None  # None, not the app: Starlette takes a value as lifespan state
            else:
                async with then(*args) as state:
                    yield state
    return run


class LifespanMiddleware:
    """Start and stop a Sabot app with any ASGI app (Faust's ``FaustLifespanMiddleware``).

    For frameworks without a lifespan hook (Django's ``get_asgi_application()``):
    HTTP and WebSocket scopes go to ``asgi_app`` unchanged; the middleware
    answers the lifespan scope itself, starting the app before it reports the
    startup complete and stopping it before it reports the shutdown complete.
    A failure is reported as ``lifespan.startup.failed`` (or shutdown).
    """

    def __init__(self, asgi_app: Any, sabot_app: "App", **kwargs: Any) -> None:
        self.asgi_app = asgi_app
        self.sabot_app = sabot_app
        self.options = kwargs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "lifespan":
            await self.asgi_app(scope, receive, send)
            return
        phase = "startup"
        try:
            message = await receive()
            _expect(message, "lifespan.startup")
            async with app_running(self.sabot_app, **self.options):
                await send({"type": "lifespan.startup.complete"})
                phase = "shutdown"
                _expect(await receive(), "lifespan.shutdown")
        except Exception as exc:
            await send({"type": f"lifespan.{phase}.failed", "message": str(exc)})
        else:
            await send({"type": "lifespan.shutdown.complete"})


def _expect(message: Message, expected: str) -> None:
    if message.get("type") != expected:
        raise RuntimeError(f"Expected ASGI message {expected!r}, received {message.get('type')!r}")


class AsgiService:
    """What ``serve_asgi`` registered: the ASGI app and where the worker serves it."""

    def __init__(self, asgi_app: Any, host: Optional[str], port: Optional[int]) -> None:
        self.asgi_app = asgi_app
        self.host = host
        self.port = port

    def __repr__(self) -> str:
        return f"<AsgiService {self.asgi_app!r} host={self.host!r} port={self.port!r}>"


def serve_asgi(app: "App", asgi_app: Any, *, host: Optional[str] = None,
               port: Optional[int] = None, **uvicorn_options: Any) -> AsgiService:
    """Make ``asgi_app`` the worker's web application (Faust's ``serve_asgi``).

    ``sabot worker`` then serves it instead of the app's pages and the
    built-in ones (as in Faust: ``@app.page`` and ``/metrics`` are not
    mounted), on the worker's event loop, once the app has started (tables
    recovered), its lifespan run at start and stop. It listens on ``host``
    (default: ``web_bind``) and ``port`` (default: ``web_port`` or
    ``--web-port``, else Faust's 6066), unless ``web_enabled=False``. Faust
    runs uvicorn; Sabot serves it on its own aiohttp server, so uvicorn
    options are not used and warn.
    """
    if uvicorn_options:
        warnings.warn(f"serve_asgi: uvicorn options not supported by Sabot (ignored): "
                      f"{', '.join(sorted(uvicorn_options))}", SabotCompatibilityWarning,
                      stacklevel=2)
    if port is not None and (not isinstance(port, int) or isinstance(port, bool)
                             or not 0 <= port < 65536):
        raise ConfigurationError(f"serve_asgi: port must be a port number, got {port!r}")
    service = AsgiService(asgi_app, host, port)
    app.web_asgi = service
    return service


#: Faust's names (``faust.contrib.asgi``), for apps ported by changing their imports.
faust_app_running = app_running
faust_lifespan = lifespan
FaustLifespanMiddleware = LifespanMiddleware


def pages(app: AppT) -> "SabotPages":
    """An ASGI app serving ``app``'s pages (mount it: ``api.mount("/sabot", pages(app))``)."""
    return SabotPages(app)


def _compile(path: str) -> Pattern[str]:
    """aiohttp's route syntax as a regex: ``{name}`` is one segment, ``{name:re}`` matches ``re``."""
    out, pos = [], 0
    for found in re.finditer(r"\{(\w+)(?::((?:[^{}]|\{[^{}]*\})*))?\}", path):
        out.append(re.escape(path[pos:found.start()]))
        out.append(f"(?P<{found.group(1)}>{found.group(2) or '[^{}/]+'})")
        pos = found.end()
    out.append(re.escape(path[pos:]))
    return re.compile("^" + "".join(out) + "$")


class ASGIRequest:
    """A request read from ASGI with the parts of aiohttp's ``web.Request`` views use."""

    def __init__(self, scope: Scope, receive: Receive, path: str,
                 match_info: Mapping[str, str]) -> None:
        self.scope = scope
        self._receive = receive
        self.method: str = scope["method"]
        #: The path within the mounted pages (what the routes match).
        self.path = path
        self.match_info: Dict[str, str] = dict(match_info)
        raw_query = scope.get("query_string", b"").decode("latin-1")
        self.query_string = raw_query
        self.query: MultiDictProxy[str] = MultiDictProxy(
            MultiDict(parse_qsl(raw_query, keep_blank_values=True)))
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])))
        full = scope.get("root_path", "") + path
        self.rel_url = URL.build(path=full, query_string=raw_query, encoded=False)
        try:
            base = URL(f"{scope.get('scheme', 'http')}://{self.headers.get('Host', 'localhost')}")
            self.url = base.join(self.rel_url)
        except ValueError:  # a Host header that is no host: the request is still answered
            self.url = URL("http://localhost").join(self.rel_url)
        self._body: Optional[bytes] = None

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "application/octet-stream").split(";")[0].strip()

    @property
    def cookies(self) -> Mapping[str, str]:
        jar: SimpleCookie = SimpleCookie(self.headers.get("Cookie", ""))
        return {k: m.value for k, m in jar.items()}

    @property
    def can_read_body(self) -> bool:
        return self._body is None or bool(self._body)

    @property
    def body_exists(self) -> bool:
        return "Content-Length" in self.headers or "Transfer-Encoding" in self.headers

    async def read(self) -> bytes:
        """The whole body (read once); 413 past ``CLIENT_MAX_SIZE``."""
        if self._body is None:
            chunks: List[bytes] = []
            size = 0
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > CLIENT_MAX_SIZE:
                    raise aioweb.HTTPRequestEntityTooLarge(max_size=CLIENT_MAX_SIZE,
                                                           actual_size=size)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            self._body = b"".join(chunks)
        return self._body

    async def text(self) -> str:
        return (await self.read()).decode("utf-8")

    async def json(self, *, loads: Callable[[str], Any] = json.loads) -> Any:
        return loads(await self.text())

    async def post(self) -> MultiDictProxy[str]:
        """A form body (``application/x-www-form-urlencoded``)."""
        if self.content_type != "application/x-www-form-urlencoded":
            return MultiDictProxy(MultiDict())
        return MultiDictProxy(MultiDict(parse_qsl((await self.read()).decode("utf-8"),
                                                  keep_blank_values=True)))


class SabotPages:
    """The ASGI application of one app's ``Site``."""

    def __init__(self, app: AppT) -> None:
        self.site = Site(app)
        self._table: Optional[List[Tuple[Pattern[str], Route, View]]] = None

    def url_for(self, view_name: str, **kwargs: Any) -> str:
        """The path of a view within the mounted pages."""
        return self.site.url_for(view_name, **kwargs)

    def _routes(self) -> List[Tuple[Pattern[str], Route, View]]:
        if self._table is None:
            self._table = [(_compile(route.path), route, view)
                           for route, view in self.site.views()]
        return self._table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # mounted pages have no lifespan of their own
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        root = scope.get("root_path", "")
        path = scope["path"]
        if root and path.startswith(root):
            path = path[len(root):]
        if not path:  # "/sabot": the page's relative links need "/sabot/"
            await self._send(send, scope, aioweb.Response(
                status=307, headers={"Location": root + "/"}))
            return
        response = await self._answer(scope, receive, path)
        await self._send(send, scope, response)

    async def _answer(self, scope: Scope, receive: Receive, path: str) -> aioweb.Response:
        allowed: List[str] = []
        for pattern, route, view in self._routes():
            found = pattern.match(path)
            if found is None:
                continue
            methods = view.get_methods()
            if scope["method"] not in methods:
                allowed.extend(sorted(methods))
                continue
            request = ASGIRequest(scope, receive, path, found.groupdict())
            try:
                answer = await self.site.call(view, request)
            except aioweb.HTTPException as exc:
                return aioweb.Response(status=exc.status, text=exc.text or exc.reason,
                                       headers=exc.headers)
            if not isinstance(answer, aioweb.Response):  # a streamed response
                logger.error("view %s: streamed responses are not served over ASGI",
                             view.view_name)
                return json_response({"error": "Internal server error."}, status=500)
            return answer
        if allowed:
            return json_response({"error": "Method not allowed."}, status=405,
                                 headers={"Allow": ",".join(allowed)})
        return json_response({"error": "Not found."}, status=404)

    async def _send(self, send: Send, scope: Scope, response: aioweb.Response) -> None:
        body = response.body
        data = body if isinstance(body, (bytes, bytearray)) else b""
        headers = [(k.encode("latin-1"), v.encode("latin-1"))
                   for k, v in response.headers.items() if k.lower() != "content-length"]
        headers.append((b"content-length", str(len(data)).encode()))
        await send({"type": "http.response.start", "status": response.status,
                    "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else bytes(data)})
