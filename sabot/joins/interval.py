"""The interval join of two streams: rows whose keys are equal and times close.

``left.join_within(right, within=, on=)`` pairs a left row and a right row
when their keys are equal and ``|t_left - t_right| <= within`` (Flink's
interval join with bounds ``-within, +within``; Kafka Streams' KStream-KStream
join with ``JoinWindows.of(within)``). This module is the state machine,
without I/O: batches go in one side at a time (``add``), joined RecordBatches
come out. ``sabot.joins.interval_stream`` reads the two streams and looks
after acknowledgement.

State. Each side keeps the rows it has read, columnar, one segment per
batch, until the other side's watermark has passed them: a left row at time
``t`` can meet no right row that is still to come once the right watermark
is beyond ``t + within``, and the segment goes when all of its rows have.
The state is in memory: it is not written to a changelog, and an agent (or
worker) that restarts starts with empty buffers. Its source batches are
acknowledged only once their rows have left the buffer, so after a crash a
transport delivers them again (the matches they had already made included);
on a memory channel they are lost with the process, as everything is.

Watermark and lateness. A side's watermark is the largest event time it has
shown minus ``grace``. A row older than its own side's watermark when it
arrives is late: the rows it should have met may already be gone, so it is
not joined but sent, with the reason, to the dead-letter channel of its side
and counted (``late``). Every pair of rows that are not late is found, in
whatever order the two sides deliver; each pair is emitted once, by the row
that arrives second. A side that ends (its channel closed) has a watermark
of +infinity: the other side keeps nothing more.

``how="inner"`` (the default) emits pairs only: a row that meets nothing
produces nothing. ``how="left"`` also emits each left row that met nothing,
with the right columns null, once it leaves the buffer (when the right
watermark passes ``t + within``, or the right side ends).

Output: the left columns, then the right columns (``prefix`` + name). With
``on=`` one column name, the right side's key column is left out (it equals
the left one). A right column whose name is already taken raises
``SchemaError``: give ``prefix=``. Rows are ordered by the batch that made
them, then by left row, then by right row.
"""
from __future__ import annotations

import bisect
import datetime
import math
from typing import Any, Generic, List, NamedTuple, Optional, Sequence, Tuple, TypeVar, Union

import pyarrow as pa
import pyarrow.compute as pc

from ..exceptions import ConfigurationError, SchemaError
from .frames import ARROW_ERRORS, Frame, KeySpec, Reject, TimeSpec, read_frame

__all__ = ["IntervalJoin", "IntervalStep", "LEFT", "RIGHT", "INTERVAL_HOWS"]

LEFT = 0
RIGHT = 1
_SIDE_NAMES = ("left", "right")
#: The kinds of interval join.
INTERVAL_HOWS = ("inner", "left")

#: What the caller holds for a batch (its ``Batch``; anything in tests).
Token = TypeVar("Token")
#: ``on=`` of an interval join: one spec for both sides, or a pair.
IntervalOn = Union[KeySpec, Tuple[KeySpec, KeySpec]]


