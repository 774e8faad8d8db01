"""What every broker-backed channel (Kafka topic, Redis stream) does the same way.

A transport's consumer fetches raw messages and hands them over as one
``Fetched``; ``TransportChannel.deliver`` decodes them with the channel's
codec, publishes the good values as batches to the local subscribers, sends
the bad ones to the dead-letter channel, and calls the transport's ``on_done``
exactly once, when every batch built from the fetch is done *and* every
dead-letter write is acknowledged. The transport commits (Kafka) or XACKs
(Redis) there, so nothing is acknowledged before it was processed or safely
dead-lettered.

Producing is shared too: values are encoded with the codec and written by
``produce``, the one method each transport implements (plus ``flush``).
"""
from __future__ import annotations

import asyncio
import logging
from typing import (Any, AsyncGenerator, Awaitable, Callable, Dict, List, NamedTuple, Optional,
                    Sequence, Tuple, Union)

import pyarrow as pa

from .._fastpath import Batch
from ..agents.faust_wire import is_json, unwrap_requests
from ..codecs import TOMBSTONE, RawCodec, get_codec
from ..exceptions import DecodeError
from ..models.codec import check_types, decode_fetch, typed_codec
from ..models.conversion import is_record_type
from ..schema import check_batch, rows_to_batch
from ..types import AppT, ChannelT, CodecT, Headers, TransportT
from .channel import Channel
from .dead_letters import when_stored
from .send_options import send_with_options

__all__ = ["Fetched", "TransportChannel", "Countdown"]

logger = logging.getLogger("sabot.channels")

#: ``(index in the fetch, the error)`` for each message that failed to decode.
_Failures = List[Tuple[int, DecodeError]]

class Fetched(NamedTuple):
    """Raw messages fetched together from one partition (or stream).

    Parallel lists; ``keys``/``headers``/``timestamps`` may be ``None`` when no
    message has one. ``positions`` are the transport's own (``(topic,
    partition, offset)`` for Kafka, ``(stream, entry_id)`` for Redis).
    ``timestamp`` (seconds) stands for the whole fetch when ``timestamps`` is
    ``None``.
    """

    payloads: List[bytes]
    positions: Sequence[Any]
    keys: Optional[Sequence[Any]] = None
    headers: Optional[Sequence[Optional[Headers]]] = None
    timestamps: Optional[Sequence[float]] = None
    timestamp: Optional[float] = None


class Countdown:
    """Calls ``callback()`` once after being called ``n`` times (any arguments)."""

    __slots__ = ("remaining", "callback")

    def __init__(self, n: int, callback: Callable[[], None]) -> None:
        self.remaining = n
        self.callback = callback
        if n <= 0:
            callback()

    def __call__(self, *_: Any) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.callback()


