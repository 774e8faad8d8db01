"""The Kafka transport: ``App(broker="kafka://host:port[,host:port]")``.

One ``AIOKafkaProducer`` and one ``AIOKafkaConsumer`` per worker. The consumer
is in the group named after the app id and subscribes to every topic with a
local subscriber. Each partition's messages from one ``getmany`` become one
batch (``TransportChannel.deliver``: decode, dead-letter the bad, publish).

Delivery is at-least-once. An offset is committed only when the batch it came
in is done for every local subscriber and its dead letters are acknowledged:
``_PartitionOffsets`` keeps the fetched ranges of each partition in order and
the commit position is the end of the longest finished prefix, so a slow batch
holds back the commits after it instead of being skipped (Faust issue #217);
``InFlight`` (shared with Redis) knows which fetches the agents still hold.
Commits happen every ``broker_commit_interval``, on revoke (after waiting,
bounded, for in-flight batches) and on stop.

Keys are partitioned by aiokafka's ``DefaultPartitioner``: murmur2, masked to
positive, modulo the partition count, the Java client's formula.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from typing import (Any, AsyncGenerator, Awaitable, Callable, Dict, Iterable, Iterator, List,
                    Mapping, Optional, Sequence, Tuple, Union, overload)

from aiokafka import (AIOKafkaConsumer, AIOKafkaProducer,
                      ConsumerRebalanceListener, TopicPartition)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.errors import (KafkaConnectionError, KafkaError, MessageSizeTooLargeError,
                            RecordTooLargeError)

from ..canonical import canonical_url
from ..exceptions import (BrokerUnavailable, ChannelClosed, ConfigurationError,
                          TransportError)
from ..retry import RetryPolicy
from ..settings import Settings
from ..types import AppT, ChannelT, Headers
from .inflight import Delivery, InFlight
from .kafka_assignor import SabotAssignor
from . import kafka_eos
from .send_options import send_with_options
from .transport import Transport
from .transport_channel import Fetched, TransportChannel

__all__ = ["KafkaTopic", "KafkaTransport", "kafka_client_options"]

logger = logging.getLogger("sabot.channels.kafka")

#: Kafka's "topic already exists" error code in CreateTopics responses.
TOPIC_ALREADY_EXISTS = 36


class KafkaTopic(TransportChannel):
    """A Kafka topic as a channel: ``send`` writes to Kafka, subscribers read it.

    Values are encoded with ``value_serializer`` (``raw``, ``json``, ``arrow``
    or a registered codec). ``send`` returns the delivery future (awaiting it
    gives ``RecordMetadata``) without waiting for it; ``flush()`` waits for
    every pending write.
    """

    transport_name = "kafka"
    transport: KafkaTransport

    def __init__(self, app: Optional[AppT] = None, name: Optional[str] = None, *,
                 partitions: Optional[int] = None, **kwargs: Any) -> None:
        if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
            raise ConfigurationError(f"topic {name!r}: partitions must be a positive int")
        self.partitions = partitions
        super().__init__(app, name, partitions=partitions, **kwargs)

    async def send(self, key: Any = None, value: Any = None,
                   headers: Optional[Headers] = None, *,
                   partition: Optional[int] = None,
                   timestamp_ms: Optional[int] = None, **options: Any) -> "asyncio.Future[Any]":
        """Write one value; returns its delivery future (awaiting it gives the metadata).

        Does not wait for delivery: the producer batches writes. Await the
        returned future, or ``flush()``, to know it is durable. ``options``:
        Faust's (``timestamp`` in seconds, ``callback``, ...: ``send_options``).
        """
        if options:
            return await send_with_options(self, key, value, headers,
                                           dict(options, partition=partition,
                                                timestamp_ms=timestamp_ms))
        transport = self.transport
        producer = kafka_eos.current_producer() or transport.producer
        if key is not None:
            key = self.encode_key(key)
        if producer is None or headers or self.schema is not None or transport.pending is not None:
            return await self.produce(key, self.encode_value(value), headers,
                                      partition=partition, timestamp_ms=timestamp_ms)
        # The common case straight to aiokafka: per message this path costs
        # about a tenth of what the producer itself does.
        return await producer.send(self.name, self.codec.encode(value), key,
                                   partition, timestamp_ms)

    def produce(self, key: Optional[bytes], value: bytes,
                headers: Optional[Headers], *,
                partition: Optional[int] = None,
                timestamp_ms: Optional[int] = None) -> Awaitable[Any]:
        """Hand one message to the producer; awaiting gives its delivery future.

        A plain function returning aiokafka's own coroutine: one coroutine
        frame less per message on the hottest producing path.
        """
        pairs: Optional[List[Any]] = None
        if headers:  # aiokafka wants [(name, bytes)]; accept that shape too
            pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        transport = self.transport
        producer = kafka_eos.current_producer() or transport.producer
        if producer is None or transport.pending is not None:
            return transport.send_tracked(self.name, value, key, partition, timestamp_ms, pairs)
        return producer.send(self.name, value, key=key, partition=partition,
                             timestamp_ms=timestamp_ms, headers=pairs)

    async def send_from(self, value: Any, sources: Sequence[Any] = ()) -> Any:
        """Produce ``value``; exactly once, in the transaction of its sources' partition."""
        eos = self.transport.eos
        if eos is not None and sources:
            try:
                producer = await eos.producer_for_sources(sources)
            except kafka_eos.StaleOutput as exc:  # its batch is abandoned, as on a failed send
                failed: asyncio.Future = asyncio.get_running_loop().create_future()
                failed.set_exception(exc)
                return failed
            if producer is not None:
                with kafka_eos.using(producer):
                    return await super().send_from(value, sources)
        return await super().send_from(value, sources)

    async def flush(self) -> None:
        """Wait until every message sent so far is acknowledged by the broker."""
        if self.transport.producer is not None:
            await self.transport.producer.flush()

    async def maybe_declare(self) -> None:
        """Create the topic with its partition count when it is missing.

        Only when ``topic_allow_declare`` is on; an existing topic is left as it is.
        """
        if self.app is None or self.app.conf.topic_allow_declare:
            await self.transport.declare_topic(self.name, self.partitions)

    @property
    def max_message_bytes(self) -> Optional[int]:
        """The producer's ``producer_max_request_size``: no message may be larger."""
        return self.app.conf.producer_max_request_size if self.app is not None else 1024 * 1024

    def is_too_large(self, exc: BaseException) -> bool:
        """True when the producer or the broker refused a message for its size."""
        return isinstance(exc, (MessageSizeTooLargeError, RecordTooLargeError))

    def position_headers(self, position: Any) -> Dict[str, bytes]:
        """``sabot-topic``/``-partition``/``-offset`` of a failed message."""
        topic, partition, offset = position
        return {"sabot-topic": topic.encode(), "sabot-partition": str(partition).encode(),
                "sabot-offset": str(offset).encode()}


