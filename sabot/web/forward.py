"""Forward a web request to another worker of the app and return its answer.

What Faust's ``app.router.route_req`` does for ``table_route`` and
``topic_route``: the same method, path, query, headers and body, sent to the
worker's URL; its status, headers and body come back as they are. A request
carries the ``Sabot-Routed-From`` header (the sender's URL) so the worker that
receives it answers itself and never forwards it again: a stale map can cost
a 503, never a loop. Timeouts are bounded; an owner that does not answer
gives 503 with one line saying why.
"""
from __future__ import annotations

import asyncio
from typing import Any, Optional

import aiohttp
from aiohttp import web as aioweb
from multidict import CIMultiDict

from ..settings import redact_url
from .exceptions import ServiceUnavailable

__all__ = ["ROUTED_HEADER", "forward", "CONNECT_TIMEOUT", "TOTAL_TIMEOUT", "was_routed"]

#: Set on a forwarded request: its value is the sending worker's URL.
ROUTED_HEADER = "Sabot-Routed-From"
#: Seconds to connect to the owner, and for its whole answer.
CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 30.0

#: Hop-by-hop headers (RFC 9110 7.6.1) and those the client sets again.
_NOT_FORWARDED = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
    "TE", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length"))
#: The client decodes a compressed answer: its encoding and length no longer apply.
_NOT_RETURNED = _NOT_FORWARDED | {"content-encoding"}


def was_routed(request: Any) -> bool:
    """True when ``request`` was forwarded here by another worker."""
    return ROUTED_HEADER in request.headers


async def forward(request: Any, owner: str, me: Optional[str], what: str,
                  **extra: Any) -> aioweb.Response:
    """``request`` answered by the worker at ``owner``.

    ``what`` names the key for the one-line 503 when the owner does not answer,
    whose JSON body also holds ``extra`` (the partition).
    """
    headers = CIMultiDict((k, v) for k, v in request.headers.items()
                          if k.lower() not in _NOT_FORWARDED)
    headers[ROUTED_HEADER] = me or "unknown"
    body = await request.read()
    url = owner.rstrip("/") + str(request.rel_url)
    timeout = aiohttp.ClientTimeout(total=TOTAL_TIMEOUT, sock_connect=CONNECT_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=True) as session:
            async with session.request(request.method, url, headers=headers, data=body or None,
                                       allow_redirects=False) as answer:
                content = await answer.read()
                returned = CIMultiDict((k, v) for k, v in answer.headers.items()
                                       if k.lower() not in _NOT_RETURNED)
                return aioweb.Response(status=answer.status, body=content, headers=returned)
    except asyncio.TimeoutError:
        reason = f"no answer within {TOTAL_TIMEOUT:.0f}s"
    except aiohttp.ClientError as exc:
        reason = _one_line(exc) or type(exc).__name__
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    raise ServiceUnavailable(f"{what}, held by the worker at {redact_url(owner)}, which did not "
                             f"answer: {reason}", **extra)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
