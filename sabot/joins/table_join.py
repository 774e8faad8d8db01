"""``stream.join(table, on=, how=)``: enrich each batch with a table's values.

Per batch, vectorized: the keys of the batch are made unique
(``pyarrow.compute.dictionary_encode`` for a key column, a dict for keys
read from Python values), looked up with one ``table.get_many``, the values
converted to Arrow once per unique key and spread over the rows with
``take``. The output is a ``pyarrow.RecordBatch``: the stream's columns (dict
values become columns), then the table's value fields (a column per field of
dict values, one column named after the table for other values; see
``sabot.joins.values``).

Semantics (Kafka Streams' KStream-KTable join, Flink's lookup join):

* ``how="left"``: every row comes out; where the table has no value for the
  key (or the key is null) the added columns are null.
* ``how="inner"``: only rows whose key has a value come out; a batch left
  with no row yields nothing.
* The lookup happens when the batch is read: the table as it is then, not
  as of the row's event time.
* A table value of ``None`` counts as no value (a deleted key, as a Kafka
  Streams tombstone).
* A ``Table`` is partitioned like its source topic: join it from a stream
  keyed and partitioned like the table (``group_by`` the join key first), or
  the key may live on another worker. A ``GlobalTable`` holds every
  partition on every worker: any stream can join it on any column.

Bad input: a key column that is missing or of a type that cannot be a key
raises ``SchemaError`` naming the column (the agent's ``on_error`` decides:
by default the batch goes to the dead-letter channel with that reason).
Rows whose key cannot be read (a dict without the field, a callable that
raises, an unhashable key) or looked up (the table refuses the key), or whose
table value does not convert, go one by one to the dead-letter channel with
the reason; the rest of the batch is joined.

Acknowledgement: the joined stream reads the root subscription's batches;
a source batch stays held while the agent handles its joined batch, exactly
as with ``stream.batches()``.
"""
from __future__ import annotations

import asyncio
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.compute as pc

from ..exceptions import ConfigurationError, SchemaError
from ..models import FieldDescriptor
from ..types import BatchT, ChannelT, CursorT, LookupT
from .frames import KeySpec, Reject, read_frame
from .rejects import dead_letter_rows
from .values import ValueColumns

__all__ = ["StreamTableJoin", "JoinedBatch", "JoinedBatches", "HOWS"]

#: The kinds of stream-table join.
HOWS = ("left", "inner")


class JoinedBatch(NamedTuple):
    """What one source batch gives: the joined rows (``None`` if none) and the rejected rows."""

    batch: Optional[pa.RecordBatch]
    rejects: List[Reject]


def check_on(on: Any) -> KeySpec:
    """``on=`` as given, or a ``ConfigurationError`` saying what it may be."""
    if on is None or isinstance(on, str) or callable(on):
        if isinstance(on, str) and not on:
            raise ConfigurationError("join on= must not be an empty column name")
        return on
    raise ConfigurationError(
        f"join on= must be a column or field name, a callable or None (the message key), "
        f"got {on!r}")


