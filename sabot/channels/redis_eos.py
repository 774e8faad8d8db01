"""Exactly-once from Redis streams to Redis streams (``processing_guarantee="exactly_once"``).

At least once, an agent's outputs are ``XADD``\\ ed as they are yielded and
the inputs ``XACK``\\ ed later: a crash in between writes the outputs again
when the inputs are read again. Exactly once, an output made from entries
of a stream read by this transport (its ``sources``, the batches it was
yielded for, whose positions are ``(stream, entry id)``) is not written at
once: it is *staged* with the ids of those entries. When the entries are
finished (the moment the at-least-once path would ``XACK`` them), one Lua
script, which Redis runs atomically as it runs a ``MULTI``/``EXEC``, checks
that every one of those entries is still pending for this consumer,
``XADD``\\ s the staged outputs and ``XACK``\\ s the entries. So the outputs
and the acknowledgement land together or not at all:

- killed before the script ran: nothing was written, the entries stay
  pending and are processed again (by this worker's next life, or claimed
  by another one), and their outputs are staged again;
- the connection lost while the script ran: the retry finds the entries no
  longer pending for this consumer and writes nothing twice;
- a zombie (a worker stalled for longer than ``redis_claim_idle_ms`` whose
  entries another worker claimed): the check fails for those entries, their
  outputs are dropped and the claimant's outputs are the ones written (one
  line in the log says so). This is the fencing Kafka gets from epochs.

Plain ``MULTI``/``EXEC`` cannot make the writes depend on the check (a
transaction's commands cannot read each other's replies), hence the script.

The seam: ``RedisStreamChannel.send_from`` (how an agent forwards a yield)
asks :func:`staging_for` for the outbox of its sources, and ``produce``
stages into it instead of queueing an ``XADD``; the returned delivery future
is already done (the entry id is known only at commit: it resolves to
``None``), so the agent does not hold its input on it. An output whose
sources are not Redis entries of this transport (a Kafka topic, a memory
channel in between, a timer) is written at once, at least once. An output
made from the entries of two streams cannot be one stream's commit: it is
refused with :class:`~sabot.exceptions.ConfigurationError`. An output made
from entries of several reads of the same stream is committed with the
last of them (the earlier ones wait, unacknowledged, for it).

Tables: a changelog entry made from an entry of a stream read by this
transport (its ``sabot-source`` header names the stream) is staged in that
stream's outbox too (:func:`write_held`, asked by ``RedisChangelog.write_held``
at each table flush; the changelog stream is on the same server, the app's)
and ``XADD``\\ ed by the next script, with the outputs and the ``XACK``. The
table applies those changes to its store only when the script has run (the
``Held`` marked with the entry id of the last changelog entry). The reader
runs the tables' flush (the commit barrier) right before the script, so
every change of the entries it acknowledges is in it. A change may also
hold the effect of entries still in an agent (a key written by both); it
carries the position of its last input, so when those entries are read
again after a crash, the table recovered from the changelog skips them as
replays (``sabot.tables.table``): the state stays exact.

- Killed before the script ran: neither the changelog entries nor the
  changes in the store exist; the entries are read again and make them
  again.
- Killed after the script, before the store applied them: the store is
  behind its changelog, and its recovery reads the rest.
- Entries found no longer pending (a retry after a lost reply, a zombie):
  the script writes nothing; the changelog entries stay staged and go with
  the next script (the table's other changes are in them).

Not in the transaction: dead letters (written, then acknowledged, at least
once) and changelog entries with no source of this transport (a timer, a
windowed table's expiry, a Kafka input), written plainly, at least once.
"""
from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
from typing import (TYPE_CHECKING, Any, Awaitable, Callable, Dict, Iterable, List, Optional,
                    Sequence, Set, Tuple)

from redis import exceptions as rexc

from ..exceptions import ConfigurationError

if TYPE_CHECKING:  # pragma: no cover - imported for annotations only
    from .redis import RedisTransport, _StreamReader

__all__ = ["Outbox", "StagedOutput", "staging_for", "current_staging", "staged", "COMMIT_SCRIPT",
           "outbox_of", "write_held"]

logger = logging.getLogger("sabot.channels.redis")