class _RecordView(Sequence[Any]):
    """One field of every fetched record, computed when it is read.

    A fetch holds thousands of records; building their keys, headers,
    timestamps and ``(topic, partition, offset)`` positions up front would cost
    several passes that nobody pays for unless an agent reads ``events()``.
    """

    __slots__ = ("records", "field")

    def __init__(self, records: List[Any], field: Callable[[Any], Any]) -> None:
        self.records, self.field = records, field

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> List[Any]: ...

    def __getitem__(self, i: Union[int, slice]) -> Any:
        if isinstance(i, slice):
            return list(map(self.field, self.records[i]))
        return self.field(self.records[i])

    def __iter__(self) -> Iterator[Any]:
        return map(self.field, self.records)

    def __repr__(self) -> str:
        return f"<{len(self.records)} lazy record fields>"


def _key(record: Any) -> Any:
    return record.key


def _headers(record: Any) -> Optional[Dict[str, bytes]]:
    return dict(record.headers) if record.headers else None


def _timestamp(record: Any) -> float:
    return record.timestamp / 1000.0


def fetched_from_records(tp: TopicPartition, records: List[Any]) -> Fetched:
    """One partition's ``getmany`` records as a ``Fetched``: one pass, the rest lazy."""
    topic, partition = tp.topic, tp.partition
    return Fetched(
        payloads=[r.value for r in records],
        positions=_RecordView(records, lambda r: (topic, partition, r.offset)),
        keys=_RecordView(records, _key),
        headers=_RecordView(records, _headers),
        timestamps=_RecordView(records, _timestamp),
        timestamp=records[-1].timestamp / 1000.0,
    )


class _Range:
    __slots__ = ("end", "done", "delivery")

    def __init__(self, end: int) -> None:
        self.end = end
        self.done = False
        self.delivery: Optional[Delivery] = None  # its agents' work, in flight or not


class _PartitionOffsets:
    """Fetched ranges of one partition in order; commits the finished prefix.

    A range that is never finished (abandoned by an agent, or not handed over
    at a stop) stays in place, so no commit passes it.
    """

    __slots__ = ("ranges", "committable", "last")

    def __init__(self) -> None:
        self.ranges: deque = deque()
        self.committable: Optional[int] = None
        self.last = -1

    def add(self, first_offset: int, last_offset: int) -> Optional[_Range]:
        """Track a fetched range; ``None`` if it does not follow the last one.

        A range at or before one already tracked can only be a stale fetch;
        tracking it would let its early finish commit past unfinished offsets.
        """
        if first_offset <= self.last:
            return None
        self.last = last_offset
        r = _Range(last_offset)
        self.ranges.append(r)
        return r

    def finish(self, r: _Range) -> None:
        """``r`` is processed: advance the commit position over finished ranges."""
        r.done = True
        ranges = self.ranges
        while ranges and ranges[0].done:
            self.committable = ranges.popleft().end + 1