class StreamTableJoin:
    """A stream-table join's settings and its per-batch work (see the module docstring)."""

    def __init__(self, table: LookupT, *, on: KeySpec = None, how: str = "left",
                 prefix: str = "", value_schema: Union[None, pa.Schema, pa.DataType] = None,
                 schema: Optional[pa.Schema] = None) -> None:
        if isinstance(table, FieldDescriptor):
            raise ConfigurationError(
                "stream.join(Model.field, ...) is Faust's join of streams by fields, which "
                "Faust never implemented (its join strategies raise NotImplementedError). "
                "Sabot joins a stream with a table: stream.join(table, on=...), or two "
                "streams in time: stream.join_within(other, within=..., on=...)")
        if not isinstance(table, LookupT):
            raise ConfigurationError(
                f"stream.join() joins a table (Table or GlobalTable: anything with "
                f"get_many(keys)), got {type(table).__name__}")
        if how not in HOWS:
            raise ConfigurationError(f"join how= must be one of {', '.join(HOWS)}, got {how!r}")
        if not isinstance(prefix, str):
            raise ConfigurationError(f"join prefix= must be a string, got {prefix!r}")
        if value_schema is not None and not isinstance(value_schema, (pa.Schema, pa.DataType)):
            raise ConfigurationError(
                f"join value_schema= must be a pyarrow Schema (dict values) or DataType, "
                f"got {value_schema!r}")
        self.table = table
        self.on = check_on(on)
        self.how = how
        self.prefix = prefix
        #: Arrow schema for dict values of the stream (the channel's, if it has one).
        self.schema = schema
        self.values = ValueColumns(table.name, prefix, value_schema)
        #: Rows that went to the dead-letter channel.
        self.rejected = 0

    @property
    def name(self) -> str:
        """How dead letters name the join: ``join:<table>``."""
        return f"join:{self.table.name}"

    def __repr__(self) -> str:
        return f"<StreamTableJoin {self.how} {self.table.name!r} on={self.on!r}>"

    # -- one batch -------------------------------------------------------------
    def join_batch(self, payload: Any, *, keys: Optional[Sequence[Any]] = None) -> JoinedBatch:
        """Join one batch's payload (RecordBatch or list of dicts); ``keys`` are its message keys."""
        frame = read_frame(payload, on=self.on, keys=keys, schema=self.schema)
        rejects = list(frame.rejects)
        unique, codes, unreadable = _encode(frame.keys)
        values, refused = self._lookup(unique)
        array, unfit = self.values.convert(values)
        bad: Dict[int, str] = dict(refused)
        bad.update(unfit)
        drop: Optional[pa.Array] = None
        if unreadable or bad:
            dropped = [False] * frame.rows.num_rows
            for j, reason in unreadable:
                dropped[j] = True
                rejects.append((frame.origin[j], reason))
            if bad:
                for j, code in enumerate(codes.to_pylist()):
                    if code is not None and code in bad:
                        dropped[j] = True
                        rejects.append((frame.origin[j], bad[code]))
            drop = pa.array(dropped, pa.bool_())
        taken = array.take(codes)
        keep: Optional[pa.Array] = None
        if self.how == "inner":
            keep = taken.is_valid()
        if drop is not None:
            alive = pc.invert(drop)
            keep = alive if keep is None else pc.and_(keep, alive)
        rows = frame.rows
        if keep is not None:
            rows = rows.filter(keep)
            taken = taken.filter(keep)
        rejects.sort()
        self.rejected += len(rejects)
        if rows.num_rows == 0:
            return JoinedBatch(None, rejects)
        return JoinedBatch(self._assemble(rows, taken), rejects)

    def _lookup(self, unique: List[Any]) -> Tuple[List[Any], Dict[int, str]]:
        table = self.table
        try:
            values = table.get_many(unique)
        except (TypeError, ValueError, KeyError):
            # Some key the table cannot hold: find which, keep the others.
            values = []
            refused: Dict[int, str] = {}
            for i, key in enumerate(unique):
                try:
                    values.extend(table.get_many([key]))
                except (TypeError, ValueError, KeyError) as exc:
                    values.append(None)
                    refused[i] = (f"table {table.name!r} cannot look up key {key!r}: "
                                  f"{type(exc).__name__}: {exc}")
            return values, refused
        if len(values) != len(unique):
            raise RuntimeError(f"table {table.name!r}: get_many() returned {len(values)} "
                               f"values for {len(unique)} keys")
        return list(values), {}

    def _assemble(self, rows: pa.RecordBatch, taken: pa.Array) -> pa.RecordBatch:
        arrays = list(rows.columns)
        names = list(rows.schema.names)
        for name, column in self.values.columns(taken):
            if name in names:
                raise SchemaError(
                    f"join with table {self.table.name!r}: column {name!r} is both in the "
                    f"stream and in the table's values; give prefix= to rename the table's",
                    field=name)
            arrays.append(column)
            names.append(name)
        return pa.RecordBatch.from_arrays(arrays, names=names)

    # -- a stream of batches ---------------------------------------------------
    def iterate(self, batches: CursorT, channel: ChannelT) -> "JoinedBatches":
        """The joined batches of ``batches`` (a root stream's ``raw_batches()``)."""
        return JoinedBatches(self, batches, channel)


def _encode(keys: Union[pa.Array, List[Any]]) -> Tuple[List[Any], pa.Array, List[Reject]]:
    """``(unique keys, code per row, unreadable rows)``; a null key has a null code.

    Unreadable rows (an unhashable key) are listed by their index in ``keys``.
    """
    if isinstance(keys, pa.Array):
        encoded = pc.dictionary_encode(keys, null_encoding="mask")
        return encoded.dictionary.to_pylist(), encoded.indices, []
    index_of: Dict[Any, int] = {}
    codes: List[Optional[int]] = []
    unreadable: List[Reject] = []
    for j, key in enumerate(keys):
        if key is None:
            codes.append(None)
            continue
        try:
            code = index_of.setdefault(key, len(index_of))
        except TypeError:
            unreadable.append((j, f"join key {key!r} is unhashable "
                                  f"({type(key).__name__}): it cannot be looked up"))
            codes.append(None)
            continue
        codes.append(code)
    return list(index_of), pa.array(codes, pa.int32()), unreadable


class JoinedBatches:
    """Async iterator of joined RecordBatches, one per source batch that gives rows.

    Cancellation-safe: a batch read is joined at once; its dead letters are
    written by a task that a cancelled ``__anext__`` leaves running and the
    next call waits for, so no joined batch is lost to a timeout.
    """

    __slots__ = ("join", "_batches", "_channel", "_pending")

    def __init__(self, join: StreamTableJoin, batches: CursorT, channel: ChannelT) -> None:
        self.join = join
        self._batches = batches
        self._channel = channel
        self._pending: Optional[Tuple[Optional["asyncio.Future[None]"],
                                      Optional[pa.RecordBatch]]] = None

    def __aiter__(self) -> "JoinedBatches":
        return self

    async def __anext__(self) -> pa.RecordBatch:
        while True:
            if self._pending is None:
                batch: BatchT = await self._batches.__anext__()
                result = self.join.join_batch(batch.payload, keys=batch.keys)
                writes: Optional["asyncio.Future[None]"] = None
                if result.rejects:
                    writes = asyncio.ensure_future(dead_letter_rows(
                        self._channel, batch, result.rejects, self.join.name))
                self._pending = (writes, result.batch)
            writes, out = self._pending
            if writes is not None:
                await asyncio.shield(writes)
            self._pending = None
            if out is not None:
                return out