#: KEYS[1]: the input stream; KEYS[2..]: the output streams.
#: ARGV: group, consumer, lowest id, highest id, n ids, the ids, then per
#: output: its KEYS index, MAXLEN (empty for none), n fields, the fields.
#: Returns {0, ids not pending for this consumer} (nothing written) or
#: {1, the new entry ids}.
COMMIT_SCRIPT = """
local group, consumer = ARGV[1], ARGV[2]
local n = tonumber(ARGV[5])
local mine = {}
for _, p in ipairs(redis.call('XPENDING', KEYS[1], group, ARGV[3], ARGV[4], 1000000000, consumer)) do
  mine[p[1]] = true
end
local lost = {}
for i = 6, 5 + n do
  if not mine[ARGV[i]] then lost[#lost + 1] = ARGV[i] end
end
if #lost > 0 then return {0, lost} end
local out = {}
local i = 6 + n
while i <= #ARGV do
  local args = {'XADD', KEYS[tonumber(ARGV[i])]}
  if ARGV[i + 1] ~= '' then
    args[#args + 1] = 'MAXLEN'; args[#args + 1] = '~'; args[#args + 1] = ARGV[i + 1]
  end
  args[#args + 1] = '*'
  local nf = tonumber(ARGV[i + 2])
  for j = i + 3, i + 2 + nf do args[#args + 1] = ARGV[j] end
  out[#out + 1] = redis.call(unpack(args))
  i = i + 3 + nf
end
for j = 6, 5 + n, 4000 do
  redis.call('XACK', KEYS[1], group, unpack(ARGV, j, math.min(5 + n, j + 3999)))
end
return {1, out}
"""
_SCRIPT_SHA = hashlib.sha1(COMMIT_SCRIPT.encode()).hexdigest()


class StagedOutput:
    """One ``XADD`` waiting for the commit of the entries it was made from."""

    __slots__ = ("stream", "maxlen", "fields")

    def __init__(self, stream: str, maxlen: Optional[int], fields: List[Any]) -> None:
        self.stream = stream
        self.maxlen = maxlen
        self.fields = fields


