"""The in-memory transport: ``memory://``, channels that never leave the process."""
from __future__ import annotations

from typing import Any

from .channel import Channel
from .transport import Transport

__all__ = ["MemoryChannel", "MemoryTransport"]


class MemoryChannel(Channel):
    """A channel in this process: batches moved by reference, no serialization."""

    transport_name = "memory"


class MemoryTransport(Transport):
    """``memory://``: ``app.topic(name)`` is a named in-memory channel."""

    scheme = "memory"
    channel_class = MemoryChannel
    external = False

    def create_channel(self, name: str, **options: Any) -> MemoryChannel:
        # Serializer options mean nothing in memory; accept them so an app
        # written for Kafka runs unchanged on memory:// (tests, demos).
        for option in ("key_serializer", "value_serializer", "partitions", "maxlen", "group"):
            options.pop(option, None)
        return MemoryChannel(self.app, name, **options)
