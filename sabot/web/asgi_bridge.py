"""An ASGI application served by the worker's aiohttp server (``serve_asgi``).

Faust's ``serve_asgi(app, api)`` makes an ASGI app (FastAPI, Starlette, ...)
the worker's web application, run by uvicorn on the worker's loop. Sabot
runs it on the server it already has: every HTTP request becomes an ASGI
``http`` scope whose body is streamed from aiohttp and whose response is
streamed back; the app's lifespan runs when the server starts and stops.
WebSockets are not bridged (a ``websocket`` request answers 501).

An app that raises before it started its response answers 500 with nothing
of the error in the body, and the failure is logged; one that raises after
has its connection closed. The server goes on serving either way.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List, MutableMapping, Optional, Tuple

from aiohttp import web as aioweb

from ..exceptions import SabotError
from .views import json_response

__all__ = ["ASGIBridge", "ASGILifespanError"]

logger = logging.getLogger("sabot.web")

Message = MutableMapping[str, Any]


class ASGILifespanError(SabotError):
    """The ASGI app reported that its startup or shutdown failed."""


class ASGIBridge:
    """Hands aiohttp requests to ``asgi_app`` and runs its lifespan."""

    def __init__(self, asgi_app: Any) -> None:
        self.asgi_app = asgi_app
        #: The lifespan state, copied into every request's scope (Starlette's ``request.state``).
        self.state: Dict[str, Any] = {}
        self._lifespan: Optional["asyncio.Task[None]"] = None
        self._inbox: "asyncio.Queue[Message]" = asyncio.Queue()
        self._outbox: "asyncio.Queue[Message]" = asyncio.Queue()

    # -- lifespan ----------------------------------------------------------------
    async def startup(self) -> None:
        """Run the app's lifespan startup; an app without lifespan support is served anyway."""
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        self._lifespan = asyncio.ensure_future(
            self.asgi_app(scope, self._inbox.get, self._outbox.put))
        await self._inbox.put({"type": "lifespan.startup"})
        await self._reply(self._lifespan, "startup")

    async def shutdown(self) -> None:
        """Run the app's lifespan shutdown (if it started one)."""
        task, self._lifespan = self._lifespan, None
        if task is None or task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            await self._reply(task, "shutdown")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _reply(self, task: "asyncio.Task[None]", phase: str) -> None:
        getter = asyncio.ensure_future(self._outbox.get())
        done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            exc = task.exception()
            # As uvicorn's lifespan "auto": an app that does not speak lifespan is served.
            logger.info("ASGI app has no lifespan (%s: %r)", phase, exc)
            return
        message = getter.result()
        if message["type"] == f"lifespan.{phase}.failed":
            raise ASGILifespanError(f"ASGI app {phase} failed: {message.get('message', '')}")

    # -- requests ------------------------------------------------------------------
    def scope_for(self, request: aioweb.Request) -> Dict[str, Any]:
        """The ASGI ``http`` scope of ``request``."""
        peer = request.transport.get_extra_info("peername") if request.transport else None
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        headers: List[Tuple[bytes, bytes]] = [
            (k.lower(), v) for k, v in request.raw_headers]
        return {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": f"{request.version.major}.{request.version.minor}",
            "method": request.method, "scheme": request.scheme,
            "path": request.path, "raw_path": request.raw_path.split("?", 1)[0].encode(),
            "query_string": request.query_string.encode("latin-1"), "root_path": "",
            "headers": headers,
            "client": tuple(peer[:2]) if peer else None,
            "server": tuple(sock[:2]) if sock else None,
            "state": dict(self.state),
        }

    async def handle(self, request: aioweb.Request) -> aioweb.StreamResponse:
        """Answer ``request`` with the ASGI app."""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return json_response({"error": "WebSockets are not served here."}, status=501)
        response: Optional[aioweb.StreamResponse] = None
        body_done = False

        async def receive() -> Message:
            nonlocal body_done
            if body_done:
                await asyncio.get_running_loop().create_future()  # until cancelled: no disconnect
            chunk = await request.content.readany()
            if not chunk:
                body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message: Message) -> None:
            nonlocal response
            if message["type"] == "http.response.start":
                response = aioweb.StreamResponse(status=message["status"])
                for name, value in message.get("headers", []):
                    response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
                await response.prepare(request)
            elif message["type"] == "http.response.body":
                if response is None:
                    raise RuntimeError("http.response.body before http.response.start")
                body = message.get("body", b"")
                if body:
                    await response.write(body)
                if not message.get("more_body", False):
                    await response.write_eof()

        try:
            await self.asgi_app(self.scope_for(request), receive, send)
        except Exception as exc:
            logger.error("ASGI app failed on %s %s: %s", request.method, request.path,
                         type(exc).__name__, exc_info=True)
            if response is None:
                return json_response({"error": "Internal server error."}, status=500)
            raise  # the response was started: aiohttp closes the connection
        if response is None:
            logger.error("ASGI app sent no response to %s %s", request.method, request.path)
            return json_response({"error": "Internal server error."}, status=500)
        return response
