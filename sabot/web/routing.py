"""``app.table_route`` and ``app.topic_route``: answer where the key's partition lives.

As in Faust, a request for a key is answered by the worker that holds the
key's partition (of a table, or of a topic). The view runs here when this
worker holds it, which is always the case on ``memory://`` and ``redis://``
(one partition) and for a worker alone in its Kafka group. With several Kafka
workers the key's partition is found as producers find it, and when another
worker holds it the request is forwarded to that worker's ``canonical_url``,
which every member announces to the group (``sabot.channels.kafka_assignor``),
and its answer returned (``sabot.web.forward``; Faust's ``route_req``).

When no URL is known for the owner (it serves no web pages, the group runs an
older Sabot, the request was already forwarded once, or the partition is this
worker's but not recovered yet) the answer is 503 (Faust's
``ServiceUnavailable``) naming the partition, so a client or a load balancer
retries on another worker; so it is when the owner does not answer.

The key comes from the query string (``query_param=``, Faust's older
``shard_param=``), from the route (``match_info=``) or is fixed
(``exact_key=``). A request that lacks it answers 400 naming the parameter.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Awaitable, Callable, List, Optional, Tuple

from aiokafka.partitioner import DefaultPartitioner

from ..canonical import canonical_url
from .exceptions import ServiceUnavailable, ValidationError
from .forward import forward, was_routed

__all__ = ["route_decorator"]

Handler = Callable[..., Awaitable[Any]]

_partitioner = DefaultPartitioner()


def _key_bytes(key: Any) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode("utf-8")


#: ``(partition, held here, topic of the partition or None for a table's)``.
Owner = Tuple[int, bool, Optional[str]]


def _table_owner(app: Any, table: Any, key: Any) -> Optional[Owner]:
    if table.is_global or not app.transport.assigns_partitions:
        return None  # every worker holds all of it, or there is one partition
    # A table has as many partitions as its source (Faust: topic_partitions).
    count = int(table.partitions or app.conf.topic_partitions)
    everyone = list(range(count))
    partition = _partitioner(_key_bytes(key), everyone, everyone)
    # A table's partition n is held by the worker assigned partition n of its sources.
    return partition, partition in table.held_partitions, None


def _topic_owner(app: Any, topic: Any, key: Any) -> Optional[Owner]:
    if not app.transport.assigns_partitions:
        return None
    # A Kafka topic's own key codec: the bytes its producers partitioned by.
    found = app.transport.key_partition(topic.name, topic.encode_key(key) or b"")
    return None if found is None else (found[0], found[1], topic.name)


def _owner_urls(app: Any, topic: Optional[str], partition: int) -> List[str]:
    """URLs of the workers holding ``partition`` (of ``topic``; None: a table's), if known."""
    urls = getattr(app.transport, "owner_urls", None)
    return [] if urls is None else urls(topic, partition)  # None: no URLs published


async def _elsewhere(app: Any, request: Any, found: Owner, what: str) -> Any:
    """The answer of the worker holding ``found``'s partition, or 503 naming it."""
    partition, _, topic = found
    me = canonical_url(app)
    holders = _owner_urls(app, topic, partition)
    others = [url for url in holders if url != me]
    owner = None if was_routed(request) or not others else others[0]
    if owner is None:
        held = "this worker is still recovering" if me is not None and me in holders \
            else "held by another worker"
        raise ServiceUnavailable(f"{what} is in partition {partition}, {held}",
                                 partition=partition)
    return await forward(request, owner, me, f"{what} is in partition {partition}",
                         partition=partition)


def route_decorator(app: Any, target: Any, kind: str, shard_param: Optional[str],
                    query_param: Optional[str], match_info: Optional[str],
                    exact_key: Optional[str]) -> Callable[[Handler], Handler]:
    """The decorator of ``app.table_route`` (``kind="table"``) or ``app.topic_route``."""
    if shard_param is not None:
        warnings.warn(DeprecationWarning(
            "shard_param is deprecated, use query_param instead"), stacklevel=3)
        if query_param:
            raise TypeError("Cannot specify shard_param and query_param")
        query_param = shard_param
    if query_param is None and match_info is None and exact_key is None:
        raise TypeError("Need one of query_param, shard_param, or exact key")
    owner = _table_owner if kind == "table" else _topic_owner
    label = f"{kind} {target.name!r}"

    def decorator(fun: Handler) -> Handler:
        @functools.wraps(fun)
        async def routed(view: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if exact_key:
                key: Any = exact_key
            elif match_info:
                if match_info not in request.match_info:
                    raise ValidationError(f"the route has no {{{match_info}}} for the key")
                key = request.match_info[match_info]
            else:
                assert query_param is not None
                if query_param not in request.query:
                    raise ValidationError(f"missing query parameter {query_param!r} (the key "
                                          f"of {label})")
                key = request.query[query_param]
            found = owner(app, target, key)
            if found is not None and not found[1]:
                return await _elsewhere(app, request, found, f"key {key!r} of {label}")
            return await fun(view, request, *args, **kwargs)
        return routed
    return decorator
