"""Fuzz the Arrow decode path with mutated IPC messages (issue 10, point 2).

A message from outside the process must either decode to a RecordBatch whose
every value can be read, or fail with ``DecodeError`` (a dead letter). It must
never crash the worker: an Arrow IPC stream whose string offsets are out of
range in the middle passes the cheap ``validate()`` and reading its rows then
segfaults.

Valid messages of many shapes (int64/float64 with nulls, string, large_string,
binary, list<int>, struct, dictionary<string>, several batches in one stream,
dictionary deltas, an empty batch, a compressed body) are mutated many times
over with deterministic seeds: flipped bytes, truncations, and mutations aimed
at what Arrow trusts: string and list offsets in the body, buffer
offsets/lengths, array lengths and null counts in the message metadata, and
dictionary ids. Each mutation goes through the real decode path
(``ArrowCodec.decode`` and ``decode_many(get_codec("arrow"), payloads,
schema)``); whatever decodes is read in full (``to_pylist``,
``pyarrow.compute`` on string columns, casts, a re-encode).

The cases run in a child process, so a segfault fails the test with the case
that caused it (seed, index, mutation) instead of killing pytest; the parent
resumes after a crash to count them all (up to ``MAX_CRASHES``). Reproduce one
case with::

    python tests/test_codecs_fuzz.py --case INDEX [--seed SEED]

Environment: ``SABOT_FUZZ_CASES`` (default 4000), ``SABOT_FUZZ_SEED``.
"""
from __future__ import annotations

import argparse
import faulthandler
import os
import random
import resource
import struct
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest

SEED = int(os.environ.get("SABOT_FUZZ_SEED", "20240610"))
CASES = int(os.environ.get("SABOT_FUZZ_CASES", "4000"))
WORKERS = 2          # child processes running the cases side by side
MAX_CRASHES = 40     # stop resuming after this many crashes (the test fails anyway)
CHILD_TIMEOUT = 120  # seconds for one child run
CASE_TIMEOUT = 10    # seconds for one case (the child exits with a traceback)
CHILD_MEMORY = 4 << 30  # address space of a child
HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))

KINDS = ("flip", "truncate", "body", "offsets", "buffer_meta", "node_meta",
         "dict_id", "messages")


# -- the corpus: valid messages of many shapes ----------------------------------

