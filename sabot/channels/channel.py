"""``Channel``: the one channel interface, with in-memory delivery built in.

Every channel (memory, Kafka topic, Redis stream) is a ``Channel``: local
subscribers, fan-out, backpressure, schema checks and dead letters live here
once. A transport's channel (``transport_channel.TransportChannel``) changes
only where values go when sent (the broker) and where local batches come from
(its consumer calls ``publish``).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import warnings
from typing import (TYPE_CHECKING, Any, AsyncGenerator, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Union)

import pyarrow as pa
from mode import Service

from .._fastpath import Batch, FanOut
from ..exceptions import (ChannelClosed, ConfigurationError, SabotCompatibilityWarning,
                          TailUnsupported)
from ..schema import RowChecker, check_batch, rows_to_batch
from ..types import AppT, ChannelT, CodecT, Headers, SubscriberT
from ..models.codec import check_types
from .dead_letters import DeadLetterWriter
from .send_options import send_with_options

if TYPE_CHECKING:
    from typing_extensions import Self

    from ..streams import Stream

__all__ = ["Channel"]

logger = logging.getLogger("sabot.channels")
_ids = itertools.count(1)


#: Options a channel's subclasses pass on (they are the channel's own).
_OPTIONS = frozenset({"transport", "key_serializer", "value_serializer", "allow_empty",
                      "partitions", "maxlen", "group"})
#: Faust's topic options that Sabot has no feature for.
_FAUST_ONLY = frozenset({"retention", "compacting", "deleting", "replicas", "acks", "internal",
                         "config", "pattern", "has_prefix", "active_partitions", "loop"})


def _checked_options(name: str, options: Dict[str, Any]) -> Dict[str, Any]:
    """The options a channel keeps; a warning names each one that has no effect."""
    ignored = sorted(set(options) - _OPTIONS)
    if not ignored:
        return options
    faust = [n for n in ignored if n in _FAUST_ONLY]
    other = [n for n in ignored if n not in _FAUST_ONLY]
    if faust:
        warnings.warn(f"channel {name!r}: Faust's topic option(s) {', '.join(faust)} not "
                      f"supported by Sabot and have no effect (topics are declared with "
                      f"partitions= and the topic_replication_factor setting)",
                      SabotCompatibilityWarning, stacklevel=4)
    if other:
        warnings.warn(f"channel {name!r}: unknown option(s) {', '.join(other)} ignored",
                      UserWarning, stacklevel=4)
    return {k: v for k, v in options.items() if k in _OPTIONS}


class Channel(Service):
    """A channel with in-memory fan-out to every local subscriber.

    ``send`` delivers to every subscriber in send order; each subscriber (an
    agent, a stream, an ``async for`` over the channel or a clone) receives
    every value once. RecordBatches reach every subscriber as the same object.
    Senders wait while a subscriber lags past ``maxsize`` values,
    ``max_batches`` batches or ``max_bytes`` bytes with a batch still queued
    for it: every reader may hold the batches it took, and one more waits.

    With a ``schema``, dict values are checked as they are sent (``SchemaError``
    names the field) and gathered into RecordBatches of ``batch_size`` rows, or
    fewer after ``linger`` seconds.
    """

    #: mode logs every start/stop at this level; a worker has many services.
    #: Our own logger, set before mode would give the module a NullHandler
    #: (which silences a script's errors when it configured no logging).
    logger = logger
    mundane_level = "debug"
    #: Name of the transport, shown by ``sabot agents`` and in the banner.
    transport_name = "memory"

    def __init__(self, app: Optional[AppT] = None, name: Optional[str] = None, *,
                 schema: Optional[pa.Schema] = None,
                 maxsize: Optional[int] = None,
                 max_batches: Optional[int] = None,
                 max_bytes: Optional[int] = None,
                 batch_size: Optional[int] = None,
                 linger: Optional[float] = None,
                 root: Optional[Self] = None,
                 key_type: Any = None,
                 value_type: Any = None,
                 **kwargs: Any) -> None:
        conf = app.conf if app is not None else None
        self.app = app
        self.name = name or f"channel-{next(_ids)}"
        if schema is not None and not isinstance(schema, pa.Schema):
            raise ConfigurationError(
                f"channel {self.name!r}: schema must be a pyarrow.Schema, got {type(schema).__name__}")
        self.schema = schema
        #: Faust's ``key_type``/``value_type``: a broker's channel decodes its
        #: keys and values into them (``sabot.models.codec``); in memory,
        #: values travel as sent, as in Faust.
        self.key_type: Any = key_type
        self.value_type: Any = value_type
        check_types(self.name, schema, key_type, value_type)
        self.maxsize: int = self._setting(maxsize, conf, "stream_buffer_maxsize", 4096)
        # A batch holds at least one value: by default the batch bound is
        # the value bound, and binds only when set lower.
        batches = self._setting(max_batches, conf, "stream_buffer_max_batches", None)
        self.max_batches: int = self.maxsize if batches is None else batches
        self.max_bytes: int = self._setting(max_bytes, conf, "stream_buffer_max_bytes", 64 << 20)
        self.batch_size: int = self._setting(batch_size, conf, "stream_batch_size", 1000)
        self.linger: float = linger if linger is not None else (
            conf.stream_batch_linger if conf is not None else 0.05)
        for bound in ("maxsize", "max_batches", "max_bytes"):
            value = getattr(self, bound)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(
                    f"channel {self.name!r}: {bound} must be a positive int, got {value!r}")
        self._root: Optional[Self] = root.root if root is not None else None
        self._fanout: FanOut = root._fanout if root is not None else FanOut(
            self.maxsize, self.batch_size, max_batches=self.max_batches, max_bytes=self.max_bytes)
        self._checker = RowChecker(schema) if schema is not None else None
        self._pending: List[Any] = []
        self._pending_keys: Optional[List[Any]] = None
        self._pending_headers: Optional[List[Optional[Headers]]] = None
        self._pending_sources: List[Any] = []
        self._linger_handle: Optional[asyncio.TimerHandle] = None
        self._own_iter: Any = None
        self._get_lock = asyncio.Lock()
        self._dead_letter: Optional[ChannelT] = None
        #: Writes this channel's dead letters and counts what was stored.
        self.dead_letters = DeadLetterWriter(self)
        self._extra = _checked_options(self.name, kwargs)
        super().__init__()

    @staticmethod
    def _setting(value: Optional[int], conf: Any, name: str, default: Optional[int]) -> Any:
        # Checked by the caller: a setting may hold anything until then.
        if value is not None:
            return value
        return getattr(conf, name) if conf is not None else default

    # -- identity ------------------------------------------------------------
    @property
    def root(self) -> Self:
        """The channel that owns the fan-out (itself unless this is a clone)."""
        return self._root or self

    @property
    def label(self) -> str:
        return f"{type(self).__name__}: {self.name}"

    def __repr__(self) -> str:
        schema = f" schema={self.schema.names}" if self.schema is not None else ""
        return f"<{type(self).__name__} {self.name!r} maxsize={self.maxsize}{schema}>"

    # -- producing -----------------------------------------------------------
    async def send(self, key: Any = None, value: Any = None,
                   headers: Optional[Headers] = None, **options: Any) -> Any:
        """Deliver one value to every subscriber; waits when one lags ``maxsize``.

        ``options``: Faust's ``callback``, ``force``, ... (``send_options``).
        """
        if options:
            return await send_with_options(self, key, value, headers, options)
        checker = self._checker
        if checker is not None:
            checker.check(value)  # raises SchemaError naming the field
            return await self._queue_row(key, value, headers)
        if self._fanout.append(value, key, headers):
            await self._fanout.wait_capacity()
        return None

    def send_soon(self, key: Any = None, value: Any = None, headers: Optional[Headers] = None,
                  **options: Any) -> "asyncio.Future[Any]":
        """Send from code that cannot await (Faust's ``send_soon``); a future of ``send``'s result."""
        return asyncio.ensure_future(self.send(key=key, value=value, headers=headers, **options))

    async def send_batch(self, batch: Union[Sequence[Any], pa.RecordBatch, pa.Table]) -> Any:
        """Deliver many values at once: a RecordBatch (not copied) or a list.

        A list is moved by reference: do not change it after sending.
        """
        if self._pending:
            await self.flush()
        if isinstance(batch, pa.Table):
            for part in batch.to_batches():
                await self.send_batch(part)
            return None
        if isinstance(batch, pa.RecordBatch):
            await self._publish_record_batch(batch, ())
            return None
        if isinstance(batch, (str, bytes, dict)) or not isinstance(batch, Iterable):
            raise TypeError(
                f"send_batch() takes a pyarrow.RecordBatch or a list of values, "
                f"got {type(batch).__name__}")
        values = batch if type(batch) is list else list(batch)
        if not values:
            return None
        if self._checker is not None:
            for value in values:
                self._checker.check(value)
            await self.publish(Batch(rows_to_batch(self.schema, values)))
        else:
            await self.publish(Batch(values))
        return None

    def make_batch(self, values: Union[Sequence[Any], pa.RecordBatch], *,
                   keys: Optional[Sequence[Any]] = None,
                   headers: Optional[Sequence[Any]] = None) -> Batch:
        """A ``Batch`` of ``values`` for ``publish``, checked against the schema.

        With a schema, dict values become one RecordBatch (``SchemaError``
        names the field that does not fit).
        """
        if isinstance(values, pa.RecordBatch):
            payload: Any = values if self.schema is None else check_batch(self.schema, values)
        else:
            payload = values if type(values) is list else list(values)
            if self._checker is not None:
                for value in payload:
                    self._checker.check(value)
                payload = rows_to_batch(self.schema, payload)
        return Batch(payload, keys=None if keys is None else list(keys),
                     headers=None if headers is None else list(headers))

    async def send_from(self, value: Any, sources: Sequence[Any] = ()) -> Any:
        """Send ``value`` on behalf of the input batches ``sources``.

        This is how an agent forwards what it yields. In memory the sources
        stay unacknowledged until this channel's subscribers have finished
        with the value (not merely received it), so a chain of agents from a
        Kafka topic commits only what went all the way through. (A transport
        channel overrides this: its delivery future holds the sources.)
        """
        tracked = [s for s in sources if s.tracked]
        if isinstance(value, pa.RecordBatch):
            if self._pending:
                await self.flush()
            await self._publish_record_batch(value, tracked)
            return None
        if self._checker is not None:
            self._checker.check(value)  # before holding anything
            for source in tracked:
                source.acquire()
            self._pending_sources.extend(tracked)
            return await self._queue_row(None, value, None)
        if self._fanout.append_linked(value, tracked):
            await self._fanout.wait_capacity()
        return None

    async def _publish_record_batch(self, record_batch: pa.RecordBatch,
                                    sources: Sequence[Batch]) -> None:
        if self.schema is not None:
            record_batch = check_batch(self.schema, record_batch)
        batch = Batch(record_batch)
        for source in sources:
            batch.link(source)
        await self.publish(batch)

    async def publish(self, batch: Any) -> None:
        """Hand a ``Batch`` to every local subscriber (transports call this).

        ``batch`` is the fast path's ``Batch`` (``make_batch`` makes one).
        """
        if self._fanout.publish(batch):
            await self._fanout.wait_capacity()

    async def put(self, value: Any) -> None:
        """Send ``value``, making sure this channel's own ``get`` will see it."""
        self._own_values()
        await self.send(value=value)

    async def get(self, timeout: Optional[float] = None) -> Any:
        """The next value from this channel's own subscription.

        The subscription starts at the first ``get`` or ``put``. Raises
        ``asyncio.TimeoutError`` after ``timeout`` seconds and
        ``ChannelClosed`` when the channel is closed and drained.
        """
        it = self._own_values()
        if not self._get_lock.locked():
            value = it.poll(_EMPTY)
            if value is not _EMPTY:
                return value
        try:
            if timeout is None:
                return await self._locked_next(it)
            return await asyncio.wait_for(self._locked_next(it), timeout)
        except StopAsyncIteration:
            raise ChannelClosed(f"channel {self.name!r} is closed") from None

    async def _locked_next(self, it: Any) -> Any:
        # Concurrent get() calls take turns on the one iterator (first come,
        # first served); a caller that times out leaves the others waiting.
        async with self._get_lock:
            return await it.__anext__()

    def _own_values(self) -> Any:
        if self._own_iter is None:
            self._own_iter = self.subscribe().values()
        return self._own_iter

    async def _queue_row(self, key: Any, value: Any, headers: Optional[Headers]) -> None:
        # A checked row joins the rows gathered for the next RecordBatch.
        if self._fanout.closed:
            raise ChannelClosed(f"channel {self.name!r} is closed")
        if self._fanout.over_capacity():
            # Batches the linger timer published count too: the sender waits.
            await self._fanout.wait_capacity()
        pending = self._pending
        keys, hdrs = self._pending_keys, self._pending_headers
        if key is not None or headers is not None or keys is not None:
            if keys is None or hdrs is None:  # both or neither
                keys = self._pending_keys = [None] * len(pending)
                hdrs = self._pending_headers = [None] * len(pending)
            keys.append(key)
            hdrs.append(headers)
        pending.append(value)
        if len(pending) >= self.batch_size:
            await self.flush()
        elif self._linger_handle is None:
            loop = asyncio.get_running_loop()
            self._linger_handle = loop.call_later(self.linger, self._linger_expired)

    def _linger_expired(self) -> None:
        self._linger_handle = None
        if self._pending:
            task = asyncio.ensure_future(self.flush())
            task.add_done_callback(_log_task_error)

    async def flush(self) -> None:
        """Publish rows gathered by a schema'd channel now (transports: wait for delivery)."""
        batch = self._take_pending()
        if batch is not None:
            await self.publish(batch)

    def _take_pending(self) -> Optional[Batch]:
        # The gathered rows as one Batch (None when there are none).
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None
        if not self._pending:
            return None
        rows, keys, headers = self._pending, self._pending_keys, self._pending_headers
        self._pending, self._pending_keys, self._pending_headers = [], None, None
        batch = Batch(rows_to_batch(self.schema, rows), keys=keys, headers=headers)
        if self._pending_sources:
            # Acquired when the rows were sent on their behalf; the batch
            # takes the holds over (link adds one, so drop the earlier one).
            sources, self._pending_sources = self._pending_sources, []
            for source in sources:
                batch.link(source)
                source.release()
        return batch

    # -- consuming -----------------------------------------------------------
    def subscribe(self) -> SubscriberT:
        """A new subscriber (held weakly): receives every value sent from now on."""
        sub = self._fanout.subscribe()
        self.root.on_subscribed()
        return sub

    def on_subscribed(self) -> None:
        """Hook: a local subscriber was added (transports start fetching)."""

    @property
    def sent_count(self) -> int:
        """Values sent to the channel so far (a subscriber's lag counts from it)."""
        return self._fanout.total

    @property
    def subscriber_count(self) -> int:
        """How many live subscribers the channel has."""
        return self._fanout.subscriber_count

    def __aiter__(self) -> Any:
        return self.subscribe().values()

    def stream(self, **kwargs: Any) -> Stream:
        """A ``Stream`` over a new subscription to this channel."""
        from ..streams import Stream
        return Stream(self, **kwargs)

    def clone(self, **kwargs: Any) -> Self:
        """Another handle on the same channel; iterating it subscribes anew."""
        return type(self)(**{**self._init_kwargs(), **kwargs, "root": self.root})

    def derive(self, **overrides: Any) -> Self:
        """A new, independent channel with this one's settings, overridden."""
        return type(self)(**{**self._init_kwargs(), **overrides})

    def _init_kwargs(self) -> Dict[str, Any]:
        return dict(app=self.app, name=self.name, schema=self.schema,
                    maxsize=self.maxsize, max_batches=self.max_batches,
                    max_bytes=self.max_bytes, batch_size=self.batch_size,
                    linger=self.linger, key_type=self.key_type,
                    value_type=self.value_type, **self._extra)

    def tail(self, *, from_beginning: bool = False) -> AsyncGenerator[Any, None]:
        """The raw values of this channel as they arrive, read from outside (``sabot tail``).

        An in-memory channel lives inside one process: nothing to read from
        outside. A transport's channel asks its transport.
        """
        raise TailUnsupported(
            f"{self.name!r} is an in-memory channel: it lives inside one worker process, "
            f"so there is nothing to tail from outside (use a kafka:// or redis:// broker)")

    # -- dead letters --------------------------------------------------------
    def dead_letter_channel(self) -> ChannelT:
        """Where failed values go: ``<name>.dlq`` (suffix from the app's conf)."""
        if self._dead_letter is None:
            suffix = self.app.conf.dead_letter_suffix if self.app is not None else ".dlq"
            name = self.name + suffix
            if self.app is not None:
                self._dead_letter = self.app.dead_letter_channel_for(self, name)
            else:
                self._dead_letter = Channel(None, name)
        return self._dead_letter

    async def dead_letter(self, value: Any, reason: str,
                          headers: Optional[Mapping[str, Any]] = None,
                          position: Any = None) -> "asyncio.Future[None]":
        """Send a failed value with its reason to the dead-letter channel.

        Returns a future done once the dead letter is stored (see
        ``sabot.channels.dead_letters`` for the rule): hold the failed
        value's source unacknowledged until then.
        """
        return await self.dead_letters.write(value, reason, headers, position)

    @property
    def dead_letters_sent(self) -> int:
        """Dead letters from this channel that were stored (for metrics)."""
        return self.dead_letters.written

    @property
    def dead_letters_truncated(self) -> int:
        """Of those, how many were stored as a truncated copy (too large whole)."""
        return self.dead_letters.truncated

    def position_headers(self, position: Any) -> Dict[str, bytes]:
        """Dead-letter headers that say where a failed value came from."""
        return {"sabot-position": repr(position).encode()}

    # -- what a dead letter written to this channel needs ----------------------
    #: True when sends are serialized (a transport): dead letters come as bytes.
    carries_bytes = False
    #: The codec values are serialized with (None in memory: nothing is).
    codec: Optional[CodecT] = None

    @property
    def max_message_bytes(self) -> Optional[int]:
        """Largest message a send may carry, in bytes (None: no limit)."""
        return None

    async def send_encoded(self, key: Optional[bytes], value: bytes,
                           headers: Optional[Headers] = None) -> Any:
        """Send bytes already encoded (dead letters); in memory, the bytes themselves."""
        return await self.send(key=key, value=value, headers=headers)

    async def maybe_declare(self) -> None:
        """Create the channel on its broker when it is missing (in memory: nothing)."""

    def is_too_large(self, exc: BaseException) -> bool:
        """True when ``exc`` says a message was refused for its size."""
        return False

    @property
    def stopping(self) -> bool:
        """True once the channel's transport is stopping: it writes nothing more."""
        return False

    # -- lifecycle -----------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._fanout.closed

    async def close(self) -> None:
        """Flush gathered rows, then end every subscriber's stream once drained.

        Closing never waits for readers: the last rows are handed over even
        when a reader lags, and senders waiting for capacity get ChannelClosed.
        """
        if not self._fanout.closed:
            batch = self._take_pending()
            if batch is not None:
                self._fanout.publish(batch)
        self._fanout.close()

    async def on_stop(self) -> None:
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None


class _Empty:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<empty>"


_EMPTY = _Empty()


def _log_task_error(task: "asyncio.Future[Any]") -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background flush failed: %r", task.exception())
