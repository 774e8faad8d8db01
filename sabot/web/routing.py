"""``app.table_route`` and ``app.topic_route``: answer where the key's partition lives.

Faust sends a request for a key to the worker that holds the key's
partition (of a table's changelog, or of a topic) and runs the view there.
Sabot runs the view here when this worker holds the partition, which is
always the case on ``memory://`` and ``redis://`` (one partition) and for a
worker alone in its Kafka group. With several Kafka workers Sabot knows which
partition the key is in and whether this worker holds it (the partitions a
table holds; for a topic, the transport's ``key_partition``: the consumer's
assignment), but not the web address of the worker that does: a request for a
key held elsewhere answers 503 (Faust's ``ServiceUnavailable``,
what Faust answers when it cannot locate the owner) naming the partition, so a
client or a load balancer retries on another worker.

The key comes from the query string (``query_param=``, Faust's older
``shard_param=``), from the route (``match_info=``) or is fixed
(``exact_key=``). A request that lacks it answers 400 naming the parameter.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Awaitable, Callable, Optional, Tuple

from aiokafka.partitioner import DefaultPartitioner

from .exceptions import ServiceUnavailable, ValidationError

__all__ = ["route_decorator"]

Handler = Callable[..., Awaitable[Any]]

_partitioner = DefaultPartitioner()


def _key_bytes(key: Any) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode("utf-8")


def _table_owner(app: Any, table: Any, key: Any) -> Optional[Tuple[int, bool]]:
    if table.is_global or not app.transport.assigns_partitions:
        return None  # every worker holds all of it, or there is one partition
    # A table has as many partitions as its source (Faust: topic_partitions).
    count = int(table.partitions or app.conf.topic_partitions)
    everyone = list(range(count))
    partition = _partitioner(_key_bytes(key), everyone, everyone)
    return partition, partition in table.held_partitions


def _topic_owner(app: Any, topic: Any, key: Any) -> Optional[Tuple[int, bool]]:
    if not app.transport.assigns_partitions:
        return None
    # A Kafka topic's own key codec: the bytes its producers partitioned by.
    return app.transport.key_partition(topic.name, topic.encode_key(key) or b"")


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
                raise ServiceUnavailable(
                    f"key {key!r} of {label} is in partition {found[0]}, held by another "
                    f"worker", partition=found[0])
            return await fun(view, request, *args, **kwargs)
        return routed
    return decorator
