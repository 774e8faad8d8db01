"""The worker's canonical URL: where other workers of the app reach its web server.

Faust's ``canonical_url`` setting, default ``http://<web_host>:<web_port>``
(``web_host``: the machine's host name). A Kafka worker announces it to its
consumer group (``sabot.channels.kafka_assignor``) so ``app.table_route`` and
``app.topic_route`` can forward a request to the worker holding the key.

Sabot's web server listens on ``web_bind`` (``127.0.0.1`` by default, not
every interface as in Faust), so when neither ``canonical_url`` nor
``web_host`` is set the host is the address served: ``web_bind``, or the host
name when it is a wildcard (``0.0.0.0``, ``::``). The port is the one the web
server bound (``--web-port 0`` gives a free port), known once it listens; a
worker without a web server announces no URL.
"""
from __future__ import annotations

import ipaddress
import socket
import weakref
from typing import Any, Optional, Tuple
from urllib.parse import urlsplit

__all__ = ["canonical_url", "record_served", "valid_http_url", "host_port"]

#: app -> (bind host, bound port) of its web server, set when it listens.
_served: "weakref.WeakKeyDictionary[Any, Tuple[str, int]]" = weakref.WeakKeyDictionary()

#: Longest URL accepted from the settings or from another worker.
MAX_URL_LENGTH = 2048


def valid_http_url(v: Any) -> bool:
    """True for an ``http://`` or ``https://`` URL with a host and no blank or control character."""
    text = str(v) if type(v).__name__ == "URL" else v
    if not isinstance(text, str) or not text or len(text) > MAX_URL_LENGTH:
        return False
    if any(c.isspace() or not c.isprintable() for c in text):
        return False
    try:
        parts = urlsplit(text)
        parts.port  # raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (``[::1]:9100``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def record_served(app: Any, host: str, port: int) -> None:
    """The web server of ``app`` listens on ``host`` (as configured) and ``port`` (as bound)."""
    _served[app] = (host, port)


def forget_served(app: Any) -> None:
    """The web server of ``app`` stopped."""
    _served.pop(app, None)


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host == ""


def canonical_url(app: Any) -> Optional[str]:
    """This worker's URL (no trailing ``/``), or None when it serves no web pages."""
    conf = app.conf
    configured = conf.get("canonical_url")
    if configured:
        return str(configured).rstrip("/")
    served = _served.get(app)
    if served is None:
        return None
    bind, port = served
    host = conf.get("web_host") or (socket.gethostname() if _is_wildcard(bind) else bind)
    return f"http://{host_port(host, port)}"