def build_corpus() -> List[Tuple[str, bytes, Any]]:
    """``(name, payload, schema)`` of valid Arrow IPC messages."""
    import pyarrow as pa

    from sabot.codecs import get_codec

    encode = get_codec("arrow").encode
    corpus: List[Tuple[str, bytes, Any]] = []

    def stream(name, batches, schema=None, options=None):
        schema = schema or batches[0].schema
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, schema, options=options) as writer:
            for batch in batches:
                writer.write_batch(batch)
        corpus.append((name, sink.getvalue().to_pybytes(), schema))

    def single(name, batch):
        corpus.append((name, encode(batch), batch.schema))

    words = ["alpha", "", "gamma", None, "déjà vu", "x" * 40, "z"]
    single("int64_float64_nulls", pa.record_batch({
        "i": pa.array([1, None, -3, 2 ** 62, None, 0, 7], pa.int64()),
        "f": pa.array([0.5, float("nan"), None, -1e300, 3.0, None, 2.25], pa.float64()),
    }))
    single("string", pa.record_batch({"s": pa.array(words, pa.string())}))
    single("large_string", pa.record_batch({"s": pa.array(words, pa.large_string())}))
    single("binary", pa.record_batch({
        "b": pa.array([b"\x00\x01", None, b"", b"\xff" * 9, b"abc", b"q", None], pa.binary()),
        "lb": pa.array([b"1", b"22", None, b"", b"55555", b"6", b"77"], pa.large_binary()),
    }))
    single("list_int", pa.record_batch({
        "l": pa.array([[1, 2], None, [], [3, None, 5], [6], [7, 8, 9, 10], None],
                      pa.list_(pa.int64())),
        "ll": pa.array([[[1], [2, 3]], [], None, [[4, 5, 6]], [[]], [[7]], [[8, 9]]],
                       pa.list_(pa.list_(pa.int32()))),
    }))
    single("struct", pa.record_batch({
        "st": pa.array([{"a": 1, "b": "one"}, None, {"a": None, "b": "three"},
                        {"a": 4, "b": None}, {"a": 5, "b": "five"}],
                       pa.struct([("a", pa.int32()), ("b", pa.string())])),
    }))
    single("dictionary", pa.record_batch({
        "d": pa.array(["red", "green", None, "red", "blue", "green"]).dictionary_encode(),
        "e": pa.array(["x", "yy", "x", None, "zzz", "yy"]).dictionary_encode(),
    }))
    mixed = pa.record_batch({
        "id": pa.array(range(12), pa.int64()),
        "px": pa.array([i / 3 if i % 4 else None for i in range(12)], pa.float64()),
        "sym": pa.array([f"s{i % 5}" if i % 6 else None for i in range(12)], pa.string()),
        "tags": pa.array([[f"t{j}" for j in range(i % 3)] for i in range(12)],
                         pa.list_(pa.string())),
        "kind": pa.array([["buy", "sell"][i % 2] for i in range(12)]).dictionary_encode(),
        "ok": pa.array([i % 3 == 0 for i in range(12)], pa.bool_()),
    })
    single("mixed", mixed)
    single("empty_batch", mixed.slice(0, 0))
    stream("several_batches", [mixed.slice(0, 5), mixed.slice(5, 4), mixed.slice(9, 3)])
    stream("schema_only", [], schema=mixed.schema)
    # Dictionary deltas: later batches extend the dictionary of the first.
    first = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], pa.int32()),
                                           pa.array(["aa", "bb"]))
    second = pa.DictionaryArray.from_arrays(pa.array([3, 2, 1, None], pa.int32()),
                                            pa.array(["aa", "bb", "cc", "dddd"]))
    dschema = pa.schema([("d", first.type)])
    stream("dictionary_deltas",
           [pa.record_batch([first], schema=dschema), pa.record_batch([second], schema=dschema)],
           options=pa.ipc.IpcWriteOptions(emit_dictionary_deltas=True))
    try:
        stream("zstd_body", [mixed], options=pa.ipc.IpcWriteOptions(compression="zstd"))
    except (pa.ArrowNotImplementedError, ValueError):  # a pyarrow built without zstd
        pass
    exotic = _exotic_columns()
    single("exotic_types", pa.record_batch(list(exotic.values()), names=list(exotic)))
    return corpus


def _exotic_columns() -> Dict[str, Any]:
    """Columns of the rarer types (those this pyarrow can build): map, fixed-size
    list, timestamp, decimal, bool, extension types, views, run-end encoded, union."""
    import decimal

    import pyarrow as pa

    makers = {
        "m": lambda: pa.array([[("a", 1), ("b", None)], None, [], [("c", 3)]],
                              pa.map_(pa.string(), pa.int32())),
        "fsl": lambda: pa.array([[1, 2], [3, 4], None, [5, 6]], pa.list_(pa.int16(), 2)),
        "ts": lambda: pa.array([0, None, 10 ** 12, -5], pa.timestamp("us", tz="UTC")),
        "dec": lambda: pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("-3.50"),
                                 decimal.Decimal("0.01")], pa.decimal128(10, 2)),
        "b": lambda: pa.array([True, None, False, True]),
        "js": lambda: pa.ExtensionArray.from_storage(
            pa.json_(), pa.array(['{"a":1}', None, "[]", '"x"'])),
        "uu": lambda: pa.ExtensionArray.from_storage(
            pa.uuid(), pa.array([b"0" * 16, None, b"1" * 16, b"2" * 16], pa.binary(16))),
        "ree": lambda: pa.RunEndEncodedArray.from_arrays(pa.array([2, 4], pa.int32()),
                                                         pa.array(["r", None])),
        "sv": lambda: pa.array(["short", None, "a string longer than twelve bytes", ""],
                               pa.string_view()),
        "lv": lambda: pa.array([[1], None, [2, 3], []], pa.list_view(pa.int64())),
        "un": lambda: pa.UnionArray.from_dense(
            pa.array([0, 1, 0, 1], pa.int8()), pa.array([0, 0, 1, 1], pa.int32()),
            [pa.array([1, 2], pa.int64()), pa.array(["u", "v"])]),
    }
    out = {}
    for name, make in makers.items():
        try:
            column = make()
            sink = pa.BufferOutputStream()  # the IPC writer of this pyarrow must take it
            batch = pa.record_batch([column], names=[name])
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch)
        except (AttributeError, TypeError, pa.ArrowNotImplementedError):
            continue  # an older pyarrow without this type
        out[name] = column
    return out


