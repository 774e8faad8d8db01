"""Faust's options of ``send``: ``partition``, ``timestamp``, ``callback``, serializers, ``force``.

``channel.send(key, value, headers)`` is the hot path and takes none of
them; given any, ``send`` hands over to ``send_with_options``:

* ``partition`` and ``timestamp`` (seconds, Faust's unit) reach the Kafka
  producer; a memory channel or Redis stream has neither partitions nor
  message times, so there they are refused with a ``ConfigurationError``
  naming the option (rather than silently dropped);
* ``key_serializer`` / ``value_serializer`` (or a Faust ``schema`` carrying
  them) encode this one message with another codec (brokers only: a memory
  channel carries objects, not bytes);
* ``callback(fut)`` is called with the delivery future once the message is
  delivered (at once in memory, where delivery is the send itself);
* ``force`` is accepted: Sabot never holds a send back to batch it, which is
  what ``force=True`` asks of Faust.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, Optional

from ..codecs import get_codec
from ..exceptions import ConfigurationError

__all__ = ["send_with_options", "KNOWN"]

KNOWN = frozenset({"partition", "timestamp", "timestamp_ms", "callback", "force", "schema",
                   "key_serializer", "value_serializer"})


async def send_with_options(channel: Any, key: Any, value: Any, headers: Any,
                            options: Dict[str, Any]) -> Any:
    """``channel.send`` with Faust's options (see the module)."""
    unknown = sorted(set(options) - KNOWN)
    if unknown:
        raise TypeError(f"send() got unexpected keyword arguments: {', '.join(unknown)}")
    callback: Optional[Callable[[Any], Any]] = options.get("callback")
    if callback is not None and not callable(callback):
        raise ConfigurationError(f"send(callback=): {callback!r} is not callable")
    schema = options.get("schema")
    key_codec = options.get("key_serializer") or getattr(schema, "key_serializer", None)
    value_codec = options.get("value_serializer") or getattr(schema, "value_serializer", None)
    partition = options.get("partition")
    timestamp_ms = options.get("timestamp_ms")
    if options.get("timestamp") is not None:
        timestamp_ms = int(float(options["timestamp"]) * 1000)
    if not channel.carries_bytes:
        placed = [n for n, v in (("partition", partition), ("timestamp", timestamp_ms)) if v is not None]
        if placed:
            raise ConfigurationError(f"channel {channel.name!r} ({channel.transport_name}) has no "
                                     f"partitions or message times: send({', '.join(placed)}=) "
                                     f"needs a Kafka topic")
        result = await channel.send(key=key, value=value, headers=headers)
    elif partition is not None or timestamp_ms is not None:
        if getattr(channel, "transport_name", "") != "kafka":
            raise ConfigurationError(f"channel {channel.name!r} ({channel.transport_name}) has no "
                                     f"partitions or message times: send(partition=, timestamp=) "
                                     f"needs a Kafka topic")
        raw_key = _encoded(channel, key, key_codec, is_key=True)
        raw_value = _encoded(channel, value, value_codec, is_key=False)
        result = await channel.produce(raw_key, raw_value, headers, partition=partition,
                                       timestamp_ms=timestamp_ms)
    elif key_codec is not None or value_codec is not None:
        result = await channel.produce(_encoded(channel, key, key_codec, is_key=True),
                                       _encoded(channel, value, value_codec, is_key=False), headers)
    else:
        result = await channel.send(key=key, value=value, headers=headers)
    if callback is not None:
        _call_when_done(result, callback)
    return result


def _encoded(channel: Any, value: Any, codec: Any, *, is_key: bool) -> Optional[bytes]:
    if is_key and value is None:
        return None
    if codec is None:
        return channel.encode_key(value) if is_key else channel.encode_value(value)
    return get_codec(codec).encode(value)


def _call_when_done(result: Any, callback: Callable[[Any], Any]) -> None:
    if isinstance(result, asyncio.Future):
        result.add_done_callback(callback)
        return
    done: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
    done.set_result(result)
    callback(done)
