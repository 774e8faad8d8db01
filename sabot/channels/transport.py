"""``Transport``: the service behind a broker's channels, and the broker registry.

One transport per broker an app uses (memory, Kafka, Redis): it hands out one
channel per name (``topic(name)``), runs the consumer and producer, and owns
what only it knows: how far behind its consumer is (``lag``), how to read a
channel from outside the app's group (``tail``), which client loggers its
own errors stand for (``quieted``), and what to do with sends still queued
when the event loop closes (``flush_at_exit``). Nothing above the channels
layer switches on a broker's scheme: it asks the transport. Adding a
transport touches only ``sabot/channels/``: a module and a line in
``TRANSPORTS``.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from typing import (Any, AsyncGenerator, Awaitable, Callable, Collection, Dict, Iterator, List,
                    Optional, Tuple, Type)
from urllib.parse import urlsplit

from mode import Service

from ..exceptions import ConfigurationError, TailUnsupported
from ..settings import redact_url
from ..types import AppT, ChannelT
from .channel import Channel

__all__ = ["Transport", "AssignmentListener", "TRANSPORTS", "scheme_of", "transport_class", "create_transport"]

logger = logging.getLogger("sabot.channels")


#: URL scheme -> "module:Class" of its Transport (imported on first use).
TRANSPORTS: Dict[str, str] = {
    "memory": "sabot.channels.memory:MemoryTransport",
    "kafka": "sabot.channels.kafka:KafkaTransport",
    # Faust's names of its Kafka drivers: the same Kafka, through aiokafka here.
    "aiokafka": "sabot.channels.kafka:KafkaTransport",
    "confluent": "sabot.channels.kafka:KafkaTransport",
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


def transport_class(url: str) -> Type[Transport]:
    """The Transport class for ``url`` (``kafka://...`` -> ``KafkaTransport``)."""
    module_name, _, attr = TRANSPORTS[scheme_of(url)].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"transport for {redact_url(url)!r} is not available: {exc}") from exc
    return getattr(module, attr)


class AssignmentListener:
    """Told of the partition numbers a worker gets (``on_assigned``) and loses."""

    async def on_assigned(self, partitions: Collection[int]) -> None:
        """``partitions`` are this worker's now; return when ready to process them."""

    async def on_revoked(self, partitions: Collection[int]) -> None:
        """``partitions`` are not this worker's any more (already committed)."""


def create_transport(app: AppT, url: str) -> Transport:
    """A new Transport service for ``app`` talking to ``url``."""
    return transport_class(url)(app, url)


