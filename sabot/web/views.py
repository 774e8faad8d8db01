"""``View``: a class-based web view, as Faust's ``faust.web.View``.

A view answers the HTTP methods it defines (``get``, ``post``, ``put``,
``patch``, ``delete``, ``options``, ``search``; ``head`` falls back on
``get``), each ``async def get(self, request, **match_info)`` where the
keyword arguments are the route's ``{placeholders}``. It returns a response
built by ``self.json(obj)``, ``self.text``, ``self.html``, ``self.bytes``,
``self.error(status, reason)`` or ``self.notfound()``; or it raises one of
``sabot.web.exceptions`` (``raise self.NotFound()``), which answers that
status with ``{"error": detail}``.

``request`` is aiohttp's ``web.Request`` under the worker (as in Faust) and
an object with the same reading API under ``sabot.contrib.asgi``.
Responses are aiohttp ``web.Response`` objects either way.
"""
from __future__ import annotations

import functools
from typing import (Any, Awaitable, Callable, ClassVar, Dict, Mapping, MutableMapping, Optional,
                    Set, Type, cast, no_type_check)

from aiohttp import web as aioweb

from ..models.json_layout import dumps as json_dumps
from ..types import AppT, WebT
from . import exceptions
from .exceptions import WebError

__all__ = ["View", "Request", "Response", "json_response", "text_response", "takes_model",
           "gives_model"]

#: The request a view gets (aiohttp's, as Faust's aiohttp driver gives).
Request = aioweb.Request
#: The response a view returns.
Response = aioweb.Response

_bytes = bytes  # ``View.bytes`` hides the builtin inside the class

#: The HTTP methods a view may define, lowercase.
METHODS = ("head", "get", "post", "put", "patch", "delete", "options", "search")


def text_response(value: str, *, content_type: Optional[str] = None, status: int = 200,
                  reason: Optional[str] = None,
                  headers: Optional[MutableMapping[str, str]] = None) -> Response:
    """A text response (``text/plain`` unless ``content_type`` says otherwise)."""
    return aioweb.Response(text=value, content_type=content_type or "text/plain",
                           status=status, reason=reason, headers=headers)


def json_response(value: Any, *, content_type: Optional[str] = None, status: int = 200,
                  reason: Optional[str] = None,
                  headers: Optional[MutableMapping[str, str]] = None) -> Response:
    """``value`` as JSON, written as Faust writes it (records, dates, decimals)."""
    return aioweb.Response(body=json_dumps(value), content_type=content_type or "application/json",
                           charset="utf-8", status=status, reason=reason, headers=headers)


def bytes_response(value: _bytes, *, content_type: Optional[str] = None, status: int = 200,
                   reason: Optional[str] = None,
                   headers: Optional[MutableMapping[str, str]] = None) -> Response:
    """A binary response."""
    return aioweb.Response(body=value, content_type=content_type, status=status,
                           reason=reason, headers=headers)


