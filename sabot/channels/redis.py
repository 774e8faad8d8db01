"""The Redis Streams transport: ``redis://`` and ``rediss://``.

``app.redis_channel(name)`` (or ``app.topic(name)`` with a ``redis://``
broker) is a :class:`RedisStreamChannel` over the Redis Stream ``name``.

Producing: every ``send`` is an ``XADD``; sends made while one round trip is
in flight are pipelined together (``MAXLEN ~`` when the channel has a
``maxlen``), and each returns a future resolved with the entry id.

Consuming: one reader per stream reads ``XREADGROUP COUNT BLOCK`` in the
consumer group named after the app id (created at id ``0`` with
``MKSTREAM``), as the consumer ``worker_id`` (stable across restarts; see
docs/deployment.md) or, without it, ``<host>-<pid>``. The entries of one read
become one batch (``TransportChannel.deliver`` decodes them, dead-letters the
bad ones to ``<name>.dlq`` and publishes the rest); once every subscribed
agent is finished with them, their ids are ``XACK``\\ ed in bulk.

Recovery: at start, and after every reconnect, a reader first re-reads its
own pending entries (``XREADGROUP ... 0``), then claims entries that other
consumers left idle for ``redis_claim_idle_ms`` (``XAUTOCLAIM``, repeated ten
times per that interval), so a worker that died leaves nothing behind. Ids still held
locally (in an agent, or waiting for their XACK), and ids acknowledged while
a recovery read was on its way, are never delivered twice by that recovery,
and an XACK that failed is retried until it succeeds.

Stopping: a graceful stop waits (``shutdown_timeout``) for the batches that
can still finish, not for abandoned ones (a failed sink write); dead-letter
retries are cancelled, and a stopped transport writes nothing more.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import math
import os
import socket
from typing import Any, AsyncGenerator, Callable, Dict, List, Optional, Sequence, Set, Tuple
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis import exceptions as rexc

_pack_command: Optional[Callable[[Sequence[Any]], bytes]]
try:  # hiredis packs commands in C; redis-py's asyncio client packs in Python
    # hiredis's stub types the command as a 1-tuple (Tuple[X]); it takes any tuple.
    from hiredis import pack_command as _pack_command  # type: ignore[assignment]
except ImportError:  # pragma: no cover - hiredis is a dependency where it installs
    _pack_command = None

from ..exceptions import (AuthenticationError, BrokerUnavailable,
                          ConfigurationError, TransportError)
from ..retry import RetryPolicy
from ..settings import redact_url
from ..types import AppT, ChannelT, Headers
from .inflight import Delivery, InFlight
from .transport import Transport
from .dead_letters import when_stored
from .transport_channel import Fetched, TransportChannel
from . import redis_eos

__all__ = ["RedisTransport", "RedisStreamChannel"]

logger = logging.getLogger("sabot.channels.redis")

#: Entry fields with a meaning of their own; every other field is a header.
VALUE_FIELD = b"value"
KEY_FIELD = b"key"
_RESERVED = frozenset({"value", "key"})

#: Redis errors after which the connection is gone and a new one may work.
_CONNECTION_ERRORS = (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError,
                      ConnectionError, OSError, asyncio.TimeoutError)

#: Errors a retry cannot mend: the server refused us (a wrong password is a
#: ConnectionError to redis-py, so it must be named to be left out).
_REFUSED = (rexc.AuthenticationError, rexc.ResponseError)

#: Backoff between reconnect attempts (no limit on attempts; a deadline where one applies).
_RECONNECT = RetryPolicy(max_attempts=None, initial_delay=0.05, max_delay=2.0, jitter=0.2)

#: Most entries (and about the most bytes) sent in one pipeline, most ids in one XACK.
_PIPELINE_CHUNK = 1000
_PIPELINE_BYTES = 8 << 20
#: Slowest transfer a pipeline's timeout allows for, in bytes per second.
_MIN_BYTES_PER_SECOND = 1 << 20
_ACK_CHUNK = 5000
#: Unflushed sends before ``send`` waits for the pipeline (memory stays flat).
_PRODUCER_HIGH_WATER = 20000

_consumer_seq = itertools.count(1)

#: Claims of idle entries per ``redis_claim_idle_ms``: a dead worker's entries
#: move at most a tenth of the idle time after they became claimable.
CLAIM_CHECKS_PER_IDLE = 10


def _consumer_name(worker_id: Optional[str], n: int) -> str:
    # The worker_id setting (--worker-id, or a --processes child's
    # <base>-<index>) names the worker stably, so a restarted worker reads
    # its own pending entries first; without it host-pid names the worker. A
    # second transport in the same process (two apps in a test or an
    # embedding program) needs a name of its own.
    base = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    return base if n == 1 else f"{base}-{n}"


def _is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, rexc.ResponseError) and str(exc).startswith("NOGROUP")


def _raw_reply(response: Any, **options: Any) -> Any:
    # The reader parses XREADGROUP/XAUTOCLAIM replies itself: redis-py's
    # callbacks build a dict per entry that is thrown away at once.
    return response


class RedisTransport(Transport):
    """The Redis server behind ``app.redis_channel`` (from ``app.conf.redis_url``).

    ``url`` is ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://``
    for TLS. The password is never logged, and ``repr`` hides it.
    """

    scheme = "redis"

    def __init__(self, app: AppT, url: Optional[str] = None) -> None:
        url = url or app.conf.redis_url
        try:
            parts = urlsplit(url)
        except ValueError:  # urllib's message quotes the netloc, password and all
            raise ConfigurationError(
                f"redis URL {redact_url(url)!r} cannot be parsed (percent-encode the "
                f"password)") from None
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigurationError(
                f"redis URL {redact_url(url)!r} must start with redis:// or rediss://")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ConfigurationError(f"redis URL {redact_url(url)!r} has a bad port (not a number from 0 to 65535)") from None
        super().__init__(app, url)
        self.safe_url = redact_url(url)
        self.username = unquote(parts.username) if parts.username else None
        self._consumer_seq = next(_consumer_seq)
        self._default_consumer = _consumer_name(None, self._consumer_seq)
        conf = app.conf
        self.connect_timeout = float(conf.broker_connect_timeout)
        self.block_ms = int(conf.redis_block_ms)
        self.claim_idle_ms = int(conf.redis_claim_idle_ms)
        self._client: Optional[aioredis.Redis] = None
        self._producer: Optional[_Producer] = None
        self._readers: Dict[str, _StreamReader] = {}
        self._fetching = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisTransport {self.safe_url} consumer={self.consumer_name!r}>"

    @property
    def consumer_name(self) -> str:
        """This worker's consumer name in the group: from ``worker_id``, else ``<host>-<pid>``."""
        worker_id = self.app.conf.worker_id
        if worker_id:
            return _consumer_name(worker_id, self._consumer_seq)
        return self._default_consumer

    @property
    def exactly_once(self) -> bool:
        """True when outputs and acknowledgements commit together (see redis_eos)."""
        return self.app.conf.processing_guarantee == "exactly_once"

    @property
    def label(self) -> str:
        return f"RedisTransport: {self.safe_url}"

    @property
    def shortlabel(self) -> str:
        return "RedisTransport"

    # -- clients ---------------------------------------------------------------
    @property
    def client(self) -> aioredis.Redis:
        """The shared ``redis.asyncio`` client (connection pool), made on first use.

        Raises :class:`TransportError` once the transport has stopped: a
        stopped app writes nothing more (no client is quietly reopened).
        """
        if self._client is None:
            if self._closed:
                raise TransportError(f"redis transport {self.safe_url} is stopped")
            # Our own loops retry with backoff and re-run recovery; redis-py's
            # silent retries would hide the reconnect from them.
            # RESP2: the reader parses XREADGROUP replies itself. The read
            # timeout must outlast a BLOCK, or an idle stream looks like a
            # dead server.
            client = aioredis.Redis.from_url(
                self.url, protocol=2, retry=Retry(NoBackoff(), 0),
                socket_timeout=max(5.0, self.block_ms / 1000 + 5.0),
                socket_connect_timeout=min(self.connect_timeout, 5.0),
                socket_keepalive=True, health_check_interval=0)
            client.set_response_callback("XREADGROUP", _raw_reply)
            client.set_response_callback("XAUTOCLAIM", _raw_reply)
            self._client = client
        return self._client

    @property
    def producer(self) -> "_Producer":
        """The pipelining XADD writer shared by every channel of this transport."""
        if self._producer is None:
            self._producer = _Producer(self)
            if not self._fetching:
                # Sends outside a running worker: flushed if the loop closes first.
                self.guard_exit()
        return self._producer

    async def flush_at_exit(self) -> None:
        """The loop is closing with XADDs queued: write them now, say how it went."""
        producer = self._producer
        if producer is None:
            return
        written, failed, reason = await producer.write_queued()
        if failed:
            logger.error("%d of %d sends still pending when the event loop closed could not "
                         "be written to redis at %s: %s", failed, written + failed,
                         self.safe_url, reason)
        elif written:
            logger.info("wrote %d sends still pending when the event loop closed", written)

    async def read_stream(self, stream: str, after: Optional[str] = None, count: int = 10_000
                          ) -> AsyncGenerator[List[Tuple[str, Any, Any, Optional[Dict[str, bytes]]]],
                                              None]:
        """Every entry of ``stream`` after the id ``after`` (all if ``None``), to its end.

        Yields lists of ``(entry_id, value, key, headers)`` of up to ``count``
        entries (``XRANGE``), outside any consumer group (tables recover
        from their changelog with it).
        """
        start = "-" if after is None else f"({after}"
        while True:
            reply = (await self.round_trip([("XRANGE", stream, start, "+", "COUNT", count)]))[0]
            if isinstance(reply, Exception):
                raise self.translate_error(reply)
            if not reply:
                return
            out = []
            for entry_id, fields in reply:
                value, key, headers = _split_fields(fields)
                out.append((entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
                            value, key, headers))
            yield out
            start = f"({out[-1][0]}"

    async def trim_stream(self, stream: str, min_id: str) -> None:
        """Delete the entries of ``stream`` older than ``min_id`` (``XTRIM MINID``)."""
        reply = (await self.round_trip([("XTRIM", stream, "MINID", min_id)]))[0]
        if isinstance(reply, Exception):
            raise self.translate_error(reply)

    async def stream_info(self, stream: str) -> Dict[str, Any]:
        """``XINFO STREAM`` as a dict (``{}`` when the stream does not exist).

        Names are str, ids str: ``length``, ``entries-added``,
        ``recorded-first-entry-id``, ``max-deleted-entry-id``, ...
        """
        reply = (await self.round_trip([("XINFO", "STREAM", stream)]))[0]
        if isinstance(reply, Exception):
            if "no such key" in str(reply).lower():
                return {}
            raise self.translate_error(reply)
        out: Dict[str, Any] = {}
        for name, value in zip(reply[::2], reply[1::2]):
            key = name.decode() if isinstance(name, bytes) else str(name)
            out[key] = value.decode() if isinstance(value, bytes) else value
        return out

    async def round_trip(self, commands: Sequence[Sequence[Any]], size: int = 0) -> List[Any]:
        """Send ``commands`` at once and read their replies (a pipeline).

        An error reply stands in the list in place of its result. This is
        redis-py's pipeline without its per-command Python packing and
        per-reply timers, which cost more than the round trip itself; one
        timeout covers the whole exchange instead (longer for ``size`` bytes).
        """
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            return await asyncio.wait_for(self._exchange(conn, commands),
                                          max(self.connect_timeout, 5.0)
                                          + size / _MIN_BYTES_PER_SECOND)
        except BaseException:
            # Replies may be half read: the connection cannot be reused.
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)

    @staticmethod
    async def _exchange(conn: Any, commands: Sequence[Sequence[Any]]) -> List[Any]:
        if _pack_command is not None:
            packed: Any = b"".join(map(_pack_command, commands))
        else:
            packed = conn.pack_commands(commands)
        await conn.send_packed_command(packed, check_health=False)
        results: List[Any] = []
        read = conn.read_response
        for _ in range(len(commands)):
            try:
                results.append(await read(timeout=math.inf))
            except rexc.ResponseError as exc:
                results.append(exc)
        return results

    def translate_error(self, exc: BaseException) -> BaseException:
        """A Sabot error with a one-line message for a redis-py error.

        The message names the server by its redacted URL; the password is not
        in it (redis-py's own messages do not carry it either).
        """
        if isinstance(exc, rexc.AuthenticationError) or (
                isinstance(exc, rexc.ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS"))):
            who = f"user {self.username!r}" if self.username else "the default user"
            return AuthenticationError(
                f"redis at {self.safe_url} refused the credentials of {who}: "
                f"wrong or missing password")
        if isinstance(exc, _CONNECTION_ERRORS):
            return BrokerUnavailable(f"cannot reach redis at {self.safe_url}: {exc}")
        return TransportError(f"redis at {self.safe_url} failed: {exc}")

    async def check_connection(self) -> None:
        """PING until the server answers or ``broker_connect_timeout`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        policy = dataclasses.replace(_RECONNECT, deadline=self.connect_timeout,
                                     retry_on=(asyncio.TimeoutError, *_CONNECTION_ERRORS),
                                     never_retry=_REFUSED)

        async def ping() -> None:
            await asyncio.wait_for(self.client.ping(), timeout=max(0.1, deadline - loop.time()))

        try:
            await policy.call(ping)
        except asyncio.TimeoutError:
            raise self.translate_error(rexc.TimeoutError("timed out")) from None
        except (rexc.RedisError, *_CONNECTION_ERRORS) as exc:
            raise self.translate_error(exc) from None

    # -- channels --------------------------------------------------------------
    def create_channel(self, name: str, **options: Any) -> "RedisStreamChannel":
        """A :class:`RedisStreamChannel` over the stream ``name``."""
        options.pop("partitions", None)  # a Kafka notion; accepted so apps port unchanged
        return RedisStreamChannel(self.app, name, transport=self, **options)

    def subscribe_channel(self, channel: ChannelT) -> None:
        """``channel`` has a local subscriber: read its stream (now, or at start)."""
        if not isinstance(channel, RedisStreamChannel):
            raise TypeError(f"{self!r} reads its own streams, not {channel!r}")
        root = channel.root
        reader = self._readers.get(root.name)
        if reader is None:
            reader = self._readers[root.name] = _StreamReader(self, root)
        if self._fetching:
            reader.start()
        reader.subscribers_changed()

    # -- lifecycle -------------------------------------------------------------
    async def on_start(self) -> None:
        self._closed = False
        await self.check_connection()
        self._fetching = True
        for reader in self._readers.values():
            reader.start()

    async def stop_fetching(self, timeout: float) -> None:
        """Stop reading, wait (up to ``timeout``) for held entries, XACK them."""
        self._fetching = False
        readers = list(self._readers.values())
        for reader in readers:
            await reader.stop_reading()
        if self.app.crash_reasons:
            timeout = 0.0  # an agent stopped on error abandoned its batch: it never finishes
        # Batches abandoned on the way (a failed sink write) are not waited for
        # either: they never finish, and stay pending (see _StreamReader.drain).
        await asyncio.gather(*(reader.drain(timeout) for reader in readers),
                             return_exceptions=True)

    async def on_stop(self) -> None:
        self.disarm_exit_guard()  # an orderly stop: the producer is flushed below
        self._fetching = False
        for channel in list(self.topics.values()):
            # Their entries stay pending: the next worker dead-letters them.
            if isinstance(channel, TransportChannel):
                channel.cancel_dead_letter_retries()
        for reader in list(self._readers.values()):
            await reader.stop_reading()
            await reader.drain(0.5)
            await reader.close()
        if self._producer is not None:
            await self._producer.close()
        self._closed = True
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def lag(self) -> Dict[str, int]:
        """Entries not yet read by the app's group, per stream (``XINFO GROUPS``, Redis 7+)."""
        out: Dict[str, int] = {}
        for name, channel in self.topics.items():
            if not channel.subscriber_count or not isinstance(channel, RedisStreamChannel):
                continue
            for group in await self.client.xinfo_groups(name):
                group_name = group.get("name")
                if isinstance(group_name, bytes):
                    group_name = group_name.decode()
                if group_name == channel.group and group.get("lag") is not None:
                    out[name] = int(group["lag"])
        return out

    async def tail(self, channel: ChannelT, *,
                   from_beginning: bool = False) -> AsyncGenerator[bytes, None]:
        """``channel``'s entries as they arrive, with plain ``XREAD`` (no group)."""
        await self.check_connection()
        last: Any = "0" if from_beginning else "$"
        while True:
            try:
                # redis-py types the reply of every RESP version; this client
                # speaks RESP2: [[stream, [(entry_id, {field: data}), ...]], ...].
                reply: Any = await self.client.xread({channel.name: last}, count=1000,
                                                     block=1000)
            except rexc.RedisError as exc:
                raise self.translate_error(exc) from None
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    value = fields.get(VALUE_FIELD)
                    if value is not None:
                        yield value

    def status(self) -> Dict[str, Any]:
        """Entries held (read, not yet XACKed) per stream."""
        return {name: {"held": len(r.held)} for name, r in self._readers.items()}


class RedisStreamChannel(TransportChannel):
    """A channel over one Redis Stream, read in a consumer group.

    ``maxlen`` trims the stream approximately (``XADD MAXLEN ~``) on every
    write; ``group`` names the consumer group (default: the app id). An entry
    keeps the encoded value in its ``value`` field, the key in ``key``, and
    each header in a field of its own, so entries written by other clients
    (``XADD s * value ...``) are read as well.
    """

    transport_name = "redis"
    transport: RedisTransport

    def __init__(self, app: Optional[AppT] = None, name: Optional[str] = None, *,
                 maxlen: Optional[int] = None, group: Optional[str] = None,
                 **kwargs: Any) -> None:
        if maxlen is not None and (not isinstance(maxlen, int) or isinstance(maxlen, bool)
                                   or maxlen < 1):
            raise ConfigurationError(f"redis channel {name!r}: maxlen must be a positive int")
        self.maxlen = maxlen
        self.group = group or (app.id if app is not None else "sabot")
        super().__init__(app, name, maxlen=maxlen, group=group, **kwargs)

    # -- producing -------------------------------------------------------------
    async def send_from(self, value: Any, sources: Sequence[Any] = ()) -> Any:
        """Produce ``value``; exactly once, staged for the commit of ``sources`` (redis_eos)."""
        if sources and self.transport.exactly_once:
            target = redis_eos.staging_for(self.transport, sources)
            if target is not None:
                with redis_eos.staged(target):
                    return await super().send_from(value, sources)
        return await super().send_from(value, sources)

    async def produce(self, key: Optional[bytes], value: bytes,
                      headers: Optional[Headers]) -> "asyncio.Future[str]":
        """Queue one XADD; the returned future resolves to the entry id (``str``).

        Exactly once, inside ``send_from`` for Redis sources, the XADD is
        staged for the commit of those entries instead (the future is done,
        with ``None``).
        """
        args: List[Any] = [VALUE_FIELD, value]
        if key is not None:
            args += (KEY_FIELD, key)
        if headers:
            for name, data in headers.items():
                if name in _RESERVED:
                    raise ValueError(f"header name {name!r} is reserved for the entry's {name}")
                args += (name, data)
        staging = redis_eos.current_staging()
        if staging is not None:
            return staging[0].stage(staging[1], self.name, self.maxlen, args)
        size = len(value) + (len(key) if key is not None else 0)
        return await self.transport.producer.add(self.name, self.maxlen, args, size)

    async def flush(self) -> None:
        """Wait until every value sent so far is stored in Redis."""
        await super().flush()
        await self.transport.producer.flush()

    # -- consuming -------------------------------------------------------------
    def position_headers(self, position: Any) -> Dict[str, bytes]:
        """The failed entry's id, for its dead-letter entry."""
        return {"sabot-source-id": str(position[1]).encode()}

    async def dead_letter_valueless(self, entry_id: str, headers: Optional[Dict[str, bytes]],
                                    on_done: Any) -> None:
        """Dead-letter an entry that has no ``value`` field (another client's).

        ``on_done()`` runs once the dead-letter entry is stored, as for the
        entries the codec refused.
        """
        written = await self.dead_letter(b"", "entry has no 'value' field", headers,
                                         position=(self.name, entry_id))
        when_stored(written, on_done)

    def is_too_large(self, exc: BaseException) -> bool:
        """True for Redis's refusal of a value over ``proto-max-bulk-len``."""
        text = str(exc)
        return "maximum allowed size" in text or "invalid bulk length" in text


class _Producer:
    """Pipelines the XADDs of every channel: one round trip per burst of sends."""

    def __init__(self, transport: RedisTransport) -> None:
        self.transport = transport
        self._queue: List[tuple] = []
        self._task: Optional["asyncio.Future[None]"] = None

    async def add(self, stream: str, maxlen: Optional[int], fields: List[Any],
                  size: int = 0) -> "asyncio.Future[str]":
        """Queue an XADD; waits only while too many are unflushed (backpressure)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((stream, maxlen, fields, future, size))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        if len(self._queue) >= _PRODUCER_HIGH_WATER:
            await self.flush()
        return future

    async def flush(self) -> None:
        """Return when everything queued so far is written (or has failed)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        # Sends queued during one round trip go out together in the next.
        while self._queue:
            queue = self._queue
            n = size = 0
            for item in queue:
                n += 1
                size += item[4]
                if n == _PIPELINE_CHUNK or size >= _PIPELINE_BYTES:
                    break
            chunk, self._queue = queue[:n], queue[n:]
            await self._write(chunk, size)

    async def _write(self, chunk: List[tuple], size: int) -> None:
        transport = self.transport
        commands = [("XADD", stream, "*", *fields) if maxlen is None else
                    ("XADD", stream, "MAXLEN", "~", maxlen, "*", *fields)
                    for stream, maxlen, fields, *_ in chunk]
        # A retried XADD may store an entry twice: at-least-once.
        policy = dataclasses.replace(_RECONNECT, deadline=transport.connect_timeout,
                                     retry_on=_CONNECTION_ERRORS, never_retry=_REFUSED)

        def retrying(attempt: int, exc: BaseException, delay: float) -> None:
            logger.warning("redis at %s: write failed (%s); retrying", transport.safe_url,
                           type(exc).__name__)

        try:
            results = await policy.call(lambda: transport.round_trip(commands, size),
                                        on_retry=retrying)
        except asyncio.CancelledError:
            # Cancelled with the loop (a script ending) or by a stop: the
            # chunk goes back to the front; write_queued may still write
            # it (an XADD that was on its way may be stored twice).
            self._queue[:0] = chunk
            raise
        except Exception as exc:  # never leave a sender waiting on its future
            _fail(chunk, transport.translate_error(exc))
            return
        for (_, _, _, future, _), result in zip(chunk, results):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(transport.translate_error(result))
            else:
                future.set_result(result.decode() if isinstance(result, bytes) else result)

    async def write_queued(self) -> tuple:
        """Write everything queued now, without the background task (at exit).

        Returns ``(written, failed, reason)``.
        """
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        queue, self._queue = self._queue, []
        futures = [item[3] for item in queue]
        for i in range(0, len(queue), _PIPELINE_CHUNK):
            chunk = queue[i:i + _PIPELINE_CHUNK]
            await self._write(chunk, sum(item[4] for item in chunk))
        failed = [f for f in futures if f.done() and not f.cancelled() and f.exception()]
        reason = str(failed[0].exception()) if failed else ""
        return len(futures) - len(failed), len(failed), reason

    async def close(self) -> None:
        """Write what is queued, then stop."""
        try:
            await self.flush()
        except Exception as exc:  # the futures carry the error already
            logger.debug("final flush failed: %r", exc)
        if self._queue:
            # A write task cancelled mid-way put its chunk back: write it or fail it.
            await self.write_queued()


def _fail(chunk: List[tuple], exc: BaseException) -> None:
    for _, _, _, future, _ in chunk:
        if not future.done():
            future.set_exception(exc)


class _StreamReader:
    """Reads one stream in one consumer group and XACKs what agents finished.

    ``held`` is every id read and not yet acknowledged on the server: in an
    agent, in a dead-letter write, or waiting for its XACK. Recovery reads
    skip those ids, so an entry is never in two batches of this worker at
    once, and an id leaves ``held`` only when its XACK has succeeded. They
    also skip ids whose XACK succeeded while the read was on its way (the
    reply may have been built before that XACK), so an id this worker
    acknowledged is never delivered again by it.
    """

    def __init__(self, transport: RedisTransport, channel: RedisStreamChannel) -> None:
        self.transport = transport
        self.channel = channel
        self.stream = channel.name
        self.group = channel.group
        self.consumer = transport.consumer_name
        self.count = channel.batch_size
        self.held: Set[bytes] = set()
        #: Reads handed to the agents and not finished (each with its ids).
        self._inflight = InFlight()
        #: Ids whose XACK succeeded since the recovery read in flight was sent.
        self._acked_meanwhile: Optional[Set[bytes]] = None
        self._to_ack: List[bytes] = []
        self._xack_in_flight = False
        self._ack_wake = asyncio.Event()
        self._have_subscribers = asyncio.Event()
        self._read_task: Optional["asyncio.Future[None]"] = None
        self._ack_task: Optional["asyncio.Future[None]"] = None
        self._recover = True
        self._next_claim = 0.0
        self._stopping = False
        self._acks_open = True
        #: Exactly once: the outputs staged for this stream's entries.
        self.outbox = redis_eos.Outbox(self) if transport.exactly_once else None

    # -- control ---------------------------------------------------------------
    def start(self) -> None:
        """Start the read and ack loops (idempotent)."""
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.ensure_future(self._ack_loop())
        if self._read_task is None or self._read_task.done():
            self._read_task = asyncio.ensure_future(self._read_loop())
            self._read_task.add_done_callback(self._read_loop_ended)

    def subscribers_changed(self) -> None:
        """Wake the read loop when the channel has a subscriber again."""
        if self.channel.subscriber_count:
            self._have_subscribers.set()

    def _read_loop_ended(self, task: "asyncio.Future[None]") -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            return
        logger.error("redis reader of %r stopped: %s", self.stream, exc)
        app = self.transport.app
        if app is not None:
            app.report_crash(exc)

    async def stop_reading(self) -> None:
        """Stop reading new entries; entries already read keep going.

        The loop notices within one ``BLOCK`` period; it is cancelled only if
        it hangs (a publish waiting on a stuck agent), since cancelling a
        blocked XREADGROUP loses its reply (the entries then wait, pending,
        for a claim).
        """
        self._stopping = True
        self._have_subscribers.set()
        task, self._read_task = self._read_task, None
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), 1.0 + 3 * self.transport.block_ms / 1000)
        except asyncio.TimeoutError:
            task.cancel()
        except Exception:  # reported by _read_loop_ended
            pass
        await asyncio.gather(task, return_exceptions=True)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for every held entry to be acknowledged.

        Batches that were abandoned (a sink write failed, an agent stopped
        with them) never finish: they are not waited for. After that, batches
        still finishing (or dropped by a stopping agent, which releases them
        unprocessed) are not acknowledged: their entries stay pending and are
        read again, so a stop never loses an entry.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._waiting_for():
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.warning("redis stream %r: %d entries still unacknowledged at stop; "
                               "they stay pending and will be read again",
                               self.stream, len(self.held))
                break
            # Woken by a finished or abandoned read (the batch says so) or an XACK.
            await self._inflight.changed(remaining)
        self._acks_open = False

    def _waiting_for(self) -> bool:
        """True while some held entry may still be acknowledged."""
        acking = bool(self._to_ack) or self._xack_in_flight
        if not self._acks_open:  # drained once: only XACKs already queued can land
            return acking
        return acking or self._inflight.count() > 0

    async def close(self) -> None:
        """Stop the ack loop (after one last attempt to XACK what is finished)."""
        if self._to_ack:
            try:
                await self._xack(self._to_ack)
            except Exception:  # left pending on the server: read again later
                pass
        task, self._ack_task = self._ack_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- reading ---------------------------------------------------------------
    async def _read_loop(self) -> None:
        attempt = 0
        while not self._stopping:
            await self._have_subscribers.wait()
            if self._stopping:
                return
            try:
                if self._recover:
                    await self._ensure_group()
                    await self._read_own_pending()
                    await self._claim_idle()
                    self._recover = False
                    if attempt:
                        logger.info("redis at %s: reconnected, reading %r again",
                                    self.transport.safe_url, self.stream)
                    attempt = 0
                await self._read_new()
            except asyncio.CancelledError:
                raise
            except rexc.AuthenticationError as exc:
                raise self.transport.translate_error(exc) from None
            except _CONNECTION_ERRORS as exc:
                attempt += 1
                self._recover = True
                delay = _RECONNECT.delay(attempt)
                if attempt == 1 or attempt % 20 == 0:
                    logger.warning("redis at %s: lost the connection reading %r (%s); "
                                   "reconnecting", self.transport.safe_url, self.stream,
                                   type(exc).__name__)
                await asyncio.sleep(delay)
            except rexc.ResponseError as exc:
                if not _is_nogroup(exc):
                    # e.g. "unknown command 'XAUTOCLAIM'": Redis older than 6.2.
                    raise self.transport.translate_error(exc) from None
                # The stream or group vanished (a restart without persistence,
                # a DEL): create them again and carry on.
                self._recover = True

    async def _ensure_group(self) -> None:
        try:
            await self.transport.client.xgroup_create(self.stream, self.group, id="0",
                                                      mkstream=True)
        except rexc.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    async def _read_own_pending(self) -> None:
        # Entries this consumer read before a reconnect (or a restart under
        # the same name) and never acknowledged.
        last: Any = "0"
        while True:
            reply, acked = await self._recovery_read(
                "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.count,
                "STREAMS", self.stream, last)
            entries = reply[0][1] if reply else None
            if not entries:
                return
            last = entries[-1][0]
            await self._deliver(entries, recovered=True, acked=acked)

    async def _claim_idle(self) -> None:
        # Entries that another consumer (probably dead) held too long.
        start: Any = "0-0"
        while True:
            reply, acked = await self._recovery_read(
                "XAUTOCLAIM", self.stream, self.group, self.consumer,
                self.transport.claim_idle_ms, start, "COUNT", self.count)
            start, entries = reply[0], reply[1]
            if entries:
                await self._deliver(entries, recovered=True, acked=acked)
            if start in (b"0-0", "0-0"):
                break
        # Checked ten times per idle time: an entry is claimed at most a tenth
        # of it late, so a dead worker's share moves within about that time.
        self._next_claim = (asyncio.get_running_loop().time()
                            + self.transport.claim_idle_ms / 1000 / CLAIM_CHECKS_PER_IDLE)

    async def _recovery_read(self, *command: Any) -> tuple:
        """Run a recovery read; returns its reply and the ids acked meanwhile.

        The ack loop XACKs on a connection of its own: an XACK that lands
        after the server built this reply, but before the reply is parsed
        here, leaves the id in the reply and no longer in ``held``. Such ids
        are collected (by ``_forget``) while the read is on its way, and the
        caller skips them too. Nothing runs between this return and the
        parse, so no XACK can slip in after the collection ends.
        """
        acked: Set[bytes] = set()
        self._acked_meanwhile = acked
        try:
            reply = await self.transport.client.execute_command(*command)
        finally:
            self._acked_meanwhile = None
        return reply, acked

    async def _read_new(self) -> None:
        client = self.transport.client
        loop = asyncio.get_running_loop()
        block = self.transport.block_ms
        while self._have_subscribers.is_set() and not self._stopping:
            reply = await client.execute_command(
                "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.count,
                "BLOCK", block, "STREAMS", self.stream, ">")
            if reply:
                await self._deliver(reply[0][1], recovered=False)
            if loop.time() >= self._next_claim:
                await self._claim_idle()

    async def _deliver(self, entries: Sequence[Any], *, recovered: bool,
                       acked: Optional[Set[bytes]] = None) -> None:
        held = self.held
        if not recovered and all(len(e[1]) == 2 and e[1][0] == VALUE_FIELD for e in entries):
            # The common case, entries of Sabot (or alike) with just a value:
            # three C-speed passes instead of one Python loop.
            ids = [e[0] for e in entries]
            payloads = [e[1][1] for e in entries]
            keys = headers = None
            gone: List[bytes] = []
            valueless: List[tuple] = []
        else:
            ids, payloads, keys, headers, gone, valueless = _parse_entries(
                entries, held if recovered else None, acked or None)
        if gone:
            held.update(gone)
            self._acked(gone)
        if recovered and self.outbox is not None:
            self.outbox.redelivered(ids)
        if not ids and not valueless:
            return
        if self.channel.subscriber_count == 0:
            # Nobody would process them: leave them pending and read them
            # again (own pending first) once an agent subscribes.
            self._have_subscribers.clear()
            self._recover = True
            return
        for eid, hdrs in valueless:
            held.add(eid)
            delivery = self._inflight.open(payload=[eid])
            await self.channel.dead_letter_valueless(
                eid.decode(), hdrs, functools.partial(self._finished, delivery))
        if not ids:
            return
        held.update(ids)
        stream = self.stream
        fetched = Fetched(payloads, [(stream, eid.decode()) for eid in ids],
                          keys=keys, headers=headers,
                          timestamp=_entry_time(ids[-1]))
        delivery = self._inflight.open(payload=ids)
        try:
            batches = await self.channel.deliver(fetched,
                                                 functools.partial(self._finished, delivery))
        except BaseException:
            self._inflight.abandon(delivery)  # its entries stay pending: read again
            raise
        # A batch an agent gives up on says so: a stop does not wait for it.
        self._inflight.watch(delivery, batches)

    def _finished(self, delivery: Delivery) -> None:
        # on_done of a delivered read: every batch and dead letter is done.
        if self._inflight.finish(delivery):
            self._acked(delivery.payload)

    # -- acknowledging ---------------------------------------------------------
    def _acked(self, ids: List[bytes]) -> None:
        # on_done of a fetch: called synchronously from the event loop.
        if not self._acks_open:
            return  # stopping: leave them pending (see drain)
        self._to_ack.extend(ids)
        self._ack_wake.set()

    async def _ack_loop(self) -> None:
        attempt = 0
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            while self._to_ack:
                ids, self._to_ack = self._to_ack, []
                self._xack_in_flight = True
                try:
                    if not await self.transport.commit_barrier():
                        # Tables could not flush the state behind these
                        # entries: they stay unacknowledged until they can.
                        self._to_ack[:0] = ids
                        attempt += 1
                        await asyncio.sleep(_RECONNECT.delay(attempt))
                        continue
                    if self.outbox is not None:
                        await self.outbox.commit(ids)
                    else:
                        await self._xack(ids)
                    attempt = 0
                except _CONNECTION_ERRORS:
                    # Kept, not dropped: the entries stay held and are
                    # acknowledged once the server is back.
                    self._to_ack[:0] = ids
                    attempt += 1
                    await asyncio.sleep(_RECONNECT.delay(attempt))
                except rexc.ResponseError as exc:
                    # NOGROUP: the server lost the group (restart without
                    # persistence); those entries are gone with it.
                    logger.warning("redis stream %r: cannot XACK %d entries (%s)",
                                   self.stream, len(ids), exc)
                    self._forget(ids)
                finally:
                    self._xack_in_flight = False
                    self._inflight.notify()

    async def _xack(self, ids: List[bytes]) -> None:
        # Through round_trip: packing thousands of ids is where redis-py's
        # Python packer would spend most of a read loop's time.
        round_trip = self.transport.round_trip
        for i in range(0, len(ids), _ACK_CHUNK):
            part = ids[i:i + _ACK_CHUNK]
            reply = (await round_trip([("XACK", self.stream, self.group, *part)]))[0]
            if isinstance(reply, Exception):
                raise reply
            self._forget(part)

    def _forget(self, ids: List[bytes]) -> None:
        held = self.held
        held.difference_update(ids)
        meanwhile = self._acked_meanwhile
        if meanwhile is not None:  # a recovery read is on its way: see _recovery_read
            meanwhile.update(ids)
        self._inflight.notify()  # a stop may be waiting for these XACKs


