"""Exactly-once on Kafka (``processing_guarantee="exactly_once"``): transactions.

One transactional producer per input partition, with the transactional id
``<app id>-<topic>-<partition>`` (as Faust and Kafka Streams name theirs):
the partition's next owner starts a producer under the same id, which
fences this one (a zombie cannot commit). An agent's output made from
records of one input partition (its ``sources``, the batches it was yielded
for, whose positions are ``(topic, partition, offset)``) is sent by that
partition's producer, inside its open transaction; each commit adds the
partition's finished offsets to that transaction
(``send_offsets_to_transaction``) and commits it, so the outputs and the
input offsets are committed together or not at all. Sabot's consumer reads
``read_committed``.

When: the fetch loop commits every ``broker_commit_interval`` (and the
revoke and the stop commit), between two fetches, after the partition's
in-flight batches finished: every output in the transaction then comes
from a finished record below the committed offset (a record still in an
agent would have its output committed without its offset, and be
processed again after a crash). A partition whose batches do not finish
within ``broker_revoke_timeout`` is not committed in that round.

Faults, each in one line of the log:

- the producer was fenced (``ProducerFenced``, ``InvalidProducerEpoch``):
  another worker owns the partition; the worker stops (``report_crash``)
  instead of retrying;
- the transaction cannot commit (the broker is gone, a timeout of
  ``TXN_STEP_TIMEOUT`` seconds per step): it is aborted, the producer
  dropped (its successor fences it and the broker aborts what it left
  open), the partition's offsets stay where they were, and the consumer
  seeks back to them, so its records are processed again into a new
  transaction. After ``MAX_ABORTS_IN_A_ROW`` aborts of a partition at the
  same offset (no commit between), the worker stops (``report_crash``):
  tansu answers a fenced producer with an unknown error, not
  ``PRODUCER_FENCED``, and a record whose output always fails would loop;
- a zombie (cut off past its session timeout, its partitions given to
  another member): it starts no producer and commits nothing unless a
  heartbeat confirms its membership (:meth:`KafkaExactlyOnce._not_a_member`),
  and an output of a partition it no longer holds is dropped
  (:class:`StaleOutput`), never sent outside a transaction.

The seam: ``KafkaTopic.send_from`` asks :meth:`KafkaExactlyOnce.producer_for_sources`
for the producer, and ``send``/``produce`` use :func:`current_producer`
in its place. Outputs without Kafka sources (a timer, a Redis stream, a
memory channel in between) go through the transport's plain producer, at
least once. An output made from records of two partitions cannot be in
one partition's transaction: it is refused with
:class:`~sabot.exceptions.ConfigurationError`.

Tables: a changelog entry made from a record of an input partition of
this transport (its ``sabot-source`` header, ``topic:partition``) is
written by that partition's producer into its open transaction
(:meth:`KafkaExactlyOnce.write_held`, asked by ``KafkaChangelog.write_held``
at each table flush), so the outputs, the changelog entries and the input
offsets commit together. The table applies those changes to its store only
when the transaction commits (the ``Held`` marked by ``_commit_one``). The
commit runs the tables' flush first (the commit barrier), after the
partition's in-flight batches finished, so every change of a committed
record is in the transaction with its offset; a partition skipped in that
round (batches still in flight) keeps its entries in its still-open
transaction for a later round. While one task commits, flushes from other
tasks leave the entries of the transactional partitions dirty
(:meth:`changelog_mode` answers ``"wait"``): nothing is sent into a
transaction that is committing.

An aborted transaction (``_abort``, a revoke, the stop) takes its changelog
entries with it; the store never had them, and ``abort_listeners`` (the
tables' ``drop_uncommitted``) forget every change of that partition not
committed yet, so the records processed again from the last committed
offset make and write them again: the table state stays exact. A batch
still in an agent after the abort (an abandoned one) is stale
(:meth:`is_stale`): its table writes are dropped like its outputs.

Not in the transaction: dead letters (at least once), and changelog
entries with no source of this transport (a timer, a windowed table's
expiry, a Redis or memory input), written plainly at least once.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref
from typing import (TYPE_CHECKING, Any, Awaitable, Callable, Dict, Iterable, List, Optional,
                    Sequence, Set, Tuple)

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka import errors as Errors
from aiokafka.errors import (InvalidProducerEpoch, KafkaError, ProducerFenced,
                             TransactionalIdAuthorizationFailed)

from aiokafka.protocol.group import HeartbeatRequest

from ..exceptions import ConfigurationError, TransportError
from . import kafka_protocol

if TYPE_CHECKING:  # pragma: no cover - imported for annotations only
    from .kafka import KafkaTransport

__all__ = ["KafkaExactlyOnce", "current_producer", "TXN_STEP_TIMEOUT"]

logger = logging.getLogger("sabot.channels.kafka")

#: Seconds one step of a transaction (add offsets, commit, abort) may take.
TXN_STEP_TIMEOUT = 10.0

#: Aborts of one partition's transaction at the same offset after which the worker stops.
MAX_ABORTS_IN_A_ROW = 5

#: Errors that mean another producer owns the transactional id now.
_FENCED = (ProducerFenced, InvalidProducerEpoch, TransactionalIdAuthorizationFailed)

_producer: contextvars.ContextVar[Optional[AIOKafkaProducer]] = \
    contextvars.ContextVar("sabot_kafka_eos_producer", default=None)


def current_producer() -> Optional[AIOKafkaProducer]:
    """The transactional producer the sends of this task go to now, if any."""
    return _producer.get()


class using:
    """``with using(producer): await topic.send(...)`` sends through ``producer``."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._token: Optional[contextvars.Token] = None

    def __enter__(self) -> None:
        self._token = _producer.set(self.producer)

    def __exit__(self, *exc: Any) -> None:
        assert self._token is not None
        _producer.reset(self._token)