class Transport(Service):
    """A broker behind the app's topics: hands out one channel per name.

    Subclasses set ``scheme`` and ``channel_class`` and start their consumer
    and producer in ``on_start``. ``stop_fetching`` is the first phase of a
    graceful stop: stop reading, let in-flight batches finish (bounded by
    ``timeout``) and commit; agents stop after it, then the transport itself.
    """

    scheme = "memory"
    channel_class: Type[Channel] = Channel
    #: True when values leave the process (a broker), shown in the banner.
    external = True
    #: Loggers of the client library that this transport's own errors stand
    #: for (see ``quieted``).
    quiet_loggers: Tuple[str, ...] = ()
    #: Our own logger, set before mode would give the module a NullHandler
    #: (which silences a script's errors when it configured no logging).
    logger = logger
    mundane_level = "debug"

    def __init__(self, app: AppT, url: str) -> None:
        self.app = app
        self.url = url
        self.topics: Dict[str, Channel] = {}
        self._exit_guard: Optional["asyncio.Future[None]"] = None
        self._exit_armed = False
        self._commit_barriers: List[Callable[[], Awaitable[None]]] = []
        self._assignment_listeners: List[AssignmentListener] = []
        super().__init__()

    # -- what tables need: a barrier before commits, news of assignments -------
    def add_commit_barrier(self, barrier: Callable[[], Awaitable[None]]) -> None:
        """Await ``barrier()`` before committing (or acknowledging) source positions.

        Tables flush their changelog and store there, so no position is
        committed before the state that depends on it is durable.
        """
        self._commit_barriers.append(barrier)

    async def commit_barrier(self) -> bool:
        """Run the commit barriers; False (logged) when one failed: do not commit."""
        for barrier in self._commit_barriers:
            try:
                await barrier()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.error("%s: not committing: %s", self.label, exc)
                return False
        return True

    def add_assignment_listener(self, listener: "AssignmentListener") -> None:
        """Tell ``listener`` which partition numbers this worker gets and loses.

        Its ``on_assigned`` is awaited before the assigned partitions are
        fetched (tables recover there); ``on_revoked`` after the revoked ones
        were committed. Transports without partitions (memory, Redis) have
        none to tell.
        """
        self._assignment_listeners.append(listener)

    @property
    def assigns_partitions(self) -> bool:
        """True when the broker assigns partitions to workers (Kafka's group)."""
        return False

    def topic(self, name: str, **options: Any) -> Channel:
        """The channel called ``name`` (created on first use, then shared)."""
        existing = self.topics.get(name)
        if existing is not None:
            return existing
        channel = self.create_channel(name, **options)
        self.topics[name] = channel
        return channel

    def create_channel(self, name: str, **options: Any) -> Channel:
        """Build the channel for ``name``; transports pass their own options."""
        return self.channel_class(self.app, name, **options)

    def subscribe_channel(self, channel: ChannelT) -> None:
        """``channel`` got a local subscriber: a broker's transport starts fetching it.

        In memory there is nothing to fetch.
        """

    async def stop_fetching(self, timeout: float) -> None:
        """Stop reading new batches and commit what is finished (graceful stop)."""

    @property
    def stopping(self) -> bool:
        """True once the transport is stopping: its channels write nothing more."""
        return bool(self.should_stop)

    def handles(self, url: str) -> bool:
        """True when ``url`` is served by this kind of transport (``rediss://`` by Redis's)."""
        return transport_class(url) is type(self)

    # -- what only the transport knows -----------------------------------------
    async def lag(self) -> Dict[str, int]:
        """Messages per topic not yet read by this app's consumer (``{}`` if unknown)."""
        return {}

    async def partition_lag(self) -> Dict[Tuple[str, int], int]:
        """Messages per ``(topic, partition)`` held here not yet read (``{}`` if unknown)."""
        return {}

    def key_partition(self, topic: str, key: bytes) -> Optional[Tuple[int, bool]]:
        """``(partition, held by this worker)`` of ``key`` in ``topic``; ``None`` when the
        broker assigns no partitions (memory, Redis: this worker reads everything)."""
        return None

    def tail(self, channel: ChannelT, *,
             from_beginning: bool = False) -> AsyncGenerator[bytes, None]:
        """The raw payloads of ``channel`` as they arrive, read outside the app's group.

        Joins no consumer group and commits nothing, so running workers are
        not disturbed. ``from_beginning`` starts at the oldest value kept.
        """
        raise TailUnsupported(f"{channel.name!r}: the {self.scheme}:// transport cannot be "
                              f"read from outside the app")

    @contextlib.contextmanager
    def quieted(self) -> Iterator[None]:
        """Silence the client library's loggers (``quiet_loggers``) meanwhile.

        While connecting, a client logs every refused attempt; the
        transport's own error, once it gives up, is the one line to show.
        """
        saved = [(log, log.level) for log in map(logging.getLogger, self.quiet_loggers)]
        for log, _ in saved:
            log.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for log, level in saved:
                log.setLevel(level)

    # -- sends left behind when the loop closes --------------------------------
    def guard_exit(self) -> None:
        """Flush what is still unsent if the event loop closes before ``stop()``.

        A script that sends without running a worker and then returns: at
        its end ``asyncio.run`` cancels every task, the producer's too, and
        the sends still queued would be lost without a word. This task
        notices that cancellation and calls ``flush_at_exit``, which writes
        them or reports how many could not be.
        """
        if self._exit_guard is None or self._exit_guard.done():
            self._exit_armed = True
            self._exit_guard = asyncio.ensure_future(self._wait_for_exit())

    def disarm_exit_guard(self) -> None:
        """The transport is stopping in order (its ``on_stop`` flushes)."""
        self._exit_armed = False
        if self._exit_guard is not None:
            self._exit_guard.cancel()
            self._exit_guard = None

    async def _wait_for_exit(self) -> None:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            if not self._exit_armed:
                raise
            self._exit_armed = False
            # The loop is closing: do the flush instead of dying with it.
            try:
                await self.flush_at_exit()
            except Exception as exc:  # reported, never raised into the shutdown
                logger.error("%s: flushing pending sends at exit failed: %s",
                             self.label, exc)

    async def flush_at_exit(self) -> None:
        """Write what the producer still holds; log a count of what could not be."""

    def status(self) -> Dict[str, Any]:
        """Figures for the worker's status line (lag per topic, ...)."""
        return {}
