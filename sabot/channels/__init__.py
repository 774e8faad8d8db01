"""Channels and the transports behind them, chosen by the broker URL's scheme."""
from .channel import Channel
from .memory import MemoryChannel, MemoryTransport
from .transport import TRANSPORTS, Transport, create_transport, scheme_of, transport_class

__all__ = ["Channel", "Transport", "MemoryChannel", "MemoryTransport",
           "TRANSPORTS", "scheme_of", "transport_class", "create_transport"]
