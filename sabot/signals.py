"""Faust's app signals: rebalances, worker start and shutdown (``mode.Signal``).

::

    @app.on_rebalance_complete.connect
    async def ready(app, **kwargs):
        ...

* ``on_partitions_revoked(revoked)`` and ``on_partitions_assigned(assigned)``:
  the partition numbers (Sabot's tables and agents are keyed by partition
  number; Faust passes topic-partitions) this worker lost or got, Kafka only;
  ``assigned`` is sent once the tables of those partitions have recovered.
* ``on_rebalance_complete()``: after every assignment (Kafka), and once at
  start on brokers without partitions (memory, Redis), once tables recovered.
  ``app.rebalancing`` is True from a revoke until then.
* ``on_worker_init()`` (sync): the worker was made, before the app starts.
* ``on_before_shutdown()``: a graceful stop begins, before anything stops.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Collection

from mode import Signal, SyncSignal

from .channels.transport import AssignmentListener

if TYPE_CHECKING:
    from .app import App

__all__ = ["AppSignals", "RebalanceSignals"]

SIGNALS = ("on_partitions_assigned", "on_partitions_revoked", "on_rebalance_complete",
           "on_before_shutdown")


class AppSignals:
    """The signals of one app, each with the app as default sender."""

    def __init__(self, app: "App") -> None:
        self.on_partitions_assigned = Signal().with_default_sender(app)
        self.on_partitions_revoked = Signal().with_default_sender(app)
        self.on_rebalance_complete = Signal().with_default_sender(app)
        self.on_before_shutdown = Signal().with_default_sender(app)
        self.on_worker_init = SyncSignal().with_default_sender(app)

    def connected(self, app: "App") -> bool:
        """True when someone listens to a rebalance signal (else none is wired up)."""
        return any(any(True for _ in getattr(self, name).iter_receivers(app))
                   for name in SIGNALS[:3])


class RebalanceSignals(AssignmentListener):
    """Turns a transport's assignments into the app's signals (registered last)."""

    def __init__(self, app: "App") -> None:
        self.app = app

    async def on_revoked(self, partitions: Collection[int]) -> None:
        self.app.rebalancing = True
        self.app.rebalancing_count += 1
        await self.app.on_partitions_revoked.send(set(partitions))

    async def on_assigned(self, partitions: Collection[int]) -> None:
        await self.app.on_partitions_assigned.send(set(partitions))
        self.app.rebalancing = False
        await self.app.on_rebalance_complete.send()
