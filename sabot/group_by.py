"""``stream.group_by(key, name=)``: repartition a stream by a new key (Faust's meaning).

Every value is sent, with the new key, to a repartition topic on the app's
broker, and the returned stream reads that topic. Kafka partitions the topic
by key, so the agent that reads it sees every value of one key on one
partition: what a table updated by that key needs (``sabot.tables``). On
Redis the topic is a stream (one partition); in memory a channel.

* ``key``: a field name (a dict item or an attribute), a Record field
  (``Withdrawal.account``: anything with ``getattr(value)``), or a callable,
  sync or async. A callable needs ``name=``.
* The topic: ``<prefix>-<source topic>-<name>-repartition`` as in Faust,
  where the prefix is the agent's name, or ``topic=`` to name one.
* Delivery: a source value is acknowledged only once its repartitioned copy
  is durable on the broker (or its dead letter is stored), so a crash
  repeats values, never loses them.
* A key that cannot be computed (the field is missing, the callable raises)
  sends the value to the source channel's dead-letter channel with the reason
  (Faust logs and skips it).
* Calling ``group_by`` again on the same stream with the same name returns
  the same grouped stream: an agent that restarts does not fork it twice.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from .agents.sinks import hold_until_done
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .streams import Stream

__all__ = ["group_by", "key_function", "repartition_topic_name"]

logger = logging.getLogger(__name__)

GroupByKey = Union[str, Callable[[Any], Any], Any]


def key_function(key: GroupByKey) -> Callable[[Any], Any]:
    """A function of the value that gives its new key."""
    if isinstance(key, str):
        def by_name(value: Any) -> Any:
            if isinstance(value, dict):
                return value[key]
            return getattr(value, key)
        return by_name
    getter = getattr(key, "getattr", None)
    if callable(getter):  # a Record field descriptor (Faust's FieldDescriptor)
        return getter
    if callable(key):
        return key
    raise ConfigurationError(f"group_by key must be a field name, a Record field or a callable, "
                             f"got {key!r}")


def key_name(key: GroupByKey, name: Optional[str]) -> str:
    """The name of the grouping, in the repartition topic's name."""
    if name:
        return name
    if isinstance(key, str):
        return key
    ident = getattr(key, "ident", None)
    if isinstance(ident, str):
        return ident
    model, field = getattr(key, "model", None), getattr(key, "field", None)
    if model is not None and isinstance(field, str):
        return f"{getattr(model, '__name__', model)}.{field}"
    raise ConfigurationError("group_by with a callable key needs name= (the topic's suffix), "
                             "as in Faust")


def repartition_topic_name(prefix: str, source: str, name: str) -> str:
    """Faust's name: ``<agent name>-<source topic>-<name>-repartition``."""
    return f"{prefix}-{source}-{name}-repartition" if prefix else f"{source}-{name}-repartition"


def group_by(stream: "Stream", key: GroupByKey, *, name: Optional[str] = None,
             topic: Any = None, partitions: Optional[int] = None) -> "Stream":
    """The stream of ``stream``'s values, keyed (and partitioned) by ``key``."""
    from .streams import Stream
    getter = key_function(key)
    suffix = key_name(key, name)
    if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
        raise ConfigurationError(f"group_by partitions must be a positive int, got {partitions!r}")
    if stream._dispatcher is not None:
        raise ConfigurationError("an agent with concurrency > 1 cannot use stream.group_by "
                                 "(as in Faust): each instance would fork the stream")
    cache = stream._grouped
    if suffix in cache:
        return cache[suffix]
    source_channel = stream.channel
    if topic is None:
        app = getattr(source_channel, "app", None)
        if app is None:
            raise ConfigurationError("group_by needs a stream of an app's channel (or topic=)")
        # As Faust's derive: the repartition topic carries the source's types.
        options: dict = {name: getattr(source_channel, name, None)
                         for name in ("key_type", "value_type")
                         if getattr(source_channel, name, None) is not None}
        if partitions is not None:
            options["partitions"] = partitions
        topic = app.topic(repartition_topic_name(stream.prefix, source_channel.name, suffix),
                          **options)
    grouped = Stream(topic)
    cache[suffix] = grouped
    is_async = inspect.iscoroutinefunction(getter)

    async def forward() -> None:
        async for value in stream:
            sources = stream.sources()
            try:
                new_key = getter(value)
                if is_async or inspect.isawaitable(new_key):
                    new_key = await new_key
            except Exception as exc:
                reason = f"group_by {suffix!r}: cannot compute the key: {type(exc).__name__}: {exc}"
                logger.warning("%s", reason)
                stored = await source_channel.dead_letter(value, reason,
                                                          position=stream.current_position())
                hold_until_done(sources, stored)
                continue
            result = await topic.send(key=new_key, value=value)
            hold_until_done(sources, result)

    task = asyncio.ensure_future(forward())
    task.add_done_callback(_reporter(getattr(source_channel, "app", None)))
    grouped._tasks.append(task)
    return grouped


def _reporter(app: Any) -> Callable[["asyncio.Future[None]"], None]:
    def report(task: "asyncio.Future[None]") -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        logger.error("group_by forwarding stopped: %r", error)
        # Nothing past this value is forwarded or acknowledged: stop the worker
        # (a restart delivers the unacknowledged values again).
        if app is not None and isinstance(error, Exception):
            app.report_crash(error)
    return report