# -- reading the IPC framing and the flatbuffer metadata ------------------------

def _i32(b, p):
    return struct.unpack_from("<i", b, p)[0]


def _u32(b, p):
    return struct.unpack_from("<I", b, p)[0]


def _field_pos(b, table, index):
    """Absolute position of field ``index`` of the flatbuffer table at ``table``."""
    vtable = table - _i32(b, table)
    vt_size = struct.unpack_from("<H", b, vtable)[0]
    slot = vtable + 4 + 2 * index
    if slot + 2 > vtable + vt_size:
        return None
    off = struct.unpack_from("<H", b, slot)[0]
    return table + off if off else None


def _deref(b, pos):
    return pos + _u32(b, pos)


def _vector(b, table, index):
    """``(count, first element position)`` of a vector field, or ``(0, None)``."""
    pos = _field_pos(b, table, index)
    if pos is None:
        return 0, None
    vec = _deref(b, pos)
    return _u32(b, vec), vec + 4


def _layout(t) -> List[str]:
    """Buffer kinds of an array of type ``t`` in IPC order (children included)."""
    import pyarrow as pa
    import pyarrow.types as pat
    if isinstance(t, pa.BaseExtensionType):
        return _layout(t.storage_type)
    if pat.is_dictionary(t):
        return ["validity", "data"]
    if pat.is_null(t):
        return []
    if pat.is_string(t) or pat.is_binary(t):
        return ["validity", "offsets32", "data"]
    if pat.is_large_string(t) or pat.is_large_binary(t):
        return ["validity", "offsets64", "data"]
    if pat.is_map(t):
        return ["validity", "offsets32", "validity", *_layout(t.key_type),
                *_layout(t.item_type)]
    if pat.is_list(t):
        return ["validity", "offsets32", *_layout(t.value_type)]
    if pat.is_large_list(t):
        return ["validity", "offsets64", *_layout(t.value_type)]
    if pat.is_fixed_size_list(t):
        return ["validity", *_layout(t.value_type)]
    if pat.is_struct(t):
        out = ["validity"]
        for i in range(t.num_fields):
            out += _layout(t.field(i).type)
        return out
    if pat.is_run_end_encoded(t):
        return _layout(t.run_end_type) + _layout(t.value_type)
    if pat.is_union(t):  # type ids, dense offsets; then the children
        out = ["data", "data"] if t.mode == "dense" else ["data"]
        for i in range(t.num_fields):
            out += _layout(t.field(i).type)
        return out
    if getattr(pat, "is_list_view", lambda _: False)(t):
        return ["validity", "data", "data", *_layout(t.value_type)]
    if getattr(pat, "is_string_view", lambda _: False)(t) or \
            getattr(pat, "is_binary_view", lambda _: False)(t):
        return ["validity", "data", "data"]  # views, then the variadic data buffer
    return ["validity", "data"]


def _dictionary_types(schema) -> List[Any]:
    """Value types of the schema's dictionaries in id order (DFS, as pyarrow assigns)."""
    import pyarrow.types as pat
    out: List[Any] = []

    def walk(t):
        if pat.is_dictionary(t):
            out.append(t.value_type)
            walk(t.value_type)
        elif pat.is_struct(t):
            for i in range(t.num_fields):
                walk(t.field(i).type)
        elif pat.is_list(t) or pat.is_large_list(t) or pat.is_fixed_size_list(t):
            walk(t.value_type)
    for field in schema:
        walk(field.type)
    return out


class Message:
    """One message of an IPC stream and where its mutable parts lie."""

    def __init__(self, start: int, meta: int, body: int, end: int, kind: int) -> None:
        self.start, self.meta, self.body, self.end, self.kind = start, meta, body, end, kind
        self.length_pos: Optional[int] = None         # RecordBatch.length
        self.nodes: List[int] = []                    # FieldNode positions (length, null_count)
        self.buffers: List[Tuple[int, str]] = []      # (Buffer position, kind)
        self.dict_id_pos: List[int] = []              # DictionaryBatch.id / DictionaryEncoding.id
        self.compressed = False