class Outbox:
    """The staged outputs of one input stream, and its commits (one per ack round).

    Besides the outputs (by the entries they were made from), the tables'
    changelog entries staged with the next commit, whatever its entries.
    """

    def __init__(self, reader: "_StreamReader") -> None:
        self.reader = reader
        #: The outputs made from each set of entries (one set per source
        #: batch, the same object for all its outputs: see staging_for).
        self._groups: Dict[frozenset, List[StagedOutput]] = {}
        #: The sets each entry id is in.
        self._by_id: Dict[bytes, List[frozenset]] = {}
        #: Finished ids waiting for another read an output was also made from.
        self._deferred: List[bytes] = []
        #: The tables' changelog entries for the next script, each flush's
        #: with the ``Held`` it marks committed (sabot.tables.changelog).
        self._changelog: List[Tuple[Any, List[StagedOutput]]] = []
        self.committed = 0

    # -- staging (from the agents) -------------------------------------------
    def stage(self, sources: Any, stream: str, maxlen: Optional[int],
              fields: List[Any]) -> "asyncio.Future[Any]":
        """Keep an ``XADD`` for the commit of ``sources``; the future is done (``None``).

        ``sources`` is a list (a table flush's, see ``write_held``): the
        ``XADD`` is appended to it.
        """
        if isinstance(sources, list):
            sources.append(StagedOutput(stream, maxlen, fields))
            future: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future
        outputs = self._groups.get(sources)
        if outputs is None:
            outputs = self._groups[sources] = []
            by_id = self._by_id
            for eid in sources:
                by_id.setdefault(eid, []).append(sources)
        outputs.append(StagedOutput(stream, maxlen, fields))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def redelivered(self, ids: Sequence[bytes]) -> None:
        """``ids`` are read again (a recovery): outputs staged for them earlier are stale."""
        self._drop(ids)

    def staged_count(self) -> int:
        """Outputs waiting for their commit."""
        return sum(map(len, self._groups.values()))

    # -- committing (from the reader's ack loop) -----------------------------
    async def commit(self, ids: List[bytes]) -> None:
        """Write the outputs of the finished ``ids`` and XACK them, atomically.

        Raises the connection's error when the server cannot be reached: the
        caller queues ``ids`` again (the outputs stay staged).
        """
        given = set(ids)
        ids = self._deferred + ids
        self._deferred = []
        try:
            ready, outputs, deferred = self._ready(ids)
            self._deferred = deferred
            while ready:
                lost = await self._run(ready, outputs)
                if not lost:
                    break
                # Not pending for us any more: acknowledged already (a retry
                # after a lost reply) or claimed by another worker. Their
                # outputs are not ours to write; the rest goes on.
                logger.warning(
                    "redis stream %r: %d entries are no longer pending for consumer %r "
                    "(acknowledged already, or claimed by another worker): their outputs "
                    "are dropped", self.reader.stream, len(lost), self.reader.consumer)
                self._drop(lost)
                self.reader._forget(list(lost))
                ready = [eid for eid in ready if eid not in lost]
                ready, outputs, more = self._ready(ready)
                self._deferred.extend(more)
        except BaseException:
            self._deferred = [eid for eid in ids if eid not in given]
            raise

    def _ready(self, ids: List[bytes]) -> Tuple[List[bytes], List[StagedOutput], List[bytes]]:
        """Split ``ids`` into those committable now and those waiting for other reads."""
        ready: Set[bytes] = set(ids)
        by_id = self._by_id
        groups = {id(g): g for eid in ids for g in by_id.get(eid, ())}
        changed = True
        while changed:
            changed = False
            for key, group in list(groups.items()):
                if not group <= ready:
                    # Made from entries not finished yet: its finished ones wait.
                    ready.difference_update(group)
                    del groups[key]
                    changed = True
        outputs: List[StagedOutput] = []
        for group in groups.values():
            outputs.extend(self._groups.get(group, ()))
        ordered = [eid for eid in ids if eid in ready]
        return ordered, outputs, [eid for eid in ids if eid not in ready]

    async def _run(self, ids: List[bytes], outputs: List[StagedOutput]) -> Set[bytes]:
        """Run the script; returns the ids found not pending (then nothing was written)."""
        # The tables' changelog entries staged so far go with it; staged
        # meanwhile (the script is awaited), they wait for the next one.
        changelog, self._changelog = self._changelog, []
        try:
            lost = await self._run_script(ids, outputs, changelog)
        except BaseException:
            self._changelog[:0] = changelog
            raise
        if lost:
            self._changelog[:0] = changelog
        return lost

    async def _run_script(self, ids: List[bytes], outputs: List[StagedOutput],
                          changelog: List[Tuple[Any, List[StagedOutput]]]) -> Set[bytes]:
        reader = self.reader
        n_outputs = len(outputs)
        if changelog:
            outputs = outputs + [staged for _, entries in changelog for staged in entries]
        keys: List[str] = [reader.stream]
        index: Dict[str, int] = {}
        argv: List[Any] = [reader.group, reader.consumer, *_bounds(ids), len(ids), *ids]
        for staged in outputs:
            k = index.get(staged.stream)
            if k is None:
                keys.append(staged.stream)
                k = index[staged.stream] = len(keys)
            argv += (k, "" if staged.maxlen is None else staged.maxlen, len(staged.fields),
                     *staged.fields)
        transport = reader.transport
        size = sum(len(f) for s in outputs for f in s.fields if isinstance(f, bytes))
        reply = (await transport.round_trip(
            [("EVALSHA", _SCRIPT_SHA, len(keys), *keys, *argv)], size))[0]
        if isinstance(reply, rexc.NoScriptError):  # first commit since the server started
            reply = (await transport.round_trip(
                [("EVAL", COMMIT_SCRIPT, len(keys), *keys, *argv)], size))[0]
        if isinstance(reply, Exception):
            raise reply  # the reader's ack loop handles a Redis error
        status, detail = reply[0], reply[1]
        if status == 0:
            return set(detail)
        end = n_outputs
        for held, entries in changelog:
            end += len(entries)
            if entries:
                last = detail[end - 1]
                held.committed(last.decode() if isinstance(last, bytes) else str(last))
            else:
                held.committed()
        self._drop(ids)
        self.committed += n_outputs
        reader._forget(ids)
        return set()

    def _drop(self, ids: Iterable[bytes]) -> None:
        by_id, groups = self._by_id, self._groups
        for eid in ids:
            for group in by_id.pop(eid, ()):
                if groups.pop(group, None) is None:
                    continue  # dropped already through another of its ids
                for other in group:
                    siblings = by_id.get(other)
                    if siblings is not None:
                        siblings[:] = [g for g in siblings if g is not group]
                        if not siblings:
                            del by_id[other]