class StaleOutput(TransportError):
    """An output made from a batch whose partition's transaction was aborted."""


class KafkaExactlyOnce:
    """The transactional producers of one Kafka transport, one per input partition."""

    def __init__(self, transport: "KafkaTransport") -> None:
        kafka_protocol.install()  # tansu (and new brokers) want InitProducerId v3
        self.transport = transport
        self._producers: Dict[TopicPartition, AIOKafkaProducer] = {}
        self._lock = asyncio.Lock()
        #: Where a partition's processing restarts if its transaction aborts:
        #: its last committed offset (or the first offset delivered).
        self._restart_at: Dict[TopicPartition, int] = {}
        self._next_commit = 0.0
        #: The last sources asked about and their partition (see producer_for_sources).
        self._last: Optional[Tuple[List[Any], Optional[TopicPartition]]] = None
        self.commits = 0
        self.aborts = 0
        #: Per partition: (the offset its last abort restarted at, aborts there in a row).
        self._aborted_at: Dict[TopicPartition, Tuple[Optional[int], int]] = {}
        #: The batches delivered per partition, and those of aborted transactions:
        #: an agent still working through one after the abort makes stale outputs.
        self._batches: Dict[TopicPartition, "weakref.WeakSet[Any]"] = {}
        self._stale: "weakref.WeakSet[Any]" = weakref.WeakSet()
        #: The tables' changelog entries in each open transaction (``Held``).
        self._held: Dict[TopicPartition, List[Any]] = {}
        #: Called with the source (``topic:partition``) of every transaction
        #: aborted or given up: its uncommitted table changes are dropped.
        self.abort_listeners: List[Callable[[str], None]] = []
        #: The tasks running ``commit`` now (the fetch loop's, a revoke's: not
        #: serialized, a revoke's commit must not wait on a commit that waits
        #: on the rebalance).
        self._committers: Set["asyncio.Task[Any]"] = set()
        #: Until when (``_clock()``) the group's last answer confirms membership.
        self._member_until = 0.0
        #: Every input partition this transport has read from (see producer_for_sources).
        self._read: Set[TopicPartition] = set()
        #: Per partition: its commit and the closing of its producer (_partition_lock).
        self._locks: Dict[TopicPartition, asyncio.Lock] = {}
        self._closed = False

    def transactional_id(self, tp: TopicPartition) -> str:
        """``<app id>-<topic>-<partition>``: the same on every worker, so a zombie is fenced."""
        return f"{self.transport.app.id}-{tp.topic}-{tp.partition}"

    # -- routing (from KafkaTopic.send_from) ---------------------------------
    async def producer_for_sources(self, sources: Sequence[Any]) -> Optional[AIOKafkaProducer]:
        """The producer of the input partition ``sources`` came from, in a transaction.

        ``None`` when a source is not a batch of Kafka records read by this
        transport (the output then goes out at least once). Raises
        :class:`StaleOutput` for an output of a batch delivered before its
        partition's transaction aborted: the records are processed again, so
        it must go nowhere (in the next transaction it would be there twice).
        """
        if self._stale and any(batch in self._stale for batch in sources):
            raise StaleOutput("exactly-once: an output of records whose transaction was "
                              "aborted is dropped (the records are processed again)")
        last = self._last
        if last is not None and len(last[0]) == len(sources) and all(
                a is b for a, b in zip(last[0], sources)):
            # An agent yields many outputs per input batch: the same answer.
            tp = last[1]
        else:
            tp = _partition_of(sources)
            self._last = (list(sources), tp)
        if tp is None:
            return None
        if tp not in self.transport._offsets:
            if tp in self._read:
                # Read here once, not ours now (revoked) or being read again
                # (aborted): its new owner, or the new read, makes this output.
                # Sent plainly it would be there twice.
                raise StaleOutput(
                    f"exactly-once: an output of {tp.topic}[{tp.partition}], which this "
                    f"worker does not hold now, is dropped (its owner processes the records)")
            return None
        producer = self._producers.get(tp)
        if producer is not None and producer._txn_manager.is_in_transaction():
            return producer
        return await self._producer(tp)

    async def _producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        producer = self._producers.get(tp)
        if producer is None:
            async with self._lock:
                producer = self._producers.get(tp)
                if producer is None:
                    # A new producer fences the partition's current one: make
                    # sure it is ours first (a zombie would fence the owner).
                    await self._confirm_membership(tp)
                    transport = self.transport
                    from .kafka import client_settings
                    settings = client_settings(transport.conf, "producer")
                    settings["acks"] = "all"  # a transaction needs every replica
                    producer = AIOKafkaProducer(
                        transactional_id=self.transactional_id(tp),
                        max_request_size=transport.conf.producer_max_request_size,
                        **settings, **transport._client_options())
                    producer = await transport._start_client(producer, "transactional producer")
                    self._producers[tp] = producer
        txn = producer._txn_manager
        if not txn.is_in_transaction():
            await producer.begin_transaction()
        return producer

    async def _not_a_member(self) -> Optional[str]:
        """Why the group does not count this consumer in any more; ``None`` if it does.

        Starting a transactional producer (``InitProducerId``) fences the
        producer of the same id, the partition owner's; committing a
        transaction commits its offsets for the group. A worker cut off past
        its session timeout (a zombie: its partitions went to another member
        meanwhile) believes its partitions its own until its consumer hears
        of the rebalance, and must do neither. A heartbeat with this
        consumer's generation answers it (aiokafka's ``TxnOffsetCommit`` is
        version 0, which carries no generation for the broker to check): a
        stale generation or an unknown member is a zombie, and its consumer
        rejoins; a rebalance going on is not (a revoke's commit runs then).
        """
        if _clock() < self._member_until:
            return None  # confirmed a moment ago (see _confirmed_for)
        consumer = self.transport.consumer
        coordinator = getattr(consumer, "_coordinator", None)
        send = getattr(coordinator, "_send_req", None)
        if coordinator is None or send is None:
            return None  # manual assignment: no group
        asked = _clock()
        try:
            # A zombie that has just heard its session expired has marked
            # the coordinator dead: it is not a member until it rejoined.
            await asyncio.wait_for(coordinator.ensure_coordinator_known(), TXN_STEP_TIMEOUT)
            request = HeartbeatRequest(coordinator.group_id, coordinator.generation,
                                       coordinator.member_id)
            response = await asyncio.wait_for(send(request), TXN_STEP_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - no answer: not confirmed
            return f"no answer from the group coordinator: {type(exc).__name__}: {exc}"
        error = Errors.for_code(response.error_code)
        if error is Errors.NoError:
            self._member_until = asked + self._confirmed_for()
            return None
        if error is Errors.RebalanceInProgressError:
            return None
        coordinator.request_rejoin()
        return f"{error.__name__}: this worker is not a member of its group any more"

    def _confirmed_for(self) -> float:
        """How long a heartbeat's answer stands: a third of the session timeout, at most 1 s.

        The group keeps a member for a session timeout after the last
        heartbeat it heard, so an answer is still true a while later; a
        zombie that was frozen has been so for longer than the session
        timeout, and asks again. It saves a round trip per commit round and
        per new producer (bench_eos.py measured 0.80x at a 100 ms commit
        interval with and without it: the round trip is not what costs).
        """
        return min(1.0, float(self.transport.conf.broker_session_timeout) / 3)

    async def _confirm_membership(self, tp: TopicPartition) -> None:
        """Raise :class:`StaleOutput` unless this consumer may start ``tp``'s producer."""
        reason = await self._not_a_member()
        if reason is not None:
            raise StaleOutput(
                f"exactly-once: no producer is started for {tp.topic}[{tp.partition}] "
                f"({reason}; it would fence the owner's): the output is dropped")

    # -- tables' changelog entries (from KafkaChangelog) ----------------------
    def _source_partition(self, source: str) -> Optional[TopicPartition]:
        """The input partition a table source (``topic:partition``) names, if ours."""
        topic, _, partition = source.rpartition(":")
        if not topic or not partition.isdigit():
            return None
        tp = TopicPartition(topic, int(partition))
        return tp if tp in self.transport._offsets else None

    def changelog_mode(self, source: str) -> str:
        """``"hold"``: entries of ``source`` go into its transaction; ``"plain"``; ``"wait"``."""
        if self._closed or self._source_partition(source) is None:
            return "plain"
        committers = self._committers
        if committers and asyncio.current_task() not in committers:
            return "wait"  # its transaction may be committing: flushed by the commit itself
        return "hold"

    async def write_held(self, held: Any, write: Callable[[], Awaitable[Any]]) -> None:
        """Run ``write()`` (sends) in the open transaction of ``held.source``'s partition.

        ``held.position`` becomes what ``write`` returns (the last entry's
        offset); ``held.committed()`` is called when the transaction commits.
        """
        tp = self._source_partition(held.source)
        if tp is None:
            raise TransportError(f"exactly-once: {held.source} is not an input partition "
                                 f"of this worker any more; its table changes are not written")
        producer = await self._producer(tp)
        with using(producer):
            held.position = await write()
        self._held.setdefault(tp, []).append(held)

    def is_stale(self, batch: Any) -> bool:
        """True for a batch delivered before its partition's transaction aborted.

        Its records are processed again: the tables drop its writes, as its
        outputs are dropped (:class:`StaleOutput`).
        """
        return bool(self._stale) and batch in self._stale

    def _drop_uncommitted(self, tp: TopicPartition) -> None:
        """``tp``'s transaction is gone: the tables forget its uncommitted changes."""
        self._held.pop(tp, None)
        source = f"{tp.topic}:{tp.partition}"
        for listener in self.abort_listeners:
            try:
                listener(source)
            except Exception as exc:  # one table's failure must not hide another's
                logger.exception("dropping the uncommitted table changes of %s failed: %r",
                                 source, exc)

    def delivered(self, tp: TopicPartition, first_offset: int) -> None:
        """Records of ``tp`` from ``first_offset`` on reach the agents (the first fetch counts)."""
        self._restart_at.setdefault(tp, first_offset)
        self._read.add(tp)

    def watch(self, tp: TopicPartition, batches: Iterable[Any]) -> None:
        """``batches`` were made from a fetch of ``tp`` (stale if its transaction aborts)."""
        self._batches.setdefault(tp, weakref.WeakSet()).update(batches)

    # -- committing -----------------------------------------------------------
    def due(self, now: float) -> bool:
        """True once per ``broker_commit_interval`` (asked by the fetch loop)."""
        if now < self._next_commit:
            return False
        self._next_commit = now + float(self.transport.conf.broker_commit_interval)
        return True

    async def commit_round(self) -> bool:
        """The fetch loop's commit: wait (bounded) for in-flight batches, then commit."""
        transport = self.transport
        tps = list(transport._offsets)
        if not tps:
            return True
        await transport._inflight.wait(float(transport.conf.broker_revoke_timeout), tps)
        return await self.commit(tps)

    async def commit(self, tps: Iterable[TopicPartition]) -> bool:
        """Commit the finished offsets of ``tps``, each with its partition's outputs.

        While it runs, flushes of other tasks leave the entries of
        transactional partitions dirty (``changelog_mode``).
        """
        task = asyncio.current_task()
        assert task is not None
        self._committers.add(task)
        try:
            return await self._commit(tps)
        finally:
            self._committers.discard(task)

    async def _commit(self, tps: Iterable[TopicPartition]) -> bool:
        transport = self.transport
        consumer = transport.consumer
        if consumer is None:
            return False
        todo: Dict[TopicPartition, int] = {}
        tps = list(tps)
        for tp in tps:
            offsets = transport._offsets.get(tp)
            if tp in self._producers and offsets is not None and offsets.ranges \
                    and not transport._inflight.count([tp]):
                # Nothing in flight, yet a range is unfinished: a batch was
                # abandoned (one of its outputs failed). Its transaction can
                # never commit whole: abort it, read the records again.
                await self._abort(tp, TransportError(
                    "an output sent in it failed (the delivery error is logged above)"))
        for tp in tps:
            if transport._inflight.count([tp]):
                # Its transaction may hold outputs of records still in an
                # agent: committing them now would commit them without their
                # offsets. Left open (a stop or a revoke aborts it).
                continue
            offsets = transport._offsets.get(tp)
            if offsets is not None and offsets.committable is not None \
                    and offsets.committable != transport._committed.get(tp):
                todo[tp] = offsets.committable
        if not todo:
            return True
        if not await transport.commit_barrier():
            return False
        plain = {tp: offset for tp, offset in todo.items() if tp not in self._producers}
        ok = True
        if plain:  # no output was made from them since the last commit
            try:
                await consumer.commit(plain)
                transport._committed.update(plain)
                self._restart_at.update(plain)
            except KafkaError as exc:
                logger.warning("Kafka commit of %d partitions failed: %s", len(plain), exc)
                ok = False
        if any(tp in self._producers for tp in todo):
            reason = await self._not_a_member()
            if reason is not None:  # a zombie: its transactions must not commit
                for tp in todo:
                    if tp in self._producers:
                        await self._abort(tp, TransportError(reason))
                return False
        # The partitions' transactions commit side by side (one round trip
        # each step, not one per partition).
        results = await asyncio.gather(*(self._commit_one(tp, offset)
                                         for tp, offset in todo.items()
                                         if tp in self._producers))
        done = {tp: offset for tp, offset, result in results if result == "committed"}
        if any(result == "fenced" for _, _, result in results):
            return False
        ok = ok and len(done) == len(results)
        if done:
            # The same offsets once more, outside the transaction: tansu (the
            # test broker) sometimes does not show a transaction's offsets to
            # OffsetFetch. They are committed already, so on Kafka this
            # changes nothing (docs/exactly-once.md).
            try:
                await consumer.commit(done)
            except KafkaError as exc:
                logger.debug("re-committing %d transactional offsets failed: %s",
                             len(done), exc)
        return ok

    def _partition_lock(self, tp: TopicPartition) -> asyncio.Lock:
        """Held while ``tp``'s transaction commits or its producer closes.

        Two tasks may commit at once (the fetch loop's round, a revoke's), and
        both may pick the same partition: its transaction's steps must not
        interleave (aiokafka refuses a second commit of a committing
        transaction, and the abort that followed read records again that the
        first commit had committed).
        """
        lock = self._locks.get(tp)
        if lock is None:
            lock = self._locks[tp] = asyncio.Lock()
        return lock

    async def _commit_one(self, tp: TopicPartition, offset: int) -> Tuple[TopicPartition, int, str]:
        """Commit ``tp``'s transaction with ``offset``: committed, aborted or fenced."""
        async with self._partition_lock(tp):
            producer = self._producers.get(tp)
            if producer is None:  # aborted or revoked while this task waited
                return tp, offset, "aborted"
            if self.transport._committed.get(tp) == offset:
                return tp, offset, "committed"  # by the task this one waited for
            return await self._commit_locked(tp, offset, producer)

    async def _commit_locked(self, tp: TopicPartition, offset: int,
                             producer: AIOKafkaProducer) -> Tuple[TopicPartition, int, str]:
        try:
            if not producer._txn_manager.is_in_transaction():
                await asyncio.wait_for(producer.begin_transaction(), TXN_STEP_TIMEOUT)
            await asyncio.wait_for(producer.send_offsets_to_transaction(
                {tp: offset}, self.transport.app.id), TXN_STEP_TIMEOUT)
            await asyncio.wait_for(producer.commit_transaction(), TXN_STEP_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except _FENCED as exc:
            self._fenced(tp, exc)
            return tp, offset, "fenced"
        except Exception as exc:
            await self._abort(tp, exc)
            return tp, offset, "aborted"
        self.transport._committed[tp] = offset
        self._restart_at[tp] = offset
        self.commits += 1
        for held in self._held.pop(tp, ()):
            held.committed()  # the tables apply these changes to their stores now
        return tp, offset, "committed"

    def _fenced(self, tp: TopicPartition, exc: BaseException) -> None:
        error = TransportError(
            f"exactly-once: the producer of {tp.topic}[{tp.partition}] (transactional id "
            f"{self.transactional_id(tp)!r}) was fenced by another worker that owns the "
            f"partition now ({type(exc).__name__}); stopping this worker")
        logger.error("%s", error)
        self.transport.app.report_crash(error)

    async def _abort(self, tp: TopicPartition, exc: BaseException) -> None:
        """Abort ``tp``'s transaction, drop its producer, process its records again."""
        self.aborts += 1
        self._stale.update(self._batches.pop(tp, ()))
        producer = self._producers.pop(tp, None)
        restart = self._restart_at.get(tp)
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        logger.error("exactly-once: the transaction of %s[%d] could not commit (%s): aborted; "
                     "its offsets stay at %s and its records are processed again",
                     tp.topic, tp.partition, reason,
                     restart if restart is not None else "the group's committed offset")
        last = self._aborted_at.get(tp)
        n = last[1] + 1 if last is not None and last[0] == restart else 1
        self._aborted_at[tp] = (restart, n)
        if n >= MAX_ABORTS_IN_A_ROW:
            error = TransportError(
                f"exactly-once: the transaction of {tp.topic}[{tp.partition}] could not commit "
                f"{n} times in a row (last: {reason}); stopping this worker: another worker may "
                f"own the partition (fenced), or an output of its records always fails")
            logger.error("%s", error)
            self.transport.app.report_crash(error)
        if producer is not None:
            await _close(producer)
        self._drop_uncommitted(tp)
        transport = self.transport
        consumer = transport.consumer
        # The records whose outputs were aborted are read again from the last
        # committed offset (nothing is in flight for tp: see commit_round).
        transport._offsets.pop(tp, None)
        if consumer is not None and restart is not None and tp in consumer.assignment():
            consumer.seek(tp, restart)

    async def revoked(self, tps: Iterable[TopicPartition]) -> None:
        """``tps`` were committed and are not ours any more: drop their producers.

        What their transactions still hold is aborted: the new owner processes
        those records again, so the tables forget their changes here.
        """
        for tp in tps:
            self._restart_at.pop(tp, None)
            async with self._partition_lock(tp):  # not in the middle of its commit
                producer = self._producers.pop(tp, None)
                if producer is not None:
                    await _close(producer)
            self._drop_uncommitted(tp)

    async def close(self) -> None:
        """Abort what is still open (uncommitted), stop every producer."""
        self._closed = True
        producers, self._producers = dict(self._producers), {}
        for producer in producers.values():
            await _close(producer)
        for tp in set(producers) | set(self._held):
            self._drop_uncommitted(tp)


def _clock() -> float:
    """Seconds, counting a suspended machine's time too (the group's clock runs on)."""
    return time.clock_gettime(_BOOTTIME) if _BOOTTIME is not None else time.monotonic()


_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def _partition_of(sources: Sequence[Any]) -> Optional[TopicPartition]:
    """The one input partition of ``sources``; ``None`` if they are not Kafka records."""
    if not sources:
        return None
    found: Optional[Tuple[str, int]] = None
    for batch in sources:
        positions = batch.positions
        if not positions:
            return None
        # A batch holds records of one partition: its first position says which.
        position = positions[0]
        if not (isinstance(position, tuple) and len(position) == 3):
            return None
        here = (position[0], position[1])
        if found is None:
            found = here
        elif here != found:
            raise ConfigurationError(
                f"exactly-once: an output made from records of {found[0]}[{found[1]}] and "
                f"{here[0]}[{here[1]}] cannot be committed in either partition's transaction; "
                f"yield it per input partition, or use processing_guarantee='at_least_once'")
    assert found is not None
    return TopicPartition(*found)


async def _close(producer: AIOKafkaProducer) -> None:
    """Abort an open transaction (bounded) and stop the producer (bounded)."""
    try:
        if producer._txn_manager is not None and producer._txn_manager.is_in_transaction():
            await asyncio.wait_for(producer.abort_transaction(), TXN_STEP_TIMEOUT)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # its successor's InitProducerId aborts it on the broker
        logger.debug("abort on close failed: %r", exc)
    try:
        await asyncio.wait_for(producer.stop(), TXN_STEP_TIMEOUT)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.debug("stopping a transactional producer failed: %r", exc)