def parse_stream(data: bytes, schema) -> List[Message]:
    """The messages of a valid IPC stream written by pyarrow (continuation framing)."""
    messages: List[Message] = []
    dict_types = _dictionary_types(schema)
    pos = 0
    while pos + 8 <= len(data):
        assert _u32(data, pos) == 0xFFFFFFFF, "not a continuation marker"
        size = _i32(data, pos + 4)
        if size == 0:
            break  # end of stream
        meta = pos + 8
        root = _deref(data, meta)
        kind = data[_field_pos(data, root, 1)] if _field_pos(data, root, 1) else 0
        body_len_pos = _field_pos(data, root, 3)
        body_len = struct.unpack_from("<q", data, body_len_pos)[0] if body_len_pos else 0
        body = meta + size
        msg = Message(pos, meta, body, body + body_len, kind)
        header_pos = _field_pos(data, root, 2)
        header = _deref(data, header_pos) if header_pos else None
        if kind == 1 and header is not None:  # Schema: dictionary ids of its fields
            _schema_dict_ids(data, header, msg)
        elif kind in (2, 3) and header is not None:
            types: List[Any]
            if kind == 2:  # DictionaryBatch: id, data (a RecordBatch), isDelta
                id_pos = _field_pos(data, header, 0)
                dict_id = struct.unpack_from("<q", data, id_pos)[0] if id_pos else 0
                if id_pos is not None:
                    msg.dict_id_pos.append(id_pos)
                header = _deref(data, _field_pos(data, header, 1))
                types = [dict_types[dict_id]] if dict_id < len(dict_types) else []
            else:
                types = [f.type for f in schema]
            kinds: List[str] = []
            for t in types:
                kinds += _layout(t)
            msg.length_pos = _field_pos(data, header, 0)
            count, first = _vector(data, header, 1)
            msg.nodes = [first + 16 * i for i in range(count)]
            count, first = _vector(data, header, 2)
            msg.buffers = [(first + 16 * i, kinds[i] if i < len(kinds) else "data")
                           for i in range(count)]
            msg.compressed = _field_pos(data, header, 3) is not None
        messages.append(msg)
        pos = msg.end
    return messages


def _schema_dict_ids(data, schema_table, msg):
    count, first = _vector(data, schema_table, 1)
    todo = [_deref(data, first + 4 * i) for i in range(count)]
    while todo:
        field = todo.pop()
        enc = _field_pos(data, field, 4)
        if enc is not None:
            id_pos = _field_pos(data, _deref(data, enc), 0)
            if id_pos is not None:
                msg.dict_id_pos.append(id_pos)
        n, first_child = _vector(data, field, 5)
        todo += [_deref(data, first_child + 4 * i) for i in range(n)]


# -- mutations -------------------------------------------------------------------

def _int_values(rng: random.Random, old: int, bits: int, extent: int) -> int:
    """A value that an attacker would put where Arrow expects a length or offset."""
    top = (1 << (bits - 1)) - 1
    choice = rng.choice([
        top, -top - 1, -1, 1 << (bits - 2), extent + 1, extent + 8, extent * 4 + 64,
        old + 1, old - 1, old + 8, old - 8, 0, old * 2 + 1, rng.randrange(-top - 1, top),
        rng.randrange(0, max(extent, 1) * 2 + 2)])
    if choice == old:
        choice = old + 1
    return max(-top - 1, min(top, choice))