def kafka_client_options(conf: Any) -> Dict[str, Any]:
    """aiokafka security keyword arguments from the app's settings.

    ``broker_credentials`` may be an ``ssl.SSLContext``, a ``(username,
    password)`` pair (SASL PLAIN) or a mapping with ``mechanism``,
    ``username``, ``password`` and ``ssl_context``; ``ssl_context`` and the
    ``sasl_*`` settings override it. The result holds secrets: never log it.
    """
    creds = conf.broker_credentials
    ctx = mech = user = password = None
    if isinstance(creds, ssl.SSLContext):
        ctx = creds
    elif isinstance(creds, tuple) and len(creds) == 2:
        mech, (user, password) = "PLAIN", creds
    elif isinstance(creds, Mapping):
        ctx = creds.get("ssl_context")
        mech, user, password = creds.get("mechanism"), creds.get("username"), creds.get("password")
    elif creds is not None:
        raise ConfigurationError(
            "broker_credentials must be an ssl.SSLContext, a (username, password) pair "
            f"or a mapping, got {type(creds).__name__}")
    ctx = conf.ssl_context or ctx
    mech = conf.sasl_mechanism or mech or ("PLAIN" if (conf.sasl_username or user) else None)
    user = conf.sasl_username or user
    password = conf.sasl_password or password
    options: Dict[str, Any] = {}
    if ctx is not None:
        options["ssl_context"] = ctx
    if mech is not None:
        options.update(sasl_mechanism=mech, sasl_plain_username=user,
                       sasl_plain_password=password)
    protocol = {(False, False): "PLAINTEXT", (True, False): "SSL",
                (False, True): "SASL_PLAINTEXT", (True, True): "SASL_SSL"}
    options["security_protocol"] = protocol[(ctx is not None, mech is not None)]
    return options


#: Faust's Kafka settings -> (aiokafka keyword, conversion); None values are left out.
_PRODUCER_SETTINGS: Dict[str, Tuple[str, Callable[[Any], Any]]] = {
    "producer_acks": ("acks", lambda v: "all" if v in (-1, "all") else v),
    "producer_compression_type": ("compression_type", lambda v: v),
    "producer_linger_ms": ("linger_ms", int),
    "producer_linger": ("linger_ms", lambda v: int(v * 1000)),
    "producer_max_batch_size": ("max_batch_size", int),
    "producer_request_timeout": ("request_timeout_ms", lambda v: int(v * 1000)),
    "producer_metadata_max_age_ms": ("metadata_max_age_ms", int),
    "producer_connections_max_idle_ms": ("connections_max_idle_ms", int),
    "broker_client_id": ("client_id", str),
}
_CONSUMER_SETTINGS: Dict[str, Tuple[str, Callable[[Any], Any]]] = {
    "broker_request_timeout": ("request_timeout_ms", lambda v: int(v * 1000)),
    "broker_max_poll_records": ("max_poll_records", int),
    "broker_max_poll_interval": ("max_poll_interval_ms", lambda v: int(v * 1000)),
    "broker_rebalance_timeout": ("rebalance_timeout_ms", lambda v: int(v * 1000)),
    "broker_check_crcs": ("check_crcs", bool),
    "consumer_group_instance_id": ("group_instance_id", str),
    "consumer_metadata_max_age_ms": ("metadata_max_age_ms", int),
    "consumer_connections_max_idle_ms": ("connections_max_idle_ms", int),
    "broker_client_id": ("client_id", str),
}


def client_settings(conf: Any, kind: str) -> Dict[str, Any]:
    """aiokafka keyword arguments of the ``producer`` or ``consumer`` from Faust-named settings."""
    table = _PRODUCER_SETTINGS if kind == "producer" else _CONSUMER_SETTINGS
    options: Dict[str, Any] = {}
    for name, (keyword, convert) in table.items():
        value = conf.get(name)
        if value is not None:
            options[keyword] = convert(value)
    return options


def bootstrap_servers(url: str) -> List[str]:
    """``kafka://h1:p1,h2:p2`` -> ``["h1:p1", "h2:p2"]`` (port 9092 by default).

    ``kafka://`` with no host is ``localhost:9092``, as in Faust.
    """
    rest = url.split("://", 1)[1] if "://" in url else url
    hosts = rest.rsplit("@", 1)[-1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    servers = []
    for host in filter(None, (h.strip() for h in hosts.split(","))):
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "9092")
        if not (port.isdigit() and 0 < int(port) < 65536) or not name:
            raise ConfigurationError(
                f"broker URL: Kafka server {name or '?'!r} needs a port from 1 to 65535")
        servers.append(f"{name}:{port}")
    # As Faust: "kafka://" alone is the broker on this machine.
    return servers or ["localhost:9092"]


