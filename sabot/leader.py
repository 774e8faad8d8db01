"""Which worker of an app is its leader (``app.is_leader()``, ``on_leader=True``).

Sabot has no coordinator of its own; the leader comes from the broker:

* ``kafka://``: as in Faust, the group member that is assigned partition 0 of
  the app's leader topic ``<app id>-__assignor-__leader`` (one partition,
  declared on first use, never written to). The consumer group decides; when
  the leader dies, the group rebalances and another member gets the
  partition within the session timeout.
* ``redis://``: a lock, ``SET <app id>-__leader <token> NX PX <ttl>``, held by
  the worker that set it and renewed every third of its time to live
  (``leader_lock_ttl``, 10 s); a worker that dies loses it when the time to
  live runs out, and another takes it at its next try. Renewal and release
  check the token, so a worker never extends or deletes another's lock.
* ``memory://``: one process is the whole app, so it always leads.

Election starts with the worker when the app has an ``on_leader`` timer or
crontab, or on the first ``app.is_leader()`` of a running app. Until the
broker has answered, ``is_leader()`` is False: an ``on_leader`` timer skips
a beat rather than run on two workers.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .app import App

__all__ = ["LeaderElection", "KafkaLeader", "RedisLeader", "SoleLeader", "election_for",
           "leader_topic_name"]

logger = logging.getLogger(__name__)


def leader_topic_name(app_id: str) -> str:
    """Faust's name for the topic whose partition 0 marks the leader."""
    return f"{app_id}-__assignor-__leader"


class LeaderElection:
    """How one worker learns whether it leads the app."""

    async def start(self) -> None:
        """Take part in the election (idempotent)."""

    async def stop(self) -> None:
        """Leave the election (a held lock is released)."""

    def is_leader(self) -> bool:
        raise NotImplementedError


class SoleLeader(LeaderElection):
    """``memory://``: the only worker leads."""

    def is_leader(self) -> bool:
        return True


class KafkaLeader(LeaderElection):
    """The member assigned partition 0 of the leader topic leads."""

    def __init__(self, app: "App") -> None:
        from .channels.kafka import KafkaTransport
        transport = app.transport
        if not isinstance(transport, KafkaTransport):
            raise TypeError(f"KafkaLeader needs a kafka:// app, not {transport!r}")
        self.transport = transport
        self.topic = transport.topic(leader_topic_name(app.id), partitions=1)
        self._joined = False

    async def start(self) -> None:
        if not self._joined:
            self._joined = True
            # Asked for first at run time, the transport may not be running yet.
            await self.transport.maybe_start()
            self.transport.subscribe_channel(self.topic)

    def is_leader(self) -> bool:
        consumer = self.transport.consumer
        if consumer is None or not self._joined:
            return False
        return any(tp.topic == self.topic.name and tp.partition == 0
                   for tp in consumer.assignment())


#: Extend the lock only if it is still ours (KEYS[1] lock, ARGV[1] token, ARGV[2] ms).
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
          "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
#: Delete the lock only if it is still ours.
_RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) else return 0 end")


class RedisLeader(LeaderElection):
    """The worker holding ``<app id>-__leader`` (a lock with a time to live) leads."""

    def __init__(self, app: "App", ttl: Optional[float] = None) -> None:
        from .channels.redis import RedisTransport
        transport = app._transport_for(app.conf.redis_url if app.transport.scheme != "redis"
                                       else app.conf.broker)
        if not isinstance(transport, RedisTransport):
            raise TypeError(f"RedisLeader needs a Redis transport, not {transport!r}")
        self.transport = transport
        self.key = f"{app.id}-__leader"
        self.token = uuid.uuid4().hex
        self.ttl = float(ttl if ttl is not None else app.conf.leader_lock_ttl)
        #: Monotonic time until which the lock is surely ours (None: not held).
        self._held_until: Optional[float] = None
        self._task: Optional["asyncio.Task[None]"] = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._held_until is not None:
            self._held_until = None
            try:
                await self.transport.client.eval(_RELEASE, 1, self.key, self.token)
            except Exception as exc:  # it expires by itself anyway
                logger.warning("could not release the leader lock %r: %s", self.key, exc)

    def is_leader(self) -> bool:
        return self._held_until is not None and time.monotonic() < self._held_until

    async def try_once(self) -> bool:
        """Take or renew the lock now; True while this worker holds it."""
        client = self.transport.client
        ms = int(self.ttl * 1000)
        started = time.monotonic()
        if self._held_until is not None:
            held = bool(await client.eval(_RENEW, 1, self.key, self.token, ms))
        else:
            held = bool(await client.set(self.key, self.token, nx=True, px=ms))
        if held:
            if self._held_until is None:
                logger.info("this worker is now the leader (lock %r)", self.key)
            # Counted from before the request: the server's clock started later.
            self._held_until = started + self.ttl
        elif self._held_until is not None:
            logger.warning("this worker lost the leader lock %r", self.key)
            self._held_until = None
        return held

    async def _run(self) -> None:
        while True:
            try:
                await self.try_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the lock runs out by itself
                logger.warning("leader election on Redis failed: %s", exc)
            await asyncio.sleep(self.ttl / 3)


def election_for(app: "App") -> LeaderElection:
    """The election that fits the app's broker."""
    scheme = app.transport.scheme
    if scheme == "kafka":
        return KafkaLeader(app)
    if scheme == "redis":
        return RedisLeader(app)
    return SoleLeader()