def mutate(rng: random.Random, data: bytes, schema, kind: str) -> Tuple[bytes, str]:
    """``(mutated payload, what was done)`` for mutation ``kind``."""
    out = bytearray(data)
    if kind == "flip":
        n = rng.choice([1, 1, 2, 3, 8])
        spots = sorted(rng.randrange(len(out)) for _ in range(n))
        for p in spots:
            out[p] = rng.choice([0x00, 0xFF, 0x7F, 0x80, out[p] ^ (1 << rng.randrange(8)),
                                 rng.randrange(256)])
        return bytes(out), f"flip bytes at {spots}"
    if kind == "truncate":
        cut = rng.randrange(len(out))
        return bytes(out[:cut]), f"truncate to {cut} of {len(out)} bytes"
    messages = parse_stream(data, schema)
    batches = [m for m in messages if m.kind in (2, 3)]
    if kind == "body":
        with_body = [m for m in batches if m.end > m.body] or messages
        m = rng.choice(with_body)
        p = rng.randrange(m.body, max(m.end, m.body + 1))
        if p >= len(out):
            p = len(out) - 1
        out[p] = rng.randrange(256)
        return bytes(out), f"body byte {p} of message at {m.start} = {out[p]:#x}"
    if kind == "offsets":
        targets = [(m, bpos, k) for m in batches if not m.compressed
                   for bpos, k in m.buffers if k.startswith("offsets")]
        if targets:
            m, bpos, k = rng.choice(targets)
            boff, blen = struct.unpack_from("<qq", data, bpos)
            width = 4 if k == "offsets32" else 8
            count = blen // width
            if count >= 1:
                if count >= 3 and rng.random() < 0.75:
                    slot = rng.randrange(1, count - 1)  # in the middle: what validate() misses
                else:
                    slot = rng.choice([0, count - 1])
                at = m.body + boff + slot * width
                fmt = "<i" if width == 4 else "<q"
                old = struct.unpack_from(fmt, data, at)[0]
                last = struct.unpack_from(fmt, data, m.body + boff + (count - 1) * width)[0]
                new = _int_values(rng, old, width * 8, last)
                struct.pack_into(fmt, out, at, new)
                return bytes(out), f"{k} slot {slot}/{count} at {at}: {old} -> {new}"
        kind = "flip"
        return mutate(rng, data, schema, kind)
    if kind == "buffer_meta":
        targets = [(m, bpos, k) for m in batches for bpos, k in m.buffers]
        if targets:
            m, bpos, k = rng.choice(targets)
            which = rng.randrange(2)
            at = bpos + 8 * which
            old = struct.unpack_from("<q", data, at)[0]
            new = _int_values(rng, old, 64, m.end - m.body)
            if rng.random() < 0.5:
                new = min(new + 7, (1 << 63) - 1) // 8 * 8  # aligned: the reader goes further
            struct.pack_into("<q", out, at, new)
            return bytes(out), (f"buffer {k} {'length' if which else 'offset'} at {at}: "
                                f"{old} -> {new}")
        return mutate(rng, data, schema, "flip")
    if kind == "node_meta":
        targets = [(m, p) for m in batches for p in m.nodes]
        targets += [(m, None) for m in batches if m.length_pos is not None]
        if targets:
            m, npos = rng.choice(targets)
            if npos is None:
                at, what = m.length_pos, "batch length"
            else:
                which = rng.randrange(2)
                at, what = npos + 8 * which, "null_count" if which else "node length"
            old = struct.unpack_from("<q", data, at)[0]
            new = _int_values(rng, old, 64, max(old, 1))
            struct.pack_into("<q", out, at, new)
            return bytes(out), f"{what} at {at}: {old} -> {new}"
        return mutate(rng, data, schema, "flip")
    if kind == "dict_id":
        targets = [p for m in messages for p in m.dict_id_pos]
        if targets:
            at = rng.choice(targets)
            old = struct.unpack_from("<q", data, at)[0]
            new = rng.choice([old + 1, old - 1, -1, 2 ** 62, 0, 1, 2, 3])
            if new == old:
                new = old + 1
            struct.pack_into("<q", out, at, new)
            return bytes(out), f"dictionary id at {at}: {old} -> {new}"
        return mutate(rng, data, schema, "node_meta")
    if kind == "messages":
        parts = [data[m.start:m.end] for m in messages]
        tail = data[messages[-1].end:] if messages else data
        op = rng.choice(["drop", "duplicate", "swap", "reverse"])
        if len(parts) >= 2 and op == "drop":
            i = rng.randrange(len(parts))
            del parts[i]
            desc = f"drop message {i}"
        elif len(parts) >= 3 and op == "swap":
            i, j = rng.sample(range(len(parts)), 2)
            parts[i], parts[j] = parts[j], parts[i]
            desc = f"swap messages {i} and {j}"
        elif len(parts) >= 3 and op == "reverse":
            parts = parts[:1] + parts[1:][::-1]
            desc = "messages after the schema reversed"
        else:
            i = rng.randrange(len(parts))
            parts.insert(i, parts[i])
            desc = f"duplicate message {i}"
        return b"".join(parts) + tail, desc
    raise ValueError(kind)


