"""Reading a topic from outside the app's consumer group (``sabot tail``).

A tail reader joins no group and commits nothing, so watching a topic never
takes partitions or pending entries away from running workers. Kafka: a
group-less consumer over every partition. Redis: plain ``XREAD`` (not
``XREADGROUP``). Values are decoded with the channel's codec; a value the
codec refuses is reported and skipped.
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, Optional

import pyarrow as pa

from .exceptions import BrokerUnavailable, DecodeError, TransportError

__all__ = ["tail_values", "TailUnsupported"]


class TailUnsupported(TransportError):
    """The channel cannot be read from outside its process (memory channels)."""

    retryable = False


async def tail_values(channel: Any, *, from_beginning: bool = False,
                      on_error: Optional[Callable[[str], None]] = None) -> AsyncIterator[Any]:
    """Yield the decoded values of ``channel`` as they arrive (rows of Arrow batches).

    ``from_beginning`` starts at the oldest value kept, otherwise at the next
    one written. ``on_error`` receives a line for each value that does not
    decode.
    """
    scheme = getattr(channel, "transport_name", "memory")
    if scheme == "kafka":
        payloads = _kafka_payloads(channel, from_beginning)
    elif scheme == "redis":
        payloads = _redis_payloads(channel, from_beginning)
    else:
        raise TailUnsupported(
            f"{channel.name!r} is an in-memory channel: it lives inside one worker process, "
            f"so there is nothing to tail from outside (use a kafka:// or redis:// broker)")
    async for payload in payloads:
        try:
            value = channel.codec.decode(payload)
        except DecodeError as exc:
            if on_error is not None:
                on_error(f"skipped a value that does not decode: {exc}")
            continue
        if isinstance(value, pa.RecordBatch):
            for row in value.to_pylist():
                yield row
        else:
            yield value


async def _kafka_payloads(channel: Any, from_beginning: bool) -> AsyncIterator[bytes]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    from .channels.kafka import kafka_client_options
    transport = channel.transport
    conf = channel.app.conf
    consumer = AIOKafkaConsumer(
        channel.name, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        bootstrap_servers=transport.servers, client_id=f"sabot-tail-{channel.app.id}",
        **kafka_client_options(conf))
    try:
        await asyncio.wait_for(consumer.start(), conf.broker_connect_timeout)
    except (KafkaError, OSError, asyncio.TimeoutError) as exc:
        await _stop_quietly(consumer)
        raise BrokerUnavailable(
            f"cannot reach Kafka broker {','.join(transport.servers)}: "
            f"{str(exc) or type(exc).__name__}") from None
    try:
        async for message in consumer:
            yield message.value
    finally:
        await _stop_quietly(consumer)


async def _redis_payloads(channel: Any, from_beginning: bool) -> AsyncIterator[bytes]:
    from redis import exceptions as rexc
    transport = channel.transport
    await transport.check_connection()
    last = "0" if from_beginning else "$"
    while True:
        try:
            reply = await transport.client.xread({channel.name: last}, count=1000, block=1000)
        except rexc.RedisError as exc:
            raise transport.translate_error(exc) from None
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id
                value = fields.get(b"value")
                if value is not None:
                    yield value


async def _stop_quietly(consumer: Any) -> None:
    try:
        await consumer.stop()
    except Exception:  # closing a half-started client: nothing to save
        pass