def _seconds(value: Any, what: str, *, allow_zero: bool) -> float:
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigurationError(f"join_within {what}= must be seconds (a number or a "
                                 f"timedelta), got {value!r}")
    value = float(value)
    if value < 0 or (value == 0 and not allow_zero) or math.isinf(value):
        raise ConfigurationError(f"join_within {what}= must be a finite number of seconds "
                                 f"{'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


class IntervalStep(NamedTuple, Generic[Token]):
    """What one ``add`` (or ``end``) gives back to the caller.

    ``buffered``: the batch's token now stays in the buffer (hold it until it
    appears in ``expired``). ``sources``: the tokens whose rows are in
    ``output``. ``expired``: tokens whose rows have all left the buffer.
    ``rejects``: rows of the added batch that are not joined, with the
    reason (late rows among them; ``late`` counts those).
    """

    output: Optional[pa.RecordBatch]
    sources: List[Token]
    buffered: bool
    expired: List[Token]
    rejects: List[Reject]
    late: int


class _Segment(Generic[Token]):
    """The buffered rows of one batch of one side."""

    __slots__ = ("token", "rows", "keys", "times", "max_time", "matched")

    def __init__(self, token: Token, rows: pa.RecordBatch, keys: pa.Array, times: pa.Array,
                 max_time: float, track_matches: bool) -> None:
        self.token = token
        self.rows = rows
        self.keys = keys
        self.times = times
        self.max_time = max_time
        #: Left join: which rows have met a right row.
        self.matched: Optional[List[bool]] = [False] * rows.num_rows if track_matches else None


class _Side(Generic[Token]):
    """One side's buffer, watermark and schema."""

    __slots__ = ("name", "on", "segments", "max_time", "ended", "schema", "key_name")

    def __init__(self, name: str, on: KeySpec) -> None:
        self.name = name
        self.on = on
        self.segments: List[_Segment[Token]] = []
        self.max_time = -math.inf
        self.ended = False
        self.schema: Optional[pa.Schema] = None
        self.key_name = on if isinstance(on, str) else None

    def watermark(self, grace: float) -> float:
        return math.inf if self.ended else self.max_time - grace


class IntervalJoin(Generic[Token]):
    """Settings and state of one interval join (see the module docstring)."""

    def __init__(self, *, within: Any, on: IntervalOn = None, time: Union[TimeSpec, Tuple[
                 TimeSpec, TimeSpec]] = None, how: str = "inner", grace: Any = 0.0,
                 prefix: str = "", left_schema: Optional[pa.Schema] = None,
                 right_schema: Optional[pa.Schema] = None) -> None:
        self.within = _seconds(within, "within", allow_zero=True)
        self.grace = _seconds(grace, "grace", allow_zero=True)
        if how not in INTERVAL_HOWS:
            raise ConfigurationError(
                f"join_within how= must be one of {', '.join(INTERVAL_HOWS)}, got {how!r}")
        if not isinstance(prefix, str):
            raise ConfigurationError(f"join_within prefix= must be a string, got {prefix!r}")
        ons = on if isinstance(on, tuple) else (on, on)
        times = time if isinstance(time, tuple) else (time, time)
        if len(ons) != 2 or len(times) != 2:
            raise ConfigurationError("join_within on= and time= take one spec or a (left, right) pair")
        for spec in ons:
            if not (spec is None or (isinstance(spec, str) and spec) or callable(spec)):
                raise ConfigurationError(
                    f"join_within on= must be a column or field name, a callable or None "
                    f"(the message key), got {spec!r}")
        for spec in times:
            if not (spec is None or (isinstance(spec, str) and spec)):
                raise ConfigurationError(
                    f"join_within time= must be a column or field name or None (the message "
                    f"timestamp), got {spec!r}")
        self.how = how
        self.prefix = prefix
        self.times: Tuple[TimeSpec, TimeSpec] = (times[0], times[1])
        self.sides: Tuple[_Side[Token], _Side[Token]] = (_Side("left", ons[0]),
                                                         _Side("right", ons[1]))
        self.sides[LEFT].schema = left_schema
        self.sides[RIGHT].schema = right_schema
        #: Skip the right key column in the output (it equals the left one).
        self._drop_right_key = isinstance(ons[0], str) and ons[0] == ons[1]
        self._key_type: Optional[pa.DataType] = None
        self._out_schema: Optional[pa.Schema] = None
        #: Rows that came later than their side's watermark (not joined).
        self.late = 0
        #: Pairs emitted, and left rows emitted without a match (left join).
        self.pairs = 0
        self.unmatched = 0

    def __repr__(self) -> str:
        return (f"<IntervalJoin {self.how} within={self.within}s grace={self.grace}s "
                f"buffered={self.buffered_rows}>")

    @property
    def name(self) -> str:
        """How dead letters name the join."""
        return f"join_within:{self.within}s"

    @property
    def buffered_rows(self) -> int:
        """Rows held in the buffers of both sides."""
        return sum(s.rows.num_rows for side in self.sides for s in side.segments)

    def watermark(self, side: int) -> float:
        """The watermark of ``side`` (``LEFT``/``RIGHT``): its largest event time minus grace."""
        return self.sides[side].watermark(self.grace)

    # -- input -----------------------------------------------------------------
    def read(self, side: int, payload: Any, *, keys: Optional[Sequence[Any]] = None,
             timestamps: Optional[Sequence[float]] = None,
             timestamp: float = 0.0) -> Frame:
        """The rows of a batch of ``side`` with keys and times (``SchemaError`` if it cannot be read)."""
        this = self.sides[side]
        return read_frame(payload, on=this.on, time=self.times[side], with_time=True,
                          keys=keys, timestamps=timestamps, timestamp=timestamp,
                          schema=this.schema)

    def add(self, side: int, token: Token, frame: Frame) -> IntervalStep[Token]:
        """Join a batch of ``side`` (read by ``read``) against the other side's buffer."""
        this, other = self.sides[side], self.sides[1 - side]
        if this.ended:
            raise RuntimeError(f"the {this.name} side of the join has ended")
        rejects = list(frame.rejects)
        rows, index, times = frame.rows, frame.origin, frame.times
        assert times is not None  # read() asks for them
        try:
            keys, bad = self._key_array(frame.keys, this)
        except SchemaError as exc:
            # Keys of a type the other side's do not convert to: the batch's
            # rows go to their dead letters, the join goes on.
            reason = f"{type(exc).__name__}: {exc}"
            rejects.extend((i, reason) for i in frame.origin)
            rejects.sort()
            return IntervalStep(None, [], False, [], rejects, 0)
        rows, index, keys, times, unfit = self._fit_schema(this, rows, index, keys, times)
        if unfit:  # the whole batch: its schema does not fit the side's
            rejects.extend(unfit)
            rejects.sort()
            return IntervalStep(None, [], False, [], rejects, 0)
        if bad:
            dropped = {j for j, _ in bad}
            rejects.extend((index[j], reason) for j, reason in bad)
            keep = pa.array([j not in dropped for j in range(rows.num_rows)], pa.bool_())
            rows, keys, times = rows.filter(keep), keys.filter(keep), times.filter(keep)
            index = [x for j, x in enumerate(index) if j not in dropped]
        late = 0
        mark = this.watermark(self.grace)
        if rows.num_rows and this.max_time > -math.inf:
            is_late = pc.less(times, mark)
            late = pc.sum(is_late.cast(pa.int64())).as_py() or 0
            if late:
                for j, (flag, t) in enumerate(zip(is_late.to_pylist(), times.to_pylist())):
                    if flag:
                        rejects.append((index[j], (
                            f"late: event time {t} is behind the {this.name} watermark {mark} "
                            f"(grace {self.grace}s); the rows it would meet may be gone")))
                keep = pc.invert(is_late)
                rows, keys, times = rows.filter(keep), keys.filter(keep), times.filter(keep)
                self.late += late
        outputs: List[pa.RecordBatch] = []
        sources: List[Token] = []
        incoming: Optional[_Segment[Token]] = None
        if rows.num_rows:
            max_time = pc.max(times).as_py()
            incoming = _Segment(token, rows, keys, times, max_time,
                                self.how == "left" and side == LEFT)
            matched = self._match(side, incoming, other, sources)
            if matched is not None:
                outputs.append(matched)
                sources.append(token)
            this.max_time = max(this.max_time, max_time)
        buffered = False
        if incoming is not None:
            if other.ended:
                # Nothing more will come to meet these rows.
                if incoming.matched is not None:
                    self._unmatched(incoming, outputs, sources)
            else:
                this.segments.append(incoming)
                buffered = True
        expired = self._expire(1 - side, outputs, sources)
        rejects.sort()
        return IntervalStep(self._concat(outputs), _unique(sources), buffered, expired,
                            rejects, late)

    def end(self, side: int) -> IntervalStep[Token]:
        """``side`` has ended: the other side's rows have nothing more to meet."""
        self.sides[side].ended = True
        outputs: List[pa.RecordBatch] = []
        sources: List[Token] = []
        expired = self._expire(1 - side, outputs, sources)
        return IntervalStep(self._concat(outputs), _unique(sources), False, expired, [], 0)

    # -- keys and schemas -------------------------------------------------------
    def _key_array(self, keys: Union[pa.Array, List[Any]],
                   this: _Side[Token]) -> Tuple[pa.Array, List[Reject]]:
        """Keys as an Arrow array of the join's key type; rows whose key does not fit."""
        what = f"join key column {this.key_name!r}" if this.key_name else "join key"
        target = self._key_type
        if isinstance(keys, pa.Array):
            if pa.types.is_dictionary(keys.type):
                keys = keys.cast(keys.type.value_type)
            if target is None or keys.type == target:
                self._key_type = keys.type
                return keys, []
            try:
                return keys.cast(target), []
            except ARROW_ERRORS as exc:
                raise SchemaError(f"{what} of the {this.name} side has type {keys.type}, "
                                  f"which does not convert to the other side's {target}: {exc}",
                                  field=this.key_name, expected=target, got=keys.type) from None
        try:
            # Inferred, then cast: pa.array(keys, type=t) would truncate 2.5 to 2.
            array = pa.array(keys)
            if target is not None and array.type != target:
                array = array.cast(target)
        except ARROW_ERRORS:
            array = None
        if array is not None:
            if target is None and not pa.types.is_null(array.type):
                self._key_type = array.type
            return array, []
        if target is None:
            for key in keys:
                if key is None:
                    continue
                try:
                    target = pa.array([key]).type
                    break
                except ARROW_ERRORS:
                    continue
        bad: List[Reject] = []
        kept: List[Any] = []
        for j, key in enumerate(keys):
            try:
                pa.array([key]).cast(target)
            except ARROW_ERRORS as exc:
                bad.append((j, f"join key {key!r} does not convert to {target}: {exc}"))
                kept.append(None)
            else:
                kept.append(key)
        if target is not None:
            self._key_type = target
        return pa.array(kept, type=target), bad

    def _fit_schema(self, this: _Side[Token], rows: pa.RecordBatch, index: List[int],
                    keys: pa.Array, times: pa.Array) -> Tuple[
                        pa.RecordBatch, List[int], pa.Array, pa.Array, List[Reject]]:
        # Every batch of a side has the side's schema (the first batch's, or
        # the channel's), so that buffered segments concatenate.
        if this.schema is None:
            this.schema = rows.schema
            return rows, index, keys, times, []
        if rows.schema == this.schema:
            return rows, index, keys, times, []
        try:
            table = pa.Table.from_batches([rows]).select(this.schema.names).cast(this.schema)
        except (KeyError, *ARROW_ERRORS) as exc:
            reason = (f"batch schema does not fit the {this.name} side's schema "
                      f"({this.schema.to_string(show_schema_metadata=False)}): {exc}")
            empty = pa.RecordBatch.from_pylist([], schema=this.schema)
            return (empty, [], keys.slice(0, 0), times.slice(0, 0),
                    [(i, reason) for i in index])
        fitted = table.combine_chunks().to_batches()
        rows = fitted[0] if fitted else pa.RecordBatch.from_pylist([], schema=this.schema)
        return rows, index, keys, times, []

    # -- matching ---------------------------------------------------------------
    def _match(self, side: int, incoming: _Segment[Token], other: _Side[Token],
               sources: List[Token]) -> Optional[pa.RecordBatch]:
        segments = other.segments
        if not segments:
            return None
        key_type = self._key_type
        if key_type is None or pa.types.is_null(key_type):
            return None  # no key seen yet but nulls: nothing can match
        n = incoming.rows.num_rows
        new = pa.table({"k": _as_type(incoming.keys, key_type), "t": incoming.times,
                        "i": _iota(n)})
        old_keys = pa.chunked_array([_as_type(s.keys, key_type) for s in segments], type=key_type)
        old_times = pa.chunked_array([s.times for s in segments], type=pa.float64())
        old = pa.table({"k": old_keys, "u": old_times, "j": _iota(len(old_keys))})
        joined = new.join(old, keys="k", join_type="inner", use_threads=False)
        if joined.num_rows == 0:
            return None
        close = pc.less_equal(pc.abs(pc.subtract(joined["t"], joined["u"])), self.within)
        pairs = joined.filter(close)
        if pairs.num_rows == 0:
            return None
        # Left row order first, then right row order.
        order = [("i", "ascending"), ("j", "ascending")] if side == LEFT else \
            [("j", "ascending"), ("i", "ascending")]
        pairs = pairs.sort_by(order)
        new_rows = pairs["i"].combine_chunks()
        old_rows = pairs["j"].combine_chunks()
        old_taken = pa.Table.from_batches([s.rows for s in segments]).take(old_rows)
        new_taken = pa.Table.from_batches([incoming.rows]).take(new_rows)
        # Which buffered segments (batches) the pairs used, and for a left
        # join which buffered left rows have now met a right row.
        seg_of_row = pa.chunked_array(
            [pa.repeat(pa.scalar(s, pa.int32()), segment.rows.num_rows)
             for s, segment in enumerate(segments)], type=pa.int32())
        used = pc.unique(seg_of_row.take(old_rows)).to_pylist()
        sources.extend(segments[s].token for s in sorted(used))
        if side == RIGHT and segments[0].matched is not None:
            starts = [0]
            for segment in segments:
                starts.append(starts[-1] + segment.rows.num_rows)
            for j in pc.unique(old_rows).to_pylist():
                s = bisect.bisect_right(starts, j) - 1
                matched = segments[s].matched
                assert matched is not None
                matched[j - starts[s]] = True
        if side == LEFT:
            if incoming.matched is not None:
                for i in pc.unique(new_rows).to_pylist():
                    incoming.matched[i] = True
            left, right = new_taken, old_taken
        else:
            left, right = old_taken, new_taken
        self.pairs += pairs.num_rows
        return self._assemble(left, right)

    def _assemble(self, left: pa.Table, right: Optional[pa.Table]) -> pa.RecordBatch:
        arrays: List[Any] = [c.combine_chunks() for c in left.columns]
        names = list(left.column_names)
        right_schema = self.sides[RIGHT].schema
        if right_schema is not None:
            key_name = self.sides[RIGHT].key_name if self._drop_right_key else None
            for field in right_schema:
                if field.name == key_name:
                    continue
                name = self.prefix + field.name
                if name in names:
                    raise SchemaError(
                        f"join_within: column {name!r} is on both sides; give prefix= to "
                        f"rename the right side's columns", field=name)
                if right is None:
                    arrays.append(pa.nulls(left.num_rows, field.type))
                else:
                    arrays.append(right.column(field.name).combine_chunks())
                names.append(name)
        return pa.RecordBatch.from_arrays(arrays, names=names)

    # -- leaving the buffer -----------------------------------------------------
    def _expire(self, side: int, outputs: List[pa.RecordBatch],
                sources: List[Token]) -> List[Token]:
        """Drop ``side``'s segments that the other side's watermark has passed."""
        this, other = self.sides[side], self.sides[1 - side]
        mark = other.watermark(self.grace)
        if not this.segments:
            return []
        keep: List[_Segment[Token]] = []
        expired: List[Token] = []
        for segment in this.segments:
            if segment.max_time + self.within < mark:
                expired.append(segment.token)
                if segment.matched is not None:
                    self._unmatched(segment, outputs, sources)
            else:
                keep.append(segment)
        this.segments = keep
        return expired

    def _unmatched(self, segment: _Segment[Token], outputs: List[pa.RecordBatch],
                   sources: List[Token]) -> None:
        # Left join: the left rows of a segment that met nothing, right columns null.
        assert segment.matched is not None
        lonely = [j for j, hit in enumerate(segment.matched) if not hit]
        if not lonely:
            return
        rows = pa.Table.from_batches([segment.rows]).take(pa.array(lonely, pa.int64()))
        outputs.append(self._assemble(rows, None))
        sources.append(segment.token)
        self.unmatched += len(lonely)

    def _concat(self, outputs: List[pa.RecordBatch]) -> Optional[pa.RecordBatch]:
        if not outputs:
            return None
        if len(outputs) == 1:
            return outputs[0]
        table = pa.Table.from_batches(outputs)
        return table.combine_chunks().to_batches()[0]


_IOTA = pa.array([], pa.int64())


def _iota(n: int) -> pa.Array:
    """``0 .. n-1`` as int64: a slice of one array grown by doubling (no Python loop per call)."""
    global _IOTA
    if len(_IOTA) < n:
        _IOTA = pa.array(range(max(n, 2 * len(_IOTA), 1024)), pa.int64())
    return _IOTA.slice(0, n)


def _as_type(array: pa.Array, t: pa.DataType) -> pa.Array:
    # Keys of a batch whose keys were all null (type null) next to typed ones.
    return array if array.type == t else array.cast(t)


def _unique(tokens: List[Token]) -> List[Token]:
    seen: List[Token] = []
    for token in tokens:
        if not any(token is t for t in seen):
            seen.append(token)
    return seen