def make_case(seed: int, index: int, corpus) -> Tuple[str, str, bytes, Any, str]:
    """``(corpus name, kind, payload, schema, description)`` of case ``index``."""
    rng = random.Random(seed * 1_000_003 + index)
    name, data, schema = corpus[index % len(corpus)]
    kind = KINDS[rng.randrange(len(KINDS))]
    payload, desc = mutate(rng, data, schema, kind)
    return name, kind, payload, schema, desc


# -- reading every value of what decoded -----------------------------------------

def touch(batch) -> None:
    """Read every value of ``batch`` the ways an agent would."""
    import pyarrow as pa

    from sabot.codecs import get_codec

    rows = _pylist(batch)
    for column in batch.columns:
        touch_array(column)
    pa.Table.from_batches([batch, batch]).combine_chunks()
    again = get_codec("arrow").decode(get_codec("arrow").encode(batch))
    if rows is not None:
        assert str(again.to_pylist()) == str(rows), "re-encoded batch differs"  # NaN != NaN


def _pylist(data):
    """``data.to_pylist()``, or ``None`` for valid Arrow values that Python
    cannot hold (a timestamp in the year 300000, a decimal with a scale of
    millions): an agent gets an error for those, not a crash."""
    import decimal
    try:
        return data.to_pylist()
    except (OverflowError, decimal.InvalidOperation):
        types = [f.type for f in data.schema] if hasattr(data, "schema") else [data.type]
        if not any(_beyond_python(t) for t in types):
            raise
        return None


def _beyond_python(t) -> bool:
    """Whether type ``t`` holds values that may not fit Python's types."""
    import pyarrow as pa
    import pyarrow.types as pat
    if pat.is_temporal(t) or pat.is_decimal(t):
        return True
    if isinstance(t, pa.BaseExtensionType):
        return _beyond_python(t.storage_type)
    if pat.is_dictionary(t):
        return _beyond_python(t.value_type)
    return any(_beyond_python(t.field(i).type) for i in range(t.num_fields))