def _parse_entries(entries: Sequence[Any], skip: Optional[Set[bytes]],
                   also_skip: Optional[Set[bytes]] = None) -> tuple:
    """Split raw entries into parallel lists, whatever their fields.

    Returns ``(ids, payloads, keys, headers, gone, valueless)``: ``keys`` and
    ``headers`` are ``None`` when no entry has one; ``gone`` lists ids whose
    entry was trimmed while pending, ``valueless`` ``(id, headers)`` of
    entries without a ``value`` field. Ids in ``skip`` (or ``also_skip``)
    are left out.
    """
    ids: List[bytes] = []
    payloads: List[Any] = []
    keys: Optional[List[Any]] = None
    headers: Optional[List[Any]] = None
    gone: List[bytes] = []
    valueless: List[tuple] = []
    for entry in entries:
        eid, fields = entry[0], entry[1]
        if skip is not None and eid in skip:
            continue  # still in an agent here, or its XACK is on the way
        if also_skip is not None and eid in also_skip:
            continue  # acknowledged by this worker while the read was on its way
        if not fields:
            gone.append(eid)  # trimmed away while pending: nothing to process
            continue
        payload, key, hdrs = _split_fields(fields)
        if payload is None:
            valueless.append((eid, hdrs))
            continue
        if key is not None and keys is None:
            keys = [None] * len(ids)
        if hdrs is not None and headers is None:
            headers = [None] * len(ids)
        if keys is not None:
            keys.append(key)
        if headers is not None:
            headers.append(hdrs)
        ids.append(eid)
        payloads.append(payload)
    return ids, payloads, keys, headers, gone, valueless


def _split_fields(fields: Sequence[Any]) -> tuple:
    """``(value, key, headers)`` from a flat ``[field, data, ...]`` list."""
    value = key = None
    headers: Optional[Dict[str, bytes]] = None
    for i in range(0, len(fields) - 1, 2):
        name, data = fields[i], fields[i + 1]
        if name == VALUE_FIELD:
            value = data
        elif name == KEY_FIELD:
            key = data
        else:
            if headers is None:
                headers = {}
            headers[name.decode("utf-8", "replace") if isinstance(name, bytes) else name] = data
    return value, key, headers


def _entry_time(entry_id: bytes) -> Optional[float]:
    """Seconds since the epoch from an entry id's millisecond part."""
    try:
        return int(entry_id.split(b"-", 1)[0]) / 1000.0
    except (ValueError, AttributeError):
        return None