def outbox_of(transport: "RedisTransport", stream: str) -> Optional[Outbox]:
    """The outbox of ``stream`` when this transport reads it exactly once, else ``None``."""
    reader = transport._readers.get(stream) if transport.exactly_once else None
    return reader.outbox if reader is not None else None


async def write_held(transport: "RedisTransport", held: Any,
                     write: Callable[[], Awaitable[Any]]) -> None:
    """Stage what ``write()`` produces (a table's changelog entries) for the next script.

    ``held.source`` is the input stream; ``held.committed(last entry id)``
    is called once the script has written them.
    """
    outbox = outbox_of(transport, held.source)
    if outbox is None:
        raise ConfigurationError(f"exactly-once: {held.source!r} is not a stream this worker "
                                 f"reads; its table changes cannot go with its commit")
    entries: List[StagedOutput] = []
    with staged((outbox, entries)):  # type: ignore[arg-type]
        await write()
    outbox._changelog.append((held, entries))


def _bounds(ids: Sequence[bytes]) -> Tuple[bytes, bytes]:
    """The lowest and highest of stream entry ids (``ms-seq``, compared as numbers)."""
    def order(eid: bytes) -> Tuple[int, int]:
        ms, _, seq = eid.partition(b"-")
        return int(ms), int(seq or 0)
    return min(ids, key=order), max(ids, key=order)


#: The outbox and source ids an agent's send is staged into (set by send_from).
_staging: contextvars.ContextVar[Optional[Tuple[Outbox, frozenset]]] = \
    contextvars.ContextVar("sabot_redis_eos_staging", default=None)


def current_staging() -> Optional[Tuple[Outbox, frozenset]]:
    """The outbox ``produce`` stages into in this task now, if any."""
    return _staging.get()


def staging_for(transport: "RedisTransport", sources: Sequence[Any]
                ) -> Optional[Tuple[Outbox, frozenset]]:
    """The outbox and entry ids an output made from ``sources`` is staged with.

    ``None`` when a source is not a batch of Redis entries read by
    ``transport`` (the output is then written at once, at least once).
    """
    if not sources:
        return None
    # An agent yields many outputs per input batch: the answer for the last
    # sources is kept (with the batches, so their ids are not reused meanwhile).
    global _last
    if _last is not None and _last[0] is transport and len(_last[1]) == len(sources) and all(
            a is b for a, b in zip(_last[1], sources)):
        return _last[2]
    found = _staging_for(transport, sources)
    _last = (transport, list(sources), found)
    return found


#: (transport, sources, answer) of the last staging_for call.
_last: Optional[Tuple[Any, List[Any], Optional[Tuple[Outbox, frozenset]]]] = None


def _staging_for(transport: "RedisTransport", sources: Sequence[Any]
                 ) -> Optional[Tuple[Outbox, frozenset]]:
    stream: Optional[str] = None
    ids: List[bytes] = []
    for batch in sources:
        positions = batch.positions
        if not positions:
            return None
        for position in positions:
            if not (isinstance(position, tuple) and len(position) == 2
                    and isinstance(position[1], str)):
                return None
            name = position[0]
            if stream is None:
                stream = name
            elif name != stream:
                raise ConfigurationError(
                    f"exactly-once: an output made from entries of the streams {stream!r} and "
                    f"{name!r} cannot be committed with either; yield it from one stream's "
                    f"agent, or use processing_guarantee='at_least_once'")
            ids.append(position[1].encode())
    reader = transport._readers.get(stream) if stream is not None else None
    if reader is None or reader.outbox is None:
        return None
    return reader.outbox, frozenset(ids)


class staged:
    """``with staged(target): await channel.send(...)`` stages the sends in this task."""

    def __init__(self, target: Tuple[Outbox, frozenset]) -> None:
        self.target = target
        self._token: Optional[contextvars.Token] = None

    def __enter__(self) -> None:
        self._token = _staging.set(self.target)

    def __exit__(self, *exc: Any) -> None:
        assert self._token is not None
        _staging.reset(self._token)