class View:
    """A web view (an HTTP endpoint): subclass it and define ``get``, ``post``, ..."""

    ServerError: ClassVar[Type[WebError]] = exceptions.ServerError
    ValidationError: ClassVar[Type[WebError]] = exceptions.ValidationError
    ParseError: ClassVar[Type[WebError]] = exceptions.ParseError
    NotAuthenticated: ClassVar[Type[WebError]] = exceptions.NotAuthenticated
    PermissionDenied: ClassVar[Type[WebError]] = exceptions.PermissionDenied
    NotFound: ClassVar[Type[WebError]] = exceptions.NotFound

    #: Set by ``app.page``: the view's name (``url_for``) and its path.
    view_name: str
    view_path: str

    methods: Mapping[str, Callable[..., Awaitable[Any]]]

    @classmethod
    def from_handler(cls, fun: Callable[..., Awaitable[Any]]) -> Type["View"]:
        """A view class whose ``get`` is ``fun(self, request, **match_info)``."""
        if not callable(fun):
            raise TypeError(f"View handler must be callable, not {fun!r}")
        return type(fun.__name__, (cls,), {"get": fun, "__doc__": fun.__doc__,
                                           "__module__": fun.__module__})

    def __init__(self, app: AppT, web: WebT) -> None:
        self.app = app
        self.web = web
        self.methods = {name: getattr(self, name) for name in METHODS}
        self.__post_init__()

    def __post_init__(self) -> None:
        """Override to set the view up (called at the end of ``__init__``)."""

    @classmethod
    def get_methods(cls) -> Set[str]:
        """The HTTP methods the view answers (uppercase; HEAD always)."""
        out = {"HEAD"}
        for name in METHODS:
            if getattr(cls, name) is not getattr(View, name):
                out.add(name.upper())
        return out

    async def __call__(self, request: Any) -> Any:
        """Answer ``request``."""
        return await self.dispatch(request)

    async def dispatch(self, request: Any) -> Any:
        """Call the method's handler with the route's match info; a ``WebError`` answers its code."""
        method = self.methods.get(request.method.lower())
        if method is None:
            return self.error(405, "Method not allowed.")
        kwargs = dict(request.match_info or {})
        try:
            return await method(request, **kwargs)
        except WebError as exc:
            return await self.on_request_error(request, exc)

    async def on_request_error(self, request: Any, exc: WebError) -> Response:
        """The response for a ``WebError`` raised by a handler: ``{"error": detail}``."""
        return self.error(int(exc.code), exc.detail, **exc.extra_context)

    def path_for(self, view_name: str, **kwargs: Any) -> str:
        """The URL path of the view called ``view_name`` (placeholders from ``kwargs``)."""
        return self.web.url_for(view_name, **kwargs)

    def url_for(self, view_name: str, _base_url: Optional[str] = None, **kwargs: Any) -> str:
        """The URL of the view called ``view_name`` under ``_base_url`` (``canonical_url``)."""
        base = _base_url if _base_url is not None else str(self.app.conf.get("canonical_url") or "")
        return base.rstrip("/") + "/" + self.path_for(view_name, **kwargs).lstrip("/")

    # -- handlers: override the ones the view answers ------------------------
    @no_type_check  # subclasses take the route's placeholders as arguments
    async def head(self, request: Any, **kwargs: Any) -> Any:
        """HEAD: the GET answer without its body."""
        return await self.get(request, **kwargs)

    @no_type_check  # subclasses take the route's placeholders as arguments
    async def get(self, request: Any, **kwargs: Any) -> Any:
        """Override to answer GET."""
        raise exceptions.MethodNotAllowed("Method GET not allowed.")

    @no_type_check  # subclasses take the route's placeholders as arguments
    async def post(self, request: Any, **kwargs: Any) -> Any:
        """Override to answer POST."""
        raise exceptions.MethodNotAllowed("Method POST not allowed.")

    @no_type_check  # subclasses take the route's placeholders as arguments
    async def put(self, request: Any, **kwargs: Any) -> Any:
        """Override to answer PUT."""
        raise exceptions.MethodNotAllowed("Method PUT not allowed.")

    @no_type_check  # subclasses take the route's placeholders as arguments
    async def patch(self, request: Any, **kwargs: Any) -> Any:
        """Override to answer PATCH."""
        raise exceptions.MethodNotAllowed("Method PATCH not allowed.")

    @no_type_check  # subclasses take the route's placeholders as arguments
    async def delete(self, request: Any, **kwargs: Any) -> Any:
        """Override to answer DELETE."""
        raise exceptions.MethodNotAllowed("Method DELETE not allowed.")

    @no_type_check  # subclasses take the route's placeholders as arguments
    async def options(self, request: Any, **kwargs: Any) -> Any:
        """Override to answer OPTIONS."""
        raise exceptions.MethodNotAllowed("Method OPTIONS not allowed.")

    @no_type_check  # subclasses take the route's placeholders as arguments
    async def search(self, request: Any, **kwargs: Any) -> Any:
        """Override to answer SEARCH."""
        raise exceptions.MethodNotAllowed("Method SEARCH not allowed.")

    # -- responses ---------------------------------------------------------------
    def text(self, value: str, *, content_type: Optional[str] = None, status: int = 200,
             reason: Optional[str] = None,
             headers: Optional[MutableMapping[str, str]] = None) -> Response:
        """A ``text/plain`` response."""
        return text_response(value, content_type=content_type, status=status, reason=reason,
                             headers=headers)

    def html(self, value: str, *, content_type: Optional[str] = None, status: int = 200,
             reason: Optional[str] = None,
             headers: Optional[MutableMapping[str, str]] = None) -> Response:
        """A ``text/html`` response."""
        return text_response(value, content_type=content_type or "text/html", status=status,
                             reason=reason, headers=headers)

    def json(self, value: Any, *, content_type: Optional[str] = None, status: int = 200,
             reason: Optional[str] = None,
             headers: Optional[MutableMapping[str, str]] = None) -> Response:
        """``value`` as ``application/json`` (records, dates and decimals as Faust writes them)."""
        return json_response(value, content_type=content_type, status=status, reason=reason,
                             headers=headers)

    def bytes(self, value: _bytes, *, content_type: Optional[str] = None, status: int = 200,
              reason: Optional[str] = None,
              headers: Optional[MutableMapping[str, str]] = None) -> Response:
        """A binary response."""
        return bytes_response(value, content_type=content_type, status=status, reason=reason,
                              headers=headers)

    async def read_request_content(self, request: Any) -> _bytes:
        """The request body as bytes."""
        return cast(_bytes, await request.read())

    def notfound(self, reason: str = "Not Found", **kwargs: Any) -> Response:
        """A 404 JSON response (Faust's; ``raise self.NotFound()`` says the same)."""
        return self.error(404, reason, **kwargs)

    def error(self, status: int, reason: str,
              headers: Optional[MutableMapping[str, str]] = None, **kwargs: Any) -> Response:
        """A JSON error response: ``{"error": reason, **kwargs}`` with ``status``."""
        body: Dict[str, Any] = {"error": reason, **kwargs}
        return self.json(body, status=status, headers=headers)


def takes_model(Model: Any) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Decorate a view method to receive the request body decoded as ``Model`` (Faust's).

    A body that is not valid JSON for ``Model`` answers 400 naming the reason.
    """
    def decorate(fun: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fun)
        async def inner(view: View, request: Any, *args: Any, **kwargs: Any) -> Any:
            data = await view.read_request_content(request)
            try:
                obj = Model.loads(data, serializer="json")
            except Exception as exc:
                raise exceptions.ValidationError(
                    f"body is not a {getattr(Model, '__name__', Model)}: {exc}") from None
            return await fun(view, request, obj, *args, **kwargs)
        return inner
    return decorate


def gives_model(Model: Any) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Decorate a view method whose return value is sent as JSON (Faust's)."""
    def decorate(fun: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fun)
        async def inner(view: View, request: Any, *args: Any, **kwargs: Any) -> Any:
            return view.json(await fun(view, request, *args, **kwargs))
        return inner
    return decorate