class _PendingSends:
    """Messages written outside a running worker and not yet delivered.

    Kept (by reference: the bytes are the producer's own) so that they can
    be written again if the event loop closes under the producer; a message
    leaves once the broker acknowledged it.
    """

    __slots__ = ("_messages",)

    def __init__(self) -> None:
        self._messages: Dict["asyncio.Future[Any]", tuple] = {}

    def track(self, future: "asyncio.Future[Any]", message: tuple) -> None:
        if future.done() and not future.cancelled() and future.exception() is None:
            return
        self._messages[future] = message
        future.add_done_callback(self._settled)

    def _settled(self, future: "asyncio.Future[Any]") -> None:
        if not future.cancelled() and future.exception() is None:
            self._messages.pop(future, None)

    def take(self) -> List[tuple]:
        """Every message not delivered yet, in the order sent; forgets them."""
        messages = list(self._messages.values())
        self._messages.clear()
        return messages


class _Rebalance(ConsumerRebalanceListener):
    """Commit what is finished before partitions move to another worker."""

    def __init__(self, transport: "KafkaTransport") -> None:
        self.transport = transport

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.transport.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.transport.on_assigned(set(assigned))
        self.transport.notify_assigned(set(assigned))


class KafkaTransport(Transport):
    """``kafka://``: the producer, the group consumer, the fetch and commit loops."""

    scheme = "kafka"
    channel_class = KafkaTopic
    #: aiokafka logs every refused connection while the transport retries;
    #: the transport's own one-line error says it all.
    quiet_loggers = ("aiokafka",)

    def __init__(self, app: AppT, url: str) -> None:
        super().__init__(app, url)
        self.servers = bootstrap_servers(url)
        self.producer: Optional[AIOKafkaProducer] = None
        self.consumer: Optional[AIOKafkaConsumer] = None
        #: The group's assignment with every member's web URL (``owner_urls``).
        self.assignor = SabotAssignor(lambda: canonical_url(app))
        self._admin: Optional[AIOKafkaAdminClient] = None
        self._producer_lock = asyncio.Lock()
        self._admin_lock = asyncio.Lock()
        self._declared: set = set()
        self._wanted: Dict[str, KafkaTopic] = {}
        self._subscribed: frozenset = frozenset()
        self._offsets: Dict[TopicPartition, _PartitionOffsets] = {}
        #: Fetches handed to the agents and not finished, tagged by partition.
        self._inflight = InFlight()
        self._committed: Dict[TopicPartition, int] = {}
        self._paused: set = set()
        self._fetch_task: Optional["asyncio.Task[None]"] = None
        self._commit_task: Optional["asyncio.Task[None]"] = None
        self._wake_fetch = asyncio.Event()
        self._fetching = False
        self._delivering = False
        self._closed = False
        self._generation = 0  # bumped on every revoke: older fetches are stale
        self._background: set = set()
        #: Sends made outside a running worker, kept until delivered (see
        #: ``flush_at_exit``); None inside a worker, whose stop flushes.
        self.pending: Optional[_PendingSends] = None
        #: Exactly once: the transactional producers, one per input partition.
        self.eos: Optional[kafka_eos.KafkaExactlyOnce] = (
            kafka_eos.KafkaExactlyOnce(self)
            if app.conf.processing_guarantee == "exactly_once" else None)

    def __repr__(self) -> str:  # never the credentials
        try:
            protocol = kafka_client_options(self.app.conf)["security_protocol"]
        except Exception:  # repr must not raise, even with bad settings
            protocol = "?"
        return f"<KafkaTransport {','.join(self.servers)} {protocol}>"

    @property
    def label(self) -> str:
        return repr(self)

    @property
    def conf(self) -> Settings:
        return self.app.conf

    def create_channel(self, name: str, **options: Any) -> KafkaTopic:
        """A ``KafkaTopic`` bound to this transport."""
        return KafkaTopic(self.app, name, transport=self, **options)

    # -- connecting ------------------------------------------------------------
    def _client_options(self) -> Dict[str, Any]:
        return dict(bootstrap_servers=self.servers, client_id=f"sabot-{self.app.id}",
                    **kafka_client_options(self.conf))

    async def _start_client(self, client: Any, what: str) -> Any:
        # aiokafka fails fast on a refused connection and may hang on a
        # black-holed one: retry the first until the deadline, cap the second.
        timeout = self.conf.broker_connect_timeout
        deadline = time.monotonic() + timeout
        policy = RetryPolicy(max_attempts=None, initial_delay=0.25, multiplier=1.0, jitter=0,
                             deadline=timeout,
                             retry_on=(KafkaConnectionError, asyncio.TimeoutError, OSError))

        async def attempt() -> Any:
            try:
                await asyncio.wait_for(client.start(), max(0.01, deadline - time.monotonic()))
            except BaseException:
                await _close_quietly(client)
                raise
            return client

        try:
            return await policy.call(attempt)
        except (KafkaConnectionError, asyncio.TimeoutError, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BrokerUnavailable(
                f"cannot reach Kafka broker {','.join(self.servers)} within {timeout:g}s "
                f"(broker_connect_timeout): {reason}") from None
        except KafkaError as exc:
            raise TransportError(f"Kafka {what} failed to start: {exc}") from exc

    async def start_producer(self, *, standalone: bool = False) -> AIOKafkaProducer:
        """The worker's producer, started on first use (also outside a worker).

        ``standalone``: started by a send outside a running worker; then the
        sends are kept until delivered and flushed if the loop closes first.
        """
        if self._closed:
            raise ChannelClosed(f"{self!r} is stopped: no more sends")
        async with self._producer_lock:
            if self.producer is None:
                producer = AIOKafkaProducer(
                    max_request_size=self.conf.producer_max_request_size,
                    **client_settings(self.conf, "producer"), **self._client_options())
                self.producer = await self._start_client(producer, "producer")
                if standalone and not self._fetching:
                    self.pending = _PendingSends()
                    self.guard_exit()
        return self.producer

    async def send_tracked(self, topic: str, value: bytes, key: Optional[bytes],
                           partition: Optional[int], timestamp_ms: Optional[int],
                           headers: Any) -> "asyncio.Future[Any]":
        """Write one message (starting the producer if needed); its delivery future.

        Outside a running worker the message is kept until delivered.
        """
        producer = self.producer or await self.start_producer(standalone=True)
        future = await producer.send(topic, value, key=key, partition=partition,
                                     timestamp_ms=timestamp_ms, headers=headers)
        if self.pending is not None:
            self.pending.track(future, (topic, value, key, partition, timestamp_ms, headers))
        return future

    async def flush_at_exit(self) -> None:
        """The loop is closing with sends undelivered: write them again, say how it went.

        The producer's own task was cancelled with the loop's other tasks,
        so a fresh producer writes what the old one had not delivered (a
        message that was on its way may be written twice: at-least-once).
        """
        messages = self.pending.take() if self.pending is not None else []
        self.pending = None
        old, self.producer = self.producer, None
        if old is not None:
            # Its sender task is gone: stop() would wait for a flush that
            # cannot happen. Closing its connections is all there is to do;
            # aiokafka has no public way to mark it closed, and would warn
            # "Unclosed AIOKafkaProducer" when it is collected.
            try:
                await asyncio.wait_for(old.client.close(), 5.0)
            except (asyncio.TimeoutError, Exception):
                pass
            old._closed = True
        if not messages:
            return
        futures: List[Any] = []
        reason = ""
        try:
            with self.quieted():
                producer = await self.start_producer()
            try:
                for topic, value, key, partition, timestamp_ms, headers in messages:
                    futures.append(await producer.send(
                        topic, value, key=key, partition=partition,
                        timestamp_ms=timestamp_ms, headers=headers))
                await asyncio.wait_for(producer.flush(), self.conf.broker_connect_timeout)
            finally:
                self.producer = None
                await _close_quietly(producer)
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        failed = len(messages) - sum(
            1 for f in futures if f.done() and not f.cancelled() and f.exception() is None)
        if failed:
            logger.error("%d of %d sends still pending when the event loop closed could not "
                         "be delivered to Kafka %s: %s", failed, len(messages),
                         ",".join(self.servers), reason or "not acknowledged in time")
        else:
            logger.info("delivered %d sends still pending when the event loop closed",
                        len(messages))

    async def _admin_client(self) -> AIOKafkaAdminClient:
        async with self._admin_lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(**self._client_options())
                self._admin = await self._start_client(admin, "admin client")
        return self._admin

    async def declare_topic(self, name: str, partitions: Optional[int] = None, *,
                            config: Optional[Dict[str, str]] = None) -> None:
        """Create ``name`` with ``partitions`` (default ``topic_partitions``) if missing.

        ``config``: topic configs (``{"cleanup.policy": "compact"}`` for changelogs).
        """
        if name in self._declared:
            return
        admin = await self._admin_client()
        count = partitions or self.conf.topic_partitions
        response = await admin.create_topics(
            [NewTopic(name, count, self.conf.topic_replication_factor,
                      topic_configs=dict(config or {}))])
        for topic, code, message in _topic_errors(response):
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise TransportError(f"cannot create Kafka topic {topic!r}: {message} (error {code})")
        self._declared.add(name)

    # -- lifecycle -------------------------------------------------------------
    async def on_start(self) -> None:
        try:
            await self._start_clients()
        except BaseException:
            await self._close_clients()  # a half-started worker leaves no client open
            raise
        self._fetching = True
        self._resubscribe()
        self._fetch_task = asyncio.ensure_future(self._fetch_loop())
        self._commit_task = asyncio.ensure_future(self._commit_loop())

    async def _start_clients(self) -> None:
        await self.start_producer()
        if self.conf.topic_allow_declare:
            for topic in self.topics.values():
                await topic.maybe_declare()
        consumer = AIOKafkaConsumer(
            group_id=self.app.id, enable_auto_commit=False,
            auto_offset_reset=self.conf.consumer_auto_offset_reset,
            session_timeout_ms=int(self.conf.broker_session_timeout * 1000),
            heartbeat_interval_ms=int(self.conf.broker_heartbeat_interval * 1000),
            max_partition_fetch_bytes=self.conf.consumer_max_fetch_size,
            # Sabot's assignor first; round robin for members of an older Sabot.
            partition_assignment_strategy=(self.assignor, RoundRobinPartitionAssignor),
            **({"isolation_level": "read_committed"} if self.eos is not None else {}),
            **client_settings(self.conf, "consumer"), **self._client_options())
        self.consumer = await self._start_client(consumer, "consumer")

    def subscribe_channel(self, channel: ChannelT) -> None:
        """Fetch ``channel``'s topic from now on (called when it gets a subscriber)."""
        if not isinstance(channel, KafkaTopic):
            raise TypeError(f"{self!r} fetches its own topics, not {channel!r}")
        if channel.name not in self._wanted:
            self._wanted[channel.name] = channel
            if self.consumer is not None and self._fetching:
                task = asyncio.ensure_future(self._declare_then_resubscribe(channel))
                self._background.add(task)  # the loop holds tasks only weakly
                task.add_done_callback(self._background.discard)

    async def _declare_then_resubscribe(self, channel: KafkaTopic) -> None:
        try:
            await channel.maybe_declare()
        except TransportError as exc:
            logger.error("%s", exc)
        self._resubscribe()

    def _resubscribe(self) -> None:
        names = frozenset(self._wanted)
        if names and names != self._subscribed and self.consumer is not None:
            self.consumer.subscribe(topics=sorted(names), listener=_Rebalance(self))
            self._subscribed = names
            self._wake_fetch.set()

    async def stop_fetching(self, timeout: float) -> None:
        """Stop reading, wait (bounded) for in-flight batches, commit what is done."""
        if not self._fetching:
            return
        self._fetching = False
        if self.app.crash_reasons:
            timeout = 0.0  # an agent stopped on error holds its batch for good
        task, self._fetch_task = self._fetch_task, None
        if task is not None and self._delivering and timeout > 0:
            # The loop is handing a fetch to the agents (perhaps waiting on
            # backpressure after publishing it): cancelling now would abandon
            # a batch the agents will finish. Let it return, bounded.
            self._wake_fetch.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except (asyncio.TimeoutError, Exception):
                pass
        await _cancel(task)  # a getmany() in progress is safe to cancel
        await self._wait_in_flight(self._offsets.keys(), timeout)
        await self.commit()

    async def on_stop(self) -> None:
        self.disarm_exit_guard()  # an orderly stop: the producer is flushed below
        self.pending = None
        self._closed = True
        await self.stop_fetching(self.conf.shutdown_timeout)
        await _cancel(self._commit_task)
        self._commit_task = None
        if self.consumer is not None:
            await self.commit()
        await self._close_clients()

    async def _close_clients(self) -> None:
        if self.eos is not None:
            await self.eos.close()
        if self.consumer is not None:
            await _close_quietly(self.consumer)
            self.consumer = None
        if self.producer is not None:
            try:
                await self.producer.flush()
            finally:
                await _close_quietly(self.producer)
                self.producer = None
        if self._admin is not None:
            await _close_quietly(self._admin)
            self._admin = None

    # -- fetching --------------------------------------------------------------
    async def _fetch_loop(self) -> None:
        consumer = self.consumer
        if consumer is None:  # stopped before the loop ran
            return
        # Exactly once, the loop commits between fetches: it waits no longer than that.
        fetch_wait_ms = 500 if self.eos is None else max(
            1, min(500, int(float(self.conf.broker_commit_interval) * 1000)))
        while self._fetching:
            if not self._subscribed:
                self._wake_fetch.clear()
                await self._wake_fetch.wait()
                continue
            try:
                fetched = await consumer.getmany(timeout_ms=fetch_wait_ms)
            except KafkaError as exc:  # aiokafka reconnects; say so and go on
                logger.warning("Kafka fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            generation = self._generation
            try:
                self._delivering = True
                for tp, records in fetched.items():
                    if self._generation != generation or not self._fetching:
                        # A rebalance or a stop happened meanwhile: these records
                        # are not delivered, not tracked, and so not committed.
                        break
                    if records and tp not in self._paused:
                        await self._deliver(tp, records)
            except Exception as exc:
                # Not a broker hiccup but a bug or a closed channel: stop the
                # worker rather than go on without fetching (nothing is committed
                # past what was finished, so a restart loses nothing).
                logger.exception("Kafka fetch loop failed: %r", exc)
                self.app.report_crash(exc)
                return
            finally:
                self._delivering = False
            eos = self.eos
            if eos is not None and eos.due(asyncio.get_running_loop().time()):
                # Between fetches: nothing new reaches the agents meanwhile.
                await eos.commit_round()

    async def _deliver(self, tp: TopicPartition, records: List[Any]) -> None:
        # The consumer subscribes to exactly the topics wanted (never fewer).
        channel = self._wanted[tp.topic]
        offsets = self._offsets.get(tp)
        if offsets is None:
            offsets = self._offsets[tp] = _PartitionOffsets()
        r = offsets.add(records[0].offset, records[-1].offset)
        if r is None:
            logger.warning("skipping a stale fetch of %s[%d] at offset %d",
                           tp.topic, tp.partition, records[0].offset)
            return
        r.delivery = delivery = self._inflight.open(tp)
        if self.eos is not None:
            self.eos.delivered(tp, records[0].offset)
        try:
            batches = await channel.deliver(fetched_from_records(tp, records),
                                            lambda: self._finished(tp, offsets, r))
        except BaseException:
            # Part of it never reached the agents: never committed past, not waited for.
            self._inflight.abandon(delivery)
            raise
        self._inflight.watch(delivery, batches)
        if self.eos is not None:
            self.eos.watch(tp, batches)

    def _finished(self, tp: TopicPartition, offsets: _PartitionOffsets, r: _Range) -> None:
        # A range from before a revoke belongs to a tracker that was dropped:
        # the partition's new owner reads it again, so there is nothing to do.
        if self._offsets.get(tp) is offsets:
            offsets.finish(r)
            if r.delivery is not None:
                self._inflight.finish(r.delivery)

    # -- committing ------------------------------------------------------------
    async def _commit_loop(self) -> None:
        if self.eos is not None:
            return  # the fetch loop commits, between fetches (kafka_eos)
        while True:
            await asyncio.sleep(self.conf.broker_commit_interval)
            await self.commit()

    async def commit(self, partitions: Optional[Iterable[TopicPartition]] = None) -> bool:
        """Commit the finished prefix of every (or the given) partition now."""
        if self.consumer is None:
            return False
        tps = self._offsets.keys() if partitions is None else partitions
        if self.eos is not None:
            return await self.eos.commit(list(tps))
        todo = {}
        for tp in tps:
            offsets = self._offsets.get(tp)
            if offsets is not None and offsets.committable is not None \
                    and offsets.committable != self._committed.get(tp):
                todo[tp] = offsets.committable
        if not todo:
            return True
        # What is committed was finished before the barrier: its table
        # changes are flushed by it (changes made meanwhile are not needed).
        if not await self.commit_barrier():
            return False
        try:
            await self.consumer.commit(todo)
        except KafkaError as exc:
            # Usually a rebalance in progress: the revoke handler commits.
            logger.warning("Kafka commit of %d partitions failed: %s", len(todo), exc)
            return False
        self._committed.update(todo)
        return True

    async def _wait_in_flight(self, tps: Iterable[TopicPartition], timeout: float) -> None:
        if not await self._inflight.wait(timeout, set(tps)):
            logger.warning("in-flight batches not finished after %.1fs; "
                           "their offsets stay uncommitted", timeout)

    async def on_revoked(self, revoked: set) -> None:
        """Stop feeding ``revoked``, wait for their batches, commit, forget them."""
        self._paused |= revoked
        self._generation += 1
        await self._wait_in_flight(revoked, self.conf.broker_revoke_timeout)
        await self.commit(revoked)
        if self.eos is not None:
            await self.eos.revoked(revoked)
        self._inflight.forget(revoked)
        for tp in revoked:
            self._offsets.pop(tp, None)
            self._committed.pop(tp, None)
        partitions = sorted({tp.partition for tp in revoked})
        for listener in self._assignment_listeners:
            await listener.on_revoked(partitions)

    @property
    def assigns_partitions(self) -> bool:
        """True: the consumer group assigns partitions to workers."""
        return True

    def owner_urls(self, topic: Optional[str], partition: int) -> List[str]:
        """Web URLs of the group members holding ``partition`` of ``topic`` (None: any topic)."""
        if topic is None:
            return self.assignor.holders(partition)
        url = self.assignor.owner(topic, partition)
        return [] if url is None else [url]

    def notify_assigned(self, assigned: set) -> None:
        """Tell the assignment listeners (tables recover) before fetching ``assigned``.

        The partitions are paused meanwhile, so no value of theirs reaches an
        agent before the tables of those partitions are recovered.
        """
        consumer = self.consumer
        if not self._assignment_listeners or not assigned or consumer is None:
            return
        consumer.pause(*assigned)
        task = asyncio.ensure_future(self._assigned_ready(assigned, self._generation))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _assigned_ready(self, assigned: set, generation: int) -> None:
        partitions = sorted({tp.partition for tp in assigned})
        try:
            for listener in self._assignment_listeners:
                await listener.on_assigned(partitions)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error("partitions %s cannot be processed: %s", partitions, exc)
            self.app.report_crash(exc)
            return
        consumer = self.consumer
        if consumer is not None and generation == self._generation:
            held = consumer.assignment()
            consumer.resume(*[tp for tp in assigned if tp in held])
            self._wake_fetch.set()

    async def read_partition(self, topic: str, partition: int, start: int = 0, *,
                             max_records: int = 10_000) -> AsyncGenerator[List[Any], None]:
        """The records of ``topic[partition]`` from offset ``start`` to its end, in fetches.

        Read outside the group (tables recover from their changelog with it).
        The end is not the end offset the broker reports, which can be short
        of the true end (seen with tansu): reading goes on until a fetch at
        or past the reported end comes back empty and the end offset, asked
        again, is not beyond the position reached.
        """
        consumer = AIOKafkaConsumer(
            group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=self.conf.consumer_max_fetch_size,
            # exactly once, changelog entries of aborted transactions are not the table's
            **({"isolation_level": "read_committed"} if self.eos is not None else {}),
            **self._client_options())
        await self._start_client(consumer, "changelog reader")
        tp = TopicPartition(topic, partition)
        try:
            consumer.assign([tp])
            consumer.seek(tp, start)
            end = (await consumer.end_offsets([tp]))[tp]
            position = start
            empty = stalls = 0
            while True:
                past_end = position >= end
                fetched = await consumer.getmany(tp, timeout_ms=200 if past_end else 1000,
                                                 max_records=max_records)
                records = fetched.get(tp, [])
                if records:
                    empty = 0
                    position = records[-1].offset + 1
                    yield records
                    continue
                empty += 1
                if not (past_end or empty >= 3):
                    continue
                # Maybe the end: it is if the broker knows of nothing beyond.
                end = max(end, (await consumer.end_offsets([tp]))[tp])
                position = max(position, await consumer.position(tp))
                if position >= end:
                    if past_end:
                        return
                    continue  # one more fetch past the end decides
                empty = 0
                stalls += 1
                if stalls >= 10:  # a compacted tail: nothing left to fetch there
                    logger.warning("%s[%d]: nothing more to read at offset %d (end %d)",
                                   topic, partition, position, end)
                    return
        finally:
            await _close_quietly(consumer)

    def on_assigned(self, assigned: set) -> None:
        """Resume feeding ``assigned`` (the consumer starts at their commits)."""
        self._paused -= assigned
        logger.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]"
                                             for tp in sorted(assigned)) or "nothing")

    async def lag(self) -> Dict[str, int]:
        """High watermark minus the consumer's position, over the partitions held."""
        out: Dict[str, int] = {}
        for (topic, _), n in (await self.partition_lag()).items():
            out[topic] = out.get(topic, 0) + n
        return out

    async def partition_lag(self) -> Dict[Tuple[str, int], int]:
        """High watermark minus the consumer's position, per partition held."""
        consumer = self.consumer
        if consumer is None:
            return {}
        out: Dict[Tuple[str, int], int] = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:  # nothing fetched from it yet
                continue
            out[(tp.topic, tp.partition)] = max(0, high - await consumer.position(tp))
        return out

    def key_partition(self, topic: str, key: bytes) -> Optional[Tuple[int, bool]]:
        """``(partition, held here)`` of ``key`` in ``topic``, as producers partition it.

        ``None`` while the consumer does not know the topic's partitions yet.
        """
        consumer = self.consumer
        partitions = consumer.partitions_for_topic(topic) if consumer is not None else None
        if consumer is None or not partitions:
            return None
        everyone = sorted(partitions)
        partition = DefaultPartitioner()(key, everyone, everyone)
        held = {tp.partition for tp in consumer.assignment() if tp.topic == topic}
        return partition, partition in held

    async def tail(self, channel: ChannelT, *,
                   from_beginning: bool = False) -> AsyncGenerator[bytes, None]:
        """``channel``'s messages as they arrive, from a consumer in no group."""
        consumer = AIOKafkaConsumer(
            channel.name, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            bootstrap_servers=self.servers, client_id=f"sabot-tail-{self.app.id}",
            **kafka_client_options(self.conf))
        try:
            with self.quieted():
                await self._start_client(consumer, "tail consumer")
            async for message in consumer:
                yield message.value
        finally:
            await _close_quietly(consumer)

    def status(self) -> Dict[str, Any]:
        """Partitions held and batches in flight, for the worker's status line."""
        return {"partitions": len(self._offsets),
                "in_flight": self._inflight.count()}


def _topic_errors(response: Any) -> List[tuple]:
    out = []
    for entry in getattr(response, "topic_errors", []):
        out.append((entry[0], entry[1], entry[2] if len(entry) > 2 else ""))
    return out


async def _close_quietly(
        client: Union[AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient]) -> None:
    try:
        if isinstance(client, AIOKafkaAdminClient):
            await client.close()
        else:
            await client.stop()
    except Exception as exc:  # closing a half-started client: nothing to save
        logger.debug("closing %s: %r", type(client).__name__, exc)


async def _cancel(task: Optional["asyncio.Task[Any]"]) -> None:
    if task is not None and not task.done():
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
