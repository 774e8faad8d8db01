"""Channels and the transports behind them, chosen by the broker URL's scheme."""
from __future__ import annotations

import importlib
from typing import Any, Dict
from urllib.parse import urlsplit

from ..exceptions import ConfigurationError
from ..settings import redact_url
from .base import Channel, Transport
from .memory import MemoryChannel, MemoryTransport

__all__ = ["Channel", "Transport", "MemoryChannel", "MemoryTransport",
           "TRANSPORTS", "transport_class", "create_transport"]

#: URL scheme -> "module:Class" of its Transport (imported on first use).
TRANSPORTS: Dict[str, str] = {
    "memory": "sabot.channels.memory:MemoryTransport",
    "kafka": "sabot.channels.kafka:KafkaTransport",
    "redis": "sabot.channels.redis:RedisTransport",
    "rediss": "sabot.channels.redis:RedisTransport",
}


def scheme_of(url: str) -> str:
    """The scheme of a broker URL, checked against ``TRANSPORTS``."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"broker URL {redact_url(url)!r} has no scheme; use one of "
            f"{', '.join(s + '://' for s in TRANSPORTS)}")
    scheme = urlsplit(url.split("://", 1)[0] + "://").scheme.lower()  # never the netloc: urllib's errors quote it
    if scheme not in TRANSPORTS:
        raise ConfigurationError(
            f"broker URL {redact_url(url)!r} has an unknown scheme {scheme!r}; use one of "
            f"{', '.join(s + '://' for s in TRANSPORTS)}")
    return scheme


def transport_class(url: str) -> type:
    """The Transport class for ``url`` (``kafka://...`` -> ``KafkaTransport``)."""
    module_name, _, attr = TRANSPORTS[scheme_of(url)].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"transport for {redact_url(url)!r} is not available: {exc}") from exc
    return getattr(module, attr)


def create_transport(app: Any, url: str) -> Transport:
    """A new Transport service for ``app`` talking to ``url``."""
    return transport_class(url)(app, url)
