"""What this worker holds of its consumer groups, for ``/health`` and ``/status.json``.

With many workers of one app (``docs/deployment.md``), each shows its own
share: its worker id and pid, the Kafka partitions the group assigned to it
(per topic), and the consumer name it reads Redis streams under. On Kafka
also the URL this worker announced to its group (``url``, None without a web
server) and the map the group leader sent of which URL holds what
(``urls``: ``{url: {topic: [n, ...]}}``), which ``table_route`` and
``topic_route`` forward requests by.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

from ..canonical import canonical_url
from ..types import AppT

__all__ = ["holdings"]


def holdings(app: AppT) -> Dict[str, Any]:
    """``{"worker_id", "pid", "partitions": {topic: [n, ...]}, "consumers": [...]}``, and on
    Kafka ``"url"`` and ``"urls"``."""
    partitions: Dict[str, List[int]] = {}
    consumers: List[Dict[str, str]] = []
    group: Dict[str, Any] = {}
    for transport in app.transports:
        assignor = getattr(transport, "assignor", None)
        if assignor is not None and not group:
            group = {"url": canonical_url(app), "urls": assignor.urls}
        consumer = getattr(transport, "consumer", None)
        if getattr(transport, "assigns_partitions", False) and consumer is not None:
            for tp in consumer.assignment():
                partitions.setdefault(tp.topic, []).append(tp.partition)
        name = getattr(transport, "consumer_name", None)
        if isinstance(name, str):  # a transport read in a consumer group by name (Redis)
            consumers.append({"transport": transport.scheme, "consumer": name})
    return {"worker_id": app.conf.worker_id, "pid": os.getpid(),
            "partitions": {topic: sorted(ps) for topic, ps in sorted(partitions.items())},
            "consumers": consumers, **group}