class TransportChannel(Channel):
    """A channel whose values travel through a broker.

    Subclasses implement ``produce`` (write one encoded message, return its
    delivery future), ``flush`` (wait for every write), ``position_headers``
    (a failed value's position as dead-letter headers), and may override
    ``maybe_declare``. ``transport`` is the service that owns the clients
    (``TransportT``: ``topic(name, **options)``, ``subscribe_channel(channel)``,
    ``tail``, ``stopping``); it made the channel and passes itself.
    """

    transport_name = "transport"
    codec: CodecT

    def __init__(self, app: Optional[AppT] = None, name: Optional[str] = None, *,
                 transport: TransportT,
                 key_serializer: Union[None, str, CodecT] = None,
                 value_serializer: Union[None, str, CodecT] = None,
                 key_type: Any = None, value_type: Any = None,
                 allow_empty: bool = False,
                 **kwargs: Any) -> None:
        self.transport = transport
        check_types(name or "?", kwargs.get("schema"), key_type, value_type)  # before the codecs
        # Typed keys and values decode into their types (a value that does
        # not fit is a DecodeError, so a dead letter); the codec follows
        # Faust: the serializer given, else the record's, else json.
        value_codec = typed_codec(value_type, value_serializer, key=False)
        assert value_codec is not None  # values always have a codec
        self.codec = value_codec
        self.key_codec = typed_codec(key_type, key_serializer, key=True)
        #: JSON values may be Faust's agent-RPC requests (``agents.faust_wire``).
        self._reads_requests = is_json(value_codec)
        #: Faust's ``allow_empty``: a null value (tombstone) reaches the agent
        #: as ``None`` even on a record topic, instead of being a dead letter.
        self.allow_empty = allow_empty
        super().__init__(app, name, transport=transport, key_serializer=key_serializer,
                         value_serializer=value_serializer, key_type=key_type,
                         value_type=value_type, allow_empty=allow_empty, **kwargs)

    def __repr__(self) -> str:
        schema = f" schema={self.schema.names}" if self.schema is not None else ""
        return f"<{type(self).__name__} {self.name!r} codec={self.codec.name}{schema}>"

    # -- producing -----------------------------------------------------------
    def produce(self, key: Optional[bytes], value: bytes,
                headers: Optional[Headers]) -> Awaitable[Any]:
        """Write one encoded message; awaiting it gives the delivery future.

        A coroutine function (Redis) or a plain function that returns an
        awaitable (Kafka, to save a coroutine frame per message).
        """
        raise NotImplementedError

    async def maybe_declare(self) -> None:
        """Create the topic or stream on the broker when it is missing (if needed)."""

    def encode_key(self, key: Any) -> Optional[bytes]:
        """The key as bytes (``None`` stays ``None``)."""
        if key is None:
            return None
        if self.key_codec is not None:
            return self.key_codec.encode(key)
        if isinstance(key, bytes):
            return key
        return key.encode("utf-8") if isinstance(key, str) else get_codec("json").encode(key)

    def encode_value(self, value: Any) -> bytes:
        """The value as bytes with the channel's codec, checked against its schema."""
        schema, checker = self.schema, self._checker  # both set, or neither
        if schema is not None and isinstance(value, pa.RecordBatch):
            check_batch(schema, value)  # SchemaError names the field
        elif checker is not None:
            checker.check(value)
        return self.codec.encode(value)

    async def send_from(self, value: Any, sources: Sequence[Any] = ()) -> Any:
        """Produce ``value``; the agent holds ``sources`` on the delivery future returned."""
        if isinstance(value, pa.RecordBatch):
            return await self.send_batch(value)
        return await self.send(value=value)

    async def send(self, key: Any = None, value: Any = None,
                   headers: Optional[Headers] = None, **options: Any) -> Any:
        """Write one value; returns its delivery future (awaiting it gives the metadata).

        Does not wait for delivery: the client batches writes. Await the
        returned future, or ``flush()``, to know it is durable. ``options``:
        Faust's (``send_options``).
        """
        if options:
            return await send_with_options(self, key, value, headers, options)
        if key is not None:
            key = self.encode_key(key)
        if self.schema is not None:
            return await self.produce(key, self.encode_value(value), headers)
        # No schema to check: skip a call on the hottest producing path.
        return await self.produce(key, self.codec.encode(value), headers)

    async def send_batch(self, batch: Union[Sequence[Any], pa.RecordBatch, pa.Table]) -> Any:
        """One message per RecordBatch under a batch codec (``arrow``), else one per row.

        Returns a future done when every message is delivered (``None`` if empty).
        """
        if isinstance(batch, pa.Table):
            futures = [await self.send_batch(part) for part in batch.to_batches()]
            return _all_of([f for f in futures if f is not None])
        if self.codec.yields_batches:
            if not isinstance(batch, pa.RecordBatch):
                rows = list(batch)
                if not rows:
                    return None
                batch = (rows_to_batch(self.schema, rows) if self.schema is not None
                         else pa.RecordBatch.from_pylist(rows))
            return await self.send(value=batch)
        values = batch.to_pylist() if isinstance(batch, pa.RecordBatch) else batch
        send = self.send
        return _all_of([await send(value=value) for value in values])

    # -- consuming -----------------------------------------------------------
    def tail(self, *, from_beginning: bool = False) -> AsyncGenerator[Any, None]:
        """This channel's raw payloads, read by the transport outside the app's group."""
        return self.transport.tail(self, from_beginning=from_beginning)

    def on_subscribed(self) -> None:
        """A local subscriber appeared: tell the transport to fetch this channel."""
        self.transport.subscribe_channel(self)

    async def deliver(self, fetched: Fetched, on_done: Callable[[], None]) -> List[Batch]:
        """Decode a fetch, publish the good values, dead-letter the bad ones.

        ``on_done()`` is called once, when every published batch is done and
        every dead-letter write is acknowledged. Waits while a local
        subscriber lags by ``maxsize`` (backpressure on the fetch loop).
        Returns the published batches (a transport may check whether one was
        abandoned, in which case ``on_done`` will never be called).
        """
        keys, failures = self._decode_keys(fetched)
        if self._reads_requests:
            fetched = self._unwrap_requests(fetched, failures)
        payloads = fetched.payloads
        if self._refuses_tombstones:
            failures = _with_tombstones(failures, payloads, self.value_type)
        if failures:
            bad_keys = {j for j, _ in failures}
            good = [i for i in range(len(payloads)) if i not in bad_keys]
            values, value_failures = decode_fetch(self.codec, [payloads[i] for i in good], self.schema)
            failures.extend((good[j], exc) for j, exc in value_failures)
            failures.sort(key=lambda f: f[0])
        else:
            values, failures = decode_fetch(self.codec, payloads, self.schema)
        batches = self._build_batches(fetched, keys, values, failures)
        countdown = Countdown(len(batches) + len(failures), on_done)
        for index, exc in failures:
            await self._dead_letter_one(fetched, index, exc, countdown)
        for batch in batches:
            batch.on_done = countdown
            await self.publish(batch)
        return batches

    def _unwrap_requests(self, fetched: Fetched, failures: _Failures) -> Fetched:
        # Faust's agent.ask wraps a value in a ReqRepRequest: the inner value
        # is decoded as any other, and the request travels in its headers.
        found = unwrap_requests(fetched.payloads, fetched.headers)
        if found is None:
            return fetched
        payloads, headers, bad = found
        if bad:
            seen = {i for i, _ in failures}
            failures.extend(f for f in bad if f[0] not in seen)
            failures.sort(key=lambda f: f[0])
        return fetched._replace(payloads=payloads, headers=headers)

    @property
    def _refuses_tombstones(self) -> bool:
        # Faust: a record type needs a value; None only with allow_empty.
        return not self.allow_empty and is_record_type(self.value_type)

    def _decode_keys(self, fetched: Fetched) -> Tuple[Optional[Sequence[Any]], _Failures]:
        codec = self.key_codec
        if codec is None or fetched.keys is None or isinstance(codec, RawCodec):
            return fetched.keys, []
        keys: List[Any] = []
        failures: _Failures = []
        for i, raw in enumerate(fetched.keys):
            if raw is None:
                keys.append(None)
                continue
            try:
                keys.append(codec.decode(raw))
            except DecodeError as exc:
                keys.append(None)
                failures.append((i, DecodeError(f"key: {exc}", codec=codec.name, payload=raw)))
        return keys, failures

    def _build_batches(self, fetched: Fetched, keys: Optional[Sequence[Any]], values: Any,
                       failures: _Failures) -> List[Batch]:
        n = len(fetched.payloads)
        if failures:
            bad = {i for i, _ in failures}
            index = [i for i in range(n) if i not in bad]
        else:
            index = None  # every message decoded: the lists are used as they are
        if self.codec.yields_batches:
            return self._batch_per_message(fetched, keys, values, index)
        if len(values) == 0:
            return []
        # The fetched bytes stand for the decoded values' size (byte bound).
        nbytes = sum(map(len, filter(None, fetched.payloads)))
        return [Batch(values,
                      keys=_pick(keys, index),
                      headers=_pick(fetched.headers, index),
                      timestamps=_pick(fetched.timestamps, index),
                      positions=_pick(fetched.positions, index),
                      timestamp=fetched.timestamp, nbytes=nbytes)]

    @staticmethod
    def _batch_per_message(fetched: Fetched, keys: Optional[Sequence[Any]], values: List[Any],
                           index: Optional[List[int]]) -> List[Batch]:
        # Each message is a RecordBatch of many rows; the envelope of the
        # message stands for each of its rows.
        out = []
        for j, record_batch in enumerate(values):
            i = j if index is None else index[j]
            rows = len(record_batch)
            ts = fetched.timestamps[i] if fetched.timestamps is not None else fetched.timestamp
            key = None if keys is None else keys[i]
            headers = None if fetched.headers is None else fetched.headers[i]
            out.append(Batch(
                record_batch,
                keys=None if key is None else [key] * rows,
                headers=None if headers is None else [headers] * rows,
                positions=[fetched.positions[i]] * rows,
                timestamp=ts))
        return out

    # -- dead letters --------------------------------------------------------
    def dead_letter_channel(self) -> ChannelT:
        """``<name><dead_letter_suffix>`` on the same broker; bytes kept as they came."""
        if self._dead_letter is None:
            suffix = self.app.conf.dead_letter_suffix if self.app is not None else ".dlq"
            self._dead_letter = self.transport.topic(self.name + suffix, value_serializer="raw")
        return self._dead_letter

    async def _dead_letter_one(self, fetched: Fetched, index: int, exc: DecodeError,
                               countdown: Countdown) -> None:
        headers: Dict[str, bytes] = {}
        if fetched.keys is not None and fetched.keys[index] is not None:
            key = fetched.keys[index]
            headers["sabot-key"] = key if isinstance(key, bytes) else str(key).encode()
        own = fetched.headers[index] if fetched.headers is not None else None
        if own:
            for name, value in own.items():
                headers.setdefault(name, value)
        payload = fetched.payloads[index]
        written = await self.dead_letter(b"" if payload is None else payload,
                                         f"{type(exc).__name__}: {exc}", headers,
                                         position=fetched.positions[index])
        # The source is acknowledged only once its dead letter is stored.
        when_stored(written, countdown)

    def cancel_dead_letter_retries(self) -> int:
        """Cancel this channel's dead-letter retries (at a stop); how many there were.

        Their source values stay unacknowledged, so they are delivered again
        later (by this worker after a restart, or by another).
        """
        return self.dead_letters.cancel()

    # -- what a dead letter written to this channel needs ----------------------
    carries_bytes = True

    async def send_encoded(self, key: Optional[bytes], value: bytes,
                           headers: Optional[Headers] = None) -> Any:
        """Write bytes already encoded (dead letters): no codec, no schema check."""
        return await self.produce(key, value, headers)

    @property
    def stopping(self) -> bool:
        """True once the transport is stopping: it writes nothing more."""
        return self.transport.stopping


def _with_tombstones(failures: _Failures, payloads: Sequence[Optional[bytes]],
                     value_type: Any) -> _Failures:
    """``failures`` plus every null value not failed already, in fetch order."""
    failed = {i for i, _ in failures}
    extra = [(i, DecodeError(f"{TOMBSTONE}: value_type {value_type.__name__} needs a value "
                             f"(allow_empty=True lets it through as None)", payload=None))
             for i, data in enumerate(payloads) if data is None and i not in failed]
    if not extra:
        return failures
    return sorted(failures + extra, key=lambda f: f[0])


def _pick(values: Optional[Sequence[Any]], index: Optional[List[int]]) -> Any:
    if values is None or index is None:
        return values
    return [values[i] for i in index]


def _all_of(futures: List[Any]) -> Any:
    """One future for many deliveries (``None`` when there are none)."""
    futures = [f for f in futures if f is not None]
    if not futures:
        return None
    if len(futures) == 1:
        return futures[0]
    return asyncio.gather(*futures)
