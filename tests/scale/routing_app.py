"""The app ``tests/scale/test_routing_workers.py`` runs as two real ``sabot worker`` processes.

Configured by environment variables: ``ROUTING_BROKER``, ``ROUTING_TOPIC``
(four partitions), ``ROUTING_APP_ID`` (the consumer group) and
``ROUTING_DATADIR``. An agent adds ``id + 1`` to the table ``totals`` under
each message's key; ``/total/{key}`` (``table_route``) and ``/where/?key=``
(``topic_route``) answer with the worker id of the worker that ran the view.
"""
import os

import sabot
from sabot import web

app = sabot.App(
    os.environ.get("ROUTING_APP_ID", "routing-test"),
    broker=os.environ.get("ROUTING_BROKER", "memory://"),
    topic_partitions=4,
    status_interval=1.0,
    shutdown_timeout=5.0,
    broker_commit_interval=0.2,
    # tansu answers a JoinGroup after half the session timeout: keep it short.
    broker_session_timeout=3.0,
    broker_heartbeat_interval=0.5,
    broker_rebalance_timeout=3.0,
    datadir=os.environ.get("ROUTING_DATADIR") or None,
)

events = app.topic(os.environ.get("ROUTING_TOPIC", "routing"), partitions=4,
                   key_type=str, value_serializer="json")
totals = app.Table("totals", default=int, partitions=4)


@app.agent(events, name="total")
async def total(stream):
    async for key, value in stream.items():
        totals[key] += value["id"] + 1


@app.page("/total/{key}")
class Total(web.View):
    @app.table_route(table=totals, match_info="key")
    async def get(self, request, key):
        return self.json({"key": key, "total": totals[key], "worker": app.conf.worker_id})


@app.page("/where/")
class Where(web.View):
    @app.topic_route(topic=events, query_param="key")
    async def get(self, request):
        return self.json({"key": request.query["key"], "worker": app.conf.worker_id})