def touch_array(arr) -> None:
    """Read every value of ``arr``: Python objects, compute kernels, casts."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as pat

    def op(fn, *args, **kwargs):
        # A kernel this pyarrow lacks for the type fails before reading data.
        try:
            return fn(*args, **kwargs)
        except pa.ArrowNotImplementedError:
            return None

    t = arr.type
    _pylist(arr)
    arr.null_count  # noqa: B018 - computes the count from the bitmap
    children = []
    if pat.is_string(t) or pat.is_large_string(t):
        op(pc.utf8_length, arr)
        op(pc.utf8_upper, arr)
        op(pc.match_substring, arr, "a")
        op(arr.cast, pa.large_string() if pat.is_string(t) else pa.string())
        op(pc.binary_join_element_wise, arr, arr, pa.scalar("-", t))
        op(arr.unique)
    elif pat.is_binary(t) or pat.is_large_binary(t):
        op(pc.binary_length, arr)
        op(arr.cast, pa.large_binary() if pat.is_binary(t) else pa.binary())
    elif pat.is_dictionary(t):
        children += [arr.cast(t.value_type), arr.dictionary, arr.indices]
    elif pat.is_map(t):
        children += [arr.keys, arr.items, arr.values]
    elif pat.is_list(t) or pat.is_large_list(t):
        children.append(arr.flatten())
        op(pc.list_value_length, arr)
        op(arr.cast, pa.large_list(t.value_type) if pat.is_list(t) else pa.list_(t.value_type))
    elif pat.is_struct(t):
        children += [pc.struct_field(arr, [i]) for i in range(t.num_fields)]
    elif isinstance(t, pa.BaseExtensionType):
        children.append(arr.storage)
    elif pat.is_run_end_encoded(t):
        children += [arr.values, pc.run_end_decode(arr)]
    elif pat.is_union(t):
        children += [arr.field(i) for i in range(t.num_fields)]
    elif pat.is_fixed_size_list(t):
        children.append(arr.flatten())
    elif getattr(pat, "is_list_view", lambda _: False)(t):
        # Not cast to a list: pyarrow 26 casts a concatenated list view into
        # an invalid array (valid input, nothing to do with decoding).
        children += [arr.flatten(), arr.values]
    elif getattr(pat, "is_string_view", lambda _: False)(t):
        children.append(arr.cast(pa.string()))
    elif pat.is_integer(t) or pat.is_floating(t):
        op(arr.cast, pa.string())
        as_float = arr.cast(pa.float64(), safe=False)
        op(pc.sum, as_float)
        op(pc.sort_indices, as_float)
    elif pat.is_boolean(t):
        op(arr.cast, pa.int8())
        op(pc.invert, arr)
    op(arr.take, pa.array(list(range(len(arr)))[::-1], pa.int64()))
    op(arr.filter, pa.array([i % 2 == 0 for i in range(len(arr))], pa.bool_()))
    for child in children:
        touch_array(child)


def run_case(seed: int, index: int, corpus, *, decoder: str = "sabot") -> str:
    """Run one case; returns ``decoded``/``rejected``; raises on a broken contract."""
    import pyarrow as pa

    from sabot.codecs import decode_many, get_codec
    from sabot.exceptions import DecodeError

    _, _, payload, schema, _ = make_case(seed, index, corpus)
    codec = get_codec("arrow")
    if decoder == "unsafe":  # what decode did before issue 10: only the cheap validate()
        try:
            batches = list(pa.ipc.open_stream(pa.py_buffer(payload)))
            for batch in batches:
                batch.validate()
        except Exception:
            return "rejected"
        for batch in batches:
            batch.to_pylist()
            touch(batch)
        return "decoded"
    try:
        direct = codec.decode(payload)
    except DecodeError:
        direct = None
    except Exception as exc:
        raise AssertionError(f"ArrowCodec.decode raised {type(exc).__name__}, not "
                             f"DecodeError: {exc}") from exc
    if direct is not None:
        assert isinstance(direct, pa.RecordBatch), type(direct)
        touch(direct)
    valid = corpus[index % len(corpus)][1]
    values, failures = decode_many(codec, [payload, valid], schema)
    assert len(values) + len(failures) == 2, (len(values), failures)
    assert all(isinstance(exc, DecodeError) for _, exc in failures), failures
    assert 1 not in [i for i, _ in failures], f"the valid message failed: {failures}"
    for batch in values:
        touch(batch)
    return "decoded" if direct is not None else "rejected"


# -- child: run a range of cases, announcing each before it runs -----------------

def child_main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--cases", type=int, default=CASES)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--step", type=int, default=1)
    parser.add_argument("--case", type=int, default=None, help="run this one case, verbosely")
    parser.add_argument("--decoder", choices=["sabot", "unsafe"], default="sabot")
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args(argv)
    corpus = build_corpus()
    out = sys.stdout
    if args.case is not None:
        name, kind, _, _, desc = make_case(args.seed, args.case, corpus)
        print(f"case {args.case} seed {args.seed}: {name} {kind}: {desc}", flush=True)
        print(run_case(args.seed, args.case, corpus, decoder=args.decoder))
        return 0
    kinds = set(args.kinds.split(","))
    # A case that eats the machine's memory or hangs fails like a crash.
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    for index in range(args.start, args.cases, args.step):
        name, kind, _, _, desc = make_case(args.seed, index, corpus)
        if kind not in kinds:
            continue
        # Announced before it runs: if this process dies, the parent knows why.
        out.write(f"CASE {index}\t{name}\t{kind}\t{desc}\n")
        out.flush()
        faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True)
        try:
            result = run_case(args.seed, index, corpus, decoder=args.decoder)
        except Exception as exc:  # a broken contract, not a crash
            out.write(f"ERROR {index}\t{name}\t{kind}\t{desc}\t{type(exc).__name__}: {exc}\n")
            result = "error"
        out.write(f"= {result}\n")
    faulthandler.cancel_dump_traceback_later()
    out.write("DONE\n")
    out.flush()
    return 0


# -- parent: run the children, resume after crashes, report ---------------------

class Report:
    def __init__(self) -> None:
        self.cases = 0
        self.crashes: List[str] = []
        self.errors: List[str] = []
        self.results: Dict[str, int] = {}


def run_fuzz(seed: int = SEED, cases: int = CASES, *, decoder: str = "sabot",
             kinds: str = ",".join(KINDS), workers: int = WORKERS,
             max_crashes: int = MAX_CRASHES) -> Report:
    """Run every case in ``workers`` children; a child that dies is restarted
    after the case that killed it."""
    report = Report()
    # The children import the sabot that this process tests, wherever it is.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    starts = list(range(workers))
    while starts:
        procs = []
        for start in starts:
            cmd = [sys.executable, HERE, "--seed", str(seed), "--cases", str(cases),
                   "--start", str(start), "--step", str(workers), "--decoder", decoder,
                   "--kinds", kinds]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        starts = []
        for proc in procs:
            timed_out = False
            try:
                stdout, stderr = proc.communicate(timeout=CHILD_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
                timed_out = True
            last = None
            for line in stdout.splitlines():
                if line.startswith("CASE "):
                    report.cases += 1
                    last = line
                elif line.startswith("= "):
                    report.results[line[2:]] = report.results.get(line[2:], 0) + 1
                    last = None
                elif line.startswith("ERROR "):
                    report.errors.append(line[6:])
            if proc.returncode == 0 and last is None and stdout.endswith("DONE\n"):
                continue
            if last is None:  # died outside a case: the harness itself is broken
                raise RuntimeError(f"fuzz child exited with {proc.returncode}: {stderr[-2000:]}")
            if timed_out or "Timeout (" in stderr:
                why = "timed out"
            else:
                why = f"exit {proc.returncode}"
            said = [line for line in stderr.splitlines() if line.strip()][:1]
            report.crashes.append(f"{why}: seed {seed} {last[5:]}" +
                                  (f"\t[{said[0][:200]}]" if said else ""))
            index = int(last.split()[1])
            if len(report.crashes) < max_crashes and index + workers < cases:
                starts.append(index + workers)
    return report


@pytest.mark.slow
def test_mutated_arrow_messages_never_crash_the_decoder(record_property):
    started = time.monotonic()
    report = run_fuzz()
    elapsed = time.monotonic() - started
    summary = (f"arrow decode fuzz: {report.cases} cases (seed {SEED}) in {elapsed:.1f} s, "
               f"{len(report.crashes)} crashes, {len(report.errors)} contract errors, "
               f"{report.results}")
    print(summary)
    record_property("fuzz_cases", report.cases)
    record_property("fuzz_seconds", round(elapsed, 2))
    record_property("fuzz_crashes", len(report.crashes))
    assert report.cases >= min(CASES, 1000)
    assert not report.crashes, summary + "\n" + "\n".join(report.crashes)
    assert not report.errors, summary + "\n" + "\n".join(report.errors[:20])
    # Both outcomes happen: the mutations reach past the framing, and most are caught.
    assert report.results.get("decoded", 0) > 0 and report.results.get("rejected", 0) > 0


def test_harness_catches_the_crash_of_the_unchecked_decoder():
    """The fuzz harness can fail: the old decode (cheap ``validate()`` only)
    segfaults on mutated string offsets, and the harness names the case."""
    report = run_fuzz(cases=120, decoder="unsafe", kinds="offsets", max_crashes=1)
    assert report.crashes, "the cheap validate() path survived 120 offset mutations"
    assert "offsets" in report.crashes[0] and "slot" in report.crashes[0]


def test_corpus_decodes_unchanged():
    import pyarrow as pa

    from sabot.codecs import decode_many, get_codec
    corpus = build_corpus()
    assert len(corpus) >= 13
    for name, data, schema in corpus:
        batch = get_codec("arrow").decode(data)
        expected = pa.ipc.open_stream(data).read_all().combine_chunks()
        assert str(batch.to_pylist()) == str(expected.to_pylist()), name  # NaN != NaN
        values, failures = decode_many("arrow", [data], schema)
        assert failures == [] and len(values) == 1, name
        touch(batch)
        assert parse_stream(data, schema), name


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
